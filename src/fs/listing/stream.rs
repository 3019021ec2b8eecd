//! A directory listing as a stream of entries with stable offsets.
//!
//! ListObjectsV2 pages are fetched only as the kernel asks for more entries, so memory holds a
//! page or so, however large the directory. A name that is both a key (`x`) and a prefix (`x/`)
//! shows once, as a directory: since `x/` may come pages after `x` (keys such as `x-1` sort
//! between them), a file entry is held back until the listing has passed `x/`.
//!
//! A directory bucket (S3 Express One Zone) lists in no order, so there nothing is safe to
//! hand out before the last page: such a listing is read whole, then served sorted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::pages::PageCache;
use crate::fs::names::{self, Kind};
use crate::s3::{ListPage, ObjectInfo, ObjectStore, S3Error};

/// Keys asked for per ListObjectsV2 page (S3's most).
pub const PAGE_SIZE: usize = 1000;

/// One name in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// Name inside the directory.
    pub name: String,
    /// File or directory.
    pub kind: Kind,
    /// The object, for files (its size, mtime and ETag seed the stat cache).
    pub object: Option<ObjectInfo>,
    /// Whether it comes from a remembered page ([`PageCache`]) rather than from S3 now: its
    /// stat may be older than what the mount has learned since, and must not replace it.
    pub remembered: bool,
}

/// The state of one open directory's listing.
#[derive(Debug)]
pub struct DirStream {
    prefix: String,
    /// Keys asked for per page.
    page_size: usize,
    /// Whether pages come in key order (general-purpose buckets) or in none (directory
    /// buckets).
    ordered: bool,
    /// Continuation token of the next page.
    token: Option<String>,
    /// Whether the last page has been fetched.
    done: bool,
    /// Entries seen but not yet safe to hand out (a directory of the same name may follow).
    pending: BTreeMap<String, ListedEntry>,
    /// Entries ready to hand out; `ready[0]` has index `base`.
    ready: VecDeque<ListedEntry>,
    base: usize,
    /// Entries that exist only in this mount (new directories, files being written), shown
    /// after the listing unless S3 listed the same name.
    extras: BTreeMap<String, ListedEntry>,
    /// All of them, for a restart.
    all_extras: Vec<ListedEntry>,
    /// Pages remembered within the metadata TTL, asked before S3.
    pages: Option<Arc<PageCache>>,
    /// Names of the subdirectories seen, in order (for a walk's listing readahead), at most
    /// [`SUBDIRS`]; `None` once handed over or past the limit.
    subdirs: Option<Vec<String>>,
}

/// Subdirectory names a listing keeps for the walk's readahead at most.
const SUBDIRS: usize = 100_000;

impl DirStream {
    /// A listing of the directory whose key prefix is `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self::with_extras(prefix, Vec::new(), PAGE_SIZE, true)
    }

    /// A listing that also shows `extras` (local entries) once S3's keys are listed, asking
    /// for `page_size` keys per page, of a bucket whose pages are `ordered` or not.
    pub fn with_extras(
        prefix: &str,
        extras: Vec<ListedEntry>,
        page_size: usize,
        ordered: bool,
    ) -> Self {
        Self {
            prefix: prefix.to_string(),
            page_size: page_size.clamp(1, PAGE_SIZE),
            ordered,
            token: None,
            done: false,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            base: 0,
            extras: extras.iter().map(|e| (e.name.clone(), e.clone())).collect(),
            all_extras: extras,
            pages: None,
            subdirs: Some(Vec::new()),
        }
    }

    /// The subdirectories' names, in listing order, once the listing has reached its end
    /// (once: later calls give `None`).
    pub fn take_subdirs_when_done(&mut self) -> Option<Vec<String>> {
        if self.done && self.pending.is_empty() {
            self.subdirs.take()
        } else {
            None
        }
    }

    /// The same listing, its pages asked of `pages` first.
    pub fn with_pages(mut self, pages: Option<Arc<PageCache>>) -> Self {
        self.pages = pages;
        self
    }

    /// Up to `count` entries starting at entry number `index` (0-based). Fewer than `count`
    /// means the listing ended. Entries before `index` are dropped: the kernel only moves
    /// forward, and a seek backwards restarts the listing.
    pub async fn entries_from<S: ObjectStore>(
        &mut self,
        store: &S,
        index: usize,
        count: usize,
    ) -> Result<Vec<ListedEntry>, S3Error> {
        if index < self.base {
            *self = Self::with_extras(
                &self.prefix,
                self.all_extras.clone(),
                self.page_size,
                self.ordered,
            )
            .with_pages(self.pages.clone());
        }
        loop {
            while self.base < index && !self.ready.is_empty() {
                self.ready.pop_front();
                self.base += 1;
            }
            let have = if self.base == index {
                self.ready.len()
            } else {
                0
            };
            if have >= count || self.done {
                break;
            }
            let token = self.token.take();
            let (page, remembered) = match &self.pages {
                Some(pages) => {
                    pages
                        .list(store, &self.prefix, token, self.page_size)
                        .await?
                }
                None => (
                    store
                        .list(&self.prefix, true, token, self.page_size)
                        .await?,
                    false,
                ),
            };
            self.absorb(page, remembered);
        }
        if self.base != index {
            return Ok(Vec::new());
        }
        Ok(self.ready.iter().take(count).cloned().collect())
    }

    fn absorb(&mut self, page: ListPage, remembered: bool) {
        self.token = page.next_token;
        self.done = self.token.is_none();
        // Unordered pages set no horizon: every name waits for the last page.
        let horizon = page
            .objects
            .last()
            .map(|o| o.key.clone())
            .max(page.common_prefixes.last().cloned())
            .filter(|_| self.ordered);
        for object in page.objects {
            if let Some(name) = names::file_name(&self.prefix, &object.key) {
                let name = name.to_string();
                self.pending.entry(name.clone()).or_insert(ListedEntry {
                    name,
                    kind: Kind::File,
                    object: Some(object),
                    remembered,
                });
            }
        }
        for common in &page.common_prefixes {
            if let Some(name) = names::dir_name(&self.prefix, common) {
                // A directory shadows a file of the same name.
                self.pending.insert(
                    name.to_string(),
                    ListedEntry {
                        name: name.to_string(),
                        kind: Kind::Dir,
                        object: None,
                        remembered,
                    },
                );
            }
        }
        self.settle(horizon.as_deref());
    }

    /// Moves to `ready` every pending name whose directory form `prefix + name + "/"` the
    /// listing has reached (all of them once it is done).
    fn settle(&mut self, horizon: Option<&str>) {
        let done = self.done;
        let prefix = &self.prefix;
        let settled: Vec<String> = self
            .pending
            .keys()
            .filter(|name| {
                done || horizon.is_some_and(|h| names::child_prefix(prefix, name).as_str() <= h)
            })
            .cloned()
            .collect();
        for name in settled {
            if let Some(entry) = self.pending.remove(&name) {
                // A directory shadows a file of the same name, a local one too (another
                // client's object named as a directory made here); otherwise S3's entry wins.
                let local = self.extras.remove(&name);
                let settled = match local {
                    Some(local) if local.kind == Kind::Dir && entry.kind == Kind::File => local,
                    _ => entry,
                };
                if settled.kind == Kind::Dir
                    && let Some(subdirs) = &mut self.subdirs
                {
                    if subdirs.len() < SUBDIRS {
                        subdirs.push(settled.name.clone());
                    } else {
                        self.subdirs = None;
                    }
                }
                self.ready.push_back(settled);
            }
        }
        if done {
            let extras = std::mem::take(&mut self.extras);
            self.ready.extend(extras.into_values());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::in_memory::InMemoryStore;

    /// Lists all of `prefix` through a store paged `page` keys at a time.
    async fn list_all(store: &InMemoryStore, prefix: &str, step: usize) -> Vec<(String, Kind)> {
        let mut stream = DirStream::new(prefix);
        let mut out = Vec::new();
        loop {
            let batch = stream.entries_from(store, out.len(), step).await.unwrap();
            let n = batch.len();
            out.extend(batch.into_iter().map(|e| (e.name, e.kind)));
            if n < step {
                return out;
            }
        }
    }

    /// Lists all of `d/` in pages of `page` keys, `batch` entries per call.
    async fn list_paged(
        store: &InMemoryStore,
        page: usize,
        batch: usize,
        ordered: bool,
    ) -> Vec<(String, Kind)> {
        let mut stream = DirStream::with_extras("d/", Vec::new(), page, ordered);
        let mut out = Vec::new();
        loop {
            let got = stream.entries_from(store, out.len(), batch).await.unwrap();
            let n = got.len();
            out.extend(got.into_iter().map(|e| (e.name, e.kind)));
            if n < batch {
                return out;
            }
        }
    }

    fn sorted(mut v: Vec<(String, Kind)>) -> Vec<(String, Kind)> {
        v.sort();
        v
    }

    #[tokio::test]
    async fn implicit_dirs_markers_and_shadowing() {
        let store = InMemoryStore::new();
        for key in ["a", "a-1", "a/b", "c/", "d/e/f", "top.txt"] {
            store.put(key, "x");
        }
        let got = sorted(list_all(&store, "", 2).await);
        let want = vec![
            ("a".to_string(), Kind::Dir),
            ("a-1".to_string(), Kind::File),
            ("c".to_string(), Kind::Dir),
            ("d".to_string(), Kind::Dir),
            ("top.txt".to_string(), Kind::File),
        ];
        assert_eq!(got, want);
        assert_eq!(list_all(&store, "c/", 10).await, vec![]);
    }

    #[tokio::test]
    async fn shadowing_across_pages() {
        let store = InMemoryStore::new();
        store.put("x", "file");
        for i in 0..50 {
            store.put(&format!("x-{i:02}"), "pad");
        }
        store.put("x/inner", "dir");
        // One key per page: `x/` arrives 51 pages after `x`.
        let got = list_all(&store, "", 1).await;
        let xs: Vec<_> = got.iter().filter(|(n, _)| n == "x").collect();
        assert_eq!(xs, vec![&("x".to_string(), Kind::Dir)]);
        assert_eq!(got.len(), 51);
    }

    #[tokio::test]
    async fn invalid_names_are_hidden_not_fatal() {
        let store = InMemoryStore::new();
        let long = "n".repeat(256);
        for key in [
            "d/ok",
            "d/.",
            "d/..",
            "d//x",
            "d/./y",
            "d/../z",
            &format!("d/{long}"),
            "d/nul\0",
            "d/",
            "d/zz",
        ] {
            store.put(key, "x");
        }
        let got = sorted(list_all(&store, "d/", 3).await);
        assert_eq!(
            got,
            vec![
                ("ok".to_string(), Kind::File),
                ("zz".to_string(), Kind::File)
            ]
        );
    }

    #[tokio::test]
    async fn local_extras_follow_the_listing_once() {
        let store = InMemoryStore::new();
        store.put("d/a", "x");
        store.put("d/both", "x");
        let extra = |name: &str| ListedEntry {
            name: name.to_string(),
            kind: Kind::Dir,
            object: None,
            remembered: false,
        };
        let mut stream = DirStream::with_extras("d/", vec![extra("new"), extra("both")], 1, true);
        let got = stream.entries_from(&store, 0, 10).await.unwrap();
        let names: Vec<_> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["a", "both", "new"]);
        assert_eq!(
            got[1].kind,
            Kind::Dir,
            "a directory made here shadows an object of the same name"
        );
    }

    #[tokio::test]
    async fn many_keys_each_once_and_rewind_restarts() {
        let store = InMemoryStore::new();
        for i in 0..2500 {
            store.put(&format!("big/k{i:05}"), "x");
        }
        let got = list_all(&store, "big/", 333).await;
        assert_eq!(got.len(), 2500);
        let mut names: Vec<_> = got.into_iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 2500);

        let mut stream = DirStream::new("big/");
        let first = stream.entries_from(&store, 0, 5).await.unwrap();
        let later = stream.entries_from(&store, 1200, 5).await.unwrap();
        assert_eq!(later.len(), 5);
        let again = stream.entries_from(&store, 0, 5).await.unwrap();
        assert_eq!(first, again);
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        /// Keys come from S3: whatever they are, a listing in pages of any size hands out
        /// each valid name once, never a name that cannot be a file name.
        #[test]
        fn untrusted_keys_list_as_valid_names_once(
            keys in proptest::collection::vec("(d/)?([a./]{0,4}|\\PC{0,6})", 0..30),
            page in 1usize..5,
            batch in 1usize..7,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let store = InMemoryStore::new();
                for key in &keys {
                    store.put(key, "x");
                }
                let mut stream = DirStream::with_extras("d/", Vec::new(), page, true);
                let mut names = Vec::new();
                loop {
                    let got = stream.entries_from(&store, names.len(), batch).await.unwrap();
                    let n = got.len();
                    names.extend(got.into_iter().map(|e| e.name));
                    if n < batch {
                        break;
                    }
                }
                for name in &names {
                    assert!(names::is_valid_name(name), "{name:?}");
                }
                let mut unique = names.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), names.len(), "{names:?}");
            });
        }

        /// A directory bucket lists in no order, and a name may be a key on one page and a
        /// common prefix pages later: read unordered, the listing is the same entries, each
        /// once, as a general-purpose bucket's sorted pages give.
        #[test]
        fn unordered_pages_list_as_sorted_ones(
            keys in proptest::collection::btree_set("d/[ab]{1,2}(-|/[ab]{0,2})?", 0..24),
            seed in proptest::prelude::any::<u64>(),
            page in 1usize..5,
            batch in 1usize..7,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let sorted_store = InMemoryStore::new();
                let shuffled_store = InMemoryStore::unordered(seed);
                for key in &keys {
                    sorted_store.put(key, "x");
                    shuffled_store.put(key, "x");
                }
                let want = list_paged(&sorted_store, page, batch, true).await;
                let got = list_paged(&shuffled_store, page, batch, false).await;
                assert_eq!(got, want, "keys {keys:?}");
            });
        }
    }
}
