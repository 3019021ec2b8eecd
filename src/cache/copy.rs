//! Whole-object copies: once every block of an object version is cached, the blocks are
//! copied (each checked) into one plain file holding exactly the object, synced and renamed
//! into place with a sidecar of chunk sums and the file's identity ([`whole`]), and the
//! blocks deleted. The kernel can then read the copy directly (FUSE passthrough). Copies are
//! made only while the kernel agreed to passthrough (otherwise they would only cost a write),
//! count against the size bound, and are evicted whole.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tracing::debug;

use super::files::{Place, TmpName, allocated, allocation_estimate};
use super::index::{BlockId, Index};
use super::{DiskCache, SUMS_BYTES, WHOLE, block, whole};
use crate::memory::page_aligned;

impl DiskCache {
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
        let total = allocation_estimate(size)
            + allocation_estimate(whole::encoded_len(object_id.len(), size) as u64);
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
        let placed = match self.write_whole(hash, &object_id, size) {
            Ok(Some((tmp, sums))) => {
                let placed = self.place_whole(&tmp, hash, &object_id, size, &sums);
                if !matches!(placed, Ok(true)) {
                    self.files.remove_tmp(&tmp);
                }
                placed
            }
            Ok(None) => Ok(false), // a block went missing or failed its check
            Err(e) => Err(e),
        };
        let copied: Vec<BlockId> = {
            let mut accounting = self.lock_index();
            accounting.unreserve(total);
            if matches!(placed, Ok(true)) {
                // What the disk really gave both files, if it says.
                let on_disk = [Place::Whole(hash), Place::Sums(hash)]
                    .iter()
                    .map(|&place| self.files.stat(place).map(|s| allocated(&s)))
                    .sum::<std::io::Result<u64>>()
                    .map_or(total, |bytes| bytes.max(total));
                accounting.insert((hash, WHOLE), on_disk);
                let copied = (0..blocks)
                    .map(|index| (hash, index))
                    .filter(|id| accounting.remove(id).is_some())
                    .collect();
                self.evict_locked(&mut accounting, self.max_bytes);
                copied
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
            Ok(false) => false,
            Err(e) => {
                debug!(key, "whole-object copy not written: {e}");
                false
            }
        }
    }

    /// Renames the written copy `tmp` into place and writes its sidecar, recording the
    /// placed file's identity; on failure neither file is left.
    fn place_whole(
        &self,
        tmp: &TmpName,
        hash: u64,
        object_id: &str,
        size: u64,
        sums: &[u32],
    ) -> io::Result<bool> {
        self.files.place(tmp, Place::Whole(hash))?;
        let result = self
            .files
            .open_read(Place::Whole(hash))
            .and_then(|placed| placed.metadata())
            .and_then(|meta| {
                let sidecar = whole::encode(object_id, size, whole::Identity::of(&meta), sums);
                let (mut out, sidecar_tmp) = self.create_tmp(false)?;
                let written = out
                    .write_all(&sidecar)
                    .and_then(|()| self.files.place(&sidecar_tmp, Place::Sums(hash)));
                if written.is_err() {
                    self.files.remove_tmp(&sidecar_tmp);
                }
                written
            });
        if let Err(e) = result {
            self.files.remove(Place::Whole(hash));
            return Err(e);
        }
        Ok(true)
    }

    /// Writes the object's blocks, checked, into a new temporary file and syncs it; returns
    /// the file and the chunk sums, or `None` when a block is missing or bad (nothing is left
    /// then). Like block files, the copy is written with O_DIRECT from one page-aligned
    /// buffer where the filesystem allows it.
    fn write_whole(
        &self,
        hash: u64,
        object_id: &str,
        size: u64,
    ) -> io::Result<Option<(TmpName, Vec<u32>)>> {
        let block_size = self.config.block_size as usize;
        let direct = self.direct_writes.load(Ordering::Relaxed) && block_size % block::CHUNK == 0;
        match self.write_whole_with(hash, object_id, size, direct) {
            Err(e) if direct && self.refuses_direct(&e) => {
                self.write_whole_with(hash, object_id, size, false)
            }
            other => other,
        }
    }

    /// [`DiskCache::write_whole`], with O_DIRECT or through the page cache.
    fn write_whole_with(
        &self,
        hash: u64,
        object_id: &str,
        size: u64,
        direct: bool,
    ) -> io::Result<Option<(TmpName, Vec<u32>)>> {
        let (out, tmp) = self.create_tmp(direct)?;
        match self.fill_whole(&out, hash, object_id, size, direct) {
            Ok(Some(sums)) => Ok(Some((tmp, sums))),
            other => {
                self.files.remove_tmp(&tmp);
                other.map(|_| None)
            }
        }
    }

    /// Copies every block of the object, checked, into `out` (opened with O_DIRECT if
    /// `direct`) and syncs it; the chunk sums, or `None` when a block is missing or bad.
    fn fill_whole(
        &self,
        out: &File,
        hash: u64,
        object_id: &str,
        size: u64,
        direct: bool,
    ) -> io::Result<Option<Vec<u32>>> {
        let block_size = self.config.block_size as usize;
        // One block, padded to whole chunks (an O_DIRECT write's length), on a page boundary.
        let padded = block_size.next_multiple_of(block::CHUNK);
        let mut memory = page_aligned(padded);
        memory.resize(padded, 0);
        let buf = &mut memory[..];
        let mut sums = whole::ChunkSums::default();
        for index in 0..size.div_ceil(block_size as u64) {
            let id = (hash, index);
            let len = match self.read_block_into(id, object_id, index, buf) {
                Ok(len) => len,
                Err(_) => return Ok(None),
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
