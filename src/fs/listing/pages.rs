//! ListObjectsV2 pages remembered for the metadata TTL, so a second `ls -l` (or `find`, `du`)
//! of a directory within `--metadata-ttl` costs no LIST: the pages are kept as S3 sent them,
//! by (directory prefix, continuation token), and a directory stream asks here first.
//!
//! Our own changes to a directory (a file committed, deleted, renamed in or out, a directory
//! made or removed) invalidate its pages at once: each prefix has a generation, part of the
//! pages' keys, that an invalidation moves on, so pages fetched before it (and LISTs still in
//! flight) are never found again. A generation entry lives as long as the pages do (the
//! TTL), so when it expires every page older than the invalidation has expired too.
//!
//! Bounded by the entries the pages hold (about 150 bytes each). Not used with
//! `--metadata-ttl minimal` (the default without a cache), where a listing always asks S3,
//! as Mountpoint's does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::s3::{ListPage, ObjectStore, S3Error};

/// Most listed entries (objects and common prefixes) held in remembered pages: about 30 MB.
pub const MAX_ENTRIES: u64 = 200_000;

/// (prefix, its generation, continuation token, keys per page).
type PageKey = (String, u64, Option<String>, usize);

/// Remembered listing pages.
#[derive(Debug)]
pub struct PageCache {
    pages: Cache<PageKey, Arc<ListPage>>,
    /// Current generation of prefixes invalidated within the TTL (absent: 0).
    generations: Cache<String, u64>,
    next_generation: AtomicU64,
}

impl PageCache {
    /// Pages kept for `ttl`, at most `max_entries` entries in all.
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        let ttl = ttl.min(Duration::from_secs(1000 * 365 * 24 * 3600));
        Self {
            pages: Cache::builder()
                .max_capacity(max_entries)
                .weigher(|_, page: &Arc<ListPage>| {
                    let n = page.objects.len() + page.common_prefixes.len();
                    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build(),
            generations: Cache::builder().time_to_live(ttl).build(),
            next_generation: AtomicU64::new(1),
        }
    }

    fn generation(&self, prefix: &str) -> u64 {
        self.generations.get(prefix).unwrap_or(0)
    }

    /// One page of the delimited listing of `prefix`, and whether it was remembered (else it
    /// was asked of `store` now, and is remembered under the generation the prefix had when
    /// it was asked).
    pub async fn list<S: ObjectStore>(
        &self,
        store: &S,
        prefix: &str,
        token: Option<String>,
        page_size: usize,
    ) -> Result<(ListPage, bool), S3Error> {
        let key = (
            prefix.to_string(),
            self.generation(prefix),
            token.clone(),
            page_size,
        );
        if let Some(page) = self.pages.get(&key) {
            return Ok((ListPage::clone(&page), true));
        }
        let page = store.list(prefix, true, token, page_size).await?;
        self.pages.insert(key, Arc::new(page.clone()));
        Ok((page, false))
    }

    /// Forgets every page of `prefix`'s listing (this mount changed the directory).
    pub fn invalidate(&self, prefix: &str) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.generations.insert(prefix.to_string(), generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::in_memory::InMemoryStore;

    #[tokio::test]
    async fn pages_are_reused_until_invalidated() {
        let store = InMemoryStore::new();
        for key in ["d/a", "d/b", "d/c", "d/e/x", "other"] {
            store.put(key, "x");
        }
        let cache = PageCache::new(Duration::from_secs(60), MAX_ENTRIES);
        let (first, remembered) = cache.list(&store, "d/", None, 2).await.unwrap();
        assert!(!remembered);
        let token = first.next_token.clone();
        cache.list(&store, "d/", token.clone(), 2).await.unwrap();
        assert_eq!(store.list_calls(), 2);
        let (again, remembered) = cache.list(&store, "d/", None, 2).await.unwrap();
        assert!(remembered);
        cache.list(&store, "d/", token.clone(), 2).await.unwrap();
        assert_eq!(store.list_calls(), 2, "both pages remembered");
        assert_eq!(again.objects, first.objects);
        // Another page size or prefix is another listing.
        cache.list(&store, "d/", None, 3).await.unwrap();
        cache.list(&store, "d/e/", None, 2).await.unwrap();
        assert_eq!(store.list_calls(), 4);

        store.put("d/aa", "x");
        cache.invalidate("d/");
        let (fresh, _) = cache.list(&store, "d/", None, 2).await.unwrap();
        assert_eq!(store.list_calls(), 5);
        let names: Vec<_> = fresh.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(names, ["d/a", "d/aa"]);
        // Other prefixes keep theirs.
        cache.list(&store, "d/e/", None, 2).await.unwrap();
        assert_eq!(store.list_calls(), 5);
    }

    /// A LIST that was asked before an invalidation and answered after it is not kept as
    /// current: the next listing asks again.
    #[tokio::test]
    async fn a_listing_in_flight_during_an_invalidation_is_not_kept() {
        let store = InMemoryStore::new();
        store.put("d/a", "x");
        let cache = PageCache::new(Duration::from_secs(60), MAX_ENTRIES);
        let key = ("d/".to_string(), cache.generation("d/"), None, 10);
        let stale = store.list("d/", true, None, 10).await.unwrap();
        cache.invalidate("d/");
        cache.pages.insert(key, Arc::new(stale)); // as the LIST in flight would
        store.put("d/b", "x");
        let (page, remembered) = cache.list(&store, "d/", None, 10).await.unwrap();
        assert_eq!((page.objects.len(), remembered), (2, false));
    }

    #[tokio::test]
    async fn pages_expire_with_the_ttl() {
        let store = InMemoryStore::new();
        store.put("d/a", "x");
        let cache = PageCache::new(Duration::from_millis(50), MAX_ENTRIES);
        cache.list(&store, "d/", None, 10).await.unwrap();
        std::thread::sleep(Duration::from_millis(80));
        cache.list(&store, "d/", None, 10).await.unwrap();
        assert_eq!(store.list_calls(), 2);
    }
}
