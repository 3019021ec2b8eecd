//! Where a handle's bytes come from: the caches when they have them ([`super::blocks`]), S3
//! otherwise. Without a cache (or without a pinned ETag), a range is one GET.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::pieces::Pieces;
use crate::cache::DiskCache;
use crate::fs::FsError;
use crate::fs::counters::ReadCounters;
use crate::memory::MemoryBudget;
use crate::s3::{ObjectStore, S3Error};
use crate::shared_cache::SharedCache;
use crate::throughput::GetSlots;

/// One pinned object version and the ways to read it.
#[derive(Debug)]
pub struct ObjectSource<S: ObjectStore> {
    /// The bucket.
    pub store: Arc<S>,
    /// The caches the mount has.
    pub caches: Caches,
    /// Object key.
    pub key: String,
    /// ETag pinned at open (sent as If-Match; `None` sends none and bypasses the cache).
    pub etag: Option<String>,
    /// Object size at open.
    pub size: u64,
    /// Mount-wide counters.
    pub counters: Arc<ReadCounters>,
    /// The mount's memory budget for parts and cache blocks.
    pub budget: Arc<MemoryBudget>,
    /// The share of the budget for reads' own bytes ([`crate::memory::Budgets`]).
    pub reads: Arc<MemoryBudget>,
    /// The mount's GET slots (a GET waits for one under a throughput target).
    pub gets: Arc<GetSlots>,
}

impl<S: ObjectStore> ObjectSource<S> {
    /// The bytes of `range` (inside the object), in the pieces they came in: one GET body,
    /// or with a cache one piece per cached block and per run of blocks fetched.
    pub async fn fetch(self: &Arc<Self>, range: Range<u64>) -> Result<Pieces, FsError> {
        match (self.caches.block_size(self.size), &self.etag) {
            (Some(block_size), Some(etag)) => {
                self.fetch_blocks(etag.clone(), block_size, range).await
            }
            _ => self.get(range).await.map(Pieces::one),
        }
    }

    /// One GET of `range` (with If-Match when an ETag is pinned), counted. A body of another
    /// length than the range is an error: every path that uses it (a stream's parts, a read
    /// fetched for itself, cache blocks cut from it) relies on its length, and a short read
    /// in the middle of an object would be taken for its end.
    pub(super) async fn get(&self, range: Range<u64>) -> Result<Bytes, FsError> {
        // Held until the body is in: the cap is on GETs in flight, not on requests sent.
        let _slot = self.gets.acquire().await;
        ReadCounters::add(&self.counters.get_requests, 1);
        let asked = range.end - range.start;
        let bytes = self
            .store
            .get_range(&self.key, range.clone(), self.etag.as_deref())
            .await
            .map_err(|e| FsError::s3(&self.key, e))?;
        ReadCounters::add(&self.counters.bytes_fetched, bytes.len() as u64);
        if bytes.len() as u64 != asked {
            return Err(FsError::s3(
                &self.key,
                S3Error::Network(format!(
                    "the GET of {range:?} brought {} bytes",
                    bytes.len()
                )),
            ));
        }
        Ok(bytes)
    }
}

/// The caches a mount reads through: the local disk cache (`--cache`) and the shared one in a
/// bucket (`--cache-xz`), either, both or neither.
#[derive(Debug, Clone, Default)]
pub struct Caches {
    /// The local data cache.
    pub local: Option<Arc<DiskCache>>,
    /// The shared cache bucket.
    pub shared: Option<Arc<SharedCache>>,
}

impl Caches {
    /// The block size reads of an object of `size` bytes are cut in, if any cache takes it
    /// (both caches share one block size, `--cache-block-size`).
    pub fn block_size(&self, size: u64) -> Option<u64> {
        match (&self.local, &self.shared) {
            (Some(local), _) => Some(local.block_size()),
            (None, Some(shared)) if shared.covers(size) => Some(shared.block_size()),
            _ => None,
        }
    }

    /// The shared cache, if it takes an object of `size` bytes.
    pub fn shared_for(&self, size: u64) -> Option<&Arc<SharedCache>> {
        self.shared.as_ref().filter(|shared| shared.covers(size))
    }
}
