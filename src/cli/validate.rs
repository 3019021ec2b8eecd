//! The checks that need no network, run before the process detaches: an `s3://` URI
//! becomes bucket and prefix, combinations
//! Mountpoint refuses are refused, and every path the background process keeps using is
//! made absolute.

use std::path::Path;

use super::Args;
use super::values::{MIN_WRITE_PART_SIZE, parse_bucket};

/// `--cache-xz`'s bucket: a name, an ARN, or `s3://bucket[/]` without a prefix (Mountpoint's
/// rule: the shared cache has its own layout under the bucket's root).
fn parse_cache_bucket(value: &str) -> Result<String, String> {
    let bucket = parse_bucket(value).map_err(|e| format!("--cache-xz {e}"))?;
    if bucket.uri_prefix.is_some_and(|p| !p.is_empty()) {
        return Err(format!("--cache-xz '{value}' must not contain a prefix"));
    }
    Ok(bucket.name)
}

impl Args {
    /// Checks everything that needs no network, and makes the mount point absolute.
    /// The error is one line saying what to fix.
    pub fn validate(&mut self) -> Result<(), String> {
        let bucket = parse_bucket(&self.bucket)?;
        if let Some(uri_prefix) = bucket.uri_prefix {
            if self.prefix.is_some() {
                return Err(
                    "--prefix cannot be used with an s3:// URI (put the prefix in the URI)".into(),
                );
            }
            self.bucket = bucket.name;
            if !uri_prefix.is_empty() {
                self.prefix = Some(uri_prefix);
            }
        }
        if let Some(cache_bucket) = &self.cache_xz {
            self.cache_xz = Some(parse_cache_bucket(cache_bucket)?);
        }
        if let Some(prefix) = &self.prefix {
            if !prefix.ends_with('/') {
                return Err(format!("--prefix '{prefix}' must end with '/'"));
            }
        }
        if self.sse.as_deref() == Some("AES256") && self.sse_kms_key_id.is_some() {
            return Err("--sse-kms-key-id cannot be used with --sse AES256".into());
        }
        if self.write_part_size() < MIN_WRITE_PART_SIZE && !self.read_only {
            return Err(format!(
                "a write part size of {} bytes is below S3's minimum of {MIN_WRITE_PART_SIZE} (5 MiB); use --read-part-size for small GETs",
                self.write_part_size()
            ));
        }
        if self.allow_other && self.allow_root {
            return Err("--allow-other and --allow-root cannot be used together".to_string());
        }
        if let Some(bundle) = &self.ca_bundle {
            std::fs::metadata(bundle)
                .map_err(|e| format!("--ca-bundle {}: {e}", bundle.display()))?;
        }
        if let Some(fd) = crate::fuse::passed_fd::parse(&self.mount_point) {
            // The parent mounted it: options of the mount itself were its to give.
            for (set, flag) in [
                (self.read_only, "--read-only"),
                (self.auto_unmount, "--auto-unmount"),
            ] {
                if set {
                    return Err(format!(
                        "{flag} cannot be used with a FUSE descriptor mount point (/dev/fd/{fd}); pass it to the mount(2) of the process that mounted it"
                    ));
                }
            }
            crate::fuse::passed_fd::check(fd)?;
        } else {
            self.check_directory()?;
        }
        self.make_paths_absolute()
    }

    /// The mount point is a directory, not already a mount point; made absolute.
    fn check_directory(&mut self) -> Result<(), String> {
        let shown = self.mount_point.display().to_string();
        let meta = std::fs::metadata(&self.mount_point)
            .map_err(|e| format!("mount point {shown} is not usable: {e}"))?;
        if !meta.is_dir() {
            return Err(format!("mount point {shown} is not a directory"));
        }
        self.mount_point = std::fs::canonicalize(&self.mount_point)
            .map_err(|e| format!("mount point {shown} is not usable: {e}"))?;
        if is_mount_point(&self.mount_point) {
            return Err(format!(
                "mount point {} is already a mount point; unmount it first",
                self.mount_point.display()
            ));
        }
        Ok(())
    }

    /// The background process changes directory to `/`: every path the mount keeps using
    /// must be absolute before it detaches (the log directory is created now, as Mountpoint's).
    fn make_paths_absolute(&mut self) -> Result<(), String> {
        for (flag, path) in [
            ("--cache", &mut self.cache),
            ("--log-directory", &mut self.log_directory),
            ("--ca-bundle", &mut self.ca_bundle),
            ("--staging-dir", &mut self.staging_dir),
        ] {
            if let Some(dir) = path {
                *dir = std::path::absolute(&*dir)
                    .map_err(|e| format!("{flag} {}: {e}", dir.display()))?;
            }
        }
        if let Some(dir) = &self.log_directory {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| format!("--log-directory {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// Whether `path` is already a mount point, by /proc/self/mountinfo.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|field| unescape_mountinfo(field) == wanted)
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
