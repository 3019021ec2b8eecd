//! The command line, flag for flag Mountpoint's, turned into one config struct per layer.
//!
//! Validation happens here, before anything is forked or mounted, and every problem is one
//! line that says what to fix. Checks that need the network (bucket, credentials, endpoint)
//! happen at start-up in `main`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::fs::FsConfig;
use crate::fuse::session::MountConfig;
use crate::s3::S3Config;

/// Default part size for ranged GETs and multipart uploads (8 MiB, as Mountpoint).
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// `--metadata-ttl minimal`: the shortest TTL that still absorbs the kernel's bursts of
/// lookups and getattrs for one program call.
pub const MINIMAL_TTL: Duration = Duration::from_secs(1);

/// Default `--metadata-ttl` with `--cache` (as Mountpoint): blocks are reused after one HEAD
/// per minute confirms the ETag.
pub const CACHE_DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Mount an S3 bucket as a local directory.
#[derive(Debug, Parser)]
#[command(
    name = "mount-s3",
    version,
    about,
    max_term_width = 100,
    after_help = "Shell completions: mount-s3 completions <bash|zsh|fish|elvish|powershell>"
)]
pub struct Args {
    /// Name of the bucket to mount (or an access point ARN)
    #[arg(value_name = "BUCKET")]
    pub bucket: String,

    /// Directory to mount the bucket at
    #[arg(value_name = "DIRECTORY")]
    pub mount_point: PathBuf,

    /// Prefix inside the bucket to mount, ending in '/'
    #[arg(long, help_heading = "Bucket options", value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// AWS region of the bucket [default: from the environment or profile, else us-east-1]
    #[arg(long, help_heading = "Bucket options", value_name = "REGION")]
    pub region: Option<String>,

    /// S3 endpoint URL, for S3-compatible servers
    #[arg(long, help_heading = "Bucket options", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Address the bucket in the URL path instead of the host name
    #[arg(long, help_heading = "Bucket options")]
    pub force_path_style: bool,

    /// Do not sign requests (for public buckets)
    #[arg(long, help_heading = "Bucket options")]
    pub no_sign_request: bool,

    /// Named profile of the AWS shared config and credentials files
    #[arg(long, help_heading = "Bucket options", value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Mount read-only
    #[arg(long, help_heading = "Mount options")]
    pub read_only: bool,

    /// Allow deleting files (unlink, and rename, which deletes its source)
    #[arg(long, help_heading = "Mount options")]
    pub allow_delete: bool,

    /// Allow replacing existing files (open with O_TRUNC, rename onto them)
    #[arg(long, help_heading = "Mount options")]
    pub allow_overwrite: bool,

    /// Unmount automatically when the process exits (needs --allow-other or --allow-root)
    #[arg(long, help_heading = "Mount options")]
    pub auto_unmount: bool,

    /// Allow root to access the mount
    #[arg(long, help_heading = "Mount options")]
    pub allow_root: bool,

    /// Allow every user to access the mount
    #[arg(long, help_heading = "Mount options")]
    pub allow_other: bool,

    /// Do not allow programs to be executed from the mount (fstab's noexec; ours, not Mountpoint's)
    #[arg(long, help_heading = "Mount options")]
    pub noexec: bool,

    /// Owner uid of files and directories [default: the mounting user]
    #[arg(long, help_heading = "Mount options", value_name = "UID")]
    pub uid: Option<u32>,

    /// Owner gid of files and directories [default: the mounting user's group]
    #[arg(long, help_heading = "Mount options", value_name = "GID")]
    pub gid: Option<u32>,

    /// Permission bits of directories, in octal
    #[arg(long, help_heading = "Mount options", value_name = "MODE", default_value = "0755", value_parser = parse_mode)]
    pub dir_mode: u16,

    /// Permission bits of files, in octal
    #[arg(long, help_heading = "Mount options", value_name = "MODE", default_value = "0644", value_parser = parse_mode)]
    pub file_mode: u16,

    /// Number of FUSE dispatch threads
    #[arg(long, help_heading = "Client options", value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_threads: u16,

    /// Part size for ranged GETs and multipart uploads, in bytes
    #[arg(long, help_heading = "Client options", value_name = "SIZE", default_value_t = DEFAULT_PART_SIZE, value_parser = parse_part_size)]
    pub part_size: u64,

    /// Checksum sent with every upload: crc32c, or off for servers that reject checksums
    #[arg(long, help_heading = "Client options", value_name = "ALGORITHM", default_value = "crc32c", value_parser = ["crc32c", "off"])]
    pub upload_checksums: String,

    /// Longest any one S3 request may take, retries included, before the program gets EIO
    #[arg(long, help_heading = "Client options", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_deadline: u64,

    /// Seconds without a byte from S3 (no answer to a request, a GET body that stops) after which a connection counts as dead; requests then fail at once until S3 answers again (ours, not Mountpoint's)
    #[arg(long, help_heading = "Client options", value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub no_progress_timeout: u64,

    /// Memory for prefetched data across all open files, in MiB [default: 1/8 of RAM, 64-512]
    #[arg(long, help_heading = "Client options", value_name = "MiB", value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub memory_target: Option<u64>,

    /// Cache object data in blocks under this directory (kept across mounts)
    #[arg(long, help_heading = "Caching options", value_name = "DIRECTORY")]
    pub cache: Option<PathBuf>,

    /// Maximum size of the data cache, in MiB [default: keep 5% of its filesystem free]
    #[arg(long, help_heading = "Caching options", value_name = "MiB", requires = "cache", value_parser = clap::value_parser!(u64).range(1..=u64::MAX >> 20))]
    pub max_cache_size: Option<u64>,

    /// Size of the data cache's blocks, in bytes
    #[arg(long, help_heading = "Caching options", value_name = "BYTES", requires = "cache", default_value_t = crate::cache::DEFAULT_BLOCK_SIZE, value_parser = clap::value_parser!(u64).range(4096..=64 * 1024 * 1024))]
    pub cache_block_size: u64,

    /// Serve objects the cache holds whole through mount-s3 instead of letting the kernel read them directly (FUSE passthrough, used when running as root)
    #[arg(long, help_heading = "Caching options", requires = "cache")]
    pub no_passthrough: bool,

    /// How long metadata is trusted: seconds, 'indefinite' or 'minimal' [default: 60 with --cache, else minimal]
    #[arg(long, help_heading = "Caching options", value_name = "SECONDS|indefinite|minimal", value_parser = parse_ttl)]
    pub metadata_ttl: Option<Duration>,

    /// Stay in the foreground instead of detaching
    #[arg(short, long, help_heading = "Logging options")]
    pub foreground: bool,

    /// Log every S3 request and filesystem error (never credentials)
    #[arg(long, help_heading = "Logging options", action = ArgAction::SetTrue)]
    pub debug: bool,

    /// Write logs to a file in this directory instead of syslog (background) or stderr
    #[arg(long, help_heading = "Logging options", value_name = "DIRECTORY")]
    pub log_directory: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<u16, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u16::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("'{s}' is not an octal mode between 0 and 0777")),
    }
}

fn parse_part_size(s: &str) -> Result<u64, String> {
    const MIN: u64 = 5 * 1024 * 1024;
    const MAX: u64 = 5 * 1024 * 1024 * 1024;
    match s.parse::<u64>() {
        Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a part size in bytes between {MIN} (5 MiB) and {MAX} (5 GiB)"
        )),
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    match s {
        "indefinite" => Ok(Duration::MAX),
        "minimal" => Ok(MINIMAL_TTL),
        _ => s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("'{s}' is not a number of seconds, 'indefinite' or 'minimal'")),
    }
}

/// Whether `name` follows S3's bucket naming rules (or is an ARN, checked by S3 itself).
pub fn is_valid_bucket_name(name: &str) -> bool {
    if name.starts_with("arn:") {
        return true;
    }
    let bytes = name.as_bytes();
    let allowed = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(allowed)
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
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
fn unescape_mountinfo(field: &str) -> String {
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

impl Args {
    /// Checks everything that needs no network, and makes the mount point absolute.
    /// The error is one line saying what to fix.
    pub fn validate(&mut self) -> Result<(), String> {
        if !is_valid_bucket_name(&self.bucket) {
            return Err(format!(
                "invalid bucket name '{}': use 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit",
                self.bucket
            ));
        }
        if let Some(prefix) = &self.prefix {
            if !prefix.ends_with('/') {
                return Err(format!("--prefix '{prefix}' must end with '/'"));
            }
        }
        if self.auto_unmount && !self.allow_other && !self.allow_root {
            return Err("--auto-unmount needs --allow-other or --allow-root".to_string());
        }
        if self.allow_other && self.allow_root {
            return Err("--allow-other and --allow-root cannot be used together".to_string());
        }
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
        // The background process changes directory to `/`: every path the mount keeps
        // using must be absolute before it detaches.
        for (flag, path) in [
            ("--cache", &mut self.cache),
            ("--log-directory", &mut self.log_directory),
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

    /// The filesystem's settings.
    pub fn fs_config(&self) -> FsConfig {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        FsConfig {
            prefix: self.prefix.clone().unwrap_or_default(),
            uid: self.uid.unwrap_or(uid),
            gid: self.gid.unwrap_or(gid),
            dir_mode: self.dir_mode,
            file_mode: self.file_mode,
            metadata_ttl: self.metadata_ttl.unwrap_or(if self.cache.is_some() {
                CACHE_DEFAULT_TTL
            } else {
                MINIMAL_TTL
            }),
            read_only: self.read_only,
            allow_delete: self.allow_delete,
            allow_overwrite: self.allow_overwrite,
            part_size: self.part_size,
            passthrough: self.cache.is_some() && !self.no_passthrough,
            list_page_size: crate::fs::listing::PAGE_SIZE,
            memory_limit: self
                .memory_target
                .map_or_else(crate::memory::default_limit, |mib| mib * 1024 * 1024),
        }
    }

    /// The data cache's settings, if `--cache` was given.
    pub fn cache_config(&self) -> Option<crate::cache::CacheConfig> {
        let dir = self.cache.clone()?;
        Some(crate::cache::CacheConfig {
            dir,
            block_size: self.cache_block_size,
            max_bytes: self
                .max_cache_size
                .map(|mib| mib.saturating_mul(1024 * 1024)),
            bucket: self.bucket.clone(),
        })
    }

    /// The S3 client's settings.
    pub fn s3_config(&self) -> S3Config {
        S3Config {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            force_path_style: self.force_path_style,
            no_sign_request: self.no_sign_request,
            profile: self.profile.clone(),
            upload_checksums: self.upload_checksums == "crc32c",
            read_timeout: Duration::from_secs(self.no_progress_timeout),
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
            threads: usize::from(self.max_threads),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("mount-s3").chain(args.iter().copied()))
    }

    #[test]
    fn bucket_names() {
        for ok in [
            "abc",
            "my-bucket.v2",
            "a".repeat(63).as_str(),
            "arn:aws:s3:::x",
        ] {
            assert!(is_valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "Upper",
            "-lead",
            "trail-",
            "a..b",
            "192.168.1.1",
            "under_score",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_match_mountpoint() {
        let args = parse(&["bucket", "/mnt"]).unwrap();
        assert_eq!(args.part_size, DEFAULT_PART_SIZE);
        assert_eq!(args.max_threads, 16);
        assert_eq!((args.dir_mode, args.file_mode), (0o755, 0o644));
        assert_eq!(args.fs_config().metadata_ttl, MINIMAL_TTL);
        assert!(!args.foreground);
    }

    #[test]
    fn flag_values() {
        let args = parse(&[
            "b",
            "/m",
            "--metadata-ttl",
            "indefinite",
            "--dir-mode",
            "0700",
            "--file-mode",
            "600",
            "--uid",
            "7",
            "--prefix",
            "p/",
            "-f",
            "--read-only",
        ])
        .unwrap();
        let fs = args.fs_config();
        assert_eq!(fs.metadata_ttl, Duration::MAX);
        assert_eq!((fs.dir_mode, fs.file_mode, fs.uid), (0o700, 0o600, 7));
        assert_eq!(fs.prefix, "p/");
        assert!(fs.read_only && args.foreground && args.mount_config().read_only);
        assert_eq!(
            parse(&["b", "/m", "--metadata-ttl", "5"])
                .unwrap()
                .metadata_ttl,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn huge_values_neither_panic_nor_wrap() {
        let huge = u64::MAX.to_string();
        assert!(parse(&["b", "/m", "--cache", "/c", "--max-cache-size", &huge]).is_err());
        let most = (u64::MAX >> 20).to_string();
        let args = parse(&["b", "/m", "--cache", "/c", "--max-cache-size", &most]).unwrap();
        assert!(args.cache_config().unwrap().max_bytes.unwrap() >= u64::MAX >> 1);
        let big_part = parse(&["b", "/m", "--part-size", "5368709120"]).unwrap();
        let _ = big_part.fs_config(); // a 5 GiB part size builds a prefetch window
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["b", "/m", "--metadata-ttl", "soon"]).is_err());
        assert!(parse(&["b", "/m", "--dir-mode", "999"]).is_err());
        assert!(parse(&["b", "/m", "--part-size", "1"]).is_err());
        assert!(parse(&["b", "/m", "--no-such-flag"]).is_err());
        assert!(parse(&["b"]).is_err());
    }

    #[test]
    fn validation_errors_are_one_line() {
        let dir = std::env::temp_dir();
        let d = dir.to_str().unwrap();
        let cases = [
            vec!["Bad_Bucket", d],
            vec!["bucket", "/no/such/dir/here"],
            vec!["bucket", "/etc/hostname"],
            vec!["bucket", d, "--prefix", "noslash"],
            vec!["bucket", "/proc"],
        ];
        for case in cases {
            let err = parse(&case).unwrap().validate().unwrap_err();
            assert!(!err.is_empty() && !err.contains('\n'), "{case:?}: {err}");
        }
        let mut ok = parse(&["bucket", d]).unwrap();
        ok.validate().unwrap();
        assert!(ok.mount_point.is_absolute());
        let mut relative = parse(&["bucket", d, "--cache", "relcache"]).unwrap();
        relative.validate().unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            relative.cache,
            Some(cwd.join("relcache")),
            "absolute before detaching"
        );
    }

    /// Tokens a command line is built from: every long flag, values of every shape.
    fn token() -> impl proptest::strategy::Strategy<Value = String> {
        use clap::CommandFactory;
        use proptest::prelude::*;
        let flags: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        prop_oneof![
            proptest::sample::select(flags),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("0".to_string()),
            Just("-f".to_string()),
            Just("--".to_string()),
            Just("indefinite".to_string()),
            "[a-z0-9.:/=_-]{0,12}",
            any::<String>(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        #[test]
        fn untrusted_command_lines_never_panic(words in proptest::collection::vec(token(), 0..12)) {
            let argv = std::iter::once("mount-s3".to_string()).chain(words);
            if let Ok(mut args) = Args::try_parse_from(argv) {
                // validate() creates a log directory: not where a random line says.
                args.log_directory = None;
                let _ = args.validate();
                let fs = args.fs_config();
                let _ = crate::fs::read::prefetch::PrefetchConfig::new(fs.part_size, fs.memory_limit);
                let _ = (args.cache_config(), args.s3_config(), args.mount_config());
            }
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
