//! Reused buffers for GET bodies of 2 MiB and more, backed by transparent huge pages.
//!
//! Why: a fresh buffer per prefetched part costs the kernel a page fault and a zeroed page
//! for every 4 KiB of it, and the FUSE reply pins the buffer's pages one by one before
//! copying them into the page cache. Measured with `perf` on a 1 GiB sequential read, the
//! faults, the zeroing and the pinning were about a sixth of the mount's CPU. Buffers here
//! are anonymous mappings in whole 2 MiB units, advised for huge pages (one fault and one
//! pinned page per 2 MiB), and kept after use, up to an eighth of the memory target and at
//! most [`IDLE_LIMIT`] bytes, for the next body that fits. Smaller bodies keep using the
//! heap: a 2 MiB unit for a 64 KiB object would waste memory for nothing.
//!
//! A reused buffer still holds the bytes of the body before it; only the bytes written
//! since it was handed out are ever readable through [`BodyBuffer`] or its frozen [`Bytes`].

use std::ptr::NonNull;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};

use crate::sync::Mutex;

/// The unit of pooled buffers: one transparent huge page on x86-64 and arm64 (4 KiB pages).
pub const UNIT: usize = 2 << 20;
/// Bodies this long or longer come from the pool.
pub const POOLED_FROM: usize = UNIT;
/// Most idle bytes kept for reuse; past it the longest idle buffers are unmapped.
pub const IDLE_LIMIT: usize = 64 << 20;

/// The process's pool.
static POOL: LazyLock<Pool> = LazyLock::new(|| Pool::new(IDLE_LIMIT));

/// Sizes the process's pool for a mount whose memory target (`--memory-target`) is
/// `memory_target` bytes: an eighth of it may stay idle, at most [`IDLE_LIMIT`], so a small
/// target keeps a small pool. Call before the first body is received.
pub fn limit_idle(memory_target: u64) {
    let limit = usize::try_from(memory_target / 8).unwrap_or(usize::MAX);
    POOL.limit
        .store(limit.min(IDLE_LIMIT), std::sync::atomic::Ordering::Relaxed);
}

/// One anonymous mapping of `cap` bytes (a multiple of [`UNIT`]), unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: a Mapping owns its memory exclusively; nothing else holds its pointer.
unsafe impl Send for Mapping {}
// SAFETY: shared references only read (`as_slice`), writes need `&mut`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A new mapping of `cap` bytes, or None if the kernel refuses one.
    fn new(cap: usize) -> Option<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Huge pages are advice: with THP off (`never`) the call fails or does nothing, and
        // the buffer works with small pages.
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(ptr, cap, libc::MADV_HUGEPAGE) };
        Some(Self {
            ptr: NonNull::new(ptr.cast())?,
            cap,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and is unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
    }
}

/// Idle mappings, oldest first, reused best-fit.
pub struct Pool {
    idle: Mutex<Idle>,
    /// Most idle bytes (set once at start, hence a plain atomic rather than under the lock).
    limit: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Idle {
    mappings: Vec<Mapping>,
    bytes: usize,
}

impl Pool {
    /// A pool keeping at most `limit` idle bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            idle: Mutex::new(Idle::default()),
            limit: std::sync::atomic::AtomicUsize::new(limit),
        }
    }

    /// A mapping of at least `len` bytes: the smallest idle one that fits without wasting
    /// more than half of it, else a new one.
    fn take(&self, len: usize) -> Option<Mapping> {
        let cap = len.max(1).div_ceil(UNIT).checked_mul(UNIT)?;
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let best = (idle.mappings.iter().enumerate())
                .filter(|(_, m)| m.cap >= cap && m.cap <= cap.saturating_mul(2))
                .min_by_key(|(_, m)| m.cap)
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mapping = idle.mappings.remove(i);
                idle.bytes -= mapping.cap;
                return Some(mapping);
            }
        }
        Mapping::new(cap)
    }

    /// Keeps `mapping` for reuse, unmapping the longest idle ones (outside the lock) if the
    /// idle bytes would pass the limit: a reader's parts grow from 1 MiB to their full size,
    /// and the small ones it started with must not take the room of the ones it reuses.
    /// A mapping larger than the limit is unmapped at once.
    fn give_back(&self, mapping: Mapping) {
        let limit = self.limit.load(std::sync::atomic::Ordering::Relaxed);
        if mapping.cap > limit {
            return;
        }
        let unkept: Vec<Mapping> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.bytes += mapping.cap;
            idle.mappings.push(mapping);
            let mut evict = 0;
            let mut bytes = idle.bytes;
            while bytes > limit {
                bytes -= idle.mappings[evict].cap;
                evict += 1;
            }
            idle.bytes = bytes;
            idle.mappings.drain(..evict).collect()
        };
        drop(unkept);
    }

    /// Unmaps every idle mapping (for tests, which leak their pools).
    #[cfg(test)]
    pub fn clear(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.mappings.clear();
        idle.bytes = 0;
    }

    /// Idle bytes now (for tests).
    pub fn idle_bytes(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

/// A pooled mapping in use, `len` bytes of it written; back to its pool when dropped.
struct Pooled {
    mapping: Option<Mapping>,
    len: usize,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        match &self.mapping {
            // SAFETY: the first `len` bytes were written by `extend_from_slice` (len never
            // passes cap), and the mapping lives as long as `self`.
            Some(m) => unsafe { std::slice::from_raw_parts(m.ptr.as_ptr(), self.len) },
            None => &[],
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(mapping) = self.mapping.take() {
            self.pool.give_back(mapping);
        }
    }
}

/// A buffer a GET body is received into: pooled from [`POOLED_FROM`] bytes, a page-aligned
/// heap buffer below. Either way its data starts on a page boundary and never moves while
/// it is filled, so the data cache can write it with O_DIRECT.
pub struct BodyBuffer(Backing);

enum Backing {
    Heap(BytesMut),
    Pooled(Pooled),
}

/// A write past a [`BodyBuffer`]'s capacity, refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl BodyBuffer {
    /// An empty buffer with room for exactly `len` bytes (more if pooled).
    pub fn with_capacity(len: usize) -> Self {
        Self::from_pool(&POOL, len)
    }

    /// As [`BodyBuffer::with_capacity`], from `pool`.
    pub fn from_pool(pool: &'static Pool, len: usize) -> Self {
        if len >= POOLED_FROM
            && let Some(mapping) = pool.take(len)
        {
            return Self(Backing::Pooled(Pooled {
                mapping: Some(mapping),
                len: 0,
                pool,
            }));
        }
        Self(Backing::Heap(super::page_aligned(len)))
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        match &self.0 {
            Backing::Heap(b) => b.len(),
            Backing::Pooled(p) => p.len,
        }
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes that fit in all.
    pub fn capacity(&self) -> usize {
        match &self.0 {
            Backing::Heap(b) => b.capacity(),
            Backing::Pooled(p) => p.mapping.as_ref().map_or(0, |m| m.cap),
        }
    }

    /// Appends `data`, or refuses it whole if it does not fit (the buffer never grows,
    /// so it never moves).
    pub fn extend_from_slice(&mut self, data: &[u8]) -> Result<(), Full> {
        if self.len().saturating_add(data.len()) > self.capacity() {
            return Err(Full);
        }
        match &mut self.0 {
            Backing::Heap(b) => b.extend_from_slice(data),
            Backing::Pooled(p) => {
                let Some(m) = &p.mapping else {
                    return Err(Full);
                };
                // SAFETY: checked above that len + data.len() <= cap; the mapping is ours
                // alone (`&mut self`) and `data` cannot overlap it (no slice of it escapes
                // while it is mutable).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        m.ptr.as_ptr().add(p.len),
                        data.len(),
                    );
                }
                p.len += data.len();
            }
        }
        Ok(())
    }

    /// The room left, for a reader to fill from its start (a socket read straight into the
    /// buffer); [`BodyBuffer::advance`] then counts what it wrote.
    pub fn spare(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        match &mut self.0 {
            Backing::Heap(b) => b.spare_capacity_mut(),
            Backing::Pooled(p) => match &p.mapping {
                // SAFETY: the bytes from `len` to `cap` lie inside the mapping, which is ours
                // alone (`&mut self`) and lives as long as `self`; as MaybeUninit they carry no
                // promise about their contents.
                Some(m) => unsafe {
                    std::slice::from_raw_parts_mut(
                        m.ptr
                            .as_ptr()
                            .add(p.len)
                            .cast::<std::mem::MaybeUninit<u8>>(),
                        m.cap - p.len,
                    )
                },
                None => &mut [],
            },
        }
    }

    /// Counts the first `n` bytes of [`BodyBuffer::spare`] as written.
    ///
    /// # Safety
    /// Those `n` bytes must have been written (`n` at most the room left).
    pub unsafe fn advance(&mut self, n: usize) {
        assert!(
            n <= self.capacity() - self.len(),
            "advance past the room left"
        );
        match &mut self.0 {
            // SAFETY: the caller wrote these bytes, inside the capacity (checked above).
            Backing::Heap(b) => unsafe { b.set_len(b.len() + n) },
            Backing::Pooled(p) => p.len += n,
        }
    }

    /// The bytes written, shared without a copy; a pooled buffer goes back to its pool when
    /// the last slice of them is dropped.
    pub fn freeze(self) -> Bytes {
        match self.0 {
            Backing::Heap(b) => b.freeze(),
            Backing::Pooled(p) => Bytes::from_owner(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(limit: usize) -> &'static Pool {
        Box::leak(Box::new(Pool::new(limit)))
    }

    #[test]
    fn the_idle_limit_follows_the_memory_target() {
        let limit = || POOL.limit.load(std::sync::atomic::Ordering::Relaxed);
        limit_idle(64 << 20);
        assert_eq!(limit(), 8 << 20, "an eighth");
        limit_idle(u64::MAX);
        assert_eq!(limit(), IDLE_LIMIT, "at most the cap");
    }

    #[test]
    fn small_bodies_use_the_heap_and_large_ones_the_pool() {
        let pool = pool(IDLE_LIMIT);
        let small = BodyBuffer::from_pool(pool, 64 << 10);
        assert!(matches!(small.0, Backing::Heap(_)));
        let large = BodyBuffer::from_pool(pool, 3 << 20);
        assert!(matches!(large.0, Backing::Pooled(_)));
        assert_eq!(large.capacity(), 4 << 20, "whole units");
        for buf in [small, large] {
            assert_eq!(buf.len(), 0);
        }
    }

    #[test]
    fn a_buffer_fills_in_place_and_refuses_what_does_not_fit() {
        let pool = pool(IDLE_LIMIT);
        for len in [1000, UNIT, UNIT + 1] {
            let mut buf = BodyBuffer::from_pool(pool, len);
            let cap = buf.capacity();
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            buf.extend_from_slice(&data[..len / 2]).unwrap();
            buf.extend_from_slice(&data[len / 2..]).unwrap();
            assert_eq!(buf.extend_from_slice(&vec![0; cap - len + 1]), Err(Full));
            assert_eq!(buf.len(), len, "a refused write adds nothing");
            let bytes = buf.freeze();
            assert_eq!(bytes.as_ptr() as usize % super::super::PAGE, 0);
            assert_eq!(&bytes[..], &data[..]);
        }
    }

    #[test]
    fn a_reused_buffer_shows_only_its_new_bytes() {
        let pool = pool(IDLE_LIMIT);
        let mut first = BodyBuffer::from_pool(pool, UNIT);
        first.extend_from_slice(&vec![0xAA; UNIT]).unwrap();
        let first = first.freeze();
        let at = first.as_ptr();
        let slice = first.slice(10..20);
        drop(first);
        assert_eq!(pool.idle_bytes(), 0, "a slice still holds it");
        drop(slice);
        assert_eq!(pool.idle_bytes(), UNIT, "kept once the last slice is gone");

        let mut second = BodyBuffer::from_pool(pool, UNIT);
        assert_eq!(pool.idle_bytes(), 0, "taken again");
        second.extend_from_slice(&[1, 2, 3]).unwrap();
        let second = second.freeze();
        assert_eq!(second.as_ptr(), at, "the same memory");
        assert_eq!(&second[..], &[1, 2, 3], "none of the old body");
    }

    #[test]
    fn idle_bytes_stay_under_the_limit_and_fit_is_not_wasteful() {
        let pool = pool(8 * UNIT);
        let bufs: Vec<_> = (0..3)
            .map(|_| BodyBuffer::from_pool(pool, 4 * UNIT))
            .collect();
        drop(bufs);
        assert_eq!(pool.idle_bytes(), 8 * UNIT, "the first was unmapped");
        let small = BodyBuffer::from_pool(pool, UNIT);
        assert_eq!(
            small.capacity(),
            UNIT,
            "a 4-unit mapping is not used for one unit"
        );
        let half = BodyBuffer::from_pool(pool, 2 * UNIT);
        assert_eq!(half.capacity(), 4 * UNIT, "half of it used is fit enough");
        assert_eq!(pool.idle_bytes(), 4 * UNIT);
        drop(small);
        drop(half);
        assert_eq!(
            pool.idle_bytes(),
            5 * UNIT,
            "the longest idle (4 units) made room for the one given back last"
        );
        let again = BodyBuffer::from_pool(pool, 4 * UNIT);
        let other = BodyBuffer::from_pool(pool, 4 * UNIT);
        assert_eq!(pool.idle_bytes(), UNIT, "one reused, one new");
        drop(again);
        drop(other);
        assert_eq!(pool.idle_bytes(), 8 * UNIT, "the small one evicted");
        let huge = BodyBuffer::from_pool(pool, 9 * UNIT);
        drop(huge);
        assert_eq!(
            pool.idle_bytes(),
            8 * UNIT,
            "a mapping over the limit is not kept"
        );
    }
}
