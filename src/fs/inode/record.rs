//! What one inode is: its key, kind, cached stat and expiry, what this mount holds of it
//! locally, and what a revalidation found ([`Observed`]).

use std::time::{Duration, Instant, SystemTime};

use super::super::names::Kind;
use crate::s3::Posix;

/// What we know of a file's object, or a directory's synthetic attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time (LastModified, or the mount time for directories).
    pub mtime: SystemTime,
    /// The object's ETag; `None` for directories.
    pub etag: Option<String>,
    /// POSIX attributes from the object's metadata (a directory's from its `name/` marker),
    /// with `--posix-metadata`.
    pub posix: Option<Posix>,
}

/// State that exists only in this mount, not (yet) in S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A directory made by mkdir; it becomes real when a file inside is committed.
    Dir,
    /// A file open for writing; `new` when no object of that name existed at open.
    Writing {
        /// Whether the name is new (so it vanishes again if the upload fails).
        new: bool,
    },
}

/// One entry of the table.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Kernel inode number.
    pub ino: u64,
    /// Parent directory's inode number (the root is its own parent).
    pub parent: u64,
    /// Name inside the parent.
    pub name: String,
    /// The object key for a file; the key prefix (empty or ending in `/`) for a directory.
    pub key: String,
    /// File or directory.
    pub kind: Kind,
    /// Cached stat.
    pub stat: Stat,
    /// When `stat` must be revalidated; `None`: never.
    pub expires: Option<Instant>,
    /// Set while the entry exists only here (a new directory, a file being written).
    pub local: Option<Local>,
    /// Kernel lookup count; the entry is dropped when it returns to 0.
    pub(super) lookups: u64,
    /// Open file handles on this inode (reading or writing).
    pub(super) opens: u32,
}

/// The opens the kernel retries on an inode that took a name, after opens of the name's
/// previous inode answered ESTALE (kept beside the table's inodes): each is the retry of one
/// thread's open(2), and that thread's next open of this inode goes ahead at the version the
/// table holds, without another HEAD, until its deadline. The HEAD that sent the kernel back
/// was made during the open it retries, so that version is one this open may see; asking S3
/// again would answer ESTALE a second time if the object changed again meanwhile, and the
/// kernel retries only once. Other threads' opens revalidate as usual.
#[derive(Debug, Clone, Default)]
pub(super) struct Retries {
    /// The threads (as FUSE reports them) whose retry has not come yet, and until when it
    /// may skip the HEAD.
    pending: Vec<(u32, Instant)>,
}

impl Retries {
    /// Expects a retry from thread `caller`, allowed for `grace` from now.
    pub(super) fn expect(&mut self, caller: u32, grace: Duration) {
        let now = Instant::now();
        // Retries that never came (their programs gone) earn nothing later.
        self.pending
            .retain(|&(thread, until)| thread != caller && now < until);
        if let Some(until) = now.checked_add(grace) {
            self.pending.push((caller, until));
        }
    }

    /// Takes thread `caller`'s retry if it is still within its grace; whether there was one.
    pub(super) fn take(&mut self, caller: u32) -> bool {
        let now = Instant::now();
        let found = self.pending.iter().position(|&(t, _)| t == caller);
        let taken = found.map(|at| self.pending.swap_remove(at));
        taken.is_some_and(|(_, until)| now < until)
    }

    /// Whether no retry is expected any more.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Inode {
    /// Whether the cached stat may still be used (local state is always current).
    pub fn is_fresh(&self) -> bool {
        self.local.is_some() || self.expires.is_none_or(|at| Instant::now() < at)
    }

    /// Whether the cached stat was fetched less than `age` ago, given that it was cached
    /// for `ttl` (local state is always current).
    pub fn fetched_within(&self, age: Duration, ttl: Duration) -> bool {
        self.local.is_some()
            || self.expires.is_some_and(|at| {
                at.checked_sub(ttl)
                    .is_some_and(|fetched| fetched.elapsed() < age)
            })
    }

    /// Whether files are open on this inode.
    pub fn is_open(&self) -> bool {
        self.opens > 0
    }

    /// Whether `stat` is another object version than this inode's while files are open on
    /// it: then the name must move to a new inode (see the module comment).
    pub(super) fn must_move_for(&self, stat: &Stat) -> bool {
        self.opens > 0 && self.local.is_none() && self.stat.etag != stat.etag
    }
}

/// What a revalidation found (see [`InodeTable::observe`]).
#[derive(Debug, Clone)]
pub enum Observed {
    /// The inode now carries the stat seen.
    Current(Inode),
    /// The object changed while files were open on the inode: its name moved to `new`, and
    /// `old` keeps the version its open handles read.
    Moved {
        /// The inode of the open handles, unchanged but for its expiry.
        old: Inode,
        /// The inode the name now stands for.
        new: Inode,
    },
    /// The inode is gone from the table.
    Gone,
}
