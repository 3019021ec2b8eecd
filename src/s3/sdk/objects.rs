//! The object calls that are one request each: HEAD, LIST (one page), PUT and DELETE. The
//! SDK's standard retry covers them.

use std::time::SystemTime;

use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::EncodingType;
use bytes::Bytes;
use tracing::debug;

use super::SdkStore;
use super::errors::classify;
use super::headers::user_metadata;
use super::keys::url_decode;
use crate::s3::{ListPage, ObjectInfo, Posix, S3Error, WRITE_ID_METADATA, WriteOptions};

impl SdkStore {
    pub(super) async fn head_object(&self, key: &str) -> Result<ObjectInfo, S3Error> {
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
            write_id: out
                .metadata()
                .and_then(|m| m.get(WRITE_ID_METADATA))
                .cloned(),
            posix: out.metadata().and_then(|m| {
                Posix::from_metadata(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            }),
        })
    }

    pub(super) async fn list_objects(
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
                    write_id: None,
                    posix: None,
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

    pub(super) async fn put_object(
        &self,
        key: &str,
        data: Bytes,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
        let len = data.len();
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(data.into())
            .set_metadata(Some(user_metadata(options)))
            .set_if_none_match(options.if_none_match.then(|| "*".to_string()))
            .set_if_match(options.if_match.clone())
            .set_checksum_algorithm(self.checksum.clone())
            .set_server_side_encryption(self.new_object.sse.clone())
            .set_ssekms_key_id(self.new_object.sse_kms_key_id.clone())
            .set_storage_class(self.new_object.storage_class.clone())
            .set_content_type(self.new_object.content_type_of(key, options))
            .send()
            .await
            .map_err(classify)?;
        debug!(key, len, "PUT ok");
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    pub(super) async fn delete_object(
        &self,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(if_match.map(str::to_string))
            .send()
            .await
            .map_err(classify)?;
        debug!(key, "DELETE ok");
        Ok(())
    }
}

/// A time from the SDK as a `SystemTime` (the epoch when missing or out of range).
pub(super) fn to_system_time(time: Option<&DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
