//! Multipart uploads. CreateMultipartUpload is retried here rather than by the SDK: an
//! attempt whose answer was lost may still have created an upload on the server, and only
//! this loop knows it happened, so it aborts such strays afterwards.

use std::time::SystemTime;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, EncodingType};
use bytes::Bytes;
use tracing::{debug, warn};

use super::SdkStore;
use super::errors::{backoff, classify, is_transient};
use super::headers::user_metadata;
use super::keys::url_decode;
use super::objects::to_system_time;
use crate::s3::{PartTag, S3Error, WriteOptions};

/// How far before our first CreateMultipartUpload attempt a stray upload's initiation time
/// may lie (the server's clock against ours).
const STRAY_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(30);

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
            match self.abort_upload(key, id).await {
                Ok(()) => warn!(
                    key,
                    "aborted a stray multipart upload left by a lost answer"
                ),
                Err(e) => warn!(key, "cannot abort a stray multipart upload: {e}"),
            }
        }
    }

    pub(super) async fn create_upload(
        &self,
        key: &str,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
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
                .set_metadata(Some(user_metadata(options)))
                .set_checksum_algorithm(self.checksum.clone())
                .set_server_side_encryption(self.new_object.sse.clone())
                .set_ssekms_key_id(self.new_object.sse_kms_key_id.clone())
                .set_storage_class(self.new_object.storage_class.clone())
                .set_content_type(self.new_object.content_type_of(key, options))
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

    pub(super) async fn send_part(
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
            checksum: self.part_checksum(out.checksum_crc32_c(), out.checksum_crc64_nvme()),
        })
    }

    pub(super) async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
        let count = parts.len();
        let parts = parts
            .into_iter()
            .map(|p| {
                let part = CompletedPart::builder().part_number(p.number).e_tag(p.etag);
                match self.checksum {
                    Some(ChecksumAlgorithm::Crc64Nvme) => part.set_checksum_crc64_nvme(p.checksum),
                    _ => part.set_checksum_crc32_c(p.checksum),
                }
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
            .set_if_none_match(options.if_none_match.then(|| "*".to_string()))
            .set_if_match(options.if_match.clone())
            .send()
            .await
            .map_err(classify)?;
        debug!(key, parts = count, "CompleteMultipartUpload ok");
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    pub(super) async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
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
}
