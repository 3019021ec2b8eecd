//! Serving cached bytes: a block's header is read and verified once and remembered, then a
//! read fetches and checks only the 4 KiB chunks it needs; a whole-object copy is read the
//! same way against its sidecar. Anything that does not verify is deleted and counted, never
//! served: the caller fetches from S3 instead.
//!
//! Files are read with plain reads, never mmap (see [`read_up_to`]).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::debug;

use super::block::{self, Rejected};
use super::files::Place;
use super::index::BlockId;
use super::{CacheError, DiskCache, WHOLE, whole};

impl DiskCache {
    /// Block `index` of `key` at `etag` (an object of `size` bytes), whole, if cached and
    /// intact.
    pub fn get(&self, key: &str, etag: &str, size: u64, index: u64) -> Option<Bytes> {
        self.lookup(key, etag, size, index, None)
    }

    /// Bytes `within` of block `index` of `key` at `etag` (an object of `size` bytes), if
    /// cached and intact. Only the 4 KiB chunks covering `within` are read and checked. A
    /// block that does not hold exactly the bytes the object has at its place (another
    /// length, or past the end) is rejected: it cannot be the block asked for.
    pub fn read(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        index: u64,
        within: Range<usize>,
    ) -> Option<Bytes> {
        self.lookup(key, etag, size, index, Some(within))
    }

    fn lookup(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        index: u64,
        within: Option<Range<usize>>,
    ) -> Option<Bytes> {
        let Some(expected) = self.block_len(size, index) else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let object_id = self.object_id(key, etag);
        let id = Self::block_id(&object_id, index);
        let whole_id = (id.0, WHOLE);
        let (has_whole, has_block) = {
            let accounting = self.lock_index();
            (accounting.contains(&whole_id), accounting.contains(&id))
        };
        if has_whole {
            match self.read_whole(id.0, &object_id, size, index, within.clone()) {
                Ok(Some(data)) => {
                    self.lock_index().touch(&whole_id);
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(data);
                }
                Ok(None) => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    return None; // past the end of the object: nothing is wrong with the copy
                }
                Err(CacheError::Rejected(why)) => {
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
        match self.read_block(id, &object_id, index, expected, within) {
            Ok(data) => {
                self.lock_index().touch(&id);
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(data)
            }
            Err(CacheError::Rejected(why)) => {
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
    /// of `id`, which must hold `expected` bytes; the header is read and verified once, then
    /// remembered.
    fn read_block(
        &self,
        id: BlockId,
        object_id: &str,
        index: u64,
        expected: usize,
        within: Option<Range<usize>>,
    ) -> Result<Bytes, CacheError> {
        let file = self.files.open_read(Place::Block(id))?;
        let header = self.block_header(&file, id, object_id, index)?;
        if header.data_len != expected {
            return Err(Rejected::Malformed.into());
        }
        let within = within.unwrap_or(0..header.data_len);
        if within.end > header.data_len || within.start > within.end {
            return Err(Rejected::Malformed.into());
        }
        let span = header.chunk_span(within.clone());
        let data = read_exact_fresh(&file, span.len(), (header.data_at + span.start) as u64)?;
        header.verify(span.start, &data)?;
        let data = Bytes::from(data);
        Ok(data.slice(within.start - span.start..within.end - span.start))
    }

    /// The verified header of block file `file`, checked once and then remembered.
    fn block_header(
        &self,
        file: &File,
        id: BlockId,
        object_id: &str,
        index: u64,
    ) -> Result<Arc<block::Header>, CacheError> {
        if let Some(header) = self.headers.get(&id) {
            return Ok(header);
        }
        let want = block::max_header_len(object_id.len(), self.config.block_size as usize);
        let buf = read_up_to(file, 0, want)?;
        let header = block::decode_header(&buf, object_id, index)?;
        if file.metadata()?.len() != header.file_len() {
            return Err(Rejected::Malformed.into());
        }
        let header = Arc::new(header);
        self.headers.insert(id, header.clone());
        Ok(header)
    }

    /// Reads all the data of block `id`, checked, into the start of `out`; its length.
    pub(super) fn read_block_into(
        &self,
        id: BlockId,
        object_id: &str,
        index: u64,
        out: &mut [u8],
    ) -> Result<usize, CacheError> {
        let file = self.files.open_read(Place::Block(id))?;
        let header = self.block_header(&file, id, object_id, index)?;
        let Some(data) = out.get_mut(..header.data_len) else {
            return Err(Rejected::Malformed.into());
        };
        read_exact_or_malformed(&file, data, header.data_at as u64)?;
        header.verify(0, data)?;
        Ok(header.data_len)
    }

    /// The verified sidecar of the whole-object copy of `object_id` (hashed `hash`).
    fn load_sums(&self, hash: u64, object_id: &str) -> Result<Arc<whole::Sums>, CacheError> {
        if let Some(sums) = self.sums.get(&hash) {
            return Ok(sums);
        }
        let buf = self.files.read_all(Place::Sums(hash))?;
        let sums = Arc::new(whole::decode(&buf, object_id)?);
        self.sums.insert(hash, sums.clone());
        Ok(sums)
    }

    /// Bytes `within` (all when `None`) of block `index`, read from the whole-object copy
    /// of `object_id` (an object of `size` bytes) and checked chunk by chunk; `None` when the
    /// object has no such bytes.
    fn read_whole(
        &self,
        hash: u64,
        object_id: &str,
        size: u64,
        index: u64,
        within: Option<Range<usize>>,
    ) -> Result<Option<Bytes>, CacheError> {
        let sums = self.load_sums(hash, object_id)?;
        if sums.size != size {
            return Err(Rejected::OtherBlock.into());
        }
        let base = index.saturating_mul(self.config.block_size);
        if base >= sums.size {
            return Ok(None);
        }
        let block_len = (sums.size - base).min(self.config.block_size) as usize;
        let within = within.unwrap_or(0..block_len);
        if within.end > block_len || within.start > within.end {
            return Ok(None);
        }
        let chunk = block::CHUNK as u64;
        let start = (base + within.start as u64) / chunk * chunk;
        let end = (base + within.end as u64)
            .next_multiple_of(chunk)
            .min(sums.size);
        let file = self.files.open_read(Place::Whole(hash))?;
        let data = read_exact_fresh(&file, (end - start) as usize, start)?;
        sums.verify(start, &data)?;
        let from = (base + within.start as u64 - start) as usize;
        Ok(Some(Bytes::from(data).slice(from..from + within.len())))
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
            let file = self.files.open_read(Place::Whole(id.0))?;
            let identity = whole::Identity::of(&file.metadata()?);
            Ok((sums.identity == identity).then_some(file))
        });
        match checked {
            Ok(Some(file)) => {
                self.lock_index().touch(&id);
                self.counters.whole_opens.fetch_add(1, Ordering::Relaxed);
                Some(file)
            }
            Ok(None) | Err(CacheError::Rejected(_)) => {
                debug!(key, "whole-object copy changed on disk; dropped");
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.discard(id);
                None
            }
            Err(CacheError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
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
}

/// Fills `buf` from `file` at `offset`; a file too short for it is a malformed cache file
/// (truncated), not an I/O error.
fn read_exact_or_malformed(file: &File, buf: &mut [u8], offset: u64) -> Result<(), CacheError> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Rejected::Malformed.into()),
        Err(e) => Err(e.into()),
    }
}

/// Exactly `len` bytes of `file` from `offset`, read into a new buffer that is not zeroed
/// first (zeroing each 1 MiB block before reading over it was 5% of a cached re-read's CPU);
/// a file too short for them is a malformed cache file.
fn read_exact_fresh(file: &File, len: usize, offset: u64) -> Result<Vec<u8>, CacheError> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut filled = 0;
    while filled < len {
        let at = i64::try_from(offset + filled as u64).map_err(|_| Rejected::Malformed)?;
        // SAFETY: the kernel writes at most `len - filled` bytes into the spare capacity
        // from `filled` on, which the Vec owns (capacity `len`); nothing reads it before.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                len - filled,
                at,
            )
        };
        match n {
            0 => return Err(Rejected::Malformed.into()),
            n if n > 0 => {
                filled += n as usize;
                // SAFETY: the first `filled` bytes were written by pread (`filled <= len`).
                unsafe { buf.set_len(filled) };
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(buf)
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
pub(super) fn header_weight(header: &block::Header) -> u32 {
    u32::try_from(64 + header.data_len.div_ceil(block::CHUNK) * 4).unwrap_or(u32::MAX)
}
