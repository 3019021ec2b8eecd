//! Read counters for the whole mount: what was fetched from S3 against what programs read.
//! Logged at unmount (and by `--debug`), and parsed from that line by benches/fio.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters, updated by readers.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// GET requests sent.
    pub get_requests: AtomicU64,
    /// Bytes received from GETs.
    pub bytes_fetched: AtomicU64,
    /// Bytes returned to the kernel.
    pub bytes_served: AtomicU64,
    /// Reads served entirely from prefetched parts.
    pub prefetch_hits: AtomicU64,
    /// Prefetched bytes dropped before any read used them.
    pub prefetch_waste: AtomicU64,
}

impl ReadCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            get_requests: get(&self.get_requests),
            bytes_fetched: get(&self.bytes_fetched),
            bytes_served: get(&self.bytes_served),
            prefetch_hits: get(&self.prefetch_hits),
            prefetch_waste: get(&self.prefetch_waste),
        }
    }
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterSnapshot {
    /// GET requests sent.
    pub get_requests: u64,
    /// Bytes received from GETs.
    pub bytes_fetched: u64,
    /// Bytes returned to the kernel.
    pub bytes_served: u64,
    /// Reads served entirely from prefetched parts.
    pub prefetch_hits: u64,
    /// Prefetched bytes dropped unused.
    pub prefetch_waste: u64,
}

impl fmt::Display for CounterSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "get_requests={} bytes_fetched={} bytes_served={} prefetch_hits={} prefetch_waste={}",
            self.get_requests,
            self.bytes_fetched,
            self.bytes_served,
            self.prefetch_hits,
            self.prefetch_waste
        )
    }
}
