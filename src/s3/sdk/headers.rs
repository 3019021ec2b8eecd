//! What requests carry because of the command line: on every request, requester pays, the
//! expected bucket owner and a User-Agent prefix (an SDK interceptor, so no call site can
//! forget them); on every request that makes an object (PUT, CreateMultipartUpload,
//! CopyObject), the server-side encryption, the storage class and, with
//! `--infer-content-type`, a Content-Type guessed from the key's extension.

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};

use std::collections::HashMap;

use crate::s3::{S3Config, WRITE_ID_METADATA, WriteOptions};

/// Headers added to every request (see the module's comment).
#[derive(Debug, Clone, Default)]
pub(super) struct EveryRequest {
    requester_pays: bool,
    expected_bucket_owner: Option<String>,
    user_agent_prefix: Option<String>,
}

impl EveryRequest {
    /// The headers `config` asks for, or `None` when it asks for none.
    pub(super) fn from_config(config: &S3Config) -> Option<Self> {
        let me = Self {
            requester_pays: config.requester_pays,
            expected_bucket_owner: config.expected_bucket_owner.clone(),
            user_agent_prefix: config.user_agent_prefix.clone(),
        };
        let any = me.requester_pays
            || me.expected_bucket_owner.is_some()
            || me.user_agent_prefix.is_some();
        any.then_some(me)
    }
}

impl Intercept for EveryRequest {
    fn name(&self) -> &'static str {
        "mount-s3 command-line headers"
    }

    // Before signing: `x-amz-*` headers are signed.
    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request_mut().headers_mut();
        if self.requester_pays {
            headers.try_insert("x-amz-request-payer", "requester")?;
        }
        if let Some(owner) = &self.expected_bucket_owner {
            headers.try_insert("x-amz-expected-bucket-owner", owner.clone())?;
        }
        Ok(())
    }

    // After signing: SigV4 does not sign User-Agent, and the SDK sets it late.
    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(prefix) = &self.user_agent_prefix else {
            return Ok(());
        };
        let headers = context.request_mut().headers_mut();
        let agent = match headers.get("user-agent") {
            Some(rest) => format!("{prefix} {rest}"),
            None => prefix.clone(),
        };
        headers.try_insert("user-agent", agent)?;
        Ok(())
    }
}

/// What a request that makes an object carries (see the module's comment).
#[derive(Debug, Clone, Default)]
pub(super) struct NewObject {
    pub(super) sse: Option<ServerSideEncryption>,
    pub(super) sse_kms_key_id: Option<String>,
    pub(super) storage_class: Option<StorageClass>,
    infer_content_type: bool,
}

impl NewObject {
    /// The headers `config` asks for.
    pub(super) fn from_config(config: &S3Config) -> Self {
        Self {
            sse: config.sse.as_deref().map(ServerSideEncryption::from),
            sse_kms_key_id: config.sse_kms_key_id.clone(),
            storage_class: config.storage_class.as_deref().map(StorageClass::from),
            infer_content_type: config.infer_content_type,
        }
    }

    /// The Content-Type of a new object at `key`: guessed from its extension with
    /// `--infer-content-type`, else none (S3 then stores binary/octet-stream).
    pub(super) fn content_type(&self, key: &str) -> Option<String> {
        if !self.infer_content_type {
            return None;
        }
        let name = key.rsplit('/').next().unwrap_or(key);
        mime_guess::from_path(name).first_raw().map(str::to_string)
    }

    /// The Content-Type of a new object written as `options` say: theirs, else as
    /// [`NewObject::content_type`].
    pub(super) fn content_type_of(&self, key: &str, options: &WriteOptions) -> Option<String> {
        options
            .content_type
            .clone()
            .or_else(|| self.content_type(key))
    }
}

/// The user metadata a new object carries: what `options` keeps from a copy's source, the
/// write id, and its POSIX attributes when `options` has them.
pub(super) fn user_metadata(options: &WriteOptions) -> HashMap<String, String> {
    let mut metadata: HashMap<String, String> = options.kept_metadata.iter().cloned().collect();
    if !options.write_id.is_empty() {
        metadata.insert(WRITE_ID_METADATA.to_string(), options.write_id.clone());
    }
    if let Some(posix) = &options.posix {
        for (name, value) in posix.to_metadata() {
            metadata.insert(name.to_string(), value);
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_come_from_the_extension_only_when_asked() {
        let mut config = S3Config::new("b");
        assert_eq!(NewObject::from_config(&config).content_type("a.json"), None);
        config.infer_content_type = true;
        let headers = NewObject::from_config(&config);
        assert_eq!(
            headers.content_type("dir/a.json").as_deref(),
            Some("application/json")
        );
        assert_eq!(headers.content_type("x.html").as_deref(), Some("text/html"));
        assert_eq!(headers.content_type("no-extension"), None);
        assert_eq!(headers.content_type("dir.json/plain"), None);
    }

    #[test]
    fn no_interceptor_unless_a_flag_asks() {
        let mut config = S3Config::new("b");
        assert!(EveryRequest::from_config(&config).is_none());
        config.requester_pays = true;
        assert!(EveryRequest::from_config(&config).is_some());
    }
}
