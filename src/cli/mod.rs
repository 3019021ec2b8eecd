//! The command line, flag for flag Mountpoint's (1.23), turned into one config struct per layer.
//!
//! Validation happens here, before anything is forked or mounted, and every problem is one
//! line that says what to fix. Checks that need the network (bucket, credentials, endpoint)
//! happen at start-up in `main`. One job per file: the flags (here), how their values are
//! read (`values`), the checks that need no network (`validate`), and the config of each
//! layer built from them (`layers`), and Mountpoint's `BUCKET DIRECTORY -o OPTIONS` form
//! (`options_form`). `mountpoint_flags` holds Mountpoint's list for the compatibility test.

mod layers;
#[cfg(test)]
mod mountpoint_flags;
pub mod options_form;
pub mod unstable;
mod validate;
pub use unstable::PID_FILE_VARIABLE;
pub mod values;

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use values::{
    Ttl, parse_bucket, parse_header_value, parse_kms_key_arn, parse_mode, parse_part_size,
    parse_ttl,
};

/// Default part size for ranged GETs and multipart uploads (8 MiB, as Mountpoint).
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// The most FUSE dispatch threads a mount starts, whatever `--max-threads` asks (Mountpoint
/// sets no bound; a larger value is accepted and served by this many, with a warning).
pub const MAX_DISPATCH_THREADS: usize = 1024;

/// `--metadata-ttl minimal`: the shortest TTL that still absorbs the kernel's bursts of
/// lookups and getattrs for one program call.
pub const MINIMAL_TTL: Duration = Duration::from_secs(1);

/// With `--metadata-ttl minimal`, how old a stat an open may use without asking S3: only the
/// one the kernel's lookup for this same open just fetched.
pub const OPEN_REVALIDATE_AFTER: Duration = Duration::from_millis(100);

// An expired stat (`fetched_within` dates its fetch from its expiry) must read as older than
// the open window, so the window must stay shorter than the TTL.
const _: () = assert!(OPEN_REVALIDATE_AFTER.as_millis() < MINIMAL_TTL.as_millis());

/// Default `--metadata-ttl` with `--cache` (as Mountpoint): blocks are reused after one HEAD
/// per minute confirms the ETag.
pub const CACHE_DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Default `--cache-block-size`, in KiB (1 MiB, as Mountpoint).
pub const DEFAULT_CACHE_BLOCK_KIB: u64 = 1024;

const BUCKET: &str = "Bucket options";
const CREDENTIALS: &str = "AWS credentials options";
const MOUNT: &str = "Mount options";
const CLIENT: &str = "Client options";
const LOGGING: &str = "Logging options";
const CACHING: &str = "Caching options";
const ADVANCED: &str = "Advanced options";

/// Mount an S3 bucket as a local directory.
#[derive(Debug, Parser)]
#[command(
    name = "mount-s3",
    version,
    about,
    max_term_width = 100,
    after_help = "fstab form: mount-s3 <BUCKET> <DIRECTORY> -o <OPTIONS> (comma-separated flags without '--'; \\, \\\" and \\\\ escape)\nShell completions: mount-s3 completions <bash|zsh|fish|elvish|powershell>"
,
    // --cache-block-size cuts the blocks of either cache.
    group(clap::ArgGroup::new("caching").args(["cache", "cache_xz"]).multiple(true)),
    // --staging-dir and --max-staging-size are for either way of staging.
    group(clap::ArgGroup::new("staging").args(["staged_writes", "incremental_upload"]).multiple(true))
)]
pub struct Args {
    /// Name of the bucket to mount, an access point ARN, or an S3 URI (s3://bucket/prefix/)
    #[arg(value_name = "BUCKET", value_parser = |s: &str| parse_bucket(s).map(|_| s.to_string()))]
    pub bucket: String,

    /// Directory to mount the bucket at
    #[arg(value_name = "DIRECTORY")]
    pub mount_point: PathBuf,

    /// Prefix inside the bucket to mount, ending in '/' [default: the whole bucket]
    #[arg(long, help_heading = BUCKET, value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// AWS region of the bucket [default: from the environment or profile, else us-east-1]
    #[arg(long, help_heading = BUCKET, value_name = "REGION")]
    pub region: Option<String>,

    /// S3 endpoint URL, for S3-compatible servers
    #[arg(long, help_heading = BUCKET, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Address the bucket in the URL path instead of the host name
    #[arg(long, help_heading = BUCKET)]
    pub force_path_style: bool,

    /// Use S3 Transfer Acceleration endpoints (must be enabled on the bucket)
    #[arg(long, help_heading = BUCKET)]
    pub transfer_acceleration: bool,

    /// Use dual-stack (IPv4 and IPv6) endpoints
    #[arg(long, help_heading = BUCKET)]
    pub dual_stack: bool,

    /// Send 'x-amz-request-payer: requester' with every request
    #[arg(long, help_heading = BUCKET)]
    pub requester_pays: bool,

    /// Type of bucket: general-purpose, or directory (S3 Express One Zone, whose listings are
    /// unordered); inferred from a name ending in `--x-s3` when not given
    #[arg(long, help_heading = BUCKET, value_name = "TYPE", value_parser = ["general-purpose", "directory"])]
    pub bucket_type: Option<String>,

    /// Account ID that must own the bucket; requests to a bucket of another owner are denied
    #[arg(long, help_heading = BUCKET, value_name = "AWS_ACCOUNT_ID", value_parser = parse_header_value)]
    pub expected_bucket_owner: Option<String>,

    /// Storage class of new objects (STANDARD, INTELLIGENT_TIERING, ...)
    #[arg(long, help_heading = BUCKET, value_name = "CLASS", value_parser = parse_header_value)]
    pub storage_class: Option<String>,

    /// Server-side encryption of new objects
    #[arg(long, help_heading = BUCKET, value_name = "ALGORITHM", value_parser = ["aws:kms", "aws:kms:dsse", "AES256"])]
    pub sse: Option<String>,

    /// KMS key ARN for --sse aws:kms or aws:kms:dsse (key ids and aliases are not accepted)
    #[arg(long, help_heading = BUCKET, value_name = "AWS_KMS_KEY_ARN", requires = "sse", value_parser = parse_kms_key_arn)]
    pub sse_kms_key_id: Option<String>,

    /// Checksum sent with every upload: crc32c, crc64nvme, or off for servers that reject checksums [default: crc32c, off for Outposts]
    #[arg(long, help_heading = BUCKET, value_name = "ALGORITHM", value_parser = ["crc32c", "crc64nvme", "off"])]
    pub upload_checksums: Option<String>,

    /// Give new objects a Content-Type from their file extension (not updated on rename)
    #[arg(long, help_heading = BUCKET)]
    pub infer_content_type: bool,

    /// Do not sign requests (for public buckets); no credentials are loaded
    #[arg(long, help_heading = CREDENTIALS)]
    pub no_sign_request: bool,

    /// Named profile of the AWS shared config and credentials files
    #[arg(long, help_heading = CREDENTIALS, value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Mount read-only
    #[arg(long, help_heading = MOUNT)]
    pub read_only: bool,

    /// Allow deleting files (unlink, and rename, which deletes its source)
    #[arg(long, help_heading = MOUNT)]
    pub allow_delete: bool,

    /// Allow replacing existing files (open with O_TRUNC, rename onto them)
    #[arg(long, help_heading = MOUNT)]
    pub allow_overwrite: bool,

    /// Append to existing objects: an open with O_APPEND stages the new bytes, and the commit copies the old object on the server and uploads them (any bucket)
    #[arg(long, help_heading = MOUNT)]
    pub incremental_upload: bool,

    /// Stage files opened for writing in local files, so any write works (writes anywhere, O_RDWR, truncation, O_APPEND); the object is replaced whole at close or fsync, its unchanged parts copied on the server (ours)
    #[arg(long, help_heading = MOUNT)]
    pub staged_writes: bool,

    /// Where staged files are kept [default: the --cache directory, else a directory of your own in the system's temporary directory] (ours)
    #[arg(long, help_heading = MOUNT, value_name = "DIR", requires = "staging")]
    pub staging_dir: Option<PathBuf>,

    /// Most disk space staged files may take, in MiB [default: keep 5% of its filesystem free] (ours)
    #[arg(long, help_heading = MOUNT, value_name = "MiB", requires = "staging", value_parser = clap::value_parser!(u64).range(1..=u64::MAX >> 20))]
    pub max_staging_size: Option<u64>,

    /// Keep mode, owner, group and mtime in object metadata as s3fs does (x-amz-meta-mode, -uid, -gid, -mtime), so chmod, chown, utimes and symbolic links work and mkdir writes a `dir/` marker; costs a HEAD per listed entry (ours)
    #[arg(long, help_heading = MOUNT)]
    pub posix_metadata: bool,

    /// Kernel readahead of the mount in KiB, as root: also how much the kernel reads around each mmap page fault: 12 keeps what numpy memmap's random touches fetch under 4× what they touch, at the cost of programs reading a few KiB at a time (ours)
    #[arg(long, help_heading = MOUNT, value_name = "KiB", default_value_t = crate::fuse::session::DEFAULT_READ_AHEAD_KIB, value_parser = clap::value_parser!(u32).range(4..=65536))]
    pub read_ahead: u32,

    /// Rename directories of at most N keys (a copy of each, then the deletes; EXDEV above N, so `mv` copies instead) [default: 0, directories are not renamed] (ours)
    #[arg(long, help_heading = MOUNT, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub max_rename_keys: u64,

    /// Unmount automatically when the process exits, even if killed
    #[arg(long, help_heading = MOUNT)]
    pub auto_unmount: bool,

    /// Allow root to access the mount
    #[arg(long, help_heading = MOUNT)]
    pub allow_root: bool,

    /// Allow every user to access the mount
    #[arg(long, help_heading = MOUNT, conflicts_with = "allow_root")]
    pub allow_other: bool,

    /// Do not allow programs to be executed from the mount (fstab's noexec; ours, not Mountpoint's)
    #[arg(long, help_heading = MOUNT)]
    pub noexec: bool,

    /// Owner uid of files and directories [default: the mounting user]
    #[arg(long, help_heading = MOUNT, value_name = "UID")]
    pub uid: Option<u32>,

    /// Owner gid of files and directories [default: the mounting user's group]
    #[arg(long, help_heading = MOUNT, value_name = "GID")]
    pub gid: Option<u32>,

    /// Permission bits of directories, in octal
    #[arg(long, help_heading = MOUNT, value_name = "MODE", default_value = "0755", value_parser = parse_mode)]
    pub dir_mode: u16,

    /// Permission bits of files, in octal
    #[arg(long, help_heading = MOUNT, value_name = "MODE", default_value = "0644", value_parser = parse_mode)]
    pub file_mode: u16,

    /// Stay in the foreground instead of detaching
    #[arg(short, long)]
    pub foreground: bool,

    /// Throughput to aim for, in Gbps: caps the GETs in flight (one per 0.72 Gbps; default: from the EC2 instance type, else no cap)
    #[arg(long, help_heading = CLIENT, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub maximum_throughput_gbps: Option<u64>,

    /// Number of FUSE dispatch threads (more than 1024 are served by 1024, with a warning)
    #[arg(long, help_heading = CLIENT, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_threads: u64,

    /// Part size for ranged GETs and multipart uploads, in bytes
    #[arg(long, help_heading = CLIENT, value_name = "SIZE", default_value_t = DEFAULT_PART_SIZE, value_parser = parse_part_size)]
    pub part_size: u64,

    /// Part size for ranged GETs, in bytes [default: --part-size]
    #[arg(long, help_heading = CLIENT, value_name = "SIZE", value_parser = parse_part_size, conflicts_with = "part_size")]
    pub read_part_size: Option<u64>,

    /// Part size for multipart uploads, in bytes, at least 5 MiB [default: --part-size]
    #[arg(long, help_heading = CLIENT, value_name = "SIZE", value_parser = parse_part_size, conflicts_with = "part_size")]
    pub write_part_size: Option<u64>,

    /// PEM bundle of the certificate authorities to trust instead of the system's
    #[arg(long, help_heading = CLIENT, value_name = "PATH", env = "AWS_CA_BUNDLE", hide_env_values = true)]
    pub ca_bundle: Option<PathBuf>,

    /// A network interface to bind the S3 connections to; repeat for several, taken in turn (needs root or CAP_NET_RAW)
    #[arg(long, help_heading = CLIENT, value_name = "NETWORK_INTERFACE")]
    pub bind: Option<Vec<String>>,

    /// Longest any one S3 request may take, retries included, before the program gets EIO (ours, not Mountpoint's)
    #[arg(long, help_heading = CLIENT, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_deadline: u64,

    /// Seconds without a byte from S3 (no answer to a request, a GET body that stops) after which a connection counts as dead; requests then fail at once until S3 answers again (ours, not Mountpoint's)
    #[arg(long, help_heading = CLIENT, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub no_progress_timeout: u64,

    /// Memory for prefetched data across all open files, in MiB [default: 1/8 of RAM, 64-512] (ours, not Mountpoint's)
    #[arg(long, help_heading = CLIENT, value_name = "MiB", value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub memory_target: Option<u64>,

    /// Write logs to a file in this directory instead of syslog
    #[arg(short, long, help_heading = LOGGING, value_name = "DIRECTORY")]
    pub log_directory: Option<PathBuf>,

    /// Log the metrics (and a status line) every 5 seconds
    #[arg(long, help_heading = LOGGING)]
    pub log_metrics: bool,

    /// Serve metrics for Prometheus at http://ADDRESS/metrics (ours, off by default)
    #[arg(long, help_heading = LOGGING, value_name = "ADDRESS:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,

    /// Export metrics over OTLP/HTTP (JSON) to this endpoint, e.g. http://localhost:4318
    #[arg(long, help_heading = LOGGING, value_name = "ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// OTLP export interval in seconds [default: 60]
    #[arg(long, help_heading = LOGGING, value_name = "SECONDS", requires = "otlp_endpoint", value_parser = clap::value_parser!(u64).range(1..))]
    pub otlp_export_interval: Option<u64>,

    /// Log every S3 request and filesystem error (never credentials)
    #[arg(short, long, help_heading = LOGGING, action = ArgAction::SetTrue)]
    pub debug: bool,

    /// Also log the AWS SDK's and HTTP stack's debug lines (never credentials or signatures)
    #[arg(long, help_heading = LOGGING)]
    pub debug_crt: bool,

    /// Log nothing (errors at start-up still reach the terminal)
    #[arg(long, help_heading = LOGGING, conflicts_with_all = ["log_directory", "debug", "debug_crt", "log_metrics"])]
    pub no_log: bool,

    /// Cache object data in blocks under this directory (kept across mounts)
    #[arg(long, help_heading = CACHING, value_name = "DIRECTORY")]
    pub cache: Option<PathBuf>,

    /// How long metadata is trusted: seconds, 'indefinite' or 'minimal' (0 too: opens revalidate, no negative entries) [default: 60 with --cache or --cache-xz, else minimal]
    #[arg(long, help_heading = CACHING, value_name = "SECONDS|indefinite|minimal", value_parser = parse_ttl)]
    pub metadata_ttl: Option<Ttl>,

    /// How long a "no such file" is trusted [default: the metadata TTL]
    #[arg(long, help_heading = CACHING, value_name = "SECONDS|indefinite|minimal", value_parser = parse_ttl)]
    pub negative_metadata_ttl: Option<Ttl>,

    /// Maximum size of the data cache, in MiB; 0 turns the cache off [default: keep 5% of its filesystem free]
    #[arg(long, help_heading = CACHING, value_name = "MiB", requires = "cache", value_parser = clap::value_parser!(u64).range(0..=u64::MAX >> 20))]
    pub max_cache_size: Option<u64>,

    /// Size of the cache's blocks (local and shared), in KiB (4 to 65536)
    #[arg(long, help_heading = CACHING, value_name = "KiB", requires = "caching", default_value_t = DEFAULT_CACHE_BLOCK_KIB, value_parser = clap::value_parser!(u64).range(4..=65536))]
    pub cache_block_size: u64,

    /// Share cached blocks through this bucket, in Mountpoint's format (an S3 Express One Zone directory bucket, or any bucket; same region, endpoint and credentials as the mounted bucket)
    #[arg(long, help_heading = CACHING, value_name = "BUCKET")]
    pub cache_xz: Option<String>,

    /// Largest object shared through --cache-xz, in MiB (default 1, Mountpoint's limit; ours)
    #[arg(long, help_heading = CACHING, value_name = "MiB", requires = "cache_xz", value_parser = clap::value_parser!(u64).range(1..=5_242_880))]
    pub cache_xz_max_object_size: Option<u64>,

    /// Serve objects the cache holds whole through mount-s3 instead of letting the kernel read them directly (FUSE passthrough, used when running as root; ours, not Mountpoint's)
    #[arg(long, help_heading = CACHING, requires = "cache")]
    pub no_passthrough: bool,

    /// Text put before the User-Agent of every S3 request
    #[arg(long, help_heading = ADVANCED, value_name = "PREFIX", value_parser = parse_header_value)]
    pub user_agent_prefix: Option<String>,
}

#[cfg(test)]
mod tests;
