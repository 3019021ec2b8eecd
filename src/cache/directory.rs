//! The cache directory: created and locked at mount, and scanned for what a previous mount
//! left (blocks and whole-object copies are indexed, oldest first; half-written files and
//! strays are deleted), and the size bound taken from the free space when none is given.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use tracing::info;

use super::index::{BlockId, Index};
use super::read::header_weight;
use super::{
    CacheConfig, CacheCounters, CacheError, DiskCache, HEADER_BYTES, QUEUE_BYTES, SUMS_BYTES,
    WHOLE, block, whole,
};
use crate::memory::MemoryBudget;

/// Share of the cache's filesystem kept free when no `--max-cache-size` is given.
const FREE_SHARE_PERCENT: u64 = 5;

impl DiskCache {
    /// Opens (or creates) the cache at `config.dir`, locks it, and indexes the blocks a
    /// previous mount left. The error's text is one line for the user.
    pub fn open(config: CacheConfig) -> Result<Self, CacheError> {
        let shown = config.dir.display().to_string();
        let unusable = |source| CacheError::Directory {
            dir: shown.clone(),
            source,
        };
        let blocks_dir = config.dir.join("blocks");
        let objects_dir = config.dir.join("objects");
        let tmp_dir = config.dir.join("tmp");
        for dir in [&blocks_dir, &objects_dir, &tmp_dir] {
            fs::create_dir_all(dir).map_err(unusable)?;
        }
        let lock = lock_dir(&config.dir)?;
        // Half-written blocks of a previous mount are garbage.
        if let Ok(entries) = fs::read_dir(&tmp_dir) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        let mut index = Index::default();
        scan(&blocks_dir, &objects_dir, &mut index);
        let max_bytes = match config.max_bytes {
            Some(max) => max,
            None => bound_from_free_space(&config.dir, index.used()).map_err(unusable)?,
        };
        info!(
            dir = %shown,
            blocks = index.len(),
            bytes = index.used(),
            max_bytes,
            "data cache opened"
        );
        let cache = Self {
            config,
            blocks_dir,
            objects_dir,
            tmp_dir,
            max_bytes,
            index: Mutex::new(index),
            _lock: lock,
            warned: AtomicBool::new(false),
            headers: moka::sync::Cache::builder()
                .max_capacity(HEADER_BYTES)
                .weigher(|_, header: &Arc<block::Header>| header_weight(header))
                .build(),
            sums: moka::sync::Cache::builder()
                .max_capacity(SUMS_BYTES)
                .weigher(|_, sums: &Arc<whole::Sums>| sums.weight())
                .build(),
            building: Mutex::new(HashSet::new()),
            whole_copies: AtomicBool::new(false),
            copies_pending: AtomicUsize::new(0),
            direct_writes: AtomicBool::new(true),
            queued: MemoryBudget::new(QUEUE_BYTES),
            counters: CacheCounters::default(),
            next_tmp: AtomicU64::new(0),
        };
        cache.evict_to(cache.max_bytes);
        Ok(cache)
    }
}

/// Takes the directory's lock file, or explains who holds it.
fn lock_dir(dir: &Path) -> Result<File, CacheError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| CacheError::Directory {
            dir: dir.display().to_string(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(CacheError::InUse {
            dir: dir.display().to_string(),
            lock: path.display().to_string(),
        });
    }
    Ok(file)
}

/// Indexes the block files found under `blocks_dir` and the whole-object copies under
/// `objects_dir`, oldest (by mtime) first; strays are deleted.
fn scan(blocks_dir: &Path, objects_dir: &Path, index: &mut Index) {
    let mut found = Vec::new();
    scan_objects(objects_dir, &mut found);
    for shard in fs::read_dir(blocks_dir).into_iter().flatten().flatten() {
        for entry in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let parsed = name.to_str().and_then(|n| {
                let (hash, block) = n.split_once('-')?;
                Some((
                    u64::from_str_radix(hash, 16).ok()?,
                    block.parse::<u64>().ok()?,
                ))
            });
            match (parsed, entry.metadata()) {
                (Some(id), Ok(meta)) => {
                    let mtime = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                    found.push((mtime, id, meta.len()));
                }
                _ => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
    found.sort();
    for (_, id, size) in found {
        index.insert(id, size);
    }
}

/// Whole-object copies (a data file and its `.sum` sidecar) under `objects_dir`; a data
/// file without sidecar or a sidecar without data file is deleted. Contents are checked
/// when used.
fn scan_objects(objects_dir: &Path, found: &mut Vec<(std::time::SystemTime, BlockId, u64)>) {
    let hash_of = |name: &str| {
        let hex = name.strip_suffix(".sum").unwrap_or(name);
        (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
    };
    let entries: Vec<_> = fs::read_dir(objects_dir)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let names: HashSet<String> = entries
        .iter()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for entry in entries {
        let name = entry.file_name().into_string().unwrap_or_default();
        let partner = match name.strip_suffix(".sum") {
            Some(data) => data.to_string(),
            None => format!("{name}.sum"),
        };
        let (Some(hash), true) = (hash_of(&name), names.contains(&partner)) else {
            let _ = fs::remove_file(entry.path());
            continue;
        };
        if name.ends_with(".sum") {
            continue; // counted with its data file
        }
        let sidecar = fs::metadata(objects_dir.join(&partner)).map_or(0, |m| m.len());
        if let Ok(meta) = entry.metadata() {
            let mtime = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            found.push((mtime, (hash, WHOLE), meta.len() + sidecar));
        }
    }
}

/// The bound that keeps 5% of the cache's filesystem free, counting what is cached already.
fn bound_from_free_space(dir: &Path, cached: u64) -> io::Result<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `stat` is plain data written by statvfs; `path` is NUL-terminated.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat
    };
    let block = stat.f_frsize;
    let total = stat.f_blocks * block;
    let available = stat.f_bavail * block;
    let keep = total / 100 * FREE_SHARE_PERCENT;
    Ok(cached + available.saturating_sub(keep))
}
