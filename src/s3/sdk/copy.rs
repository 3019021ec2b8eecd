//! Server-side copies: CopyObject, or UploadPartCopy in parts for objects over 5 GiB. Every
//! request carries `x-amz-copy-source-if-match`, so a copy is of exactly the version asked
//! for or fails (412); a multipart copy that fails or is cut off (its future dropped at the
//! deadline) is aborted.

use std::time::SystemTime;

use tracing::{debug, warn};

use super::SdkStore;
use super::errors::classify;
use super::keys::encode_copy_source;
use super::objects::to_system_time;
use aws_sdk_s3::types::MetadataDirective;

use super::headers::user_metadata;
use crate::s3::{
    Copied, MAX_SINGLE_OBJECT, PartTag, Posix, S3Error, WRITE_ID_METADATA, WriteOptions,
};

/// Aborts a multipart copy's upload when dropped before it was disarmed: the copy failed, or
/// its future was dropped (the deadline fired) between two parts.
struct AbortOnDrop {
    store: Option<SdkStore>,
    key: String,
    upload_id: String,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (key, upload_id) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.abort_upload(&key, &upload_id).await {
                    warn!(
                        key,
                        upload_id, "cannot abort an unfinished multipart copy: {e}"
                    );
                }
            });
        }
    }
}

/// Part size of a multipart server-side copy (objects over 5 GiB only).
const COPY_PART_SIZE: u64 = 512 * 1024 * 1024;

/// An ETag as HEAD gives it, in quotes (some servers send a copy's ETag without them).
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

impl SdkStore {
    pub(super) async fn copy_object(
        &self,
        from: &str,
        to: &str,
        size: u64,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> Result<Copied, S3Error> {
        let source = format!("{}/{}", self.bucket, encode_copy_source(from));
        // CopyObject keeps the source's metadata by itself; a copy that changes some of it,
        // or a multipart copy (a new upload), must send all of it.
        let replaced = match posix.is_some() || size > MAX_SINGLE_OBJECT {
            true => Some(self.metadata_for_copy(from, if_match, posix).await?),
            false => None,
        };
        if size <= MAX_SINGLE_OBJECT {
            let mut request = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(source)
                .copy_source_if_match(if_match)
                .set_server_side_encryption(self.new_object.sse.clone())
                .set_ssekms_key_id(self.new_object.sse_kms_key_id.clone())
                .set_storage_class(self.new_object.storage_class.clone());
            if let Some(options) = &replaced {
                request = request
                    .metadata_directive(MetadataDirective::Replace)
                    .set_metadata(Some(user_metadata(options)))
                    .set_content_type(options.content_type.clone());
            }
            let out = request.send().await.map_err(classify)?;
            debug!(from, to, size, "CopyObject ok");
            let result = out.copy_object_result();
            return Ok(Copied {
                etag: quoted(result.and_then(|r| r.e_tag()).unwrap_or_default()),
                last_modified: result
                    .and_then(|r| r.last_modified())
                    .map_or_else(SystemTime::now, |t| to_system_time(Some(t))),
            });
        }
        let options = replaced.unwrap_or_default();
        let upload_id = self.create_upload(to, &options).await?;
        let mut guard = AbortOnDrop {
            store: Some(self.clone()),
            key: to.to_string(),
            upload_id: upload_id.clone(),
        };
        let parts = self
            .copy_parts(&source, to, &upload_id, size, if_match)
            .await?;
        let etag = self
            .complete_upload(to, &upload_id, parts, &WriteOptions::default())
            .await?;
        guard.store = None; // completed: nothing to abort
        Ok(Copied {
            etag: quoted(&etag),
            last_modified: SystemTime::now(),
        })
    }

    /// What a copy of `from` (at ETag `if_match`) must write when it sends the metadata
    /// itself: the source's Content-Type and user metadata, its POSIX attributes merged
    /// with `posix`.
    async fn metadata_for_copy(
        &self,
        from: &str,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> Result<WriteOptions, S3Error> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(from)
            .if_match(if_match)
            .send()
            .await
            .map_err(classify)?;
        let metadata = head.metadata().cloned().unwrap_or_default();
        let current = Posix::from_metadata(metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let posix = match (current, posix) {
            (Some(current), Some(change)) => Some(current.merged(change)),
            (current, change) => change.copied().or(current),
        };
        let kept_metadata = metadata
            .into_iter()
            .filter(|(name, _)| {
                !Posix::is_own_name(name) && !name.eq_ignore_ascii_case(WRITE_ID_METADATA)
            })
            .collect();
        Ok(WriteOptions {
            posix,
            content_type: head.content_type().map(str::to_string),
            kept_metadata,
            ..WriteOptions::default()
        })
    }

    /// The UploadPartCopy calls of a multipart copy, in order.
    async fn copy_parts(
        &self,
        source: &str,
        to: &str,
        upload_id: &str,
        size: u64,
        if_match: &str,
    ) -> Result<Vec<PartTag>, S3Error> {
        let mut parts = Vec::new();
        let mut start = 0;
        let mut number = 1;
        while start < size {
            let end = (start + COPY_PART_SIZE).min(size);
            parts.push(
                self.copy_part(source, to, upload_id, number, start..end, if_match)
                    .await?,
            );
            start = end;
            number += 1;
        }
        Ok(parts)
    }

    /// One UploadPartCopy: `range` of `source` (`bucket/key`, encoded) as part `number`.
    async fn copy_part(
        &self,
        source: &str,
        to: &str,
        upload_id: &str,
        number: i32,
        range: std::ops::Range<u64>,
        if_match: &str,
    ) -> Result<PartTag, S3Error> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(to)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(source)
            .copy_source_if_match(if_match)
            .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(classify)?;
        debug!(
            to,
            number,
            start = range.start,
            len = range.end - range.start,
            "UploadPartCopy ok"
        );
        let result = out.copy_part_result();
        Ok(PartTag {
            number,
            etag: result
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_string(),
            checksum: result
                .and_then(|r| self.part_checksum(r.checksum_crc32_c(), r.checksum_crc64_nvme())),
        })
    }

    /// UploadPartCopy of `range` of the object `from` (see [`crate::s3::ObjectStore`]).
    pub(super) async fn copy_range_as_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        from: &str,
        range: std::ops::Range<u64>,
        if_match: &str,
    ) -> Result<PartTag, S3Error> {
        let source = format!("{}/{}", self.bucket, encode_copy_source(from));
        self.copy_part(&source, key, upload_id, number, range, if_match)
            .await
    }
}
