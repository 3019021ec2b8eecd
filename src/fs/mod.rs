//! The filesystem: S3 keys as files and directories, independent of FUSE.
//!
//! Every operation is an async method on [`S3Filesystem`] taking inode numbers and handles and
//! returning plain data or an [`FsError`]; `fuse/` only translates. Storage is reached only
//! through [`ObjectStore`].

pub mod blocking;
pub(crate) mod commit;
pub mod config;
pub mod counters;
mod dir_rename;
pub mod error;
pub mod handle_map;
pub(crate) mod handles;
pub mod held;
pub mod inode;
pub mod listing;
pub(crate) mod mutate;
pub mod names;
pub mod posix;
pub mod read;
pub mod staged;
pub(crate) mod upload;
pub mod write;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use moka::sync::Cache;

pub use commit::ShutdownReport;
pub use config::FsConfig;
pub use error::FsError;
pub use inode::{Inode, Observed, ROOT_INO, Stat};
pub use mutate::RenameMode;
pub use names::Kind;

use crate::cache::DiskCache;
use crate::memory::{Budgets, MemoryBudget};
use crate::s3::{ObjectInfo, ObjectStore, S3Error};
use crate::shared_cache::SharedCache;
use commit::CommitsInFlight;
use counters::{CounterSnapshot, ReadCounters};
use handle_map::HandleMap;
use handles::OpenFile;
use listing::DirStream;
use read::prefetch::PrefetchConfig;
use write::aborts::PendingAborts;

/// Most names remembered as missing at once.
const NEGATIVE_CACHE_CAPACITY: u64 = 100_000;

/// Most listed names remembered (with their stat and number) that the kernel has not looked
/// up: a `find` over millions of keys keeps the inode table to what the kernel holds, and
/// this bounded cache to about 20 MB.
const LISTED_CACHE_CAPACITY: u64 = 100_000;

/// A name a listing (or a check of ours) found, not (yet) in the inode table: what a lookup
/// within the metadata TTL answers without asking S3, under the number readdir gave it.
#[derive(Debug, Clone)]
struct Listed {
    ino: u64,
    kind: Kind,
    stat: Stat,
}

/// Attributes of one inode, as the kernel is told them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (also used for atime and ctime).
    pub mtime: SystemTime,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A symbolic link (a file object whose POSIX mode says so; `--posix-metadata`).
    pub link: bool,
}

/// One entry of a `readdir` reply.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Name (`.` and `..` included).
    pub name: String,
    /// Its attributes (inode number included).
    pub attr: Attr,
    /// What the filesystem knows of it (the ETag too), for [`S3Filesystem::entry_looked_up`].
    pub stat: Stat,
    /// Offset the kernel passes back to continue after this entry.
    pub next_offset: u64,
}

/// Flags of `open` that change what the filesystem does.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMode {
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub write: bool,
    /// O_TRUNC: the whole object is replaced.
    pub truncate: bool,
    /// O_APPEND (refused for writing: S3 objects cannot be appended to).
    pub append: bool,
    /// O_DIRECT: revalidate metadata instead of trusting the cache.
    pub direct: bool,
}

/// What the filesystem tells the kernel to forget, implemented by the FUSE layer (the
/// filesystem knows no kernel protocol). Calls must not block.
pub trait KernelCache: Send + Sync + std::fmt::Debug {
    /// The kernel's cached attributes and pages of inode `ino` are stale.
    fn inode_changed(&self, ino: u64);

    /// The kernel should drop its entry `name` in directory `parent` (and forget the inode,
    /// unless something still uses it): to bound the entries it holds.
    fn drop_entry(&self, parent: u64, name: &str);
}

/// What the mount holds at one moment (see [`S3Filesystem::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Open file and directory handles.
    pub open_handles: usize,
    /// Inodes in the table (what the kernel holds, and entries made here).
    pub inodes: usize,
    /// Listed names remembered outside the table.
    pub listed: u64,
    /// Bytes of the memory budget reserved now (both shares).
    pub memory_used: u64,
    /// The budget's limit (`--memory-target`).
    pub memory_limit: u64,
    /// The most reserved at once for parts, part buffers and cache blocks.
    pub memory_peak: u64,
    /// The most reserved at once for reads' own bytes.
    pub reads_peak: u64,
    /// Commits under way.
    pub commits_in_flight: usize,
    /// Multipart uploads whose abort failed and is being retried.
    pub aborts_owed: usize,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "open_handles={} inodes={} listed={} memory_used={} memory_limit={} memory_peak={} reads_peak={} commits_in_flight={} aborts_owed={}",
            self.open_handles,
            self.inodes,
            self.listed,
            self.memory_used,
            self.memory_limit,
            self.memory_peak,
            self.reads_peak,
            self.commits_in_flight,
            self.aborts_owed
        )
    }
}

/// Open directory handles share their listing state behind an async lock (the kernel sends one
/// readdir at a time per handle, so it is never contended for long).
type DirHandle = Arc<tokio::sync::Mutex<DirStream>>;

/// A mounted bucket.
#[derive(Debug)]
pub struct S3Filesystem<S: ObjectStore> {
    store: Arc<S>,
    config: FsConfig,
    inodes: inode::InodeTable,
    /// (parent inode, name) pairs known not to exist, for the metadata TTL.
    negative: Cache<(u64, String), ()>,
    /// Names listed but not looked up by the kernel, for the metadata TTL (bounded).
    listed: Cache<(u64, String), Listed>,
    /// Open files by handle number.
    files: HandleMap<OpenFile<S>>,
    /// Open directories by handle number.
    dirs: HandleMap<DirHandle>,
    /// The entries handed to the kernel by readdirplus, oldest first, for its bound.
    held: held::HeldEntries,
    /// Listing pages remembered within the metadata TTL (with `minimal`, only a walk's
    /// readahead, once).
    pages: Option<Arc<listing::PageCache>>,
    /// What tree walks in progress have shown, for their listing readahead.
    walks: listing::walk::WalkAhead,
    /// Memory for data (parts, part buffers, cache blocks; reads' own bytes), shared by all
    /// handles.
    budgets: Budgets,
    /// Mount-wide read counters.
    counters: Arc<ReadCounters>,
    prefetch: PrefetchConfig,
    /// The local data cache, if enabled.
    cache: Option<Arc<DiskCache>>,
    /// The shared cache bucket (`--cache-xz`), if enabled.
    shared: Option<Arc<SharedCache>>,
    /// The staging area (`--staged-writes`), if enabled.
    staging: Option<Arc<staged::dir::StagingDir>>,
    /// The staged file open on each inode, shared by its handles.
    staged: Mutex<std::collections::HashMap<u64, std::sync::Weak<staged::StagedFile<S>>>>,
    /// Multipart uploads whose abort failed, retried until they succeed.
    aborts: Arc<PendingAborts<S>>,
    /// Commits under way (the end of the mount waits for them).
    commits: CommitsInFlight,
    /// Keys of written files that did not land and whose writer could not be told.
    lost: Mutex<Vec<String>>,
    /// Told after each release of a file, so that an operation waiting for a written file's
    /// release ([`S3Filesystem::wait_released`]) goes on as soon as it is done.
    released: tokio::sync::Notify,
    /// The kernel's caches, once a mount gives them (none in unit tests).
    kernel: OnceLock<Box<dyn KernelCache>>,
}

/// A TTL as the in-memory caches take it: `indefinite` (`Duration::MAX`) becomes a
/// thousand years, which they can add to an instant.
pub(crate) fn capped_ttl(ttl: Duration) -> Duration {
    ttl.min(Duration::from_secs(1000 * 365 * 24 * 3600))
}

impl<S: ObjectStore> S3Filesystem<S> {
    /// A filesystem over `store`, presenting `config.prefix` as its root.
    pub fn new(store: Arc<S>, config: FsConfig) -> Self {
        Self::with_cache(store, config, None)
    }

    /// A filesystem whose reads go through `cache` when given.
    pub fn with_cache(store: Arc<S>, config: FsConfig, cache: Option<Arc<DiskCache>>) -> Self {
        let ttl = config.metadata_ttl;
        let cache_ttl = capped_ttl(ttl);
        let negative = Cache::builder()
            .max_capacity(NEGATIVE_CACHE_CAPACITY)
            .time_to_live(capped_ttl(config.negative_ttl()))
            .build();
        let listed = Cache::builder()
            .max_capacity(LISTED_CACHE_CAPACITY)
            .time_to_live(cache_ttl)
            .build();
        let budgets = Budgets::split(config.memory_limit);
        let prefetch = PrefetchConfig::new(config.read_part_size, budgets.data.limit())
            .with_window_at_most(config.max_prefetch_window);
        let store_for_aborts = store.clone();
        // With `minimal` (opens revalidate) a listing always asks S3, as Mountpoint's: only
        // the pages a walk's readahead fetched are used, once.
        let reuse = config.open_revalidates_after.is_none();
        let pages = (!ttl.is_zero()).then(|| {
            Arc::new(listing::PageCache::new(
                cache_ttl,
                listing::pages::MAX_ENTRIES,
                reuse,
            ))
        });
        Self {
            inodes: inode::InodeTable::new(&config.prefix, SystemTime::now(), ttl),
            store,
            config,
            negative,
            listed,
            files: HandleMap::default(),
            dirs: HandleMap::default(),
            held: held::HeldEntries::default(),
            walks: listing::walk::WalkAhead::new(cache_ttl),
            pages,
            budgets,
            counters: Arc::new(ReadCounters::default()),
            prefetch,
            cache,
            shared: None,
            staging: None,
            staged: Mutex::new(std::collections::HashMap::new()),
            aborts: PendingAborts::new(store_for_aborts),
            commits: CommitsInFlight::default(),
            lost: Mutex::new(Vec::new()),
            released: tokio::sync::Notify::new(),
            kernel: OnceLock::new(),
        }
    }

    /// The same filesystem reading through a shared cache bucket too (`--cache-xz`).
    pub fn with_shared_cache(mut self, shared: Option<Arc<SharedCache>>) -> Self {
        self.shared = shared;
        self
    }

    /// The same filesystem staging its writes in `staging` (`--staged-writes`).
    pub fn with_staging(mut self, staging: Option<Arc<staged::dir::StagingDir>>) -> Self {
        self.staging = staging;
        self
    }

    /// The shared cache, if the mount has one.
    pub fn shared_cache(&self) -> Option<&Arc<SharedCache>> {
        self.shared.as_ref()
    }

    /// Gives the filesystem the kernel's caches to invalidate (once, at mount).
    pub fn set_kernel_cache(&self, kernel: Box<dyn KernelCache>) {
        let _ = self.kernel.set(kernel);
    }

    /// Tells the kernel that what it caches of `ino` is stale.
    fn kernel_forget(&self, ino: u64) {
        if let Some(kernel) = self.kernel.get() {
            kernel.inode_changed(ino);
        }
    }

    /// From now on, objects the cache holds completely are copied into whole-object files,
    /// which the kernel can read directly (called once passthrough is agreed with it).
    pub fn enable_whole_copies(&self) {
        if let Some(cache) = &self.cache {
            cache.enable_whole_copies();
        }
    }

    /// Stops making whole-object copies (the kernel cannot read them after all).
    pub fn disable_whole_copies(&self) {
        if let Some(cache) = &self.cache {
            cache.disable_whole_copies();
        }
    }

    /// What the mount holds now, for the status line (SIGUSR1) and the soak benchmark.
    pub fn status(&self) -> Status {
        Status {
            open_handles: self.open_handles(),
            inodes: self.inodes.len(),
            listed: self.listed.entry_count(),
            memory_used: self.budgets.data.used() + self.budgets.reads.used(),
            memory_limit: self.budgets.data.limit() + self.budgets.reads.limit(),
            memory_peak: self.budgets.data.peak(),
            reads_peak: self.budgets.reads.peak(),
            commits_in_flight: self.commits.count(),
            aborts_owed: self.aborts.owed(),
        }
    }

    /// Read counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// The data cache, if enabled.
    pub fn cache(&self) -> Option<&DiskCache> {
        self.cache.as_deref()
    }

    /// The mount's GET slots, for a throughput target's cap.
    pub fn get_slots(&self) -> &Arc<crate::throughput::GetSlots> {
        &self.budgets.gets
    }

    /// The memory budget for parts, part buffers and cache blocks.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budgets.data
    }

    /// The settings this filesystem was built with.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// How long the kernel may cache entries and attributes.
    pub fn kernel_ttl(&self) -> Duration {
        self.config.metadata_ttl
    }

    fn attr_of(&self, inode: &Inode) -> Attr {
        let perm = match inode.kind {
            Kind::File => self.config.file_mode,
            Kind::Dir => self.config.dir_mode,
        };
        let attr = Attr {
            ino: inode.ino,
            kind: inode.kind,
            size: inode.stat.size,
            mtime: inode.stat.mtime,
            perm,
            uid: self.config.uid,
            gid: self.config.gid,
            link: false,
        };
        self.with_posix(attr, inode.stat.posix.as_ref())
    }

    fn inode(&self, ino: u64) -> Result<Inode, FsError> {
        self.inodes.get(ino).ok_or(FsError::NotFound)
    }

    fn dir_inode(&self, ino: u64) -> Result<Inode, FsError> {
        let inode = self.inode(ino)?;
        match inode.kind {
            Kind::Dir => Ok(inode),
            Kind::File => Err(FsError::NotADirectory),
        }
    }

    fn dir_stat(&self) -> Stat {
        let root_mtime = self
            .inodes
            .get(ROOT_INO)
            .map_or(SystemTime::UNIX_EPOCH, |r| r.stat.mtime);
        Stat {
            size: 0,
            mtime: root_mtime,
            etag: None,
            posix: None,
        }
    }

    /// Resolves `name` in directory `parent`; counts one kernel lookup on success.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        let parent = self.dir_inode(parent)?;
        if !names::is_valid_name(name) {
            return Err(FsError::NotFound);
        }
        let inode = self
            .child(&parent, name, false, 1)
            .await?
            .ok_or(FsError::NotFound)?;
        Ok(self.attr_of(&inode))
    }

    /// What `name` in `parent` is now: a fresh cached entry (in the table, or listed), else
    /// what S3 says, recorded with `add_lookups` kernel lookups counted under the table's
    /// lock (1 for a lookup reply, 0 otherwise; see [`S3Filesystem::record`]).
    /// `bypass_negative` ignores a cached "missing".
    async fn child(
        &self,
        parent: &Inode,
        name: &str,
        bypass_negative: bool,
        add_lookups: u64,
    ) -> Result<Option<Inode>, FsError> {
        if let Some(inode) = self.inodes.fresh_child(parent.ino, name, add_lookups) {
            return Ok(Some(inode));
        }
        let cache_key = (parent.ino, name.to_string());
        if let Some(listed) = self.listed.get(&cache_key) {
            let inode = self.record(parent, name, listed.kind, listed.stat, add_lookups);
            return Ok(Some(inode));
        }
        if !bypass_negative && self.negative.contains_key(&cache_key) {
            return Ok(None);
        }
        match self.resolve(parent, name).await? {
            Some((kind, stat)) => Ok(Some(self.record(parent, name, kind, stat, add_lookups))),
            None => {
                if !self.config.negative_ttl().is_zero() {
                    self.negative.insert(cache_key, ());
                }
                Ok(None)
            }
        }
    }

    /// Records that `name` in `parent` is a `kind` with `stat`. In the inode table when the
    /// kernel will hold it (`add_lookups` > 0) or the table knows the name already; otherwise
    /// only in the bounded listed cache, under a number of its own that a later lookup keeps:
    /// the table holds what the kernel holds, however many names are listed.
    fn record(
        &self,
        parent: &Inode,
        name: &str,
        kind: Kind,
        stat: Stat,
        add_lookups: u64,
    ) -> Inode {
        let cache_key = (parent.ino, name.to_string());
        let listed = self.listed.get(&cache_key).filter(|l| l.kind == kind);
        if add_lookups > 0 || self.inodes.knows(parent.ino, name) {
            let ino = listed.map(|l| l.ino);
            let inode = self
                .inodes
                .adopt(parent, name, kind, stat, ino, add_lookups);
            self.listed.invalidate(&cache_key);
            return inode;
        }
        let ino = listed.map_or_else(|| self.inodes.allocate(), |l| l.ino);
        let inode = self.inodes.detached(parent, name, kind, stat.clone(), ino);
        self.listed.insert(cache_key, Listed { ino, kind, stat });
        inode
    }

    /// Forgets what is remembered of `name` in `parent` besides the inode table (it was
    /// just changed here).
    fn forget_name(&self, parent: u64, name: &str) {
        let cache_key = (parent, name.to_string());
        self.negative.invalidate(&cache_key);
        self.listed.invalidate(&cache_key);
        if let Some(dir) = self.inodes.get(parent) {
            self.listing_changed(&dir.key);
        }
    }

    /// Asks S3 what `name` in `parent` is: a directory if any key lies under `name/` (which
    /// shadows an object `name`), else a file if the object exists, else nothing.
    async fn resolve(&self, parent: &Inode, name: &str) -> Result<Option<(Kind, Stat)>, FsError> {
        let key = names::child_key(&parent.key, name);
        let prefix = names::child_prefix(&parent.key, name);
        let (head, list) = tokio::join!(
            self.store.head(&key),
            self.store.list(&prefix, true, None, 1)
        );
        let page = list.map_err(|e| FsError::s3(&prefix, e))?;
        // A directory that holds entries made here (new directories, files being written)
        // is one whatever S3 says: its last key may have gone since.
        let holds_local = self
            .inodes
            .known_child(parent.ino, name)
            .is_some_and(|d| d.kind == Kind::Dir && self.inodes.has_local_children(d.ino));
        if holds_local || !page.objects.is_empty() || !page.common_prefixes.is_empty() {
            let mut stat = self.dir_stat();
            if self.posix_on() && page.objects.first().is_some_and(|o| o.key == prefix) {
                stat.posix = self.marker_posix(&prefix).await?;
            }
            return Ok(Some((Kind::Dir, stat)));
        }
        match head {
            Ok(info) => Ok(Some((Kind::File, file_stat(&info)))),
            Err(S3Error::NotFound) => Ok(None),
            Err(e) => Err(FsError::s3(&key, e)),
        }
    }

    /// Attributes of `ino`, revalidated with one HEAD when a file's stat has expired. An
    /// inode whose object changed while files are open on it keeps answering with the
    /// version those files read (its name has moved to a new inode).
    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Dir || inode.is_fresh() {
            return Ok(self.attr_of(&inode));
        }
        let inode = match self.revalidate(&inode).await? {
            Observed::Current(inode) | Observed::Moved { old: inode, .. } => inode,
            Observed::Gone => return Err(FsError::NotFound),
        };
        Ok(self.attr_of(&inode))
    }

    /// Re-reads a file's stat from S3 (see [`inode::InodeTable::observe`]); a vanished
    /// object is unlinked from its name.
    async fn revalidate(&self, inode: &Inode) -> Result<Observed, FsError> {
        match self.store.head(&inode.key).await {
            Ok(info) => Ok(self.inodes.observe(inode.ino, file_stat(&info))),
            Err(S3Error::NotFound) => {
                self.inodes.unlink(inode.ino);
                Err(FsError::NotFound)
            }
            Err(e) => Err(FsError::s3(&inode.key, e)),
        }
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }
}

fn file_stat(info: &ObjectInfo) -> Stat {
    Stat {
        size: info.size,
        mtime: info.last_modified,
        etag: Some(info.etag.clone()),
        posix: info.posix,
    }
}

#[cfg(test)]
mod tests;
