//! How to reach the bucket: plain data built by `cli`, consumed by `s3::sdk`.

use std::path::PathBuf;
use std::time::Duration;

/// The checksum sent with every upload (`--upload-checksums`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadChecksums {
    /// CRC32C of every part and PUT (Mountpoint's default).
    Crc32c,
    /// CRC64NVME of every part and PUT; S3 keeps a full-object CRC64NVME of multipart
    /// uploads, so the object's checksum does not depend on its part size.
    Crc64Nvme,
    /// None, for servers that refuse checksums.
    Off,
}

/// Attempts per request unless `AWS_MAX_ATTEMPTS` says otherwise. Mountpoint's default is
/// 10; ours is 4 so that a dead server fails a call within 30 s (see `s3::health`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;

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
    /// The checksum of every uploaded part and object (`--upload-checksums`).
    pub upload_checksums: UploadChecksums,
    /// `x-amz-request-payer: requester` on every request (`--requester-pays`).
    pub requester_pays: bool,
    /// `x-amz-expected-bucket-owner` on every request (`--expected-bucket-owner`).
    pub expected_bucket_owner: Option<String>,
    /// Prepended to every request's User-Agent (`--user-agent-prefix`).
    pub user_agent_prefix: Option<String>,
    /// Server-side encryption of new objects: `aws:kms`, `aws:kms:dsse` or `AES256` (`--sse`).
    pub sse: Option<String>,
    /// KMS key ARN for `--sse aws:kms*` (`--sse-kms-key-id`).
    pub sse_kms_key_id: Option<String>,
    /// Storage class of new objects (`--storage-class`).
    pub storage_class: Option<String>,
    /// A Content-Type for new objects from their extension (`--infer-content-type`).
    pub infer_content_type: bool,
    /// S3 Transfer Acceleration endpoints (`--transfer-acceleration`).
    pub transfer_acceleration: bool,
    /// Dual-stack (IPv4 and IPv6) endpoints (`--dual-stack`).
    pub dual_stack: bool,
    /// PEM bundle of the certificate authorities to trust instead of the system's
    /// (`--ca-bundle`, `AWS_CA_BUNDLE`).
    pub ca_bundle: Option<PathBuf>,
    /// Network interfaces every connection is bound to, in turn (`--bind`); empty: the
    /// default route.
    pub bind: Vec<String>,
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
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(5),
            upload_checksums: UploadChecksums::Crc32c,
            requester_pays: false,
            expected_bucket_owner: None,
            user_agent_prefix: None,
            sse: None,
            sse_kms_key_id: None,
            storage_class: None,
            infer_content_type: false,
            transfer_acceleration: false,
            dual_stack: false,
            ca_bundle: None,
            bind: Vec::new(),
        }
    }
}
