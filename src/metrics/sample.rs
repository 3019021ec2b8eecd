//! The counters the mount already keeps, copied into metrics once a second: reads and
//! prefetch ([`crate::fs::CounterSnapshot`]), the cache ([`crate::cache::CacheSnapshot`]),
//! the shared cache ([`crate::shared_cache::SharedSnapshot`]),
//! memory, handles, inodes and commits ([`crate::fs::Status`]), and the process's RSS.

use crate::fs::S3Filesystem;
use crate::s3::ObjectStore;

/// Copies `fs`'s counters and gauges into the installed recorder.
pub fn sample<S: ObjectStore>(fs: &S3Filesystem<S>) {
    let reads = fs.counters();
    metrics::counter!("fs.bytes_read").absolute(reads.bytes_served);
    metrics::counter!("s3.bytes_fetched").absolute(reads.bytes_fetched);
    metrics::counter!("prefetch.hits").absolute(reads.prefetch_hits);
    metrics::counter!("prefetch.wasted_bytes").absolute(reads.prefetch_waste);
    let status = fs.status();
    metrics::gauge!("fs.open_handles").set(status.open_handles as f64);
    let (reading, writing) = fs.open_files_by_mode();
    metrics::gauge!("fs.open_read_handles").set(reading as f64);
    metrics::gauge!("fs.open_write_handles").set(writing as f64);
    metrics::gauge!("fs.inodes").set(status.inodes as f64);
    metrics::gauge!("memory.budget_used").set(status.memory_used as f64);
    metrics::gauge!("memory.budget_limit").set(status.memory_limit as f64);
    metrics::gauge!("upload.commits_in_flight").set(status.commits_in_flight as f64);
    metrics::gauge!("upload.aborts_owed").set(status.aborts_owed as f64);
    if let Some(cache) = fs.cache() {
        let c = cache.counters.snapshot();
        metrics::counter!("cache.block_hits").absolute(c.hits);
        metrics::counter!("cache.block_misses").absolute(c.misses);
        metrics::counter!("cache.block_rejects").absolute(c.rejected);
        metrics::counter!("cache.evictions").absolute(c.evicted);
        metrics::counter!("cache.skipped_bytes").absolute(c.skipped_bytes);
        metrics::counter!("cache.passthrough_opens").absolute(c.whole_opens);
        metrics::gauge!("cache.total_size").set(cache.used() as f64);
        metrics::gauge!("cache.size_limit").set(cache.max_bytes() as f64);
    }
    if let Some(shared) = fs.shared_cache() {
        let c = shared.counters().snapshot();
        metrics::counter!("shared_cache.block_hits").absolute(c.hits);
        metrics::counter!("shared_cache.block_misses").absolute(c.misses);
        metrics::counter!("shared_cache.block_rejects").absolute(c.rejects);
        metrics::counter!("shared_cache.errors").absolute(c.errors);
        metrics::counter!("shared_cache.hit_bytes").absolute(c.hit_bytes);
        metrics::counter!("shared_cache.block_puts").absolute(c.puts);
        metrics::counter!("shared_cache.put_errors").absolute(c.put_errors);
        metrics::counter!("shared_cache.skipped_bytes").absolute(c.skipped_bytes);
    }
    if let Some(rss) = resident_bytes() {
        metrics::gauge!(super::PROCESS_MEMORY_USAGE).set(rss as f64);
    }
}

/// The process's resident set, from /proc/self/statm (pages × page size).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
