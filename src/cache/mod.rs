//! The local data cache: fixed-size blocks of objects stored as files under `--cache DIR`, so
//! the second epoch reads at local-disk speed.
//!
//! Blocks are keyed by (bucket, key, ETag, block index): a changed object can never be served
//! from old blocks. Each block file carries a header and a CRC32C ([`block`]); anything that
//! does not verify is deleted and fetched again, never served. The total size is bounded
//! (`--max-cache-size`, or keeping 5% of the cache's filesystem free): least recently used
//! blocks are evicted before a new block file is put in place, so the bound on block files
//! holds at every moment (a block being written sits in `tmp/` until then). The
//! directory survives remounts (blocks are reused once the ETag revalidates), and a lock file
//! keeps a second mount from using it at the same time.
//!
//! Blocks are read with plain reads rather than mmap (see `read_up_to`). A block's header is
//! verified once and remembered (bounded); after that a read fetches and checks only the
//! 4 KiB chunks it needs.
//!
//! Once every block of an object version is cached, and whole copies are on (the kernel
//! agreed to FUSE passthrough), the blocks are copied into one whole-object file under
//! `objects/` and deleted ([`whole`]): the kernel can read that file directly. It is
//! accounted and evicted like a block, under the "block index" `WHOLE`.
//!
//! All methods do blocking file I/O: call them from `spawn_blocking` (or inline where
//! `fs::blocking` allows).

pub mod block;
pub mod index;
pub mod whole;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::fs::memory::{MemoryBudget, Reservation};
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

/// Share of the cache's filesystem kept free when no `--max-cache-size` is given.
const FREE_SHARE_PERCENT: u64 = 5;

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

/// An open cache directory.
#[derive(Debug)]
pub struct DiskCache {
    config: CacheConfig,
    blocks_dir: PathBuf,
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    /// The byte bound in force.
    max_bytes: u64,
    /// Guards the block accounting; held for bookkeeping and unlinks, not for reads/writes.
    index: Mutex<Index>,
    /// Held (flocked) for the life of the mount.
    _lock: File,
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
    /// Opens (or creates) the cache at `config.dir`, locks it, and indexes the blocks a
    /// previous mount left. The error is one line for the user.
    pub fn open(config: CacheConfig) -> Result<Self, String> {
        let shown = config.dir.display().to_string();
        let blocks_dir = config.dir.join("blocks");
        let objects_dir = config.dir.join("objects");
        let tmp_dir = config.dir.join("tmp");
        for dir in [&blocks_dir, &objects_dir, &tmp_dir] {
            fs::create_dir_all(dir).map_err(|e| format!("--cache {shown}: {e}"))?;
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
            None => bound_from_free_space(&config.dir, index.used())
                .map_err(|e| format!("--cache {shown}: {e}"))?,
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

    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.config.block_size
    }

    /// Bytes held on disk now.
    pub fn used(&self) -> u64 {
        self.lock_index().used()
    }

    /// The bound in force.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("cache index lock poisoned")
    }

    /// The identity of an object version's blocks.
    fn object_id(&self, key: &str, etag: &str) -> String {
        format!("{}\0{key}\0{etag}", self.config.bucket)
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

    /// The block file of `id`, or the data file of a whole-object copy.
    fn path_of(&self, id: BlockId) -> PathBuf {
        if id.1 == WHOLE {
            return self.objects_dir.join(format!("{:016x}", id.0));
        }
        self.blocks_dir
            .join(format!("{:02x}", id.0 >> 56))
            .join(format!("{:016x}-{}", id.0, id.1))
    }

    /// The sidecar of the whole-object copy of the object hashed `hash`.
    fn sums_path(&self, hash: u64) -> PathBuf {
        self.objects_dir.join(format!("{hash:016x}.sum"))
    }

    /// Deletes the files of `id` (a block, or both files of a whole-object copy) and what
    /// is remembered of them. The caller has taken `id` out of the index.
    fn remove_files(&self, id: BlockId) {
        if id.1 == WHOLE {
            self.sums.invalidate(&id.0);
            let _ = fs::remove_file(self.sums_path(id.0));
        } else {
            self.headers.invalidate(&id);
        }
        let _ = fs::remove_file(self.path_of(id));
    }

    /// Block `index` of `key` at `etag`, whole, if cached and intact.
    pub fn get(&self, key: &str, etag: &str, index: u64) -> Option<Bytes> {
        self.lookup(key, etag, index, None)
    }

    /// Bytes `within` of block `index` of `key` at `etag`, if cached and intact. Only the
    /// 4 KiB chunks covering `within` are read and checked. A block holding fewer bytes than
    /// `within.end` is rejected (it cannot be the block asked for).
    pub fn read(&self, key: &str, etag: &str, index: u64, within: Range<usize>) -> Option<Bytes> {
        self.lookup(key, etag, index, Some(within))
    }

    fn lookup(
        &self,
        key: &str,
        etag: &str,
        index: u64,
        within: Option<Range<usize>>,
    ) -> Option<Bytes> {
        let object_id = self.object_id(key, etag);
        let id = Self::block_id(&object_id, index);
        let whole_id = (id.0, WHOLE);
        let (has_whole, has_block) = {
            let accounting = self.lock_index();
            (accounting.contains(&whole_id), accounting.contains(&id))
        };
        if has_whole {
            match self.read_whole(id.0, &object_id, index, within.clone()) {
                Ok(Ok(Some(data))) => {
                    self.lock_index().touch(&whole_id);
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(data);
                }
                Ok(Ok(None)) => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    return None; // past the end of the object: nothing is wrong with the copy
                }
                Ok(Err(why)) => {
                    debug!(
                        key,
                        index,
                        ?why,
                        "whole-object copy rejected; fetching again"
                    );
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    self.discard(whole_id);
                }
                Err(e) => {
                    debug!(key, index, "whole-object copy unreadable: {e}");
                    self.discard(whole_id);
                }
            }
        }
        if !has_block {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let path = self.path_of(id);
        match self.read_block(&path, id, &object_id, index, within) {
            Ok(Ok(data)) => {
                self.lock_index().touch(&id);
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(data)
            }
            Ok(Err(why)) => {
                debug!(key, index, ?why, "cached block rejected; fetching again");
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.discard(id);
                None
            }
            Err(e) => {
                debug!(key, index, "cached block unreadable: {e}");
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.discard(id);
                None
            }
        }
    }

    /// Reads and verifies the chunks of `within` (all data when `None`) from the block file
    /// at `path`; the header is read and verified once, then remembered.
    fn read_block(
        &self,
        path: &Path,
        id: BlockId,
        object_id: &str,
        index: u64,
        within: Option<Range<usize>>,
    ) -> io::Result<Result<Bytes, block::Rejected>> {
        let file = File::open(path)?;
        let header = match self.block_header(&file, id, object_id, index)? {
            Ok(header) => header,
            Err(why) => return Ok(Err(why)),
        };
        let within = within.unwrap_or(0..header.data_len);
        if within.end > header.data_len || within.start > within.end {
            return Ok(Err(block::Rejected::Malformed));
        }
        let span = header.chunk_span(within.clone());
        let mut data = vec![0; span.len()];
        if let Err(why) =
            read_exact_or_malformed(&file, &mut data, (header.data_at + span.start) as u64)?
        {
            return Ok(Err(why));
        }
        if let Err(why) = header.verify(span.start, &data) {
            return Ok(Err(why));
        }
        let data = Bytes::from(data);
        Ok(Ok(
            data.slice(within.start - span.start..within.end - span.start)
        ))
    }

    /// The verified header of block file `file`, checked once and then remembered.
    fn block_header(
        &self,
        file: &File,
        id: BlockId,
        object_id: &str,
        index: u64,
    ) -> io::Result<Result<Arc<block::Header>, block::Rejected>> {
        if let Some(header) = self.headers.get(&id) {
            return Ok(Ok(header));
        }
        let want = block::max_header_len(object_id.len(), self.config.block_size as usize);
        let buf = read_up_to(file, 0, want)?;
        let header = match block::decode_header(&buf, object_id, index) {
            Ok(header) => header,
            Err(why) => return Ok(Err(why)),
        };
        if file.metadata()?.len() != header.file_len() {
            return Ok(Err(block::Rejected::Malformed));
        }
        let header = Arc::new(header);
        self.headers.insert(id, header.clone());
        Ok(Ok(header))
    }

    /// Reads all the data of block `id`, checked, into the start of `out`; its length.
    fn read_block_into(
        &self,
        path: &Path,
        id: BlockId,
        object_id: &str,
        index: u64,
        out: &mut [u8],
    ) -> io::Result<Result<usize, block::Rejected>> {
        let file = File::open(path)?;
        let header = match self.block_header(&file, id, object_id, index)? {
            Ok(header) => header,
            Err(why) => return Ok(Err(why)),
        };
        let Some(data) = out.get_mut(..header.data_len) else {
            return Ok(Err(block::Rejected::Malformed));
        };
        if let Err(why) = read_exact_or_malformed(&file, data, header.data_at as u64)? {
            return Ok(Err(why));
        }
        Ok(header.verify(0, data).map(|()| header.data_len))
    }

    fn discard(&self, id: BlockId) {
        let mut accounting = self.lock_index();
        if accounting.remove(&id).is_some() {
            self.remove_files(id);
        }
    }

    /// Admits `bytes` of fetched blocks to be written in the background, or refuses them
    /// (counting them as skipped) while [`QUEUE_BYTES`] are already waiting: the reader never
    /// waits for the disk, and memory stays bounded when the disk is slower than S3. The
    /// admission ends when the returned reservation is dropped.
    pub fn queue(&self, bytes: u64) -> Option<Reservation> {
        let admitted = self.queued.try_reserve(bytes);
        if admitted.is_none() {
            self.counters
                .skipped_bytes
                .fetch_add(bytes, Ordering::Relaxed);
        }
        admitted
    }

    /// Stores block `index` of `key` at `etag`. Failures (disk full, unwritable directory)
    /// cost one warning for the whole mount; reads go on from S3.
    pub fn put(&self, key: &str, etag: &str, index: u64, data: &[u8]) {
        let object_id = self.object_id(key, etag);
        let id = Self::block_id(&object_id, index);
        let header = block::encode_header(&object_id, index, data);
        let size = (header.len() + data.len()) as u64;
        if size > self.max_bytes || self.lock_index().contains(&id) {
            return;
        }
        if self.lock_index().contains(&(id.0, WHOLE)) {
            return; // the object is held whole (a reader raced the copy)
        }
        // Room is made and the block's bytes are counted before the temporary file is
        // written, so temporary files and blocks together never pass the bound, however many
        // blocks are being written at once. The rename that puts the block in place happens
        // under the index lock, so no block file outlives its eviction.
        {
            let mut accounting = self.lock_index();
            if accounting.contains(&id) {
                return;
            }
            self.evict_locked(&mut accounting, self.max_bytes - size);
            if accounting.used() + size > self.max_bytes {
                return; // the rest of the bound is promised to blocks being written
            }
            accounting.reserve(size);
        }
        let written = self.write_tmp(&header, data);
        let mut accounting = self.lock_index();
        accounting.unreserve(size);
        let result = written.and_then(|tmp| {
            let path = self.path_of(id);
            if accounting.contains(&id) || accounting.contains(&(id.0, WHOLE)) {
                let _ = fs::remove_file(&tmp);
                return Ok(());
            }
            let placed = path
                .parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|()| fs::rename(&tmp, &path));
            match placed {
                Ok(()) => {
                    accounting.insert(id, size);
                    Ok(())
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    Err(e)
                }
            }
        });
        drop(accounting);
        if let Err(e) = result {
            if !self.warned.swap(true, Ordering::Relaxed) {
                warn!(
                    dir = %self.config.dir.display(),
                    "data cache cannot store blocks ({e}); reads go on from S3"
                );
            }
        }
    }

    /// A fresh name in `tmp/`.
    fn tmp_path(&self) -> PathBuf {
        self.tmp_dir.join(format!(
            "{}-{}",
            std::process::id(),
            self.next_tmp.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Writes `header` then `data` to a new temporary file and returns its path.
    ///
    /// A page-aligned block (a whole block of a GET body, see `s3::sdk`) is written with
    /// O_DIRECT while the disk keeps up (little is queued): the disk reads it straight from
    /// that memory, so caching a first read costs no copy into the page cache (measured: that
    /// copy was a third of the mount's CPU on a cached first read). When blocks queue up (S3
    /// faster than the disk), they go through the page cache, which absorbs the burst instead
    /// of blocks being skipped. Other blocks, and every block once the filesystem refuses
    /// O_DIRECT (tmpfs), are written through the page cache.
    fn write_tmp(&self, header: &[u8], data: &[u8]) -> io::Result<PathBuf> {
        let tmp = self.tmp_path();
        let keeping_up = self.queued.used() <= QUEUE_BYTES / 4;
        let direct = keeping_up && self.direct_writes.load(Ordering::Relaxed);
        let written = if direct && direct_ok(header, data) {
            match write_direct(&tmp, header, data) {
                Err(e) if self.refuses_direct(&e) => write_buffered(&tmp, header, data),
                other => other,
            }
        } else {
            write_buffered(&tmp, header, data)
        };
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The verified sidecar of the whole-object copy of `object_id` (hashed `hash`).
    fn load_sums(
        &self,
        hash: u64,
        object_id: &str,
    ) -> io::Result<Result<Arc<whole::Sums>, block::Rejected>> {
        if let Some(sums) = self.sums.get(&hash) {
            return Ok(Ok(sums));
        }
        let buf = fs::read(self.sums_path(hash))?;
        Ok(whole::decode(&buf, object_id).map(|sums| {
            let sums = Arc::new(sums);
            self.sums.insert(hash, sums.clone());
            sums
        }))
    }

    /// Bytes `within` (all when `None`) of block `index`, read from the whole-object copy
    /// of `object_id` and checked chunk by chunk; `None` when the object has no such bytes.
    fn read_whole(
        &self,
        hash: u64,
        object_id: &str,
        index: u64,
        within: Option<Range<usize>>,
    ) -> io::Result<Result<Option<Bytes>, block::Rejected>> {
        let sums = match self.load_sums(hash, object_id)? {
            Ok(sums) => sums,
            Err(why) => return Ok(Err(why)),
        };
        let base = index.saturating_mul(self.config.block_size);
        if base >= sums.size {
            return Ok(Ok(None));
        }
        let block_len = (sums.size - base).min(self.config.block_size) as usize;
        let within = within.unwrap_or(0..block_len);
        if within.end > block_len || within.start > within.end {
            return Ok(Ok(None));
        }
        let chunk = block::CHUNK as u64;
        let start = (base + within.start as u64) / chunk * chunk;
        let end = (base + within.end as u64)
            .next_multiple_of(chunk)
            .min(sums.size);
        let mut data = vec![0; (end - start) as usize];
        let file = File::open(self.path_of((hash, WHOLE)))?;
        if let Err(why) = read_exact_or_malformed(&file, &mut data, start)? {
            return Ok(Err(why));
        }
        if let Err(why) = sums.verify(start, &data) {
            return Ok(Err(why));
        }
        let from = (base + within.start as u64 - start) as usize;
        Ok(Ok(Some(Bytes::from(data).slice(from..from + within.len()))))
    }

    /// The whole-object copy of `key` at `etag`, opened, if there is one and its data file
    /// is exactly as it was written (see [`whole`]): for the kernel to read directly.
    pub fn whole_file(&self, key: &str, etag: &str) -> Option<File> {
        let object_id = self.object_id(key, etag);
        let id = (Self::object_hash(&object_id), WHOLE);
        if !self.lock_index().contains(&id) {
            return None;
        }
        let checked = self.load_sums(id.0, &object_id).and_then(|sums| {
            let file = File::open(self.path_of(id))?;
            let identity = whole::Identity::of(&file.metadata()?);
            let same = sums.is_ok_and(|s| s.identity == identity);
            Ok(same.then_some(file))
        });
        match checked {
            Ok(Some(file)) => {
                self.lock_index().touch(&id);
                self.counters.whole_opens.fetch_add(1, Ordering::Relaxed);
                Some(file)
            }
            Ok(None) => {
                debug!(key, "whole-object copy changed on disk; dropped");
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.discard(id);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                debug!(key, "whole-object copy missing: {e}");
                self.discard(id);
                None
            }
            Err(e) => {
                debug!(key, "whole-object copy not opened now: {e}");
                None
            }
        }
    }

    /// Whether every byte of `key` at `etag` (`size` bytes) is cached, as blocks or whole.
    pub fn is_complete(&self, key: &str, etag: &str, size: u64) -> bool {
        let hash = Self::object_hash(&self.object_id(key, etag));
        let accounting = self.lock_index();
        accounting.contains(&(hash, WHOLE)) || self.all_blocks_in(&accounting, hash, size)
    }

    /// Whether every block of the object hashed `hash` (`size` bytes) is in the index.
    fn all_blocks_in(&self, accounting: &Index, hash: u64, size: u64) -> bool {
        // From the end: a stream being read has its missing blocks there.
        (0..size.div_ceil(self.config.block_size))
            .rev()
            .all(|i| accounting.contains(&(hash, i)))
    }

    /// From now on, objects whose every block is cached are copied whole (the kernel agreed
    /// to read such copies directly: without that a copy would only cost a write).
    pub fn enable_whole_copies(&self) {
        self.whole_copies.store(true, Ordering::Relaxed);
    }

    /// No more whole-object copies (the kernel refused a copy after all); copies made stay
    /// in use for reads through mount-s3.
    pub fn disable_whole_copies(&self) {
        self.whole_copies.store(false, Ordering::Relaxed);
    }

    /// A whole-object copy of `key` at `etag` (`size` bytes) to make, if copies are on and
    /// one is worth starting now ([`DiskCache::wants_whole`]). Counted as pending until run
    /// or dropped.
    pub fn pending_copy(self: &Arc<Self>, key: &str, etag: &str, size: u64) -> Option<PendingCopy> {
        if !self.whole_copies.load(Ordering::Relaxed) || !self.wants_whole(key, etag, size) {
            return None;
        }
        self.copies_pending.fetch_add(1, Ordering::AcqRel);
        Some(PendingCopy {
            cache: self.clone(),
            key: key.to_string(),
            etag: etag.to_string(),
            size,
        })
    }

    /// Whole-object copies asked for and not finished.
    pub fn pending_copies(&self) -> usize {
        self.copies_pending.load(Ordering::Acquire)
    }

    /// Waits (blocking, at most `timeout`) for pending whole-object copies, so that an
    /// unmount leaves them complete; returns how many are still pending.
    pub fn wait_for_copies(&self, timeout: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let pending = self.copies_pending.load(Ordering::Acquire);
            if pending == 0 || std::time::Instant::now() >= deadline {
                return pending;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether a whole-object copy of `key` at `etag` (`size` bytes) is worth starting: there
    /// is none, none is being written, every block is cached, it takes at most half the
    /// bound, and its sidecar at most a quarter of the sidecar memory (16 GiB objects).
    pub fn wants_whole(&self, key: &str, etag: &str, size: u64) -> bool {
        let object_id = self.object_id(key, etag);
        let hash = Self::object_hash(&object_id);
        let sidecar = whole::encoded_len(object_id.len(), size) as u64;
        size > 0
            && size + sidecar <= self.max_bytes / 2
            && sidecar <= SUMS_BYTES / 4
            && !self
                .building
                .lock()
                .expect("building lock poisoned")
                .contains(&hash)
            && {
                let accounting = self.lock_index();
                !accounting.contains(&(hash, WHOLE)) && self.all_blocks_in(&accounting, hash, size)
            }
    }

    /// Copies the cached blocks of `key` at `etag` (`size` bytes) into a whole-object copy
    /// and deletes the blocks. Every block is checked as it is copied, the data is synced
    /// before it is put in place, and the sidecar records the placed file's identity. Does
    /// nothing (returns false) unless [`DiskCache::wants_whole`], or when a block turns out
    /// missing or bad. Blocking file I/O.
    pub fn build_whole(&self, key: &str, etag: &str, size: u64) -> bool {
        if !self.wants_whole(key, etag, size) {
            return false;
        }
        let object_id = self.object_id(key, etag);
        let hash = Self::object_hash(&object_id);
        let total = size + whole::encoded_len(object_id.len(), size) as u64;
        let Some(_building) = Building::start(&self.building, hash) else {
            return false;
        };
        let blocks = size.div_ceil(self.config.block_size);
        {
            let mut accounting = self.lock_index();
            // The object's own blocks are about to be copied: not the ones to evict.
            for index in 0..blocks {
                accounting.touch(&(hash, index));
            }
            self.evict_locked(&mut accounting, self.max_bytes - total);
            if accounting.used() + total > self.max_bytes {
                return false;
            }
            accounting.reserve(total);
        }
        // Until the copy is in the index, its bytes are reserved and no eviction can see its
        // files, so they are placed without holding the index.
        let tmp = self.tmp_path();
        let placed = self
            .write_whole(&tmp, hash, &object_id, size)
            .and_then(|sums| match sums {
                Some(sums) => self.place_whole(&tmp, hash, &object_id, size, &sums),
                None => Ok(false), // a block went missing or failed its check
            });
        let copied: Vec<BlockId> = {
            let mut accounting = self.lock_index();
            accounting.unreserve(total);
            if matches!(placed, Ok(true)) {
                accounting.insert((hash, WHOLE), total);
                (0..blocks)
                    .map(|index| (hash, index))
                    .filter(|id| accounting.remove(id).is_some())
                    .collect()
            } else {
                Vec::new()
            }
        };
        for id in copied {
            self.remove_files(id);
        }
        match placed {
            Ok(true) => {
                self.counters.whole_built.fetch_add(1, Ordering::Relaxed);
                debug!(key, size, "whole-object copy written");
                true
            }
            Ok(false) => {
                let _ = fs::remove_file(&tmp);
                false
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                debug!(key, "whole-object copy not written: {e}");
                false
            }
        }
    }

    /// Renames the written copy `tmp` into place and writes its sidecar, recording the
    /// placed file's identity; on failure neither file is left.
    fn place_whole(
        &self,
        tmp: &Path,
        hash: u64,
        object_id: &str,
        size: u64,
        sums: &[u32],
    ) -> io::Result<bool> {
        let data_path = self.path_of((hash, WHOLE));
        fs::rename(tmp, &data_path)?;
        let sidecar_tmp = self.tmp_path();
        let result = fs::metadata(&data_path).and_then(|meta| {
            let sidecar = whole::encode(object_id, size, whole::Identity::of(&meta), sums);
            fs::write(&sidecar_tmp, &sidecar)?;
            fs::rename(&sidecar_tmp, self.sums_path(hash))
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&sidecar_tmp);
            let _ = fs::remove_file(&data_path);
            return Err(e);
        }
        Ok(true)
    }

    /// Writes the object's blocks, checked, into `tmp` and syncs it; returns the chunk sums,
    /// or `None` when a block is missing or bad. Like block files, the copy is written with
    /// O_DIRECT from one page-aligned buffer where the filesystem allows it.
    fn write_whole(
        &self,
        tmp: &Path,
        hash: u64,
        object_id: &str,
        size: u64,
    ) -> io::Result<Option<Vec<u32>>> {
        let block_size = self.config.block_size as usize;
        let direct = self.direct_writes.load(Ordering::Relaxed) && block_size % block::CHUNK == 0;
        match self.write_whole_with(tmp, hash, object_id, size, direct) {
            Err(e) if direct && self.refuses_direct(&e) => {
                let _ = fs::remove_file(tmp);
                self.write_whole_with(tmp, hash, object_id, size, false)
            }
            other => other,
        }
    }

    /// Whether `e` says the cache's filesystem refuses O_DIRECT; if so, every later write
    /// goes through the page cache.
    fn refuses_direct(&self, e: &io::Error) -> bool {
        let refused = e.raw_os_error() == Some(libc::EINVAL);
        if refused && self.direct_writes.swap(false, Ordering::Relaxed) {
            debug!("the cache's filesystem refuses O_DIRECT ({e}); writing through the page cache");
        }
        refused
    }

    /// [`DiskCache::write_whole`], with O_DIRECT or through the page cache.
    fn write_whole_with(
        &self,
        tmp: &Path,
        hash: u64,
        object_id: &str,
        size: u64,
        direct: bool,
    ) -> io::Result<Option<Vec<u32>>> {
        let out = create_file(tmp, direct)?;
        let block_size = self.config.block_size as usize;
        // One block, padded to whole chunks (an O_DIRECT write's length), on a page boundary.
        let mut memory = PageAligned::new(block_size.next_multiple_of(block::CHUNK));
        let buf = memory.as_mut();
        let mut sums = whole::ChunkSums::default();
        for index in 0..size.div_ceil(block_size as u64) {
            let id = (hash, index);
            let path = self.path_of(id);
            let len = match self.read_block_into(&path, id, object_id, index, buf) {
                Ok(Ok(len)) => len,
                Ok(Err(_)) | Err(_) => return Ok(None),
            };
            let expected = (size - index * block_size as u64).min(block_size as u64);
            if len as u64 != expected {
                return Ok(None);
            }
            // The block's verified header holds the sums of its chunks already.
            match self.headers.get(&id) {
                Some(header) => sums.feed_summed(&buf[..len], header.chunk_crcs()),
                None => sums.feed(&buf[..len]),
            }
            let write_len = if direct {
                // The last block is written whole chunks long, and the file cut back below.
                let whole_chunks = len.next_multiple_of(block::CHUNK);
                buf[len..whole_chunks].fill(0);
                whole_chunks
            } else {
                len
            };
            out.write_all_at(&buf[..write_len], index * block_size as u64)?;
        }
        if direct {
            out.set_len(size)?;
        }
        out.sync_data()?;
        Ok(Some(sums.finish()))
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

/// A whole-object copy to make (blocking file I/O: run it where blocking is allowed).
#[derive(Debug)]
pub struct PendingCopy {
    cache: Arc<DiskCache>,
    key: String,
    etag: String,
    size: u64,
}

impl PendingCopy {
    /// Makes the copy; false if it was not made (see [`DiskCache::build_whole`]).
    pub fn run(self) -> bool {
        self.cache.build_whole(&self.key, &self.etag, self.size)
    }
}

impl Drop for PendingCopy {
    fn drop(&mut self) {
        self.cache.copies_pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks an object as having its whole-object copy written, until dropped.
struct Building<'a> {
    set: &'a Mutex<HashSet<u64>>,
    hash: u64,
}

impl<'a> Building<'a> {
    /// `None` when the object's copy is being written already.
    fn start(set: &'a Mutex<HashSet<u64>>, hash: u64) -> Option<Self> {
        let fresh = set.lock().expect("building lock poisoned").insert(hash);
        fresh.then_some(Self { set, hash })
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.hash);
        }
    }
}

/// Takes the directory's lock file, or explains who holds it.
fn lock_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("--cache {}: {e}", dir.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "--cache {} is in use by another mount-s3 (lock {}); give each mount its own cache directory",
            dir.display(),
            path.display()
        ));
    }
    Ok(file)
}

/// Whether a block file of `header` then `data` can be written with O_DIRECT: every length
/// and the data's address on a page boundary (the header is copied to an aligned buffer).
fn direct_ok(header: &[u8], data: &[u8]) -> bool {
    let aligned = |n: usize| n % block::CHUNK == 0;
    aligned(header.len()) && aligned(data.len()) && aligned(data.as_ptr() as usize)
}

/// Creates `path` holding `header` then `data`, through the page cache.
fn write_buffered(path: &Path, header: &[u8], data: &[u8]) -> io::Result<()> {
    let mut out = File::create(path)?;
    out.write_all(header)?;
    out.write_all(data)
}

/// Zeroed memory of a given length starting on a page boundary, for O_DIRECT writes.
struct PageAligned {
    memory: Vec<u8>,
    at: usize,
    len: usize,
}

impl PageAligned {
    fn new(len: usize) -> Self {
        let memory = vec![0u8; len + block::CHUNK];
        let at = memory.as_ptr().align_offset(block::CHUNK);
        Self { memory, at, len }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.memory[self.at..self.at + self.len]
    }
}

/// Creates the new file `path` for writing, with O_DIRECT if `direct`.
fn create_file(path: &Path, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)
}

/// Creates `path` holding `header` then `data` with O_DIRECT (see [`direct_ok`]).
fn write_direct(path: &Path, header: &[u8], data: &[u8]) -> io::Result<()> {
    let out = create_file(path, true)?;
    let mut aligned_header = PageAligned::new(header.len());
    aligned_header.as_mut().copy_from_slice(header);
    out.write_all_at(aligned_header.as_mut(), 0)?;
    out.write_all_at(data, header.len() as u64)
}

/// Fills `buf` from `file` at `offset`; a file too short for it is a malformed cache file
/// (truncated), not an I/O error.
fn read_exact_or_malformed(
    file: &File,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<Result<(), block::Rejected>> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Err(block::Rejected::Malformed)),
        Err(e) => Err(e),
    }
}

/// Up to `len` bytes of `file` from `offset` (fewer at its end). Plain reads, not mmap: a
/// block file truncated by anyone while mapped would kill the mount with SIGBUS on the next
/// access; a read can only come back short, which the decoder rejects.
fn read_up_to(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Memory a cached header stands for, for the header cache's bound.
fn header_weight(header: &block::Header) -> u32 {
    u32::try_from(64 + header.data_len.div_ceil(block::CHUNK) * 4).unwrap_or(u32::MAX)
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

#[cfg(test)]
mod tests;
