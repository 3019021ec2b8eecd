//! Opening the cache: its directory ([`super::files`] checks and locks it), the size bound
//! (taken from the free space when none is given), and the index of what a previous mount
//! left (blocks and whole-object copies, oldest first; half-written files and strays are
//! deleted).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use tracing::info;

use super::files::{CacheFiles, Place};
use super::index::Index;
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
        let files = CacheFiles::open(&config.dir)?;
        // Half-written blocks of a previous mount are garbage.
        files.clear_tmp();
        let mut found = files.scan();
        found.sort_by_key(|f| f.mtime);
        let mut index = Index::default();
        for file in found {
            let id = match file.place {
                Place::Block(id) => id,
                Place::Whole(hash) => (hash, WHOLE),
                Place::Sums(_) => continue,
            };
            index.insert(id, file.len);
        }
        let max_bytes = match config.max_bytes {
            Some(max) => max,
            None => bound_from_free_space(&files, index.used()).map_err(|source| {
                CacheError::Directory {
                    dir: config.dir.display().to_string(),
                    source,
                }
            })?,
        };
        info!(
            dir = %files.shown(),
            blocks = index.len(),
            bytes = index.used(),
            max_bytes,
            "data cache opened"
        );
        let cache = Self {
            config,
            files,
            max_bytes,
            index: Mutex::new(index),
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

/// The bound that keeps 5% of the cache's filesystem free, counting what is cached already.
fn bound_from_free_space(files: &CacheFiles, cached: u64) -> std::io::Result<u64> {
    let (total, available) = files.space()?;
    let keep = total / 100 * FREE_SHARE_PERCENT;
    Ok(cached + available.saturating_sub(keep))
}
