//! The filesystem's settings, as plain data built by `cli`.

use std::time::Duration;

/// How the bucket is presented as files.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Key prefix shown as the mount's root: empty or ending in `/`.
    pub prefix: String,
    /// Owner of every file and directory.
    pub uid: u32,
    /// Group of every file and directory.
    pub gid: u32,
    /// Permission bits of directories.
    pub dir_mode: u16,
    /// Permission bits of files.
    pub file_mode: u16,
    /// How long a stat is trusted, here and in the kernel.
    pub metadata_ttl: Duration,
    /// How long a "no such file" is trusted (`--negative-metadata-ttl`); `None`: the
    /// metadata TTL.
    pub negative_ttl: Option<Duration>,
    /// `--metadata-ttl minimal`: an open asks S3 again unless the stat it would use was
    /// fetched this recently (by the lookup of the same open call), so a re-open sees a
    /// replaced object; `None`: an open trusts a stat within the metadata TTL.
    pub open_revalidates_after: Option<Duration>,
    /// Refuse every change (the kernel also gets the `ro` mount flag).
    pub read_only: bool,
    /// unlink and rename may delete objects (`--allow-delete`).
    pub allow_delete: bool,
    /// Writes and renames may replace existing objects (`--allow-overwrite`).
    pub allow_overwrite: bool,
    /// Part size of ranged GETs (`--read-part-size`, else `--part-size`).
    pub read_part_size: u64,
    /// First part size of multipart uploads (`--write-part-size`, else `--part-size`).
    pub write_part_size: u64,
    /// Bytes of prefetched data the whole mount may hold (`--memory-target`).
    pub memory_limit: u64,
    /// With a data cache: let the kernel read objects the cache holds whole directly (FUSE
    /// passthrough) where the kernel and our privileges allow; `--no-passthrough` turns it off.
    pub passthrough: bool,
    /// Keys asked for per ListObjectsV2 page (1000; smaller in tests, to exercise paging).
    pub list_page_size: usize,
    /// Whether ListObjectsV2 pages come in key order: false for a directory bucket
    /// (`--bucket-type directory`), whose listings are then read whole before serving.
    pub ordered_listings: bool,
    /// Most bytes one reader fetches ahead, below what `memory_limit` gives
    /// (`UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE`); never below two parts.
    pub max_prefetch_window: Option<u64>,
    /// Inodes the table may hold before the oldest entries handed to the kernel are dropped
    /// from it ([`crate::fs::held`]; smaller in tests).
    pub held_entries: usize,
    /// Which opens for writing are staged ([`crate::fs::staged`]).
    pub staging: Staging,
    /// Mode, owner, group, mtime and symbolic links kept in object metadata
    /// (`--posix-metadata`; [`crate::fs::posix`]).
    pub posix_metadata: bool,
    /// Most keys a directory rename moves (`--max-rename-keys`); 0: directories are not
    /// renamed (EXDEV), as in Mountpoint.
    pub max_rename_keys: usize,
}

/// Which opens for writing are staged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Staging {
    /// None: writes stream sequentially (Mountpoint's semantics).
    #[default]
    Off,
    /// Opens of existing objects with O_APPEND (`--incremental-upload`).
    Appends,
    /// Every open for writing, and `truncate` (`--staged-writes`).
    All,
}

impl FsConfig {
    /// How long a "no such file" is trusted.
    pub fn negative_ttl(&self) -> Duration {
        self.negative_ttl.unwrap_or(self.metadata_ttl)
    }
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            uid: 0,
            gid: 0,
            dir_mode: 0o755,
            file_mode: 0o644,
            metadata_ttl: Duration::from_secs(1),
            negative_ttl: None,
            open_revalidates_after: None,
            read_only: false,
            allow_delete: false,
            allow_overwrite: false,
            read_part_size: 8 * 1024 * 1024,
            write_part_size: 8 * 1024 * 1024,
            memory_limit: 512 * 1024 * 1024,
            passthrough: false,
            list_page_size: crate::fs::listing::PAGE_SIZE,
            ordered_listings: true,
            max_prefetch_window: None,
            held_entries: crate::fs::held::BOUND,
            staging: Staging::Off,
            posix_metadata: false,
            max_rename_keys: 0,
        }
    }
}
