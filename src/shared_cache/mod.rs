//! The shared cache (`--cache-xz BUCKET`): blocks of objects stored as small objects in a
//! second bucket, in Mountpoint's format ([`format`]), so every node of a fleet (mount-s3 or
//! Mountpoint) reads a block another one fetched instead of asking the source bucket again.
//!
//! It never costs a reader: a block is read from the cache bucket with a short deadline and
//! served only if it checks (its metadata, its length, its data's CRC32C) as the version the
//! reader pinned; anything else is a miss and the read goes to the source. Writes are
//! background tasks, bounded in memory (past the bound a block is simply not shared). A cache
//! bucket that fails (unreachable, denied, missing) is warned about once and left alone for
//! a while (reads 30 s, writes 60 s), so a broken cache costs a read one failed attempt per
//! pause, then nothing.
//!
//! Not here: when a read consults it (`fs::read::blocks`), or the client
//! (`s3::sdk`, the source bucket's client pointed at the cache bucket).

pub mod format;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::memory::MemoryBudget;
use crate::s3::BlockStore;
use format::Layout;

/// Longest wait for one block from the cache bucket (same zone: milliseconds) before the
/// read goes to the source.
const GET_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait for one block's PUT.
const PUT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long reads leave a failed cache bucket alone.
const READ_PAUSE: Duration = Duration::from_secs(30);

/// How long writes leave a failed cache bucket alone.
const WRITE_PAUSE: Duration = Duration::from_secs(60);

/// Bytes of blocks waiting to be written at most (past it, blocks are not shared).
const WRITE_QUEUE_BYTES: u64 = 64 * 1024 * 1024;

/// PUTs in flight at most.
const PUTS_IN_FLIGHT: usize = 16;

/// Mountpoint's largest object in the shared cache: 1 MiB.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1024 * 1024;

/// Settings of the shared cache, built by `cli`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCacheConfig {
    /// The cache bucket.
    pub bucket: String,
    /// The mounted bucket's name (or ARN), without the mount's prefix: part of the layout.
    pub source_bucket: String,
    /// Bytes per block (the local cache's too).
    pub block_size: u64,
    /// Objects larger than this are not shared (Mountpoint's 1 MiB by default).
    pub max_object_size: u64,
    /// A directory bucket (S3 Express One Zone): the probe carries its storage class.
    pub directory_bucket: bool,
}

/// What the shared cache did, for the summary and the metrics.
#[derive(Debug, Default)]
pub struct SharedCounters {
    /// Blocks served from the cache bucket.
    pub hits: AtomicU64,
    /// Blocks not in it.
    pub misses: AtomicU64,
    /// Blocks found but not served (metadata, length or checksum did not check).
    pub rejects: AtomicU64,
    /// Reads that failed (no answer, denied...).
    pub errors: AtomicU64,
    /// Bytes served from it.
    pub hit_bytes: AtomicU64,
    /// Blocks written to it.
    pub puts: AtomicU64,
    /// Writes that failed.
    pub put_errors: AtomicU64,
    /// Bytes of blocks not written because the queue was full.
    pub skipped_bytes: AtomicU64,
}

/// [`SharedCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedSnapshot {
    pub hits: u64,
    pub misses: u64,
    pub rejects: u64,
    pub errors: u64,
    pub hit_bytes: u64,
    pub puts: u64,
    pub put_errors: u64,
    pub skipped_bytes: u64,
}

impl std::fmt::Display for SharedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hits={} misses={} rejects={} errors={} hit_bytes={} puts={} put_errors={} skipped_bytes={}",
            self.hits,
            self.misses,
            self.rejects,
            self.errors,
            self.hit_bytes,
            self.puts,
            self.put_errors,
            self.skipped_bytes
        )
    }
}

impl SharedCounters {
    /// The counts now.
    pub fn snapshot(&self) -> SharedSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedSnapshot {
            hits: get(&self.hits),
            misses: get(&self.misses),
            rejects: get(&self.rejects),
            errors: get(&self.errors),
            hit_bytes: get(&self.hit_bytes),
            puts: get(&self.puts),
            put_errors: get(&self.put_errors),
            skipped_bytes: get(&self.skipped_bytes),
        }
    }
}

/// A cache bucket shared by many mounts.
#[derive(Debug)]
pub struct SharedCache {
    store: Arc<dyn BlockStore>,
    layout: Layout,
    bucket: String,
    max_object_size: u64,
    directory_bucket: bool,
    /// Bytes of blocks waiting to be written.
    queue: Arc<MemoryBudget>,
    /// PUTs in flight.
    puts: Semaphore,
    /// Until when reads, and writes, leave the bucket alone after a failure.
    reads_paused: Mutex<Option<Instant>>,
    writes_paused: Mutex<Option<Instant>>,
    /// Whether the one warning about a failing cache bucket has been logged.
    warned: AtomicBool,
    counters: SharedCounters,
}

impl SharedCache {
    /// The shared cache `config` describes, reached through `store`.
    pub fn new(store: Arc<dyn BlockStore>, config: &SharedCacheConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            layout: Layout::new(&config.source_bucket, config.block_size),
            bucket: config.bucket.clone(),
            max_object_size: config.max_object_size,
            directory_bucket: config.directory_bucket,
            queue: MemoryBudget::new(WRITE_QUEUE_BYTES),
            puts: Semaphore::new(PUTS_IN_FLIGHT),
            reads_paused: Mutex::new(None),
            writes_paused: Mutex::new(None),
            warned: AtomicBool::new(false),
            counters: SharedCounters::default(),
        })
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.layout.block_size()
    }

    /// Whether an object of `size` bytes is shared at all.
    pub fn covers(&self, size: u64) -> bool {
        size > 0 && size <= self.max_object_size
    }

    /// What it did so far.
    pub fn counters(&self) -> &SharedCounters {
        &self.counters
    }

    /// Block `index` of `key` at `etag` (an object of `size` bytes), whole, if the cache
    /// bucket has it and it checks; `None` for a miss, a rejected block or a failure.
    pub async fn get(&self, key: &str, etag: &str, size: u64, index: u64) -> Option<Bytes> {
        if !self.covers(size) || paused(&self.reads_paused) {
            return None;
        }
        let block_key = self.layout.block_key(key, etag, index);
        let add = |c: &AtomicU64, n: u64| c.fetch_add(n, Ordering::Relaxed);
        match tokio::time::timeout(GET_TIMEOUT, self.store.get_tagged(&block_key)).await {
            Err(_) => self.failed(Side::Read, "no answer in time"),
            Ok(Err(e)) => self.failed(Side::Read, &e.to_string()),
            Ok(Ok(None)) => {
                add(&self.counters.misses, 1);
            }
            Ok(Ok(Some(block))) => match self.layout.verify(key, etag, size, index, &block) {
                Ok(()) => {
                    add(&self.counters.hits, 1);
                    add(&self.counters.hit_bytes, block.data.len() as u64);
                    return Some(block.data);
                }
                Err(reason) => {
                    add(&self.counters.rejects, 1);
                    warn!(key, index, %reason, cache_key = block_key, "shared cache block rejected; reading from the source");
                }
            },
        }
        None
    }

    /// Writes block `index` of `key` at `etag` (an object of `size` bytes) in the
    /// background; dropped (and counted) when the write queue is full or writes are paused.
    /// Must be called within the tokio runtime.
    pub fn put(self: &Arc<Self>, key: &str, etag: &str, size: u64, index: u64, data: Bytes) {
        if !self.covers(size) || paused(&self.writes_paused) {
            return;
        }
        if data.len() as u64 != self.layout.block_len(size, index) {
            return;
        }
        let Some(queued) = self.queue.try_reserve(data.len() as u64) else {
            self.counters
                .skipped_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            return;
        };
        let put = self.layout.block_put(key, etag, index, &data);
        let block_key = self.layout.block_key(key, etag, index);
        let this = self.clone();
        tokio::spawn(async move {
            let _queued = queued;
            let Ok(_slot) = this.puts.acquire().await else {
                return;
            };
            if this.write(&block_key, data, put).await {
                this.counters.puts.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Writes the probe object Mountpoint writes at mount (its layout, to a directory
    /// bucket with its storage class), in the background: a failure is the one warning
    /// and pauses writes, and the mount goes on reading from the source.
    pub fn probe(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let this = self.clone();
        runtime.spawn(async move {
            let (key, body) = this.layout.probe();
            let put = crate::s3::TaggedPut {
                storage_class: this
                    .directory_bucket
                    .then(|| format::EXPRESS_STORAGE_CLASS.to_string()),
                ..Default::default()
            };
            if this.write(&key, body.into(), put).await {
                info!(bucket = %this.bucket, "shared cache bucket is writable");
            }
        });
    }

    /// One PUT to the cache bucket within its deadline; a failure is [`SharedCache::failed`].
    async fn write(&self, key: &str, data: Bytes, put: crate::s3::TaggedPut) -> bool {
        match tokio::time::timeout(PUT_TIMEOUT, self.store.put_tagged(key, data, put)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.failed(Side::Write, &e.to_string());
                false
            }
            Err(_) => {
                self.failed(Side::Write, "no answer in time");
                false
            }
        }
    }

    /// A failed read or write: counted, that side paused, and the first failure of the
    /// mount warned about (later ones at debug).
    fn failed(&self, side: Side, error: &str) {
        let (counter, pause, length, what) = match side {
            Side::Read => (
                &self.counters.errors,
                &self.reads_paused,
                READ_PAUSE,
                "read",
            ),
            Side::Write => (
                &self.counters.put_errors,
                &self.writes_paused,
                WRITE_PAUSE,
                "write",
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *pause.lock().expect("pause lock poisoned") = Some(Instant::now() + length);
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(
                bucket = %self.bucket,
                "shared cache bucket failed to {what} ({error}); reads go to the source bucket, and the shared cache is tried again every {}s",
                length.as_secs()
            );
        } else {
            debug!(bucket = %self.bucket, what, error, "shared cache failure");
        }
    }
}

/// Which way a request to the cache bucket went.
#[derive(Debug, Clone, Copy)]
enum Side {
    Read,
    Write,
}

/// Whether a pause is still running.
fn paused(pause: &Mutex<Option<Instant>>) -> bool {
    pause
        .lock()
        .expect("pause lock poisoned")
        .is_some_and(|until| Instant::now() < until)
}

#[cfg(test)]
mod tests;
