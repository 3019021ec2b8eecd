//! Where a handle's bytes come from: the local data cache when it has them, S3 otherwise.
//!
//! With a cache, a range is split into cache blocks; the cached ones are read from disk and
//! each run of missing blocks is one block-aligned GET, whose blocks are then stored in the
//! background (the read does not wait for the disk). The bytes a block-aligned GET fetches
//! beyond what the read asked for come from the memory budget, held until the blocks are on
//! disk; when the budget is short, only the asked-for bytes are fetched and nothing is cached.
//! Without a cache, a range is one GET.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::cache::DiskCache;
use crate::fs::FsError;
use crate::fs::counters::ReadCounters;
use crate::memory::MemoryBudget;
use crate::s3::ObjectStore;
use crate::throughput::GetSlots;

/// One pinned object version and the ways to read it.
#[derive(Debug)]
pub struct ObjectSource<S: ObjectStore> {
    /// The bucket.
    pub store: Arc<S>,
    /// The data cache, if the mount has one.
    pub cache: Option<Arc<DiskCache>>,
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
    /// The bytes of `range` (inside the object).
    pub async fn fetch(self: &Arc<Self>, range: Range<u64>) -> Result<Bytes, FsError> {
        match (&self.cache, &self.etag) {
            (Some(cache), Some(etag)) => {
                self.fetch_cached(cache.clone(), etag.clone(), range).await
            }
            _ => self.get(range).await,
        }
    }

    async fn get(&self, range: Range<u64>) -> Result<Bytes, FsError> {
        // Held until the body is in: the cap is on GETs in flight, not on requests sent.
        let _slot = self.gets.acquire().await;
        ReadCounters::add(&self.counters.get_requests, 1);
        let bytes = self
            .store
            .get_range(&self.key, range, self.etag.as_deref())
            .await
            .map_err(|e| FsError::s3(&self.key, e))?;
        ReadCounters::add(&self.counters.bytes_fetched, bytes.len() as u64);
        Ok(bytes)
    }

    async fn fetch_cached(
        self: &Arc<Self>,
        cache: Arc<DiskCache>,
        etag: String,
        range: Range<u64>,
    ) -> Result<Bytes, FsError> {
        let block_size = cache.block_size();
        let first = range.start / block_size;
        let last = (range.end - 1) / block_size;
        // The part of each block the read needs: a 4 KiB read of a cached block reads 4 KiB.
        let wanted: Vec<(u64, Range<usize>)> = (first..=last)
            .map(|index| {
                let base = index * block_size;
                let from = range.start.max(base) - base;
                let to = range.end.min(base + block_size) - base;
                (index, from as usize..to as usize)
            })
            .collect();
        let key = self.key.clone();
        let lookup_cache = cache.clone();
        let lookup_etag = etag.clone();
        let size = self.size;
        let mut blocks: Vec<Option<Bytes>> = crate::fs::blocking::unblock(move || {
            wanted
                .into_iter()
                .map(|(index, within)| lookup_cache.read(&key, &lookup_etag, size, index, within))
                .collect()
        })
        .await
        .map_err(FsError::task)?;

        // Each cached block is one piece; each run of missing blocks is one GET whose body
        // is one piece (a slice of it), so a read that misses entirely is passed on without a
        // copy. The run's blocks are stored as slices of the same body.
        let mut pieces = Vec::new();
        let mut fetched = Vec::new();
        let mut held = Vec::new();
        let mut at = 0;
        while at < blocks.len() {
            if let Some(block) = blocks[at].take() {
                pieces.push(block);
                at += 1;
                continue;
            }
            let run_start = at;
            while at < blocks.len() && blocks[at].is_none() {
                at += 1;
            }
            let start = (first + run_start as u64) * block_size;
            let end = ((first + at as u64) * block_size).min(self.size);
            let wanted = range.start.max(start)..range.end.min(end);
            let extra = (end - start) - (wanted.end - wanted.start);
            let Some(reservation) = self.budget.try_reserve(extra) else {
                // No room for whole blocks: the asked-for bytes only, not cached.
                pieces.push(self.get(wanted).await?);
                continue;
            };
            held.push(reservation);
            let bytes = self.get(start..end).await?;
            let wanted_from = (wanted.start - start) as usize;
            let wanted_to = (wanted.end - start) as usize;
            pieces.push(bytes.slice(wanted_from..wanted_to));
            for offset in 0..at - run_start {
                let from = offset * block_size as usize;
                let to = (from + block_size as usize).min(bytes.len());
                fetched.push((first + (run_start + offset) as u64, bytes.slice(from..to)));
            }
        }
        let fetched_bytes = fetched.iter().map(|(_, block)| block.len() as u64).sum();
        if !fetched.is_empty()
            && let Some(queued) = cache.queue(fetched_bytes)
        {
            let key = self.key.clone();
            let size = self.size;
            tokio::task::spawn_blocking(move || {
                for (index, block) in fetched {
                    cache.put(&key, &etag, index, &block);
                }
                drop((queued, held)); // written: the copy below is not waiting blocks
                // These may have been the object's last missing blocks.
                if let Some(copy) = cache.pending_copy(&key, &etag, size) {
                    copy.run();
                }
            });
        }
        Ok(super::join(pieces, (range.end - range.start) as usize))
    }
}
