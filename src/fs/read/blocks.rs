//! Reads through the caches, block by block. A range is cut into blocks; each block comes
//! from the first level that has it:
//!
//! 1. the local disk cache (`--cache`): a 4 KiB read of a cached block reads 4 KiB;
//! 2. the shared cache bucket (`--cache-xz`), every missing block at once; a block found
//!    there is also stored on the local disk;
//! 3. the source bucket: each run of blocks still missing is one block-aligned GET, whose
//!    blocks are then stored on the local disk and in the shared cache.
//!
//! Storing never delays the read: disk writes run on the blocking pool behind the cache's
//! queue, shared writes are the shared cache's background tasks. The bytes fetched beyond
//! what the read asked for (whole blocks) come from the memory budget, held until the blocks
//! are on disk; when the budget is short, the shared cache is not asked and only the
//! asked-for bytes are fetched from the source, and nothing is cached.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::pieces::Pieces;
use super::source::ObjectSource;
use crate::fs::FsError;
use crate::memory::Reservation;
use crate::s3::ObjectStore;
use crate::shared_cache::SharedCache;

/// Blocks to write to the local disk once the read is answered, and the budget holding them.
#[derive(Default)]
struct ToStore {
    blocks: Vec<(u64, Bytes)>,
    held: Vec<Reservation>,
}

impl<S: ObjectStore> ObjectSource<S> {
    /// The bytes of `range`, through the caches, with blocks of `block_size` bytes.
    pub(super) async fn fetch_blocks(
        self: &Arc<Self>,
        etag: String,
        block_size: u64,
        range: Range<u64>,
    ) -> Result<Pieces, FsError> {
        let first = range.start / block_size;
        let last = (range.end - 1) / block_size;
        // The part of each block the read needs.
        let wanted: Vec<(u64, Range<usize>)> = (first..=last)
            .map(|index| {
                let base = index * block_size;
                let from = range.start.max(base) - base;
                let to = range.end.min(base + block_size) - base;
                (index, from as usize..to as usize)
            })
            .collect();
        let mut blocks = self.read_disk(&etag, &wanted).await?;
        let mut store = ToStore::default();
        if let Some(shared) = self.caches.shared_for(self.size)
            && blocks.iter().any(Option::is_none)
        {
            self.read_shared(shared, &etag, block_size, &wanted, &mut blocks, &mut store)
                .await;
        }

        // Each cached block is one piece; each run of missing blocks is one GET whose body
        // is one piece (a slice of it), so a read that misses entirely is passed on without a
        // copy. The run's blocks are stored as slices of the same body.
        let shared = self.caches.shared_for(self.size).cloned();
        let mut pieces = Vec::new();
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
            store.held.push(reservation);
            let bytes = self.get(start..end).await?;
            let wanted_from = (wanted.start - start) as usize;
            let wanted_to = (wanted.end - start) as usize;
            pieces.push(bytes.slice(wanted_from..wanted_to));
            for offset in 0..at - run_start {
                let from = offset * block_size as usize;
                let to = (from + block_size as usize).min(bytes.len());
                let index = first + (run_start + offset) as u64;
                let block = bytes.slice(from..to);
                if let Some(shared) = &shared {
                    shared.put(&self.key, &etag, self.size, index, block.clone());
                }
                if self.caches.local.is_some() {
                    store.blocks.push((index, block));
                }
            }
        }
        self.store_on_disk(etag, store);
        Ok(Pieces::from_vec(pieces))
    }

    /// The wanted part of each block the local cache holds (all `None` without one).
    async fn read_disk(
        &self,
        etag: &str,
        wanted: &[(u64, Range<usize>)],
    ) -> Result<Vec<Option<Bytes>>, FsError> {
        let Some(cache) = self.caches.local.clone() else {
            return Ok(vec![None; wanted.len()]);
        };
        let key = self.key.clone();
        let etag = etag.to_string();
        let size = self.size;
        let wanted = wanted.to_vec();
        crate::fs::blocking::unblock(move || {
            wanted
                .into_iter()
                .map(|(index, within)| cache.read(&key, &etag, size, index, within))
                .collect()
        })
        .await
        .map_err(FsError::task)
    }

    /// Fills the blocks still `None` from the shared cache, all asked at once; the whole
    /// blocks found go to `store` for the local disk. Not asked when the budget cannot hold
    /// the whole blocks.
    async fn read_shared(
        &self,
        shared: &Arc<SharedCache>,
        etag: &str,
        block_size: u64,
        wanted: &[(u64, Range<usize>)],
        blocks: &mut [Option<Bytes>],
        store: &mut ToStore,
    ) {
        let layout_len = |index: u64| {
            let start = index.saturating_mul(block_size);
            self.size.saturating_sub(start).min(block_size)
        };
        let missing: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].is_none()).collect();
        let extra: u64 = missing
            .iter()
            .map(|&i| layout_len(wanted[i].0) - wanted[i].1.len() as u64)
            .sum();
        let Some(reservation) = self.budget.try_reserve(extra) else {
            return;
        };
        let mut asked = tokio::task::JoinSet::new();
        for &position in &missing {
            let (shared, key, etag) = (shared.clone(), self.key.clone(), etag.to_string());
            let (size, index) = (self.size, wanted[position].0);
            asked.spawn(async move { (position, shared.get(&key, &etag, size, index).await) });
        }
        let mut found = false;
        while let Some(answer) = asked.join_next().await {
            let Ok((position, Some(block))) = answer else {
                continue;
            };
            found = true;
            blocks[position] = Some(block.slice(wanted[position].1.clone()));
            if self.caches.local.is_some() {
                store.blocks.push((wanted[position].0, block));
            }
        }
        if found {
            store.held.push(reservation);
        }
    }

    /// Writes `store`'s blocks to the local disk in the background, behind the cache's
    /// queue (skipped, and counted there, when it is full); the budget is given back once
    /// they are written.
    fn store_on_disk(&self, etag: String, store: ToStore) {
        let Some(cache) = self.caches.local.clone() else {
            return;
        };
        let bytes = store.blocks.iter().map(|(_, b)| b.len() as u64).sum();
        if store.blocks.is_empty() {
            return;
        }
        let Some(queued) = cache.queue(bytes) else {
            return;
        };
        let key = self.key.clone();
        let size = self.size;
        tokio::task::spawn_blocking(move || {
            for (index, block) in store.blocks {
                cache.put(&key, &etag, index, &block);
            }
            drop((queued, store.held)); // written: the copy below is not waiting blocks
            // These may have been the object's last missing blocks.
            if let Some(copy) = cache.pending_copy(&key, &etag, size) {
                copy.run();
            }
        });
    }
}
