//! Sequential prefetch for one handle: a queue of parts fetched ahead of the reader.
//!
//! The first part is small (so `head -c 100` costs one small GET); each further part doubles
//! up to `--part-size` (and beyond, to `max_part`, once the window holds four such parts), and
//! the bytes kept in flight ahead of the reader double each time the reader finishes a part,
//! up to a cap. Parts are aligned to their size. Every part reserves its bytes in the mount's
//! [`MemoryBudget`] first; when the budget is short the window stops growing. Parts the reader
//! has passed are kept a little while (`keep_behind`) so the kernel's slightly out-of-order
//! readahead requests are still served from memory.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::pieces::Pieces;
use super::source::ObjectSource;
use crate::fs::FsError;
use crate::fs::counters::ReadCounters;
use crate::memory::{MemoryBudget, Reservation, Streaming};
use crate::s3::{ObjectStore, S3Error};

/// Sizes that shape the window.
#[derive(Debug, Clone, Copy)]
pub struct PrefetchConfig {
    /// Size of the first part after the reader turns sequential.
    pub initial: u64,
    /// Part size the first parts grow to (`--part-size`).
    pub part_size: u64,
    /// Largest part: a stream that stays sequential past `part_size` keeps doubling its
    /// parts up to this (at least `part_size`).
    pub max_part: u64,
    /// Most bytes fetched ahead of the reader.
    pub max_window: u64,
    /// Bytes kept behind the reader for out-of-order reads.
    pub keep_behind: u64,
}

impl PrefetchConfig {
    /// Our defaults for a given part size and memory budget: a window of a quarter of the
    /// budget (four sequential readers share it fully), between two parts and 256 MiB; parts
    /// of a long stream grow to a quarter of the window, at most 64 MiB. Each GET has a fixed cost
    /// on the server (measured on the local server: about 10 ms of its CPU per ranged GET of
    /// a 2 GiB object, so 8 MiB parts cost it twice the CPU of one stream), and a long
    /// stream does not need the small parts that keep `head` cheap.
    pub fn new(part_size: u64, budget: u64) -> Self {
        const MIB: u64 = 1024 * 1024;
        // Not `clamp`: a part size over 128 MiB puts the lower bound above the upper one.
        let max_window = (budget / 4).min(256 * MIB).max(part_size.saturating_mul(2));
        Self {
            initial: MIB.min(part_size),
            part_size,
            max_part: (max_window / 4).min(64 * MIB).max(part_size),
            max_window,
            keep_behind: 2 * MIB,
        }
    }

    /// The same, with the window at most `cap` bytes when given, though never below two parts
    /// (the reader's next part is fetched while it reads one), and parts at most a quarter of
    /// the window as before.
    pub fn with_window_at_most(mut self, cap: Option<u64>) -> Self {
        if let Some(cap) = cap {
            self.max_window = self
                .max_window
                .min(cap)
                .max(self.part_size.saturating_mul(2));
            self.max_part = self.max_part.min(self.max_window / 4).max(self.part_size);
        }
        self
    }
}

/// How far past the queued parts a read may start and still count as the same stream: the
/// kernel's readahead (1 MiB on our mounts) keeps a few requests in flight, and they may
/// arrive out of order.
const OUT_OF_ORDER_SLACK: u64 = 2 * 1024 * 1024;

enum PartData {
    Pending(JoinHandle<Result<Pieces, FsError>>),
    Ready(Pieces),
}

/// One ranged GET issued ahead of the reader.
struct Part {
    range: Range<u64>,
    data: PartData,
    /// Highest offset served from this part (for the waste counter).
    served_to: u64,
    _reservation: Reservation,
}

impl Part {
    async fn bytes(&mut self) -> Result<&Pieces, FsError> {
        if let PartData::Pending(task) = &mut self.data {
            let pieces = task.await.map_err(FsError::task)??;
            self.data = PartData::Ready(pieces);
        }
        match &self.data {
            PartData::Ready(pieces) => Ok(pieces),
            PartData::Pending(_) => unreachable!("resolved above"),
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if let PartData::Pending(task) = &self.data {
            task.abort();
        }
    }
}

/// The prefetch state of one open file.
pub struct Prefetcher<S: ObjectStore> {
    source: Arc<ObjectSource<S>>,
    config: PrefetchConfig,
    budget: Arc<MemoryBudget>,
    /// Contiguous parts, in offset order.
    parts: VecDeque<Part>,
    /// Size of the next part to issue.
    next_part: u64,
    /// Bytes to keep fetched ahead of the reader.
    window: u64,
    /// Where the previous read ended: a read starting here is sequential.
    last_end: u64,
    /// Where the current sequential run began: the window never exceeds what the run has
    /// read so far (a reader that reads 2 MiB and jumps does not get 16 MiB fetched ahead).
    run_start: u64,
    /// Counted among the streaming readers from its first part until it jumps elsewhere or
    /// closes (a reader idle at the end of its object still counts).
    streaming: Option<Streaming>,
}

impl<S: ObjectStore> std::fmt::Debug for Prefetcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher")
            .field("key", &self.source.key)
            .field("parts", &self.parts.len())
            .field("window", &self.window)
            .field("last_end", &self.last_end)
            .finish()
    }
}

impl<S: ObjectStore> Prefetcher<S> {
    /// Prefetch state for the object version `source`.
    pub fn new(
        source: Arc<ObjectSource<S>>,
        config: PrefetchConfig,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        Self {
            source,
            config,
            budget,
            parts: VecDeque::new(),
            next_part: config.initial,
            window: config.initial,
            last_end: 0,
            run_start: 0,
            streaming: None,
        }
    }

    /// The most this reader may keep ahead now: `max_window` while at most two readers
    /// stream, then an even share of two such windows, never under two parts. Bytes in flight
    /// cost (page faults on a larger heap, server work): measured on the 2-core bench
    /// machine, four readers with 64 MiB windows read 389/473 MiB/s against 291/346 with
    /// 128 MiB windows (A/B, `--memory-target 256` against the default), while one reader
    /// was the same either way. A lone stream keeps the whole window for high-latency S3.
    fn max_window(&self) -> u64 {
        window_share(&self.config, self.budget.streams())
    }

    /// The bytes of `range` (inside the object, non-empty).
    pub async fn read(&mut self, range: Range<u64>) -> Result<Bytes, FsError> {
        // The kernel's readahead sends several reads at once, which may arrive out of order:
        // a read a little past the queued parts (within the kernel's own readahead) is still
        // the same stream. Further on it is a jump: a reader that skips (tensors of a
        // safetensors file read through mmap) must not have the skipped bytes fetched.
        let near_ahead = !self.parts.is_empty()
            && range.start >= self.parts[0].range.start
            && range.start < self.end().saturating_add(OUT_OF_ORDER_SLACK);
        let sequential = near_ahead || range.start == self.last_end;
        self.last_end = range.end;
        if !sequential {
            // A jump: what is queued belongs to another region. Serve exactly what was asked;
            // prefetch again only once the reader shows it is sequential from here.
            self.reset();
            self.run_start = range.start;
            return self.fetch_direct(range).await;
        }
        self.forget_behind(range.start);
        self.top_up(range.start);
        if !self.covers(range.start) {
            // The budget refused the part this read needs; fetch it alone, unbuffered.
            return self.fetch_direct(range).await;
        }
        self.serve(range).await
    }

    fn covers(&self, offset: u64) -> bool {
        match (self.parts.front(), self.parts.back()) {
            (Some(first), Some(last)) => first.range.start <= offset && offset < last.range.end,
            _ => false,
        }
    }

    /// End of the queued parts (or of the last read when none are queued).
    fn end(&self) -> u64 {
        self.parts.back().map_or(self.last_end, |p| p.range.end)
    }

    /// Fetches `range` for this read alone, its bytes held in the reads' share of the budget
    /// (waiting for it in turn) until the read has them.
    async fn fetch_direct(&self, range: Range<u64>) -> Result<Bytes, FsError> {
        let reads = &self.source.reads;
        let _held = reads
            .reserve((range.end - range.start).min(reads.limit()))
            .await;
        Ok(self.source.fetch(range).await?.joined())
    }

    /// Gathers `range` from the queued parts; the parts past the budget are fetched directly.
    async fn serve(&mut self, range: Range<u64>) -> Result<Bytes, FsError> {
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut at = range.start;
        let mut index = 0;
        while at < range.end && index < self.parts.len() {
            let part = &mut self.parts[index];
            index += 1;
            if part.range.end <= at {
                continue;
            }
            let from = (at - part.range.start) as usize;
            let to = (range.end.min(part.range.end) - part.range.start) as usize;
            let part_range = part.range.clone();
            let short = match part.bytes().await {
                Ok(bytes) => bytes.slices_into(from..to, &mut pieces) != to - from,
                Err(e) => {
                    // Drop the failed part (and everything after it) so the next read retries.
                    self.parts.truncate(index - 1);
                    return Err(e);
                }
            };
            if short {
                // Never a short read in the middle of the object (the kernel would take it
                // for the end): a part that holds less than its range is an error, retried.
                self.parts.truncate(index - 1);
                return Err(FsError::s3(
                    &self.source.key,
                    S3Error::Network(format!("a part of {:?} came back short", part_range)),
                ));
            }
            part.served_to = part.served_to.max(part.range.start + to as u64);
            at = part.range.start + to as u64;
            if part.served_to == part.range.end {
                // The reader finished a part: let the window grow.
                self.window = self.window.saturating_mul(2).min(self.max_window());
            }
        }
        if at < range.end {
            pieces.push(self.fetch_direct(at..range.end).await?);
        } else {
            ReadCounters::add(&self.source.counters.prefetch_hits, 1);
        }
        Ok(super::join(pieces, (range.end - range.start) as usize))
    }

    /// Issues parts while less than half the window lies ahead of `offset` (so a reader that
    /// stops early, like `head`, leaves little unread), until the object ends or the budget
    /// refuses.
    fn top_up(&mut self, offset: u64) {
        // More readers may have started streaming since the window grew; and a run is not
        // given a window over twice what it has read.
        let run = self.last_end.saturating_sub(self.run_start);
        self.window = self
            .window
            .min(self.max_window().max(self.config.initial))
            .min(run.saturating_mul(2).max(self.config.initial));
        loop {
            let start = if self.parts.is_empty() {
                offset
            } else {
                self.end()
            };
            let ahead = start.saturating_sub(offset);
            if start >= self.source.size || (!self.parts.is_empty() && ahead > self.window / 2) {
                return;
            }
            // When the budget is short, a smaller part is better than none: the window
            // shrinks instead of the reader falling back to one small GET per read.
            let mut size = self.next_part;
            let (end, reservation) = loop {
                let end = aligned_end(start, size).min(self.source.size);
                if let Some(reservation) = self.budget.try_reserve(end - start) {
                    break (end, reservation);
                }
                if size <= self.config.initial {
                    return;
                }
                size /= 2;
            };
            self.next_part = size;
            if self.streaming.is_none() {
                self.streaming = Some(self.budget.stream());
            }
            let source = self.source.clone();
            let task = tokio::spawn(async move { source.fetch(start..end).await });
            self.parts.push_back(Part {
                range: start..end,
                data: PartData::Pending(task),
                served_to: start,
                _reservation: reservation,
            });
            self.next_part = self.grown_part();
        }
    }

    /// Size of the part after the one just issued: doubling to `part_size`, then, while the
    /// window has grown enough to hold four of them, on to `max_part`.
    fn grown_part(&self) -> u64 {
        let doubled = self.next_part.saturating_mul(2);
        let long_stream =
            doubled <= self.config.max_part && doubled.saturating_mul(4) <= self.window;
        if doubled <= self.config.part_size || long_stream {
            doubled
        } else {
            self.next_part.max(self.config.part_size.min(doubled))
        }
    }

    /// Drops parts that end more than `keep_behind` before `offset`.
    fn forget_behind(&mut self, offset: u64) {
        let horizon = offset.saturating_sub(self.config.keep_behind);
        while self.parts.front().is_some_and(|p| p.range.end <= horizon) {
            self.drop_front();
        }
    }

    fn drop_front(&mut self) {
        if let Some(part) = self.parts.pop_front() {
            let unused = part.range.end - part.served_to.max(part.range.start);
            ReadCounters::add(&self.source.counters.prefetch_waste, unused);
        }
    }

    fn drop_parts(&mut self) {
        while !self.parts.is_empty() {
            self.drop_front();
        }
    }

    /// Back to the initial window, nothing queued.
    fn reset(&mut self) {
        self.drop_parts();
        self.streaming = None;
        self.next_part = self.config.initial;
        self.window = self.config.initial;
    }
}

/// A streaming reader's largest window when `streams` readers stream: see
/// `Prefetcher::max_window`.
pub(super) fn window_share(config: &PrefetchConfig, streams: usize) -> u64 {
    let streams = streams.max(2) as u64;
    (config.max_window.saturating_mul(2) / streams)
        .max(config.part_size.saturating_mul(2))
        .min(config.max_window)
}

/// End of a part of about `size` bytes from `start`: the last multiple of `size` within
/// `start + size` (a shorter part that brings the stream back into alignment), or
/// `start + size` when that is `start` itself. Parts aligned to their size map onto whole
/// chunks of the server's storage (commonly 4 or 8 MiB, or the writer's part size) and onto
/// whole cache blocks; unaligned 8 MiB ranges made the local server read a third more.
fn aligned_end(start: u64, size: u64) -> u64 {
    let end = start.saturating_add(size);
    let aligned = end - end % size;
    if aligned > start { aligned } else { end }
}

impl<S: ObjectStore> Drop for Prefetcher<S> {
    fn drop(&mut self) {
        self.drop_parts();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn any_part_size_and_budget_make_a_window() {
        for part in [
            5 * MIB,
            8 * MIB,
            128 * MIB,
            129 * MIB,
            5 * 1024 * MIB,
            u64::MAX / 2,
        ] {
            for budget in [0, 16 * MIB, 512 * MIB, u64::MAX] {
                let config = PrefetchConfig::new(part, budget);
                assert!(config.max_window >= config.part_size, "{part} {budget}");
                assert!(config.max_part >= config.part_size);
                assert!(config.initial <= config.part_size);
            }
        }
    }

    #[test]
    fn a_window_cap_is_kept_down_to_two_parts() {
        let free = PrefetchConfig::new(8 * MIB, 512 * MIB);
        assert_eq!(free.with_window_at_most(None).max_window, free.max_window);
        let capped = free.with_window_at_most(Some(32 * MIB));
        assert_eq!(capped.max_window, 32 * MIB);
        assert_eq!(
            capped.max_part,
            8 * MIB,
            "a quarter of the window, at least a part"
        );
        let tiny = free.with_window_at_most(Some(1));
        assert_eq!((tiny.max_window, tiny.max_part), (16 * MIB, 8 * MIB));
    }

    #[test]
    fn parts_come_back_into_alignment() {
        // From 0 the parts double and stay aligned: 1 MiB, 1, 2, 4, 8, 8...
        let mut at = 0;
        let mut got = Vec::new();
        for size in [1, 2, 2, 4, 8, 8, 16] {
            let end = aligned_end(at, size * MIB);
            got.push((at / MIB, end / MIB));
            at = end;
        }
        assert_eq!(
            got,
            [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 24), (24, 32)]
        );
        // A stream that starts off-alignment takes a short part, then aligned ones.
        assert_eq!(aligned_end(3 * MIB + 5, 8 * MIB), 8 * MIB);
        assert_eq!(aligned_end(8 * MIB, 8 * MIB), 16 * MIB);
        assert_eq!(aligned_end(u64::MAX - 3, 8), u64::MAX);
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        #[test]
        fn untrusted_sizes_make_aligned_parts_without_overflow(
            start in proptest::prelude::any::<u64>(),
            size in 1u64..,
            part in proptest::prelude::any::<u64>(),
            budget in proptest::prelude::any::<u64>(),
            streams in proptest::prelude::any::<usize>(),
        ) {
            let end = aligned_end(start, size);
            proptest::prop_assert!(end >= start);
            let config = PrefetchConfig::new(part.max(1), budget);
            let _ = window_share(&config, streams);
        }
    }
}
