//! The inode table: which kernel inode number stands for which key, with each entry's cached
//! stat and when it expires.
//!
//! One lock (`InodeTable::state`) guards the numbers, the (parent, name) index and the stats;
//! it is held only for map updates, never across I/O. Inode numbers are never reused within a
//! mount. Forgotten inodes (lookup count back to 0) are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::names::Kind;

/// Inode number of the mount's root directory.
pub const ROOT_INO: u64 = 1;

/// What we know of a file's object, or a directory's synthetic attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time (LastModified, or the mount time for directories).
    pub mtime: SystemTime,
    /// The object's ETag; `None` for directories.
    pub etag: Option<String>,
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
    lookups: u64,
}

impl Inode {
    /// Whether the cached stat may still be used (local state is always current).
    pub fn is_fresh(&self) -> bool {
        self.local.is_some() || self.expires.is_none_or(|at| Instant::now() < at)
    }
}

/// Expiry instant for a stat cached now for `ttl` (`None` when it never expires).
fn expiry(ttl: Duration) -> Option<Instant> {
    Instant::now().checked_add(ttl)
}

#[derive(Debug)]
struct TableState {
    inodes: HashMap<u64, Inode>,
    children: HashMap<(u64, String), u64>,
    next_ino: u64,
}

/// All inodes of one mount.
#[derive(Debug)]
pub struct InodeTable {
    /// Guards every inode, the name index and the number counter.
    state: Mutex<TableState>,
    /// How long a stat is trusted.
    ttl: Duration,
}

impl InodeTable {
    /// A table holding only the root directory, whose key prefix is `root_prefix`.
    pub fn new(root_prefix: &str, mount_time: SystemTime, ttl: Duration) -> Self {
        let root = Inode {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            key: root_prefix.to_string(),
            kind: Kind::Dir,
            stat: Stat {
                size: 0,
                mtime: mount_time,
                etag: None,
            },
            expires: None,
            local: None,
            lookups: 1,
        };
        let state = TableState {
            inodes: HashMap::from([(ROOT_INO, root)]),
            children: HashMap::new(),
            next_ino: ROOT_INO + 1,
        };
        Self {
            state: Mutex::new(state),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.state.lock().expect("inode table lock poisoned")
    }

    /// The inode `ino`, if the kernel still holds it.
    pub fn get(&self, ino: u64) -> Option<Inode> {
        self.lock().inodes.get(&ino).cloned()
    }

    /// The child `name` of `parent` if it is known, fresh or not.
    pub fn known_child(&self, parent: u64, name: &str) -> Option<Inode> {
        let state = self.lock();
        let ino = state.children.get(&(parent, name.to_string()))?;
        state.inodes.get(ino).cloned()
    }

    /// The child `name` of `parent` if it is known and its stat is fresh.
    pub fn fresh_child(&self, parent: u64, name: &str) -> Option<Inode> {
        let state = self.lock();
        let ino = state.children.get(&(parent, name.to_string()))?;
        state.inodes.get(ino).filter(|i| i.is_fresh()).cloned()
    }

    /// Records that `name` in `parent` is a `kind` with `stat`, seen just now, and returns its
    /// inode. An existing entry of the same kind keeps its number; a kind change gets a new
    /// number. `add_lookups` is what the kernel will count for this reply (0 for readdir).
    pub fn upsert_child(
        &self,
        parent: &Inode,
        name: &str,
        kind: Kind,
        stat: Stat,
        add_lookups: u64,
    ) -> Inode {
        let expires = expiry(self.ttl);
        let mut state = self.lock();
        let index_key = (parent.ino, name.to_string());
        if let Some(ino) = state.children.get(&index_key).copied() {
            if let Some(inode) = state.inodes.get_mut(&ino).filter(|i| i.kind == kind) {
                if inode.local.is_none() {
                    // A local entry's stat is ours (e.g. the growing size of a new upload).
                    inode.stat = stat;
                }
                inode.expires = expires;
                inode.lookups += add_lookups;
                return inode.clone();
            }
        }
        let ino = state.next_ino;
        state.next_ino += 1;
        let key = match kind {
            Kind::File => super::names::child_key(&parent.key, name),
            Kind::Dir => super::names::child_prefix(&parent.key, name),
        };
        let inode = Inode {
            ino,
            parent: parent.ino,
            name: name.to_string(),
            key,
            kind,
            stat,
            expires,
            local: None,
            lookups: add_lookups,
        };
        state.children.insert(index_key, ino);
        state.inodes.insert(ino, inode.clone());
        inode
    }

    /// Replaces the stat of `ino` after a revalidation.
    pub fn refresh(&self, ino: u64, stat: Stat) -> Option<Inode> {
        let expires = expiry(self.ttl);
        let mut state = self.lock();
        let inode = state.inodes.get_mut(&ino)?;
        inode.stat = stat;
        inode.expires = expires;
        Some(inode.clone())
    }

    /// Marks `ino` as existing only here (or, with `None`, as real in S3 again).
    pub fn set_local(&self, ino: u64, local: Option<Local>) -> Option<Inode> {
        let mut state = self.lock();
        let inode = state.inodes.get_mut(&ino)?;
        inode.local = local;
        Some(inode.clone())
    }

    /// Sets the size of a file being written (others see it grow).
    pub fn set_size(&self, ino: u64, size: u64) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.stat.size = size;
        }
    }

    /// Clears the local mark of `ino` and its ancestors: a committed file made them real.
    pub fn make_real(&self, ino: u64) {
        let mut state = self.lock();
        let mut next = Some(ino);
        while let Some(ino) = next.take() {
            if let Some(inode) = state.inodes.get_mut(&ino) {
                inode.local = None;
                if inode.parent != ino {
                    next = Some(inode.parent);
                }
            }
        }
    }

    /// The local entries (new directories, files being written) directly in `parent`.
    pub fn local_children(&self, parent: u64) -> Vec<Inode> {
        let state = self.lock();
        state
            .children
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .filter_map(|(_, ino)| state.inodes.get(ino))
            .filter(|inode| inode.local.is_some())
            .cloned()
            .collect()
    }

    /// Removes `ino` from the table entirely (after unlink or rmdir).
    pub fn remove(&self, ino: u64) {
        let mut state = self.lock();
        if let Some(inode) = state.inodes.remove(&ino) {
            let index_key = (inode.parent, inode.name);
            if state.children.get(&index_key) == Some(&ino) {
                state.children.remove(&index_key);
            }
        }
    }

    /// Adds one kernel lookup to `ino` (a readdirplus entry the kernel accepted).
    pub fn add_lookup(&self, ino: u64) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.lookups += 1;
        }
    }

    /// Forgets `ino` from the name index, so the next lookup of its name asks S3 again.
    pub fn unlink(&self, ino: u64) {
        let mut state = self.lock();
        if let Some(inode) = state.inodes.get(&ino) {
            let index_key = (inode.parent, inode.name.clone());
            if state.children.get(&index_key) == Some(&ino) {
                state.children.remove(&index_key);
            }
        }
    }

    /// The kernel dropped `n` references to `ino`; drop the entry when none are left.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut state = self.lock();
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(n);
        if inode.lookups > 0 || inode.local.is_some() {
            // Local entries live until they are removed or become real.
            return;
        }
        let index_key = (inode.parent, inode.name.clone());
        state.inodes.remove(&ino);
        if state.children.get(&index_key) == Some(&ino) {
            state.children.remove(&index_key);
        }
    }

    /// Number of inodes held (for tests and counters).
    pub fn len(&self) -> usize {
        self.lock().inodes.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_stat(size: u64) -> Stat {
        Stat {
            size,
            mtime: SystemTime::UNIX_EPOCH,
            etag: Some("\"e\"".into()),
        }
    }

    #[test]
    fn numbers_are_stable_until_kind_changes() {
        let table = InodeTable::new("p/", SystemTime::now(), Duration::from_secs(60));
        let root = table.get(ROOT_INO).unwrap();
        let a = table.upsert_child(&root, "a", Kind::File, file_stat(1), 1);
        assert_eq!(a.key, "p/a");
        let again = table.upsert_child(&root, "a", Kind::File, file_stat(2), 1);
        assert_eq!(a.ino, again.ino);
        assert_eq!(again.stat.size, 2);
        let dir = table.upsert_child(&root, "a", Kind::Dir, file_stat(0), 1);
        assert_ne!(dir.ino, a.ino);
        assert_eq!(dir.key, "p/a/");
        assert_eq!(table.fresh_child(ROOT_INO, "a").unwrap().ino, dir.ino);
    }

    #[test]
    fn forget_drops_at_zero() {
        let table = InodeTable::new("", SystemTime::now(), Duration::from_secs(60));
        let root = table.get(ROOT_INO).unwrap();
        let a = table.upsert_child(&root, "a", Kind::File, file_stat(1), 2);
        table.forget(a.ino, 1);
        assert!(table.get(a.ino).is_some());
        table.forget(a.ino, 1);
        assert!(table.get(a.ino).is_none());
        assert!(table.fresh_child(ROOT_INO, "a").is_none());
        table.forget(ROOT_INO, 100);
        assert!(table.get(ROOT_INO).is_some());
    }

    #[test]
    fn zero_ttl_is_never_fresh() {
        let table = InodeTable::new("", SystemTime::now(), Duration::ZERO);
        let root = table.get(ROOT_INO).unwrap();
        table.upsert_child(&root, "a", Kind::File, file_stat(1), 1);
        assert!(table.fresh_child(ROOT_INO, "a").is_none());
    }

    #[test]
    fn indefinite_ttl_never_expires() {
        let table = InodeTable::new("", SystemTime::now(), Duration::MAX);
        let root = table.get(ROOT_INO).unwrap();
        let a = table.upsert_child(&root, "a", Kind::File, file_stat(1), 1);
        assert!(a.expires.is_none() && a.is_fresh());
    }
}
