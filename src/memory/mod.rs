//! Memory the mount holds for data: one byte budget for prefetched parts, upload parts and
//! the data cache's write queue, the page-aligned buffers that GET bodies and cache writes
//! share, and the pool that large GET bodies are received into (`pool`). A leaf: it imports
//! nothing of ours, so `fs` and `cache` both use it.
//!
//! Prefetched parts reserve their bytes before their GET is sent and give them back when
//! dropped. A reader's reservation that does not fit is refused, never waited for: the reader
//! then shrinks to fetching only what the kernel asked for, so many handles on many files slow
//! down instead of growing the process. A writer's part buffer waits for its bytes instead
//! ([`MemoryBudget::reserve`]: back-pressure on the program writing), and while writers wait,
//! readers are refused what the writers are waiting for, so they cannot starve them.
//!
//! The data cache bounds the fetched blocks waiting for its disk with a budget of its own
//! (`cache::DiskCache::queue`): refused there means "not cached", never "wait".

pub mod pool;

use std::sync::Arc;

use crate::sync::{AtomicU64, AtomicUsize, Ordering};

use bytes::{Buf, BytesMut};

pub use pool::{BodyBuffer, Full, Pool};

/// Alignment of [`page_aligned`] buffers: a page, and the unit of O_DIRECT writes.
pub const PAGE: usize = 4096;

/// An empty buffer with room for `len` bytes whose data starts on a page boundary. Filled up
/// to `len` (by `extend_from_slice` or `resize`) it does not move, so it stays aligned: GET
/// bodies are received into one, and the data cache writes whole blocks of them (and of its
/// own copy buffers) with O_DIRECT straight from that memory.
pub fn page_aligned(len: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(len + PAGE);
    let pad = buf.as_ptr().align_offset(PAGE);
    buf.resize(pad, 0);
    buf.advance(pad);
    buf
}

/// The shared budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    /// Bytes reserved now.
    used: AtomicU64,
    /// Most bytes ever reserved at once (for tests and the unmount summary).
    peak: AtomicU64,
    /// Readers streaming (holding prefetched parts) now; windows shrink as they multiply.
    streams: AtomicUsize,
    /// Bytes that waiting reservations want ([`MemoryBudget::reserve`]).
    waiting: AtomicU64,
    /// Woken whenever bytes are given back.
    freed: tokio::sync::Notify,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
            waiting: AtomicU64::new(0),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Reserves `bytes` if they fit under the limit, less what waiting writers want.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let waiting = self.waiting.load(Ordering::Acquire);
        self.reserve_under(bytes, self.limit.saturating_sub(waiting))
    }

    /// Reserves `bytes`, waiting until they fit under the limit; `None` at once if they never
    /// can (more than the whole limit). Cancel-safe: a dropped wait leaves nothing behind.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        if bytes > self.limit {
            return None;
        }
        let _waiting = Waiting::new(self, bytes);
        let mut counted = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(reservation) = self.reserve_under(bytes, self.limit) {
                return Some(reservation);
            }
            if !counted {
                metrics::counter!(crate::metrics::MEMORY_BUDGET_WAITS).increment(1);
                counted = true;
            }
            freed.await;
        }
    }

    /// Reserves `bytes` if `used` stays at most `ceiling`.
    fn reserve_under(self: &Arc<Self>, bytes: u64, ceiling: u64) -> Option<Reservation> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let wanted = used.checked_add(bytes).filter(|&w| w <= ceiling)?;
            match self
                .used
                .compare_exchange_weak(used, wanted, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(wanted, Ordering::Relaxed);
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Most bytes reserved at once since the start.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Counts a reader as streaming until the returned guard is dropped.
    pub fn stream(self: &Arc<Self>) -> Streaming {
        self.streams.fetch_add(1, Ordering::AcqRel);
        Streaming {
            budget: self.clone(),
        }
    }

    /// Readers streaming now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }
}

/// Bytes counted as wanted by a waiting reservation, until dropped.
struct Waiting<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl<'a> Waiting<'a> {
    fn new(budget: &'a MemoryBudget, bytes: u64) -> Self {
        budget.waiting.fetch_add(bytes, Ordering::AcqRel);
        Self { budget, bytes }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.budget.waiting.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A reader counted as streaming (see [`MemoryBudget::stream`]).
#[derive(Debug)]
pub struct Streaming {
    budget: Arc<MemoryBudget>,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.budget.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes held against the budget until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.freed.notify_waiters();
    }
}

/// The mount's `--memory-target`, cut in two. `data` holds prefetched parts, upload part
/// buffers and a cache miss's extra block bytes; `reads` holds what a read fetches for itself
/// when `data` refused it a part (at most the kernel's request). Reads wait for `reads` in
/// turn: what holds it is other reads' GETs, which end by themselves, so a wait always ends;
/// a read could not wait on `data`, held by readers' parts that only their own reads free.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Parts, part buffers, cache blocks.
    pub data: Arc<MemoryBudget>,
    /// Reads' own bytes.
    pub reads: Arc<MemoryBudget>,
    /// Object GETs in flight (capped by a throughput target, else unlimited).
    pub gets: Arc<crate::throughput::GetSlots>,
}

impl Budgets {
    /// `limit` bytes in all: an eighth (at most 32 MiB) for reads, the rest for data.
    pub fn split(limit: u64) -> Self {
        let reads = (limit / 8).min(32 << 20);
        Self {
            data: MemoryBudget::new(limit - reads),
            reads: MemoryBudget::new(reads),
            gets: Arc::new(crate::throughput::GetSlots::unlimited()),
        }
    }
}

/// Default budget: an eighth of the machine's memory, at most 512 MiB and at least 64 MiB.
pub fn default_limit() -> u64 {
    const MIB: u64 = 1024 * 1024;
    // SAFETY: sysinfo only writes into the struct we pass.
    let total = unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut info) == 0 {
            (info.totalram as u64).saturating_mul(u64::from(info.mem_unit))
        } else {
            0
        }
    };
    (total / 8).clamp(64 * MIB, 512 * MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_or_are_refused() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none());
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!((budget.used(), budget.peak()), (0, 100));
    }

    #[test]
    fn aligned_buffers_start_on_a_page_and_fill_without_moving() {
        for len in [1, 4096, 8 << 20] {
            let mut buf = page_aligned(len);
            assert!(buf.is_empty());
            let start = buf.as_ptr() as usize;
            assert_eq!(start % PAGE, 0);
            buf.extend_from_slice(&vec![7; len]);
            assert_eq!(
                buf.as_ptr() as usize,
                start,
                "filled in place, not reallocated"
            );
            assert_eq!(buf.freeze().as_ptr() as usize, start);
        }
        let mut zeroed = page_aligned(PAGE * 3);
        zeroed.resize(PAGE * 3, 0);
        assert_eq!(zeroed.as_ptr() as usize % PAGE, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_waits_for_its_bytes_and_readers_cannot_starve_it() {
        let budget = MemoryBudget::new(100);
        let held = budget.try_reserve(80).unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(50).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "50 more do not fit yet");
        assert!(
            budget.try_reserve(20).is_none(),
            "a reader may not take the writer's room"
        );
        drop(held);
        let got = waiter.await.unwrap().expect("the bytes, once freed");
        assert_eq!(budget.used(), 50);
        drop(got);
        assert!(budget.reserve(101).await.is_none(), "never fits");
        assert_eq!(budget.waiting.load(Ordering::Relaxed), 0);
        // A wait that is given up leaves nothing counted.
        let _all = budget.try_reserve(100).unwrap();
        let gave_up = tokio::time::timeout(std::time::Duration::from_secs(1), budget.reserve(1));
        assert!(gave_up.await.is_err());
        assert_eq!(budget.waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_split_adds_up_to_the_target() {
        for limit in [0, 1, 100, 64 << 20, 256 << 20, 4 << 30, u64::MAX] {
            let b = Budgets::split(limit);
            assert_eq!(b.data.limit() + b.reads.limit(), limit);
            assert!(b.reads.limit() <= 32 << 20);
        }
    }

    #[test]
    fn default_is_bounded() {
        let limit = default_limit();
        assert!((64 << 20..=512 << 20).contains(&limit));
    }
}
