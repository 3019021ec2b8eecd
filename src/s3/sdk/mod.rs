//! [`ObjectStore`] over the AWS SDK for Rust: retries with backoff, timeouts, custom endpoints.
//!
//! Credentials and region come from aws-config's default chain (environment, shared profile,
//! SSO, web identity, IMDS) unless the command line overrides them. Nothing here logs a
//! credential or a signature: request logs carry the operation, key, range and status only.
//!
//! One job per file: client set-up and the trait's entry points (here); single-request
//! object calls (`objects`); the resuming ranged GET (`get`); multipart uploads with their
//! own retry and the abort of strays (`multipart`); the GET's own HTTP/1.1 exchange for
//! `http://` endpoints (`direct_get`); server-side copies (`copy`); small objects with metadata, whole, for the shared cache
//! (`tagged`); how keys
//! are encoded on the wire (`keys`); what an SDK error means (`errors`); the headers the
//! command line adds (`headers`); the trust store of `--ca-bundle` (`tls`).

mod bind;
mod copy;
mod direct_get;
mod direct_tls;
mod errors;
mod get;
mod headers;
mod keys;
mod metrics;
mod multipart;
mod objects;
mod tagged;
mod tls;

use std::ops::Range;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::types::ChecksumAlgorithm;
use bytes::Bytes;

use super::config::UploadChecksums;
use super::{
    Copied, ListPage, ObjectInfo, ObjectStore, PartTag, Posix, S3Config, S3Error, WriteOptions,
};

/// Longest wait between two attempts of a request.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);

/// Region used when neither the command line nor the provider chain names one.
const FALLBACK_REGION: &str = "us-east-1";

/// An S3 bucket reached through aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct SdkStore {
    client: Client,
    bucket: String,
    /// CRC32C on uploads, or none.
    checksum: Option<ChecksumAlgorithm>,
    /// Encryption, storage class and Content-Type of new objects.
    new_object: headers::NewObject,
    /// Attempts for a GET whose body breaks (the SDK retries only until the headers).
    max_attempts: u32,
    /// Longest wait for the next byte of a GET body.
    no_progress: std::time::Duration,
    /// The GET's own exchange, for a plain `http://` endpoint (see `direct_get`).
    direct: Option<std::sync::Arc<direct_get::DirectGet>>,
}

impl SdkStore {
    /// Builds the client from `config` and the default provider chain. Makes no request;
    /// fails only on an unusable `--ca-bundle`.
    pub async fn new(config: &S3Config) -> Result<Self, String> {
        let http = match &config.ca_bundle {
            Some(bundle) => Some(tls::client_trusting(bundle)?),
            None => None,
        };
        // --bind applies to the bucket's connections only: the credential providers' (IMDS,
        // container endpoints) are local and may have no route through the NICs named.
        let bound = match config.bind.is_empty() {
            true => None,
            false => {
                bind::check_interfaces(&config.bind)?;
                let context = config
                    .ca_bundle
                    .as_deref()
                    .map(tls::context_trusting)
                    .transpose()?;
                Some(bind::client_bound_to(&config.bind, context))
            }
        };
        let mut store = Self::with_http_client(config, http).await;
        if let Some(bound) = bound {
            let conf = store
                .client
                .config()
                .to_builder()
                .http_client(bound)
                .build();
            store.client = Client::from_conf(conf);
        }
        Ok(store)
    }

    /// [`SdkStore::new`] over `http` (the SDK's default HTTPS client when `None`).
    async fn with_http_client(
        config: &S3Config,
        http: Option<aws_sdk_s3::config::SharedHttpClient>,
    ) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(http) = http {
            loader = loader.http_client(http);
        }
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
            // With `--upload-checksums off`, only what an operation requires (several
            // S3-compatible servers refuse checksums). Otherwise every upload request that
            // can carry one does: the algorithm set on a request is only announced
            // (`x-amz-sdk-checksum-algorithm`), not computed, under `WhenRequired` (found by
            // the checksum test at the proxy: no PUT or part carried a CRC32C).
            .request_checksum_calculation(match config.upload_checksums {
                UploadChecksums::Off => RequestChecksumCalculation::WhenRequired,
                _ => RequestChecksumCalculation::WhenSupported,
            })
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Backoff at most 2 s between attempts: with the no-progress timeout per attempt,
            // a dead server fails a request in well under 30 s (see `s3::health`).
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(timeouts);
        if shared.region().is_none() {
            builder = builder.region(Region::new(FALLBACK_REGION));
        }
        builder = builder.interceptor(metrics::RequestMetrics);
        if let Some(every) = headers::EveryRequest::from_config(config) {
            builder = builder.interceptor(every);
        }
        if config.transfer_acceleration {
            builder = builder.accelerate(true);
        }
        if config.dual_stack {
            builder = builder.use_dual_stack(true);
        }
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            checksum: match config.upload_checksums {
                UploadChecksums::Crc32c => Some(ChecksumAlgorithm::Crc32C),
                UploadChecksums::Crc64Nvme => Some(ChecksumAlgorithm::Crc64Nvme),
                UploadChecksums::Off => None,
            },
            new_object: headers::NewObject::from_config(config),
            max_attempts: config.max_attempts,
            no_progress: config.read_timeout,
            direct: direct_exchange(config),
        }
    }
}

impl SdkStore {
    /// A part's checksum in this store's upload algorithm, from the answer's two fields.
    fn part_checksum(&self, crc32c: Option<&str>, crc64nvme: Option<&str>) -> Option<String> {
        match self.checksum {
            Some(ChecksumAlgorithm::Crc64Nvme) => crc64nvme,
            _ => crc32c,
        }
        .map(str::to_string)
    }

    /// The region requests are signed for.
    pub fn region(&self) -> Option<&str> {
        self.client.config().region().map(|r| r.as_ref())
    }
}

#[cfg(test)]
mod scripted_server;
#[cfg(test)]
mod tests;

/// The GET's own exchange for `config`'s endpoint (see `direct_get`): not with `--bind` (the
/// SDK's client picks the interface), nor for unsigned requests (nothing to presign with),
/// nor where a proxy is configured in the environment (the exchange connects directly), nor
/// without an endpoint URL: AWS's own endpoints keep the SDK's client until the exchange is
/// measured against them (it cannot be from here).
fn direct_exchange(config: &S3Config) -> Option<std::sync::Arc<direct_get::DirectGet>> {
    const PROXIES: [&str; 6] = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    let proxied = PROXIES
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    direct_exchange_unless(config, proxied)
}

/// [`direct_exchange`], none if `proxied`.
fn direct_exchange_unless(
    config: &S3Config,
    proxied: bool,
) -> Option<std::sync::Arc<direct_get::DirectGet>> {
    if !config.bind.is_empty() || config.no_sign_request || proxied {
        return None;
    }
    let exchange = direct_get::DirectGet::for_endpoint(
        config.endpoint_url.as_deref(),
        || direct_tls::Tls::trusting(config.ca_bundle.as_deref()),
        config.user_agent_prefix.as_deref(),
        (config.connect_timeout, config.read_timeout),
    )?;
    let exchange = std::sync::Arc::new(exchange);
    direct_get::DirectGet::sweep_while_alive(&exchange);
    tracing::info!(
        tls = exchange.uses_tls(),
        "GETs go through mount-s3's own HTTP/1.1 exchange (presigned by the SDK)"
    );
    Some(exchange)
}

/// Runs one request as a task of its own. The SDK's request machinery needs a deep stack in
/// debug builds (its endpoint resolver alone takes most of a 2 MiB thread stack), and a FUSE
/// thread polls an operation's first steps on its own stack; a task starts at the top of a
/// runtime worker's. Dropping the returned future aborts the task, as dropping the request
/// itself would (a deadline cuts a request off that way).
async fn own_task<T, F>(request: F) -> Result<T, S3Error>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, S3Error>> + Send + 'static,
{
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(tokio::spawn(request));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) => Err(S3Error::Network(format!("request task failed: {e}"))),
    }
}

impl ObjectStore for SdkStore {
    async fn head(&self, key: &str) -> Result<ObjectInfo, S3Error> {
        let (store, key) = (self.clone(), key.to_string());
        own_task(async move { store.head_object(&key).await }).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, S3Error> {
        let (store, prefix) = (self.clone(), prefix.to_string());
        own_task(async move {
            store
                .list_objects(&prefix, delimited, token, max_keys)
                .await
        })
        .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        let (store, key) = (self.clone(), key.to_string());
        let if_match = if_match.map(str::to_string);
        own_task(async move {
            store
                .get_object_range(&key, range, if_match.as_deref())
                .await
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<String, S3Error> {
        let (store, key, options) = (self.clone(), key.to_string(), options.clone());
        own_task(async move { store.put_object(&key, data, &options).await }).await
    }

    async fn create_multipart(&self, key: &str, options: &WriteOptions) -> Result<String, S3Error> {
        let (store, key, options) = (self.clone(), key.to_string(), options.clone());
        own_task(async move { store.create_upload(&key, &options).await }).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<PartTag, S3Error> {
        let (store, key, id) = (self.clone(), key.to_string(), upload_id.to_string());
        own_task(async move { store.send_part(&key, &id, number, data).await }).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
        let (store, key, id) = (self.clone(), key.to_string(), upload_id.to_string());
        let options = options.clone();
        own_task(async move { store.complete_upload(&key, &id, parts, &options).await }).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        from: &str,
        range: Range<u64>,
        if_match: &str,
    ) -> Result<PartTag, S3Error> {
        let (store, key, id) = (self.clone(), key.to_string(), upload_id.to_string());
        let (from, if_match) = (from.to_string(), if_match.to_string());
        own_task(async move {
            store
                .copy_range_as_part(&key, &id, number, &from, range, &if_match)
                .await
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let (store, key, id) = (self.clone(), key.to_string(), upload_id.to_string());
        own_task(async move { store.abort_upload(&key, &id).await }).await
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        let (store, key) = (self.clone(), key.to_string());
        let if_match = if_match.map(str::to_string);
        own_task(async move { store.delete_object(&key, if_match.as_deref()).await }).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> Result<Copied, S3Error> {
        let (store, from, to) = (self.clone(), from.to_string(), to.to_string());
        let (if_match, posix) = (if_match.to_string(), posix.copied());
        own_task(async move {
            store
                .copy_object(&from, &to, size, &if_match, posix.as_ref())
                .await
        })
        .await
    }
}
