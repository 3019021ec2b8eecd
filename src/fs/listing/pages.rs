//! ListObjectsV2 pages remembered for the metadata TTL, so a second `ls -l` (or `find`, `du`)
//! of a directory within `--metadata-ttl` costs no LIST: the pages are kept as S3 sent them,
//! by (directory prefix, continuation token), and a directory stream asks here first.
//!
//! Our own changes to a directory (a file committed, deleted, renamed in or out, a directory
//! made or removed) invalidate its pages at once: each prefix has a generation, part of the
//! pages' keys, that an invalidation moves on, so pages fetched before it are never found
//! again; a LIST still in flight at an invalidation is not kept. A generation entry lives as
//! long as the pages do (the TTL), so when it expires every page older than the
//! invalidation has expired too.
//!
//! Bounded by the entries the pages hold (about 150 bytes each). With `--metadata-ttl
//! minimal` (the default without a cache) a listing always asks S3, as Mountpoint's does:
//! pages are not kept for another listing, only the pages a tree walk's readahead fetched
//! ([`super::walk`]) wait for the listing they were fetched for, at most the TTL (1 s), and
//! are used once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::s3::{ListPage, ObjectStore, S3Error};

/// Most listed entries (objects and common prefixes) held in remembered pages: about 30 MB.
pub const MAX_ENTRIES: u64 = 200_000;

/// (prefix, its generation, continuation token, keys per page).
type PageKey = (String, u64, Option<String>, usize);

/// Listings fetched ahead at once, at most.
const PREFETCHES: usize = 8;

/// Remembered listing pages.
#[derive(Debug)]
pub struct PageCache {
    pages: Cache<PageKey, Arc<ListPage>>,
    /// Current generation of prefixes invalidated within the TTL (absent: 0).
    generations: Cache<String, u64>,
    next_generation: AtomicU64,
    /// Whether a listing may use a page another listing fetched (not with `minimal`: only
    /// the walk's readahead pages, once).
    reuse: bool,
    /// Listings fetched ahead now.
    prefetching: Arc<tokio::sync::Semaphore>,
    /// First pages fetched ahead for a walk, done or in flight, each for one listing: one
    /// that comes while its page is still on its way waits for it rather than asking again.
    ahead: Cache<PageKey, Arc<Ahead>>,
}

/// A page fetched ahead: set once its LIST answers (`None` if it failed).
type Ahead = tokio::sync::OnceCell<Option<Arc<ListPage>>>;

/// Pages fetched ahead remembered at most (a walk asks for a few at a time).
const AHEAD_PAGES: u64 = 1024;

impl PageCache {
    /// Pages kept for `ttl` (capped as `fs::capped_ttl` caps it), at most `max_entries`
    /// entries in all; with `reuse`, for every listing, else only the readahead's, for one.
    pub fn new(ttl: Duration, max_entries: u64, reuse: bool) -> Self {
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
            reuse,
            prefetching: Arc::new(tokio::sync::Semaphore::new(PREFETCHES)),
            ahead: Cache::builder()
                .max_capacity(AHEAD_PAGES)
                .time_to_live(ttl)
                .build(),
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
        if self.reuse
            && let Some(page) = self.pages.get(&key)
        {
            return Ok((ListPage::clone(&page), true));
        }
        if let Some(ahead) = self.ahead.remove(&key) {
            let fetch = || async {
                store
                    .list(prefix, true, None, page_size)
                    .await
                    .ok()
                    .map(Arc::new)
            };
            if let Some(page) = ahead.get_or_init(fetch).await {
                return Ok((ListPage::clone(page), true));
            }
            // The readahead's LIST failed: this listing asks again.
        }
        let page = store.list(prefix, true, token, page_size).await?;
        // Not if the directory changed while the LIST was out: the page may predate that.
        if self.reuse && self.generation(prefix) == key.1 {
            self.pages.insert(key, Arc::new(page.clone()));
        }
        Ok((page, false))
    }

    /// Fetches the first page of `prefix`'s listing in the background (a walk will list it
    /// soon), unless it is remembered already; a few at a time, more are skipped.
    pub fn prefetch<S: ObjectStore>(
        self: &Arc<Self>,
        store: &Arc<S>,
        prefix: String,
        page_size: usize,
    ) {
        let key = (prefix.clone(), self.generation(&prefix), None, page_size);
        if self.ahead.contains_key(&key) || (self.reuse && self.pages.contains_key(&key)) {
            return;
        }
        // Busy: the walk lists it itself, or asks again as it moves on.
        let Ok(slot) = self.prefetching.clone().try_acquire_owned() else {
            return;
        };
        let ahead = Arc::new(Ahead::new());
        self.ahead.insert(key.clone(), ahead.clone());
        let (pages, generations, store, reuse) = (
            self.pages.clone(),
            self.generations.clone(),
            store.clone(),
            self.reuse,
        );
        tokio::spawn(async move {
            let _slot = slot;
            let fetch = || async {
                store
                    .list(&prefix, true, None, page_size)
                    .await
                    .ok()
                    .map(Arc::new)
            };
            if let Some(page) = ahead.get_or_init(fetch).await
                && reuse
                && generations.get(&key.0).unwrap_or(0) == key.1
            {
                pages.insert(key, page.clone());
            }
        });
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
        let cache = PageCache::new(Duration::from_secs(60), MAX_ENTRIES, true);
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
        let cache = PageCache::new(Duration::from_secs(60), MAX_ENTRIES, true);
        let key = ("d/".to_string(), cache.generation("d/"), None, 10);
        let stale = store.list("d/", true, None, 10).await.unwrap();
        cache.invalidate("d/");
        cache.pages.insert(key, Arc::new(stale)); // as the LIST in flight would
        store.put("d/b", "x");
        let (page, remembered) = cache.list(&store, "d/", None, 10).await.unwrap();
        assert_eq!((page.objects.len(), remembered), (2, false));
    }

    #[tokio::test]
    async fn without_reuse_only_prefetched_pages_serve_once() {
        let store = Arc::new(InMemoryStore::new());
        store.put("d/a", "x");
        let cache = Arc::new(PageCache::new(Duration::from_secs(1), MAX_ENTRIES, false));
        cache.list(store.as_ref(), "d/", None, 10).await.unwrap();
        cache.list(store.as_ref(), "d/", None, 10).await.unwrap();
        assert_eq!(
            store.list_calls(),
            2,
            "a listing's pages are not kept for the next"
        );
        cache.prefetch(&store, "d/".into(), 10);
        // Asked at once: the listing waits for the page on its way, no second LIST.
        let (_, remembered) = cache.list(store.as_ref(), "d/", None, 10).await.unwrap();
        assert!(remembered, "the prefetched page");
        let (_, remembered) = cache.list(store.as_ref(), "d/", None, 10).await.unwrap();
        assert!(!remembered, "used once");
        assert_eq!(store.list_calls(), 4);
        // Fetched ahead and answered before the listing comes: the same.
        cache.prefetch(&store, "d/".into(), 10);
        for _ in 0..100 {
            if store.list_calls() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (_, remembered) = cache.list(store.as_ref(), "d/", None, 10).await.unwrap();
        assert!(remembered);
        assert_eq!(store.list_calls(), 5);
    }

    #[tokio::test]
    async fn pages_expire_with_the_ttl() {
        let store = InMemoryStore::new();
        store.put("d/a", "x");
        let cache = PageCache::new(Duration::from_millis(50), MAX_ENTRIES, true);
        cache.list(&store, "d/", None, 10).await.unwrap();
        std::thread::sleep(Duration::from_millis(80));
        cache.list(&store, "d/", None, 10).await.unwrap();
        assert_eq!(store.list_calls(), 2);
    }
}
