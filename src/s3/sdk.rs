//! [`ObjectStore`] over the AWS SDK for Rust: retries with backoff, timeouts, custom endpoints.
//!
//! Credentials and region come from aws-config's default chain (environment, shared profile,
//! SSO, web identity, IMDS) unless the command line overrides them. Nothing here logs a
//! credential or a signature: request logs carry the operation, key, range and status only.

use std::ops::Range;
use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::DateTime;
use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, EncodingType};

use super::{ListPage, MAX_SINGLE_OBJECT, ObjectInfo, ObjectStore, PartTag, S3Config, S3Error};

/// Wait before resuming a broken GET body (times the attempt number).
const RESUME_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

/// Part size of a multipart server-side copy (objects over 5 GiB only).
const COPY_PART_SIZE: u64 = 512 * 1024 * 1024;

/// How far before our first CreateMultipartUpload attempt a stray upload's initiation time
/// may lie (the server's clock against ours).
const STRAY_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(30);

/// Region used when neither the command line nor the provider chain names one.
const FALLBACK_REGION: &str = "us-east-1";

/// An S3 bucket reached through aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct SdkStore {
    client: Client,
    bucket: String,
    /// CRC32C on uploads, or none.
    checksum: Option<ChecksumAlgorithm>,
    /// Attempts for a GET whose body breaks (the SDK retries only until the headers).
    max_attempts: u32,
}

impl SdkStore {
    /// Builds the client from `config` and the default provider chain. Makes no request.
    pub async fn new(config: &S3Config) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        if config.no_sign_request {
            loader = loader.no_credentials();
        }
        let shared = loader.load().await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            // Flexible checksums in trailers are refused by several S3-compatible servers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(timeouts);
        if shared.region().is_none() {
            builder = builder.region(Region::new(FALLBACK_REGION));
        }
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            checksum: config.upload_checksums.then_some(ChecksumAlgorithm::Crc32C),
            max_attempts: config.max_attempts,
        }
    }
}

impl SdkStore {
    /// Aborts the uploads of `key` that an attempt of ours whose answer was lost may have
    /// created: those initiated since `started` (less a little clock skew), other than
    /// `keep`. Another writer's upload of the same key started in that window would be
    /// aborted too (its close fails with EIO): two writers racing on one key lose one of
    /// the writes anyway. Best effort: failures are logged.
    async fn abort_strays(&self, key: &str, started: SystemTime, keep: Option<&str>) {
        let since = started
            .checked_sub(STRAY_CLOCK_SKEW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(key)
            .encoding_type(EncodingType::Url)
            .send()
            .await;
        let out = match listed {
            Ok(out) => out,
            Err(e) => {
                warn!(key, "cannot list uploads to abort strays: {}", classify(e));
                return;
            }
        };
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        for upload in out.uploads() {
            let (Some(upload_key), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            let upload_key = if encoded {
                url_decode(upload_key)
            } else {
                upload_key.to_string()
            };
            let initiated = to_system_time(upload.initiated());
            if upload_key != key || Some(id) == keep || initiated < since {
                continue;
            }
            match self.abort_multipart(key, id).await {
                Ok(()) => warn!(
                    key,
                    "aborted a stray multipart upload left by a lost answer"
                ),
                Err(e) => warn!(key, "cannot abort a stray multipart upload: {e}"),
            }
        }
    }
}

/// A key as S3 sends it with `encoding-type=url`: `%XX` escapes and `+` for a space. A
/// malformed escape is kept as it is; bytes that do not form UTF-8 are replaced.
fn url_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = match bytes.get(at..at + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[at]) {
            (Some(byte), _) => {
                out.push(byte);
                at += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                at += 1;
            }
            (None, byte) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an error may go away on retry, and may hide a request the server executed: a
/// network failure, a 5xx or 429, or a success status whose body did not arrive whole (the
/// fault tests truncate bodies: a 200 with half its XML is an executed request).
fn is_transient(err: &S3Error) -> bool {
    match err {
        S3Error::Network(_) => true,
        S3Error::Service { status, .. } => *status >= 500 || *status == 429 || *status < 300,
        _ => false,
    }
}

/// Wait before attempt `attempt + 1`: exponential from 100 ms, capped at 5 s, with jitter.
fn backoff(attempt: u32) -> std::time::Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| u64::from(t.subsec_nanos()) % (base / 2 + 1));
    std::time::Duration::from_millis(base / 2 + jitter)
}

impl ObjectStore for SdkStore {
    async fn head(&self, key: &str) -> Result<ObjectInfo, S3Error> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)?;
        debug!(key, "HEAD ok");
        Ok(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_system_time(out.last_modified()),
            etag: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, S3Error> {
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(max_keys.min(1000) as i32)
            .set_continuation_token(token)
            // Keys may hold characters XML 1.0 cannot carry (ESC and other controls): ask for
            // them percent-encoded, and decode below if the server did encode them.
            .encoding_type(EncodingType::Url);
        if delimited {
            request = request.delimiter("/");
        }
        let out = request.send().await.map_err(classify)?;
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let name = |raw: &str| {
            if encoded {
                url_decode(raw)
            } else {
                raw.to_string()
            }
        };
        let objects = out
            .contents()
            .iter()
            .filter_map(|object| {
                Some(ObjectInfo {
                    key: name(object.key()?),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: to_system_time(object.last_modified()),
                    etag: object.e_tag().unwrap_or_default().to_string(),
                })
            })
            .collect::<Vec<_>>();
        let common_prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(name))
            .collect::<Vec<_>>();
        let next_token = match out.is_truncated() {
            Some(true) => out.next_continuation_token().map(str::to_string),
            _ => None,
        };
        debug!(
            prefix,
            objects = objects.len(),
            prefixes = common_prefixes.len(),
            more = next_token.is_some(),
            "LIST ok"
        );
        Ok(ListPage {
            objects,
            common_prefixes,
            next_token,
        })
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let expected = (range.end - range.start) as usize;
        let mut body = page_aligned_buffer(expected);
        let mut resumes = 0;
        loop {
            let from = range.start + body.len() as u64;
            match self
                .get_into(key, from..range.end, if_match, &mut body)
                .await
            {
                Ok(()) if body.len() == expected => break,
                Ok(()) => {
                    // The server ended the body early; treat it like a broken connection.
                    warn!(key, got = body.len(), expected, "short GET body; resuming");
                }
                Err(BodyError::Request(e)) => return Err(e),
                Err(BodyError::Stream(e)) => {
                    warn!(key, at = from, "GET body broke ({e}); resuming");
                }
            }
            resumes += 1;
            if resumes >= self.max_attempts {
                return Err(S3Error::Network(format!(
                    "GET of {key} kept breaking after {} bytes of {expected}",
                    body.len()
                )));
            }
            tokio::time::sleep(RESUME_BACKOFF * resumes).await;
        }
        debug!(
            key,
            start = range.start,
            len = body.len(),
            resumes,
            "GET ok"
        );
        Ok(body.freeze())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<String, S3Error> {
        let len = data.len();
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(data.into())
            .set_checksum_algorithm(self.checksum.clone())
            .send()
            .await
            .map_err(classify)?;
        debug!(key, len, "PUT ok");
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        // Retried here rather than by the SDK: an attempt whose answer was lost may still
        // have created an upload on the server, and only this loop knows it happened.
        let started = SystemTime::now();
        let mut ambiguous = false;
        let mut attempt = 0;
        let created = loop {
            attempt += 1;
            let result = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .set_checksum_algorithm(self.checksum.clone())
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled()),
                )
                .send()
                .await
                .map_err(classify)
                .and_then(|out| {
                    out.upload_id().map(str::to_string).ok_or_else(|| {
                        S3Error::Network("CreateMultipartUpload returned no upload id".into())
                    })
                });
            match result {
                Ok(id) => break Ok(id),
                Err(e) if is_transient(&e) && attempt < self.max_attempts => {
                    ambiguous = true;
                    warn!(key, attempt, "CreateMultipartUpload failed ({e}); retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    ambiguous |= is_transient(&e);
                    break Err(e);
                }
            }
        };
        if ambiguous {
            self.abort_strays(key, started, created.as_deref().ok())
                .await;
        }
        let id = created?;
        debug!(key, attempt, "CreateMultipartUpload ok");
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<PartTag, S3Error> {
        let len = data.len();
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(data.into())
            .set_checksum_algorithm(self.checksum.clone())
            .send()
            .await
            .map_err(classify)?;
        debug!(key, number, len, "UploadPart ok");
        Ok(PartTag {
            number,
            etag: out.e_tag().unwrap_or_default().to_string(),
            crc32c: out.checksum_crc32_c().map(str::to_string),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
    ) -> Result<String, S3Error> {
        let count = parts.len();
        let parts = parts
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(p.etag)
                    .set_checksum_crc32_c(p.crc32c)
                    .build()
            })
            .collect::<Vec<_>>();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(classify)?;
        debug!(key, parts = count, "CompleteMultipartUpload ok");
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(classify)
        {
            Ok(_) | Err(S3Error::NotFound) => {
                debug!(key, "AbortMultipartUpload ok");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)?;
        debug!(key, "DELETE ok");
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<(), S3Error> {
        let source = format!("{}/{}", self.bucket, encode_copy_source(from));
        if size <= MAX_SINGLE_OBJECT {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(source)
                .send()
                .await
                .map_err(classify)?;
            debug!(from, to, size, "CopyObject ok");
            return Ok(());
        }
        let upload_id = self.create_multipart(to).await?;
        let result = self.copy_parts(&source, to, &upload_id, size).await;
        match result {
            Ok(parts) => self
                .complete_multipart(to, &upload_id, parts)
                .await
                .map(drop),
            Err(e) => {
                let _ = self.abort_multipart(to, &upload_id).await;
                Err(e)
            }
        }
    }
}

/// Alignment of GET bodies in memory (a page).
const BODY_ALIGN: usize = 4096;

/// An empty buffer with room for `len` bytes whose data starts on a page boundary: slices of
/// a GET body at block boundaries can then be written to the data cache with O_DIRECT,
/// straight from this memory (see `cache::DiskCache::put`).
fn page_aligned_buffer(len: usize) -> BytesMut {
    use bytes::Buf;
    let mut buf = BytesMut::with_capacity(len + BODY_ALIGN);
    let pad = buf.as_ptr().align_offset(BODY_ALIGN);
    buf.resize(pad, 0);
    buf.advance(pad);
    buf
}

/// How a ranged GET failed: before the body (the SDK already retried), or during it.
enum BodyError {
    Request(S3Error),
    Stream(String),
}

impl SdkStore {
    /// One GET of `range`, appending the body to `out` as it arrives, so that a broken body
    /// can be resumed from where it stopped instead of from the start.
    async fn get_into(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        out: &mut BytesMut,
    ) -> Result<(), BodyError> {
        let mut response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(if_match.map(str::to_string))
            .send()
            .await
            .map_err(|e| BodyError::Request(classify(e)))?;
        let limit = out.len() + (range.end - range.start) as usize;
        while let Some(chunk) = response.body.next().await {
            let chunk = chunk.map_err(|e| BodyError::Stream(e.to_string()))?;
            if out.len() + chunk.len() > limit {
                return Err(BodyError::Request(S3Error::Network(format!(
                    "GET of {key} returned more bytes than asked"
                ))));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(())
    }

    /// The UploadPartCopy calls of a multipart copy, in order.
    async fn copy_parts(
        &self,
        source: &str,
        to: &str,
        upload_id: &str,
        size: u64,
    ) -> Result<Vec<PartTag>, S3Error> {
        let mut parts = Vec::new();
        let mut start = 0;
        let mut number = 1;
        while start < size {
            let end = (start + COPY_PART_SIZE).min(size);
            let out = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(source)
                .copy_source_range(format!("bytes={start}-{}", end - 1))
                .send()
                .await
                .map_err(classify)?;
            let result = out.copy_part_result();
            parts.push(PartTag {
                number,
                etag: result
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default()
                    .to_string(),
                crc32c: result
                    .and_then(|r| r.checksum_crc32_c())
                    .map(str::to_string),
            });
            start = end;
            number += 1;
        }
        Ok(parts)
    }
}

/// URL-encodes a key for `x-amz-copy-source` (everything but unreserved characters and `/`).
fn encode_copy_source(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn to_system_time(time: Option<&DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Classifies an SDK error by what the server (or the network) said.
fn classify<E>(err: SdkError<E>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    SdkError<E>: std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    let message = err.message().unwrap_or_default().to_string();
    match (&err, status) {
        (SdkError::ServiceError(_) | SdkError::ResponseError(_), Some(status)) => {
            classify_status(status, code, message)
        }
        _ => S3Error::Network(error_chain(&err)),
    }
}

/// The error and its sources, each by its `Display`, joined: one readable line without the
/// SDK's `Debug` dump.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

fn classify_status(status: u16, code: String, message: String) -> S3Error {
    match (status, code.as_str()) {
        (_, "NoSuchBucket") => S3Error::NoSuchBucket,
        (404, _) => S3Error::NotFound,
        (403, _) => S3Error::AccessDenied(if code.is_empty() {
            "403 Forbidden".to_string()
        } else {
            code
        }),
        (412, _) => S3Error::PreconditionFailed,
        _ => S3Error::Service {
            status,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_buffers_start_on_a_page_and_fill_without_moving() {
        for len in [1, 4096, 8 << 20] {
            let mut buf = page_aligned_buffer(len);
            assert!(buf.is_empty());
            let start = buf.as_ptr() as usize;
            assert_eq!(start % BODY_ALIGN, 0);
            buf.extend_from_slice(&vec![7; len]);
            assert_eq!(
                buf.as_ptr() as usize,
                start,
                "filled in place, not reallocated"
            );
            assert_eq!(buf.freeze().as_ptr() as usize, start);
        }
    }

    #[test]
    fn ambiguous_failures_are_transient() {
        let service = |status| S3Error::Service {
            status,
            code: String::new(),
            message: String::new(),
        };
        assert!(is_transient(&S3Error::Network("reset".into())));
        assert!(is_transient(&service(503)) && is_transient(&service(429)));
        assert!(is_transient(&service(200)), "a 200 whose body broke");
        assert!(!is_transient(&service(400)) && !is_transient(&S3Error::NotFound));
        assert!(!is_transient(&S3Error::AccessDenied("403".into())));
    }

    #[test]
    fn listed_keys_are_url_decoded() {
        assert_eq!(url_decode("a%1B%5B31m+b%2Bc%2Fd"), "a\x1b[31m b+c/d");
        assert_eq!(url_decode("%C3%BC%E2%9C%93"), "ü✓");
        assert_eq!(url_decode("bad%zzend%4"), "bad%zzend%4");
        assert_eq!(url_decode(""), "");
    }

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_copy_source("a/b c+d.txt"), "a/b%20c%2Bd.txt");
        assert_eq!(encode_copy_source("ünï"), "%C3%BCn%C3%AF");
    }

    #[test]
    fn statuses_map_to_kinds() {
        let s = String::new;
        assert_eq!(classify_status(404, s(), s()), S3Error::NotFound);
        assert_eq!(
            classify_status(404, "NoSuchBucket".into(), s()),
            S3Error::NoSuchBucket
        );
        assert_eq!(classify_status(412, s(), s()), S3Error::PreconditionFailed);
        assert!(matches!(
            classify_status(403, "SignatureDoesNotMatch".into(), s()),
            S3Error::AccessDenied(code) if code == "SignatureDoesNotMatch"
        ));
        assert!(matches!(
            classify_status(500, "InternalError".into(), s()),
            S3Error::Service { status: 500, .. }
        ));
    }
}
