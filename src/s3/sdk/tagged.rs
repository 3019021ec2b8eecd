//! Small objects with user metadata, whole: the shared cache's blocks (`--cache-xz`). A PUT
//! carries the metadata and the body's CRC32C (which S3 checks); a GET asks for the stored
//! checksum back (`x-amz-checksum-mode: enabled`). Server-side encryption is the store's
//! (`--sse`, `--sse-kms-key-id`), checked in the answer: a block the server did not encrypt
//! as asked is an error, as Mountpoint treats it.

use std::collections::BTreeMap;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::types::{ChecksumMode, StorageClass};
use bytes::Bytes;
use tracing::debug;

use super::SdkStore;
use super::errors::classify;
use crate::s3::{BlockStore, S3Error, StoreFuture, TaggedObject, TaggedPut};

impl SdkStore {
    /// The same client and settings for another bucket (the shared cache's: same region,
    /// endpoint and credentials, as Mountpoint requires).
    pub fn with_bucket(&self, bucket: &str) -> Self {
        Self {
            bucket: bucket.to_string(),
            ..self.clone()
        }
    }

    async fn put_tagged_object(
        &self,
        key: &str,
        data: Bytes,
        put: TaggedPut,
    ) -> Result<(), S3Error> {
        let len = data.len();
        let metadata = put.metadata.into_iter().collect();
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(data.into())
            .set_metadata(Some(metadata))
            .set_checksum_crc32_c(put.crc32c)
            .set_server_side_encryption(self.new_object.sse.clone())
            .set_ssekms_key_id(self.new_object.sse_kms_key_id.clone())
            .set_storage_class(put.storage_class.as_deref().map(StorageClass::from))
            .send()
            .await
            .map_err(classify)?;
        if let Some(wanted) = &self.new_object.sse
            && out.server_side_encryption() != Some(wanted)
        {
            return Err(S3Error::Service {
                status: 200,
                code: "EncryptionMismatch".into(),
                message: format!(
                    "{key} was stored with encryption {:?}, not {wanted:?}",
                    out.server_side_encryption()
                ),
            });
        }
        if let Some(wanted) = &self.new_object.sse_kms_key_id
            && out.ssekms_key_id() != Some(wanted.as_str())
        {
            return Err(S3Error::Service {
                status: 200,
                code: "EncryptionMismatch".into(),
                message: format!("{key} was stored with another KMS key"),
            });
        }
        debug!(bucket = %self.bucket, key, len, "PUT (tagged) ok");
        Ok(())
    }

    async fn get_tagged_object(&self, key: &str) -> Result<Option<TaggedObject>, S3Error> {
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        let out = match response {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
                return Ok(None);
            }
            Err(e) => match classify(e) {
                S3Error::NotFound => return Ok(None),
                other => return Err(other),
            },
        };
        let metadata: BTreeMap<String, String> = out
            .metadata()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let crc32c = out.checksum_crc32_c().map(str::to_string);
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| S3Error::Network(format!("GET body of {key}: {e}")))?
            .into_bytes();
        debug!(bucket = %self.bucket, key, len = data.len(), "GET (tagged) ok");
        Ok(Some(TaggedObject {
            data,
            metadata,
            crc32c,
        }))
    }
}

impl BlockStore for SdkStore {
    fn put_tagged(&self, key: &str, data: Bytes, put: TaggedPut) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        Box::pin(async move { self.put_tagged_object(&key, data, put).await })
    }

    fn get_tagged(&self, key: &str) -> StoreFuture<'_, Option<TaggedObject>> {
        let key = key.to_string();
        Box::pin(async move { self.get_tagged_object(&key).await })
    }
}
