//! Checks of the test harness itself, through the SDK only (no mount): the S3 server starts,
//! really checks signatures, round-trips objects, and is stopped without leaving anything.

mod common;

use std::path::Path;
use std::time::Duration;

use std::io::Read;

use common::{
    PseudoRandomReader, S3Server, assert_bytes_eq, error_text, http_status, make_client,
    pseudo_random_bytes,
};

#[test]
fn shared_server_round_trips_objects() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("harness-roundtrip");

    let small = b"hello, mount-s3".to_vec();
    let big = pseudo_random_bytes(7, 9 * 1024 * 1024 + 3);
    s3.put(&bucket, "small.txt", small.clone());
    s3.put(&bucket, "dir/big.bin", big.clone());
    s3.put(&bucket, "empty", Vec::new());

    assert_eq!(s3.get(&bucket, "small.txt"), small);
    assert_bytes_eq(&s3.get(&bucket, "dir/big.bin"), &big, "big object");
    assert!(s3.get(&bucket, "empty").is_empty());

    let (len, _) = s3.head(&bucket, "dir/big.bin");
    assert_eq!(len, big.len() as u64);

    let mut keys = s3.list_keys(&bucket);
    keys.sort();
    assert_eq!(keys, vec!["dir/big.bin", "empty", "small.txt"]);

    s3.delete(&bucket, "small.txt");
    let mut keys = s3.list_keys(&bucket);
    keys.sort();
    assert_eq!(keys, vec!["dir/big.bin", "empty"]);
}

#[test]
fn server_checks_signatures() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("harness-auth");
    s3.put(&bucket, "k", b"v".to_vec());

    let wrong_secret = make_client(s3.endpoint(), s3.access_key(), "not-the-secret");
    let r = s3.block_on(wrong_secret.get_object().bucket(&bucket).key("k").send());
    let e = r.expect_err("a wrong secret must be refused");
    assert_eq!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{}",
        error_text(&e)
    );

    let unknown_key = make_client(s3.endpoint(), "NOSUCHACCESSKEY", s3.secret_key());
    let r = s3.block_on(unknown_key.list_objects_v2().bucket(&bucket).send());
    let e = r.expect_err("an unknown access key must be refused");
    assert_eq!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{}",
        error_text(&e)
    );
}

#[test]
fn missing_bucket_is_not_created_on_upload() {
    let s3 = S3Server::shared();
    let bucket = common::unique_bucket_name("harness-nobucket");
    let r = s3.block_on(
        s3.client()
            .put_object()
            .bucket(&bucket)
            .key("k")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send(),
    );
    assert!(
        r.is_err(),
        "PutObject into a bucket never created succeeded"
    );
    let r = s3.block_on(s3.client().head_bucket().bucket(&bucket).send());
    assert!(r.is_err(), "HeadBucket on a bucket never created succeeded");
}

#[test]
fn bucket_names_are_valid_and_unique() {
    let names: Vec<String> = [
        "Some_Test::name",
        "x",
        "---",
        "a-very-long-test-name-that-goes-on-and-on-and-on-and-on-forever",
    ]
    .iter()
    .map(|t| common::unique_bucket_name(t))
    .collect();
    for n in &names {
        assert!((3..=63).contains(&n.len()), "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
        assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
    }
    let a = common::unique_bucket_name("same");
    let b = common::unique_bucket_name("same");
    assert_ne!(a, b);
}

#[test]
fn owned_server_stops_on_drop_and_leaves_nothing() {
    let s3 = S3Server::start();
    let pid = s3.pid();
    let dir = s3.dir().to_path_buf();
    let endpoint = s3.endpoint().to_string();
    let bucket = s3.new_bucket("harness-owned");
    s3.put(&bucket, "k", b"owned".to_vec());
    assert_eq!(s3.get(&bucket, "k"), b"owned");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(s3);

    // The process is gone (reaped, not a zombie), its directory removed and its port closed.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "weed {pid} still exists after drop"
    );
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let connect = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(1),
    );
    assert!(connect.is_err(), "S3 port {port} still open after drop");
}

#[test]
fn pseudo_random_stream_matches_the_buffer() {
    let want = pseudo_random_bytes(31, 100_003);
    let mut reader = PseudoRandomReader::new(31);
    let mut got = Vec::new();
    // Odd read sizes, so that words are split across reads.
    for size in [1usize, 7, 8, 9, 4093, 3].iter().cycle() {
        if got.len() >= want.len() {
            break;
        }
        let mut buf = vec![0u8; (*size).min(want.len() - got.len())];
        reader.read_exact(&mut buf).unwrap();
        got.extend_from_slice(&buf);
    }
    assert_bytes_eq(&got, &want, "stream vs buffer");
}

#[test]
fn object_helpers_see_multipart_uploads_and_missing_objects() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("harness-multipart");
    assert!(s3.multipart_uploads(&bucket).is_empty());
    assert!(s3.head_if_exists(&bucket, "nothing").is_none());
    s3.assert_no_object(&bucket, "nothing", "empty bucket");

    let client = s3.client();
    let upload = s3
        .block_on(
            client
                .create_multipart_upload()
                .bucket(&bucket)
                .key("mp.bin")
                .send(),
        )
        .unwrap_or_else(|e| panic!("CreateMultipartUpload: {}", error_text(&e)));
    let id = upload.upload_id().expect("upload id").to_string();
    assert_eq!(s3.multipart_uploads(&bucket), vec!["mp.bin"]);
    s3.assert_no_object(&bucket, "mp.bin", "upload in progress");
    s3.block_on(
        client
            .abort_multipart_upload()
            .bucket(&bucket)
            .key("mp.bin")
            .upload_id(&id)
            .send(),
    )
    .unwrap_or_else(|e| panic!("AbortMultipartUpload: {}", error_text(&e)));
    assert!(s3.multipart_uploads(&bucket).is_empty());

    let len = 3 * 1024 * 1024 + 5;
    s3.put(&bucket, "stream.bin", pseudo_random_bytes(32, len));
    s3.assert_object_matches(
        &bucket,
        "stream.bin",
        PseudoRandomReader::new(32),
        len as u64,
    );
    assert_eq!(
        s3.head_if_exists(&bucket, "stream.bin").unwrap().0,
        len as u64
    );
}

/// The read path pins an object version with If-Match; the test server must honour it.
#[test]
fn server_honours_if_match_on_ranged_get() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("harness-if-match");
    s3.put(&bucket, "obj", b"version one".to_vec());
    let client = s3.client();
    let etag = s3
        .block_on(client.head_object().bucket(&bucket).key("obj").send())
        .unwrap()
        .e_tag()
        .expect("ETag")
        .to_string();
    // Ok, or the HTTP status and the error text.
    let get = |etag: &str| {
        s3.block_on(
            client
                .get_object()
                .bucket(&bucket)
                .key("obj")
                .range("bytes=0-6")
                .if_match(etag)
                .send(),
        )
        .map(drop)
        .map_err(|e| (http_status(&e), error_text(&e)))
    };
    assert_eq!(get(&etag), Ok(()), "If-Match with the current ETag");
    s3.put(&bucket, "obj", b"version two".to_vec());
    let (status, text) = get(&etag).expect_err("If-Match with a replaced ETag must fail");
    assert_eq!(status, Some(412), "{text}");
}
