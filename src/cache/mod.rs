//! The local data cache: fixed-size blocks of objects stored as files under `--cache DIR`, so
//! the second epoch reads at local-disk speed.
//!
//! Blocks are keyed by (bucket, key, ETag, block size, block index): a changed object can
//! never be served from old blocks, nor a block cut with another size. Each block file carries a header and a CRC32C per 4 KiB chunk ([`block`]);
//! anything that does not verify is deleted and fetched again, never served. The total size
//! is bounded (`--max-cache-size`, or keeping 5% of the cache's filesystem free): least
//! recently used blocks are evicted ([`index`]) before a new block file is put in place, so
//! the bound holds at every moment. The directory survives remounts, and a lock file keeps a
//! second mount from using it at the same time.
//!
//! One job per file:
//! - `files`: the cache's own subdirectory and every file operation in it (relative to
//!   directory descriptors, never following symlinks, 0700/0600);
//! - `directory`: opening the cache, its size bound, and indexing what a previous mount left;
//! - `read`: serving blocks and whole-object copies, each chunk checked;
//! - `store`: writing fetched blocks (O_DIRECT from page-aligned GET buffers where the disk
//!   keeps up) behind a bounded queue;
//! - `copy`: turning an object whose every block is cached into one whole-object copy
//!   ([`whole`]) that the kernel can read directly (FUSE passthrough);
//! - this file: the [`DiskCache`] type, its configuration, counters, file names and eviction.
//!
//! All methods do blocking file I/O: call them from `spawn_blocking` (or inline where
//! `fs::blocking` allows). Not here: when to read through the cache (`fs::read::source`) or
//! whether the kernel may read a copy (`fuse::passthrough`).

pub mod block;
mod copy;
mod directory;
pub mod error;
mod files;
pub mod index;
mod read;
mod store;
pub mod whole;

use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::memory::MemoryBudget;
pub use copy::PendingCopy;
pub use error::CacheError;
pub use files::SUBDIR;
use files::{CacheFiles, Place};
use index::{BlockId, Index};

/// Default block size (1 MiB).
pub const DEFAULT_BLOCK_SIZE: u64 = 1024 * 1024;

/// Memory for verified block headers (about 1 KiB per 1 MiB block: 16 MiB covers 16 GiB of
/// cached data with one header read per block).
const HEADER_BYTES: u64 = 16 * 1024 * 1024;

/// Memory for verified whole-object sidecars (4 bytes per 4 KiB: 64 MiB covers 64 GiB of
/// copies). A copy's sidecar may take at most a quarter of it (objects up to 16 GiB are
/// copied), so that it stays remembered between reads.
const SUMS_BYTES: u64 = 64 * 1024 * 1024;

/// Most bytes of fetched blocks waiting to be written to the cache: past it, further blocks
/// are not cached (and counted in `skipped_bytes`) rather than held in memory while the disk is
/// slower than the network.
const QUEUE_BYTES: u64 = 256 * 1024 * 1024;

/// The "block index" under which an object's whole-object copy is accounted.
const WHOLE: u64 = u64::MAX;

/// Settings of the cache, built by `cli`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Directory holding the blocks.
    pub dir: PathBuf,
    /// Bytes per block (the last block of an object may be shorter).
    pub block_size: u64,
    /// Most bytes of block files; `None`: keep 5% of the filesystem free.
    pub max_bytes: Option<u64>,
    /// Bucket name, part of every block's identity.
    pub bucket: String,
}

/// Hit and miss counts.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Blocks served from disk.
    pub hits: AtomicU64,
    /// Blocks not found (or rejected).
    pub misses: AtomicU64,
    /// Blocks rejected as corrupt, truncated or foreign (and deleted).
    pub rejected: AtomicU64,
    /// Blocks evicted to respect the bound.
    pub evicted: AtomicU64,
    /// Whole-object copies written (see [`whole`]).
    pub whole_built: AtomicU64,
    /// Bytes of fetched blocks not cached because too many were waiting to be written.
    pub skipped_bytes: AtomicU64,
    /// Whole-object copies handed out for the kernel to read directly (counted when handed
    /// to the FUSE layer, which may still fail to register one).
    pub whole_opens: AtomicU64,
}

impl CacheCounters {
    /// The counts now, for the unmount summary.
    pub fn snapshot(&self) -> CacheSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheSnapshot {
            hits: get(&self.hits),
            misses: get(&self.misses),
            rejected: get(&self.rejected),
            evicted: get(&self.evicted),
            skipped_bytes: get(&self.skipped_bytes),
            whole_built: get(&self.whole_built),
            whole_opens: get(&self.whole_opens),
        }
    }
}

/// [`CacheCounters`] at one moment, with the bytes held on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheSnapshot {
    /// Blocks served from disk.
    pub hits: u64,
    /// Blocks not found (or rejected).
    pub misses: u64,
    /// Blocks rejected as corrupt, truncated or foreign.
    pub rejected: u64,
    /// Blocks evicted.
    pub evicted: u64,
    /// Bytes of fetched blocks not cached (queue full).
    pub skipped_bytes: u64,
    /// Whole-object copies written.
    pub whole_built: u64,
    /// Whole-object copies handed to the kernel.
    pub whole_opens: u64,
}

impl fmt::Display for CacheSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hits={} misses={} rejected={} evicted={} skipped_bytes={} whole_built={} whole_opens={}",
            self.hits,
            self.misses,
            self.rejected,
            self.evicted,
            self.skipped_bytes,
            self.whole_built,
            self.whole_opens
        )
    }
}

/// An open cache directory.
#[derive(Debug)]
pub struct DiskCache {
    config: CacheConfig,
    /// The cache's own subdirectory, its files and its lock.
    files: CacheFiles,
    /// The byte bound in force.
    max_bytes: u64,
    /// Guards the block accounting; held for bookkeeping and unlinks, not for reads/writes.
    index: Mutex<Index>,
    /// Whether the one warning about a failing cache was logged.
    warned: AtomicBool,
    /// Headers verified since their block was first read, by id: later reads of the block
    /// read and check only the chunks they need.
    headers: moka::sync::Cache<BlockId, Arc<block::Header>>,
    /// Verified sidecars of whole-object copies, by object hash.
    sums: moka::sync::Cache<u64, Arc<whole::Sums>>,
    /// Objects whose whole-object copy is being written.
    building: Mutex<HashSet<u64>>,
    /// Whether complete objects are copied whole (see [`DiskCache::enable_whole_copies`]).
    whole_copies: AtomicBool,
    /// Whole-object copies asked for and not finished.
    copies_pending: AtomicUsize,
    /// Whether block files may be written with O_DIRECT (until the filesystem refuses).
    direct_writes: AtomicBool,
    /// Fetched blocks waiting to be written, bounded by [`QUEUE_BYTES`] (see
    /// [`DiskCache::queue`]): the mount's own byte budget, used for this queue alone.
    queued: Arc<MemoryBudget>,
    /// Hits, misses and evictions.
    pub counters: CacheCounters,
    next_tmp: AtomicU64,
}

impl DiskCache {
    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.config.block_size
    }

    /// Bytes held on disk now, blocks being written included.
    pub fn used(&self) -> u64 {
        self.lock_index().used()
    }

    /// Bytes of the blocks in place, readable now (what [`DiskCache::used`] counts, less the
    /// blocks still being written).
    pub fn stored(&self) -> u64 {
        self.lock_index().stored()
    }

    /// The bound in force.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("cache index lock poisoned")
    }

    /// The identity of an object version's blocks: the bucket, the key, the ETag and the
    /// block size they are cut with (a block of another size is another block: it never
    /// matches, even at the same index).
    fn object_id(&self, key: &str, etag: &str) -> String {
        format!(
            "{}\0{key}\0{etag}\0{}",
            self.config.bucket, self.config.block_size
        )
    }

    /// Bytes in block `index` of an object of `size` bytes; `None` past its end.
    fn block_len(&self, size: u64, index: u64) -> Option<usize> {
        let start = index.checked_mul(self.config.block_size)?;
        (start < size).then(|| (size - start).min(self.config.block_size) as usize)
    }

    /// The hash naming an object version's blocks and whole-object copy.
    fn object_hash(object_id: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        object_id.hash(&mut hasher);
        hasher.finish()
    }

    fn block_id(object_id: &str, index: u64) -> BlockId {
        (Self::object_hash(object_id), index)
    }

    /// Where the file of `id` lives: a block file, or the data file of a whole-object copy.
    fn place_of(id: BlockId) -> Place {
        if id.1 == WHOLE {
            Place::Whole(id.0)
        } else {
            Place::Block(id)
        }
    }

    /// Deletes the files of `id` (a block, or both files of a whole-object copy) and what
    /// is remembered of them. The caller has taken `id` out of the index.
    fn remove_files(&self, id: BlockId) {
        if id.1 == WHOLE {
            self.sums.invalidate(&id.0);
            self.files.remove(Place::Sums(id.0));
        } else {
            self.headers.invalidate(&id);
        }
        self.files.remove(Self::place_of(id));
    }

    fn discard(&self, id: BlockId) {
        let mut accounting = self.lock_index();
        if accounting.remove(&id).is_some() {
            self.remove_files(id);
        }
    }

    fn evict_to(&self, max: u64) {
        let mut accounting = self.lock_index();
        self.evict_locked(&mut accounting, max);
    }

    fn evict_locked(&self, accounting: &mut Index, max: u64) {
        while accounting.used() > max {
            let Some(id) = accounting.pop_oldest() else {
                return;
            };
            self.remove_files(id);
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
