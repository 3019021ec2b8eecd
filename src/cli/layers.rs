//! The config of each layer, built from the validated flags: the filesystem's, the data
//! cache's, the S3 client's, the kernel mount's and the log's.

use std::time::Duration;

use super::values::Ttl;
use super::{Args, CACHE_DEFAULT_TTL, MINIMAL_TTL};
use crate::fs::FsConfig;
use crate::fuse::session::MountConfig;
use crate::logging::LogOptions;
use crate::s3::S3Config;
use crate::s3::config::{DEFAULT_MAX_ATTEMPTS, UploadChecksums};

impl Args {
    /// Part size of ranged GETs (`--read-part-size`, else `--part-size`).
    pub fn read_part_size(&self) -> u64 {
        self.read_part_size.unwrap_or(self.part_size)
    }

    /// Part size of multipart uploads (`--write-part-size`, else `--part-size`).
    pub fn write_part_size(&self) -> u64 {
        self.write_part_size.unwrap_or(self.part_size)
    }

    /// The metadata TTL in force: the flag, else 60 s with a cache, else minimal.
    pub fn metadata_ttl(&self) -> Duration {
        match self.metadata_ttl {
            Some(ttl) => ttl.duration(),
            None if self.any_cache() => CACHE_DEFAULT_TTL,
            None => MINIMAL_TTL,
        }
    }

    /// Whether the metadata TTL is `minimal` (given, or the default without a cache).
    fn minimal_metadata(&self) -> bool {
        match self.metadata_ttl {
            Some(ttl) => ttl == Ttl::Minimal,
            None => !self.any_cache(),
        }
    }

    /// The filesystem's settings.
    pub fn fs_config(&self) -> FsConfig {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let metadata_ttl = self.metadata_ttl();
        FsConfig {
            prefix: self.prefix.clone().unwrap_or_default(),
            uid: self.uid.unwrap_or(uid),
            gid: self.gid.unwrap_or(gid),
            dir_mode: self.dir_mode,
            file_mode: self.file_mode,
            metadata_ttl,
            negative_ttl: match (self.negative_metadata_ttl, self.minimal_metadata()) {
                (Some(ttl), _) => Some(ttl.duration()),
                // Mountpoint's minimal keeps no negative entries.
                (None, true) => Some(Duration::ZERO),
                (None, false) => None,
            },
            open_revalidates_after: self
                .minimal_metadata()
                .then_some(crate::cli::OPEN_REVALIDATE_AFTER),
            read_only: self.read_only,
            allow_delete: self.allow_delete,
            allow_overwrite: self.allow_overwrite,
            read_part_size: self.read_part_size(),
            write_part_size: self.write_part_size(),
            passthrough: self.cache_enabled() && !self.no_passthrough,
            list_page_size: crate::fs::listing::PAGE_SIZE,
            ordered_listings: !self.directory_bucket(),
            // From the environment (`cli::unstable`), set by main.
            max_prefetch_window: None,
            staging: match (self.staged_writes, self.incremental_upload) {
                (true, _) => crate::fs::config::Staging::All,
                (false, true) => crate::fs::config::Staging::Appends,
                (false, false) => crate::fs::config::Staging::Off,
            },
            held_entries: crate::fs::held::BOUND,
            posix_metadata: self.posix_metadata,
            max_rename_keys: self.max_rename_keys as usize,
            memory_limit: self
                .memory_target
                .map_or_else(crate::memory::default_limit, |mib| mib * 1024 * 1024),
        }
    }

    /// FUSE dispatch threads: `--max-threads`, at most [`crate::cli::MAX_DISPATCH_THREADS`]
    /// (a dispatch thread never waits on S3, so more would only be idle stacks).
    pub fn dispatch_threads(&self) -> usize {
        usize::try_from(self.max_threads)
            .unwrap_or(usize::MAX)
            .min(crate::cli::MAX_DISPATCH_THREADS)
    }

    /// Whether the bucket is a directory bucket (S3 Express One Zone): `--bucket-type
    /// directory`, or, without the flag, a name ending in `--x-s3`, as Mountpoint infers it.
    pub fn directory_bucket(&self) -> bool {
        match self.bucket_type.as_deref() {
            Some(kind) => kind == "directory",
            None => self.bucket.ends_with("--x-s3"),
        }
    }

    /// Whether there is a data cache: `--cache`, and `--max-cache-size` not 0.
    fn cache_enabled(&self) -> bool {
        self.cache.is_some() && self.max_cache_size != Some(0)
    }

    /// Whether data is cached at all (locally or in a shared bucket): the metadata TTL's
    /// default follows it, as in Mountpoint.
    fn any_cache(&self) -> bool {
        self.cache_enabled() || self.cache_xz.is_some()
    }

    /// The staging area's settings, with `--staged-writes` or `--incremental-upload`: in
    /// `--staging-dir`, else the `--cache` directory, else `mount-s3-<uid>` in the system's
    /// temporary directory.
    pub fn staging_config(&self) -> Option<crate::fs::staged::dir::StagingConfig> {
        if !self.staged_writes && !self.incremental_upload {
            return None;
        }
        let dir = self
            .staging_dir
            .clone()
            .or_else(|| self.cache.clone())
            .unwrap_or_else(|| {
                std::env::temp_dir()
                    .join(format!("mount-s3-{}", rustix::process::geteuid().as_raw()))
            });
        Some(crate::fs::staged::dir::StagingConfig {
            dir,
            max_bytes: self
                .max_staging_size
                .map(|mib| mib.saturating_mul(1024 * 1024)),
        })
    }

    /// The shared cache's settings, with `--cache-xz` (after [`Args::validate`], which
    /// reduces an `s3://` form to the bucket's name).
    pub fn shared_cache_config(&self) -> Option<crate::shared_cache::SharedCacheConfig> {
        let bucket = self.cache_xz.clone()?;
        Some(crate::shared_cache::SharedCacheConfig {
            directory_bucket: bucket.ends_with("--x-s3"),
            bucket,
            source_bucket: self.bucket.clone(),
            block_size: self.cache_block_size.saturating_mul(1024),
            max_object_size: self
                .cache_xz_max_object_size
                .map_or(crate::shared_cache::DEFAULT_MAX_OBJECT_SIZE, |mib| {
                    mib.saturating_mul(1024 * 1024)
                }),
        })
    }

    /// The data cache's settings, if `--cache` was given (and `--max-cache-size` is not 0,
    /// which turns the cache off, as in Mountpoint).
    pub fn cache_config(&self) -> Option<crate::cache::CacheConfig> {
        if !self.cache_enabled() {
            return None;
        }
        let dir = self.cache.clone()?;
        Some(crate::cache::CacheConfig {
            dir,
            block_size: self.cache_block_size.saturating_mul(1024),
            max_bytes: self
                .max_cache_size
                .map(|mib| mib.saturating_mul(1024 * 1024)),
            bucket: self.bucket.clone(),
        })
    }

    /// The S3 client's settings. `AWS_MAX_ATTEMPTS` sets the attempts per request, as for
    /// Mountpoint and the AWS CLI.
    pub fn s3_config(&self) -> S3Config {
        let max_attempts = max_attempts(std::env::var("AWS_MAX_ATTEMPTS").ok().as_deref());
        S3Config {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            force_path_style: self.force_path_style,
            no_sign_request: self.no_sign_request,
            profile: self.profile.clone(),
            max_attempts,
            upload_checksums: match self.upload_checksums.as_deref() {
                Some("off") => UploadChecksums::Off,
                Some("crc64nvme") => UploadChecksums::Crc64Nvme,
                Some(_) => UploadChecksums::Crc32c,
                // As Mountpoint: Outposts take no additional checksums.
                None if is_outposts(&self.bucket) => UploadChecksums::Off,
                None => UploadChecksums::Crc32c,
            },
            read_timeout: Duration::from_secs(self.no_progress_timeout),
            requester_pays: self.requester_pays,
            expected_bucket_owner: self.expected_bucket_owner.clone(),
            user_agent_prefix: self.user_agent_prefix.clone(),
            sse: self.sse.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
            storage_class: self.storage_class.clone(),
            infer_content_type: self.infer_content_type,
            transfer_acceleration: self.transfer_acceleration,
            dual_stack: self.dual_stack,
            ca_bundle: self.ca_bundle.clone(),
            bind: self.bind.clone().unwrap_or_default(),
            ..S3Config::new(self.bucket.clone())
        }
    }

    /// The kernel mount's settings.
    pub fn mount_config(&self) -> MountConfig {
        MountConfig {
            fs_name: self.bucket.clone(),
            read_only: self.read_only,
            allow_other: self.allow_other,
            allow_root: self.allow_root,
            auto_unmount: self.auto_unmount,
            noexec: self.noexec,
            threads: self.dispatch_threads(),
            read_ahead_kib: self.read_ahead,
        }
    }

    /// What the log shows: nothing (`--no-log`), our debug lines (`--debug`), the SDK's
    /// (`--debug-crt`), the counters every 5 s (`--log-metrics`), and `MOUNTPOINT_LOG`'s
    /// filter in place of the normal one.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            off: self.no_log,
            debug: self.debug,
            sdk_debug: self.debug_crt,
            metrics: self.log_metrics,
            env_filter: std::env::var(crate::logging::FILTER_VARIABLE).ok(),
        }
    }
}

/// Whether `bucket` is an S3 on Outposts access point ARN (`arn:PARTITION:s3-outposts:…`).
fn is_outposts(bucket: &str) -> bool {
    let mut parts = bucket.split(':');
    parts.next() == Some("arn") && parts.nth(1) == Some("s3-outposts")
}

/// Attempts per request from `AWS_MAX_ATTEMPTS` (1 to 100), else ours; an unreadable value is
/// warned about, not ignored silently.
pub(super) fn max_attempts(env: Option<&str>) -> u32 {
    let Some(value) = env else {
        return DEFAULT_MAX_ATTEMPTS;
    };
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => n,
        _ => {
            tracing::warn!(
                "AWS_MAX_ATTEMPTS={} is not a number from 1 to 100; using {DEFAULT_MAX_ATTEMPTS}",
                value.escape_debug()
            );
            DEFAULT_MAX_ATTEMPTS
        }
    }
}
