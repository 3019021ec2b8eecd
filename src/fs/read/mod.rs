//! Per-handle reader: serves `read(offset, size)` from one pinned object version.
//!
//! Every GET carries `If-Match` with the ETag seen at open, so a handle never mixes bytes of
//! two versions: an overwrite under an open handle fails the read (EIO) instead. Sequential
//! readers are prefetched ([`prefetch`]); random readers fetch only what they ask for.

mod blocks;
pub mod pieces;
pub mod prefetch;
pub mod source;

use std::sync::Arc;

use bytes::Bytes;

use super::counters::ReadCounters;
use super::error::FsError;
use crate::memory::Budgets;
use crate::s3::ObjectStore;
use prefetch::{PrefetchConfig, Prefetcher};
pub use source::Caches;
use source::ObjectSource;

/// An open file's reader.
#[derive(Debug)]
pub struct FileReader<S: ObjectStore> {
    /// The object version read (key, size, counters).
    source: Arc<ObjectSource<S>>,
    /// The prefetch queue; reads of one handle take turns on it.
    prefetcher: tokio::sync::Mutex<Prefetcher<S>>,
}

impl<S: ObjectStore> FileReader<S> {
    /// A reader of `key` as it was when it had `etag` (empty: send no If-Match) and `size`,
    /// through the mount's `caches`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<S>,
        caches: Caches,
        key: String,
        etag: String,
        size: u64,
        config: PrefetchConfig,
        budgets: &Budgets,
        counters: Arc<ReadCounters>,
    ) -> Self {
        let source = Arc::new(ObjectSource {
            store,
            caches,
            key,
            etag: (!etag.is_empty()).then_some(etag),
            size,
            counters,
            budget: budgets.data.clone(),
            reads: budgets.reads.clone(),
            gets: budgets.gets.clone(),
        });
        let prefetcher = Prefetcher::new(source.clone(), config, budgets.data.clone());
        Self {
            source,
            prefetcher: tokio::sync::Mutex::new(prefetcher),
        }
    }

    /// The object read: key, pinned ETag (if any) and size.
    pub fn object(&self) -> (&str, Option<&str>, u64) {
        let source = &self.source;
        (&source.key, source.etag.as_deref(), source.size)
    }

    /// Up to `len` bytes at `offset`; fewer at the end of the object, none past it.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let end = offset.saturating_add(u64::from(len)).min(self.source.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let bytes = self.prefetcher.lock().await.read(offset..end).await?;
        ReadCounters::add(&self.source.counters.bytes_served, bytes.len() as u64);
        Ok(bytes)
    }
}

/// `pieces` as one contiguous buffer of `len` bytes: a single piece is passed through without
/// a copy; several (a read spanning parts or cache blocks) are copied once.
fn join(mut pieces: Vec<Bytes>, len: usize) -> Bytes {
    if pieces.len() == 1 {
        return pieces.pop().expect("one piece");
    }
    let mut joined = bytes::BytesMut::with_capacity(len);
    for piece in pieces {
        joined.extend_from_slice(&piece);
    }
    joined.freeze()
}

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
