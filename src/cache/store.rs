//! Storing fetched blocks: admitted to a bounded queue (so a disk slower than S3 never grows
//! memory), counted against the size bound before their file is written (so temporary files
//! and blocks together never pass it), written to `tmp/` and renamed into place under the
//! index lock (so no block outlives its eviction). Page-aligned blocks are written with
//! O_DIRECT while the disk keeps up.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use super::files::{Place, TmpName, allocation_estimate};
use super::{DiskCache, QUEUE_BYTES, WHOLE, block};
use crate::memory::{Reservation, page_aligned};

impl DiskCache {
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
        // The bound counts what the disk gives the file, not its length.
        let size = allocation_estimate((header.len() + data.len()) as u64);
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
            if accounting.contains(&id) || accounting.contains(&(id.0, WHOLE)) {
                self.files.remove_tmp(&tmp);
                return Ok(());
            }
            // What the disk really took (more than estimated on some filesystems): counted,
            // and the bound restored at once if it is passed.
            let on_disk = self.files.tmp_allocated(&tmp).unwrap_or(size).max(size);
            match self.files.place(&tmp, Place::Block(id)) {
                Ok(()) => {
                    accounting.insert(id, on_disk);
                    if on_disk > size {
                        self.evict_locked(&mut accounting, self.max_bytes);
                    }
                    Ok(())
                }
                Err(e) => {
                    self.files.remove_tmp(&tmp);
                    Err(e)
                }
            }
        });
        drop(accounting);
        if let Err(e) = result {
            if !self.warned.swap(true, Ordering::Relaxed) {
                warn!(
                    dir = %self.files.shown(),
                    "data cache cannot store blocks ({e}); reads go on from S3"
                );
            }
        }
    }

    /// A new file in `tmp/` under a fresh name, with O_DIRECT if `direct`.
    pub(super) fn create_tmp(&self, direct: bool) -> io::Result<(File, TmpName)> {
        let name = format!(
            "{}-{}",
            std::process::id(),
            self.next_tmp.fetch_add(1, Ordering::Relaxed)
        );
        self.files.create_tmp(name, direct)
    }

    /// Writes `header` then `data` to a new temporary file and returns its name.
    ///
    /// A page-aligned block (a whole block of a GET body, see `s3::sdk`) is written with
    /// O_DIRECT while the disk keeps up (little is queued): the disk reads it straight from
    /// that memory, so caching a first read costs no copy into the page cache (measured: that
    /// copy was a third of the mount's CPU on a cached first read). When blocks queue up (S3
    /// faster than the disk), they go through the page cache, which absorbs the burst instead
    /// of blocks being skipped. Other blocks, and every block once the filesystem refuses
    /// O_DIRECT (tmpfs), are written through the page cache.
    fn write_tmp(&self, header: &[u8], data: &[u8]) -> io::Result<TmpName> {
        let keeping_up = self.queued.used() <= QUEUE_BYTES / 4;
        let direct =
            keeping_up && self.direct_writes.load(Ordering::Relaxed) && direct_ok(header, data);
        if direct {
            match self.write_new(true, header, data) {
                Err(e) if self.refuses_direct(&e) => {}
                other => return other,
            }
        }
        self.write_new(false, header, data)
    }

    /// A new temporary file holding `header` then `data`, written with O_DIRECT (see
    /// [`direct_ok`]) or through the page cache; nothing is left of it on failure.
    fn write_new(&self, direct: bool, header: &[u8], data: &[u8]) -> io::Result<TmpName> {
        let (out, tmp) = self.create_tmp(direct)?;
        let written = if direct {
            write_direct(&out, header, data)
        } else {
            write_buffered(out, header, data)
        };
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                self.files.remove_tmp(&tmp);
                Err(e)
            }
        }
    }

    /// Whether `e` says the cache's filesystem refuses O_DIRECT; if so, every later write
    /// goes through the page cache.
    pub(super) fn refuses_direct(&self, e: &io::Error) -> bool {
        let refused = e.raw_os_error() == Some(libc::EINVAL);
        if refused && self.direct_writes.swap(false, Ordering::Relaxed) {
            debug!("the cache's filesystem refuses O_DIRECT ({e}); writing through the page cache");
        }
        refused
    }
}

/// Whether a block file of `header` then `data` can be written with O_DIRECT: every length
/// and the data's address on a page boundary (the header is copied to an aligned buffer).
pub(super) fn direct_ok(header: &[u8], data: &[u8]) -> bool {
    let aligned = |n: usize| n % block::CHUNK == 0;
    aligned(header.len()) && aligned(data.len()) && aligned(data.as_ptr() as usize)
}

/// Writes `header` then `data` into the new file `out`, through the page cache.
fn write_buffered(mut out: File, header: &[u8], data: &[u8]) -> io::Result<()> {
    out.write_all(header)?;
    out.write_all(data)
}

/// Writes `header` then `data` into the new file `out`, opened with O_DIRECT (see
/// [`direct_ok`]).
fn write_direct(out: &File, header: &[u8], data: &[u8]) -> io::Result<()> {
    let mut aligned_header = page_aligned(header.len());
    aligned_header.extend_from_slice(header);
    out.write_all_at(&aligned_header, 0)?;
    out.write_all_at(data, header.len() as u64)
}
