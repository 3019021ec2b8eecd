//! Server-side copies: CopyObject, or UploadPartCopy in parts for objects over 5 GiB.

use tracing::debug;

use super::SdkStore;
use super::errors::classify;
use super::keys::encode_copy_source;
use crate::s3::{MAX_SINGLE_OBJECT, PartTag, S3Error};

/// Part size of a multipart server-side copy (objects over 5 GiB only).
const COPY_PART_SIZE: u64 = 512 * 1024 * 1024;

impl SdkStore {
    pub(super) async fn copy_object(&self, from: &str, to: &str, size: u64) -> Result<(), S3Error> {
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
        let upload_id = self.create_upload(to).await?;
        let result = self.copy_parts(&source, to, &upload_id, size).await;
        match result {
            Ok(parts) => self.complete_upload(to, &upload_id, parts).await.map(drop),
            Err(e) => {
                let _ = self.abort_upload(to, &upload_id).await;
                Err(e)
            }
        }
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
