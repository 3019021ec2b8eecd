//! How to reach the bucket: plain data built by `cli`, consumed by `s3::sdk`.

use std::time::Duration;

/// Connection settings for the S3 client.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Bucket name (or access point ARN).
    pub bucket: String,
    /// Region; `None` lets the default provider chain decide, then `us-east-1`.
    pub region: Option<String>,
    /// Custom endpoint for S3-compatible servers.
    pub endpoint_url: Option<String>,
    /// Address the bucket in the path rather than the host name.
    pub force_path_style: bool,
    /// Send unsigned requests (public buckets).
    pub no_sign_request: bool,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    /// Attempts per request, the first included, for transient errors.
    pub max_attempts: u32,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for the first byte of a response, and between bytes of a GET body: the
    /// no-progress timeout (`--no-progress-timeout`), after which a connection is dead.
    pub read_timeout: Duration,
    /// Send a CRC32C with every uploaded part and object (`--upload-checksums crc32c`).
    pub upload_checksums: bool,
}

impl S3Config {
    /// Settings with our defaults for everything but the bucket.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: None,
            endpoint_url: None,
            force_path_style: false,
            no_sign_request: false,
            profile: None,
            max_attempts: 4,
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(5),
            upload_checksums: true,
        }
    }
}
