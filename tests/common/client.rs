//! The tests' own S3 client: an SDK client for a server, the runtime that drives it, and
//! blocking helpers for buckets and objects, used to set up and to check what a mount did.
//!
//! Not here: starting the server (`server`).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;

use super::server::{REGION, S3Server};

/// One multi-threaded runtime per test binary; the tests are plain threads and `block_on` it.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harness-rt")
            .enable_all()
            .build()
            .expect("build the harness tokio runtime")
    })
}

fn make_client_with(
    endpoint: &str,
    access_key: &str,
    secret_key: &str,
    timeouts: TimeoutConfig,
    attempts: u32,
) -> Client {
    let creds = Credentials::new(access_key, secret_key, None, None, "mount-s3-tests");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(creds)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(timeouts)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(attempts),
        )
        .build();
    Client::from_conf(config)
}

/// The SDK client the tests use: path style, static credentials, and checksums only when
/// an operation requires them (SeaweedFS refuses trailing-checksum uploads when an identity
/// is configured).
pub fn make_client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    make_client_with(
        endpoint,
        access_key,
        secret_key,
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(120))
            .build(),
        5,
    )
}

/// A client that gives up quickly, for polling a server that is starting.
pub fn make_probe_client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    make_client_with(
        endpoint,
        access_key,
        secret_key,
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(5))
            .build(),
        1,
    )
}

/// An SDK error with its service error code and message, not just "service error".
pub fn error_text<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => format!(
            "{} ({}: {})",
            e,
            se.code().unwrap_or("no code"),
            se.message().unwrap_or("no message")
        ),
        None => format!("{e} ({:?})", std::error::Error::source(e)),
    }
}

/// The HTTP status of a failed request, if it got as far as a response.
pub fn http_status<E>(e: &aws_sdk_s3::error::SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// A token unique in this run (process id, time, counter), for names and keys.
pub fn unique_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A valid S3 bucket name, unique in this run: `tag` lowercased, anything but letters and
/// digits turned into '-', then a unique suffix; at most 63 characters.
pub fn unique_bucket_name(tag: &str) -> String {
    let mut base: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let base: String = base.trim_matches('-').chars().take(36).collect();
    let base = base.trim_end_matches('-');
    let suffix = unique_token();
    let name = if base.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{base}-{suffix}")
    };
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches('-').to_string();
    assert!(name.len() >= 3, "bucket name too short: {name}");
    name
}

/// Blocking bucket and object helpers; each panics with the server's error text on failure.
impl S3Server {
    /// Runs a future on the harness runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        runtime().block_on(f)
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.block_on(self.client().create_bucket().bucket(bucket).send())
            .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {}", error_text(&e)));
    }

    /// A new bucket with a unique valid name that starts with (a sanitised) `tag`.
    pub fn new_bucket(&self, tag: &str) -> String {
        let name = unique_bucket_name(tag);
        self.create_bucket(&name);
        name
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        let body = ByteStream::from(bytes.into());
        let put = self
            .client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body);
        self.block_on(put.send())
            .unwrap_or_else(|e| panic!("PutObject {bucket}/{key}: {}", error_text(&e)));
    }

    /// Puts many objects with up to `concurrency` requests in flight.
    pub fn put_many(&self, bucket: &str, objects: Vec<(String, Vec<u8>)>, concurrency: usize) {
        let client = self.client().clone();
        let bucket = bucket.to_string();
        self.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for (key, bytes) in objects {
                let permit = sem.clone().acquire_owned().await.expect("semaphore");
                let client = client.clone();
                let bucket = bucket.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(&key)
                        .body(ByteStream::from(bytes))
                        .send()
                        .await
                        .map_err(|e| format!("PutObject {bucket}/{key}: {}", error_text(&e)))
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("put task panicked")
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        });
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.block_on(async {
            let out = self
                .client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {}", error_text(&e)));
            out.body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("GetObject {bucket}/{key} body: {e}"))
                .into_bytes()
                .to_vec()
        })
    }

    /// Streams the object and compares it with `len` bytes read from `expected`, without
    /// holding either in memory; panics at the first difference (or a length mismatch).
    pub fn assert_object_matches(
        &self,
        bucket: &str,
        key: &str,
        mut expected: impl Read,
        len: u64,
    ) {
        self.block_on(async {
            let mut out = self
                .client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {}", error_text(&e)));
            let mut offset = 0u64;
            let mut want = Vec::new();
            while let Some(chunk) = out.body.next().await {
                let chunk = chunk.unwrap_or_else(|e| panic!("GetObject {bucket}/{key} body: {e}"));
                assert!(
                    offset + chunk.len() as u64 <= len,
                    "{bucket}/{key} is longer than the {len} bytes expected"
                );
                want.resize(chunk.len(), 0);
                expected
                    .read_exact(&mut want)
                    .expect("read the expected bytes");
                if let Some(i) = chunk.iter().zip(&want).position(|(a, b)| a != b) {
                    panic!(
                        "{bucket}/{key} differs from the expected bytes at offset {}",
                        offset + i as u64
                    );
                }
                offset += chunk.len() as u64;
            }
            assert_eq!(offset, len, "length of {bucket}/{key}");
        });
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.block_on(self.client().delete_object().bucket(bucket).key(key).send())
            .unwrap_or_else(|e| panic!("DeleteObject {bucket}/{key}: {}", error_text(&e)));
    }

    /// `(ContentLength, LastModified)` from HeadObject.
    pub fn head(&self, bucket: &str, key: &str) -> (u64, SystemTime) {
        self.head_if_exists(bucket, key)
            .unwrap_or_else(|| panic!("HeadObject {bucket}/{key}: no such object"))
    }

    /// `(ContentLength, LastModified)` from HeadObject, or `None` on 404.
    pub fn head_if_exists(&self, bucket: &str, key: &str) -> Option<(u64, SystemTime)> {
        let out = match self.block_on(self.client().head_object().bucket(bucket).key(key).send()) {
            Ok(out) => out,
            Err(e) if http_status(&e) == Some(404) => return None,
            Err(e) => panic!("HeadObject {bucket}/{key}: {}", error_text(&e)),
        };
        let len = out.content_length().unwrap_or(-1);
        let modified = out
            .last_modified()
            .map(|t| SystemTime::try_from(*t).expect("LastModified as SystemTime"))
            .expect("HeadObject without LastModified");
        Some((u64::try_from(len).expect("ContentLength"), modified))
    }

    /// Puts an object with user metadata (`x-amz-meta-NAME: VALUE` for each pair), as
    /// another client (s3fs, rclone, boto3) would.
    pub fn put_with_metadata(&self, bucket: &str, key: &str, bytes: &[u8], meta: &[(&str, &str)]) {
        let mut put = self
            .client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes.to_vec()));
        for (name, value) in meta {
            put = put.metadata(*name, *value);
        }
        self.block_on(put.send())
            .unwrap_or_else(|e| panic!("PutObject {bucket}/{key}: {}", error_text(&e)));
    }

    /// The user metadata HeadObject returns for `key` (names without `x-amz-meta-`).
    pub fn user_metadata(
        &self,
        bucket: &str,
        key: &str,
    ) -> std::collections::HashMap<String, String> {
        let out = self
            .block_on(self.client().head_object().bucket(bucket).key(key).send())
            .unwrap_or_else(|e| panic!("HeadObject {bucket}/{key}: {}", error_text(&e)));
        out.metadata().cloned().unwrap_or_default()
    }

    /// Asserts that HeadObject finds nothing at `key`; `when` says at which step.
    #[track_caller]
    pub fn assert_no_object(&self, bucket: &str, key: &str, when: &str) {
        if let Some((len, _)) = self.head_if_exists(bucket, key) {
            panic!("{when}: {bucket}/{key} exists ({len} bytes) but must not");
        }
    }

    /// Polls HeadObject until the object exists or `timeout` has passed: for what a mount
    /// does after close(2) returns (the kernel sends FUSE's release without waiting).
    pub fn wait_for_object(
        &self,
        bucket: &str,
        key: &str,
        timeout: Duration,
    ) -> Option<(u64, SystemTime)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let head = self.head_if_exists(bucket, key);
            if head.is_some() || std::time::Instant::now() > deadline {
                return head;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All keys of a bucket (ListObjectsV2, every page).
    pub fn list_keys(&self, bucket: &str) -> Vec<String> {
        self.block_on(async {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .client()
                    .list_objects_v2()
                    .bucket(bucket)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {}", error_text(&e)));
                keys.extend(
                    out.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
                match out.next_continuation_token() {
                    Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            keys
        })
    }

    /// All keys of a bucket, sorted.
    pub fn sorted_keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = self.list_keys(bucket);
        keys.sort();
        keys
    }

    /// The keys of the multipart uploads in progress in a bucket (ListMultipartUploads,
    /// first page: up to 1,000, plenty for a test bucket).
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let out = self
            .block_on(self.client().list_multipart_uploads().bucket(bucket).send())
            .unwrap_or_else(|e| panic!("ListMultipartUploads {bucket}: {}", error_text(&e)));
        let mut keys: Vec<String> = out
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    }
}
