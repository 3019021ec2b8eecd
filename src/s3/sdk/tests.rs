//! What the SDK client really sends for the flags that change requests, captured before it
//! leaves the process (for what SeaweedFS cannot take: it answers SSE-S3 with a 500; the
//! other headers are checked against it through the tests' proxy, `tests/mount_cli.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_http_client::test_util::infallible_client_fn;

use super::SdkStore;
use crate::s3::{ObjectStore, S3Config, WriteOptions};

/// A request as the SDK sent it: method and URI, and its headers (names lowercase).
#[derive(Debug, Clone)]
struct Sent {
    line: String,
    headers: Vec<(String, String)>,
}

fn header<'a>(r: &'a Sent, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A store whose every request is recorded and answered by an empty 200.
async fn store_capturing(config: &S3Config) -> (SdkStore, Arc<Mutex<Vec<Sent>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    let http = infallible_client_fn(move |request: http::Request<SdkBody>| {
        record.lock().unwrap().push(Sent {
            line: format!("{} {}", request.method(), request.uri()),
            headers: request
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_ascii_lowercase(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        });
        http::Response::builder()
            .status(200)
            .body(SdkBody::empty())
            .unwrap()
    });
    let store = SdkStore::with_http_client(config, Some(http)).await;
    (store, sent)
}

/// A client that needs no network or credentials, with no flag that adds headers.
fn plain() -> S3Config {
    let mut config = S3Config::new("bucket");
    config.region = Some("eu-west-1".into());
    config.endpoint_url = Some("http://127.0.0.1:9".into());
    config.force_path_style = true;
    config.no_sign_request = true;
    config
}

fn flagged() -> S3Config {
    let mut config = plain();
    config.sse = Some("aws:kms".into());
    config.sse_kms_key_id = Some("arn:aws:kms:eu-west-1:111122223333:key/k1".into());
    config.storage_class = Some("GLACIER_IR".into());
    config.infer_content_type = true;
    config.requester_pays = true;
    config.expected_bucket_owner = Some("111122223333".into());
    config.user_agent_prefix = Some("job/7".into());
    config
}

/// The first request `call` sends (the rest of the call, answered by empty 200s, may fail:
/// only the request matters here).
async fn first_request<F, Fut>(call: F) -> Sent
where
    F: FnOnce(SdkStore) -> Fut,
    Fut: std::future::Future,
{
    let (store, sent) = store_capturing(&flagged()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), call(store)).await;
    let first = sent.lock().unwrap().first().cloned();
    first.expect("no request was sent")
}

#[tokio::test]
async fn new_objects_carry_encryption_class_and_type_and_every_request_the_rest() {
    let options = WriteOptions::default();
    let put = first_request(|s| async move {
        s.put("d/model.json", bytes::Bytes::from_static(b"{}"), &options)
            .await
    })
    .await;
    let options = WriteOptions::default();
    let create =
        first_request(|s| async move { s.create_multipart("big.bin", &options).await }).await;
    let copy =
        first_request(|s| async move { s.copy("a.txt", "b.txt", 10, "\"e\"", None).await }).await;
    let part = first_request(|s| async move {
        s.upload_part("big.bin", "up1", 1, bytes::Bytes::from_static(b"x"))
            .await
    })
    .await;
    for (r, what) in [(&put, "PUT"), (&create, "Create"), (&copy, "Copy")] {
        assert_eq!(
            header(r, "x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{what}: {}",
            r.line
        );
        assert_eq!(
            header(r, "x-amz-server-side-encryption-aws-kms-key-id"),
            Some("arn:aws:kms:eu-west-1:111122223333:key/k1"),
            "{what}"
        );
        assert_eq!(
            header(r, "x-amz-storage-class"),
            Some("GLACIER_IR"),
            "{what}"
        );
    }
    assert_eq!(header(&put, "content-type"), Some("application/json"));
    assert_eq!(
        header(&create, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(header(&part, "x-amz-server-side-encryption"), None);
    assert_eq!(header(&part, "x-amz-storage-class"), None);
    for r in [&put, &create, &copy, &part] {
        assert_eq!(header(r, "x-amz-request-payer"), Some("requester"));
        assert_eq!(
            header(r, "x-amz-expected-bucket-owner"),
            Some("111122223333")
        );
        let agent = header(r, "user-agent").unwrap_or_default();
        assert!(agent.starts_with("job/7 "), "{agent}");
    }
}

#[tokio::test]
async fn without_the_flags_nothing_is_added() {
    let (store, sent) = store_capturing(&plain()).await;
    let options = WriteOptions::default();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        store.put("a.json", bytes::Bytes::from_static(b"{}"), &options),
    )
    .await;
    let r = sent.lock().unwrap()[0].clone();
    for name in [
        "x-amz-server-side-encryption",
        "x-amz-storage-class",
        "x-amz-request-payer",
        "x-amz-expected-bucket-owner",
    ] {
        assert_eq!(header(&r, name), None, "{name}");
    }
}

/// The shared cache's writes (`--cache-xz`): to the cache bucket, with the block's metadata
/// and CRC32C, the mount's encryption (as Mountpoint applies `--sse` there) but not its
/// storage class or Content-Type; the probe with the storage class asked. Its reads ask for
/// the stored checksum.
#[tokio::test]
async fn shared_cache_blocks_carry_metadata_checksum_and_encryption() {
    use crate::s3::{BlockStore, TaggedPut};
    let put = TaggedPut {
        metadata: vec![("cache-version".into(), "V2".into())],
        crc32c: Some("yZRlqg==".into()),
        storage_class: None,
    };
    let block = first_request(|s| async move {
        s.with_bucket("cache--use1-az4--x-s3")
            .put_tagged(
                "p/o/0000000000",
                bytes::Bytes::from_static(b"hello world"),
                put,
            )
            .await
    })
    .await;
    assert!(
        block
            .line
            .starts_with("PUT http://127.0.0.1:9/cache--use1-az4--x-s3/p/o/0000000000"),
        "{}",
        block.line
    );
    assert_eq!(header(&block, "x-amz-meta-cache-version"), Some("V2"));
    assert_eq!(header(&block, "x-amz-checksum-crc32c"), Some("yZRlqg=="));
    assert_eq!(
        header(&block, "x-amz-server-side-encryption"),
        Some("aws:kms")
    );
    assert_eq!(
        header(&block, "x-amz-server-side-encryption-aws-kms-key-id"),
        Some("arn:aws:kms:eu-west-1:111122223333:key/k1")
    );
    assert_eq!(header(&block, "x-amz-storage-class"), None);
    assert_eq!(
        header(&block, "content-type").filter(|t| t.contains("json")),
        None
    );
    let probe = first_request(|s| async move {
        let put = TaggedPut {
            storage_class: Some("EXPRESS_ONEZONE".into()),
            ..TaggedPut::default()
        };
        s.with_bucket("cache")
            .put_tagged(
                "p/_mountpoint_cache_metadata",
                bytes::Bytes::from_static(b"x"),
                put,
            )
            .await
    })
    .await;
    assert_eq!(
        header(&probe, "x-amz-storage-class"),
        Some("EXPRESS_ONEZONE")
    );
    let get =
        first_request(|s| async move { s.with_bucket("cache").get_tagged("p/o/1").await }).await;
    assert!(get.line.starts_with("GET "), "{}", get.line);
    assert_eq!(header(&get, "x-amz-checksum-mode"), Some("ENABLED"));
}
