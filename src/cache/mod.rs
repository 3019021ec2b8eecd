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
//! 4 KiB chunks it needs. All methods do blocking file I/O: call them from `spawn_blocking`.

pub mod block;
pub mod index;

use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{debug, info, warn};

use index::{BlockId, Index};

/// Default block size (1 MiB).
pub const DEFAULT_BLOCK_SIZE: u64 = 1024 * 1024;

/// Memory for verified block headers (about 1 KiB per 1 MiB block: 16 MiB covers 16 GiB of
/// cached data with one header read per block).
const HEADER_BYTES: u64 = 16 * 1024 * 1024;

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
}

/// An open cache directory.
#[derive(Debug)]
pub struct DiskCache {
    config: CacheConfig,
    blocks_dir: PathBuf,
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
        let tmp_dir = config.dir.join("tmp");
        for dir in [&blocks_dir, &tmp_dir] {
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
        scan(&blocks_dir, &mut index);
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
            tmp_dir,
            max_bytes,
            index: Mutex::new(index),
            _lock: lock,
            warned: AtomicBool::new(false),
            headers: moka::sync::Cache::builder()
                .max_capacity(HEADER_BYTES)
                .weigher(|_, header: &Arc<block::Header>| header_weight(header))
                .build(),
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

    fn block_id(object_id: &str, index: u64) -> BlockId {
        let mut hasher = DefaultHasher::new();
        object_id.hash(&mut hasher);
        (hasher.finish(), index)
    }

    fn path_of(&self, id: BlockId) -> PathBuf {
        self.blocks_dir
            .join(format!("{:02x}", id.0 >> 56))
            .join(format!("{:016x}-{}", id.0, id.1))
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
        if !self.lock_index().contains(&id) {
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
                self.discard(id, &path);
                None
            }
            Err(e) => {
                debug!(key, index, "cached block unreadable: {e}");
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.discard(id, &path);
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
        let header = match self.headers.get(&id) {
            Some(header) => header,
            None => {
                let want = block::max_header_len(object_id.len(), self.config.block_size as usize);
                let buf = read_up_to(&file, 0, want)?;
                let header = match block::decode_header(&buf, object_id, index) {
                    Ok(header) => header,
                    Err(why) => return Ok(Err(why)),
                };
                if file.metadata()?.len() != header.file_len() {
                    return Ok(Err(block::Rejected::Malformed));
                }
                let header = Arc::new(header);
                self.headers.insert(id, header.clone());
                header
            }
        };
        let within = within.unwrap_or(0..header.data_len);
        if within.end > header.data_len || within.start > within.end {
            return Ok(Err(block::Rejected::Malformed));
        }
        let span = header.chunk_span(within.clone());
        let mut data = vec![0; span.len()];
        match file.read_exact_at(&mut data, (header.data_at + span.start) as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Err(block::Rejected::Malformed));
            }
            Err(e) => return Err(e),
        }
        if let Err(why) = header.verify(span.start, &data) {
            return Ok(Err(why));
        }
        let data = Bytes::from(data);
        Ok(Ok(
            data.slice(within.start - span.start..within.end - span.start)
        ))
    }

    fn discard(&self, id: BlockId, path: &Path) {
        self.headers.invalidate(&id);
        self.lock_index().remove(&id);
        let _ = fs::remove_file(path);
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
            if accounting.contains(&id) {
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

    /// Writes `header` then `data` to a new temporary file and returns its path.
    fn write_tmp(&self, header: &[u8], data: &[u8]) -> io::Result<PathBuf> {
        let tmp = self.tmp_dir.join(format!(
            "{}-{}",
            std::process::id(),
            self.next_tmp.fetch_add(1, Ordering::Relaxed)
        ));
        let written = File::create(&tmp).and_then(|mut out| {
            out.write_all(header)?;
            out.write_all(data)
        });
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
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
            self.headers.invalidate(&id);
            let _ = fs::remove_file(self.path_of(id));
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
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

/// Indexes the block files found under `blocks_dir`, oldest (by mtime) first.
fn scan(blocks_dir: &Path, index: &mut Index) {
    let mut found = Vec::new();
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
