//! The inode table: which kernel inode number stands for which key, with each entry's cached
//! stat and when it expires.
//!
//! One lock (`InodeTable::state`) guards the numbers, the (parent, name) index and the stats;
//! it is held only for map updates, never across I/O. Inode numbers are never reused within a
//! mount. Forgotten inodes (lookup count back to 0, no open handle) are dropped.
//!
//! One inode is one object version while files are open on it: the kernel keeps one page
//! cache and one size per inode, so a handle pinned to version A and a later one of version B
//! must not share an inode, or pages filled by B's reads would be returned to A's reader.
//! When a name is seen with another ETag while its inode has open handles, the name moves to
//! a new inode and the old one keeps its version for the handles still reading it
//! ([`InodeTable::observe`], [`InodeTable::upsert_child`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use crate::sync::{Mutex, MutexGuard};

use super::names::Kind;

/// Inode number of the mount's root directory.
pub const ROOT_INO: u64 = 1;

mod record;
mod subtree;
#[cfg(test)]
mod tests;

use record::Retries;
pub use record::{Inode, Local, Observed, Stat};

/// The key of `name` in `parent` as a `kind`: an object key, or a directory's prefix.
fn child_key(parent: &Inode, name: &str, kind: Kind) -> String {
    match kind {
        Kind::File => super::names::child_key(&parent.key, name),
        Kind::Dir => super::names::child_prefix(&parent.key, name),
    }
}

/// How long after an ESTALE the open the kernel retries may skip the HEAD (see
/// `record::Retries`): longer than a lookup and an open take on a loaded machine, and no
/// staler than a lookup may be under `--metadata-ttl minimal` (a pass whose retry never
/// came lets that thread's next open of the name skip its HEAD until then).
const RETRY_GRACE: Duration = Duration::from_secs(1);

/// Expiry instant for a stat cached now for `ttl` (`None` when it never expires).
fn expiry(ttl: Duration) -> Option<Instant> {
    Instant::now().checked_add(ttl)
}

#[derive(Debug)]
struct TableState {
    inodes: HashMap<u64, Inode>,
    children: HashMap<(u64, String), u64>,
    /// The entries of each directory that are kept whatever the kernel forgets: local ones
    /// (new directories, files being written), and directories that hold kept entries
    /// (the index is by parent number, so the whole chain up to the root must stay). Listing
    /// a directory costs what it holds, not what the table holds.
    locals: HashMap<u64, HashSet<u64>>,
    /// Opens the kernel is retrying after an ESTALE, by the inode they will open.
    retries: HashMap<u64, Retries>,
    next_ino: u64,
}

impl TableState {
    /// A new inode for `name` in `parent`, put in the name index.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        parent: u64,
        name: &str,
        key: String,
        kind: Kind,
        stat: Stat,
        expires: Option<Instant>,
        lookups: u64,
    ) -> Inode {
        self.insert_as(None, parent, name, key, kind, stat, expires, lookups)
    }

    /// [`TableState::insert`], under number `wanted` when it is free (a number handed out
    /// with a listing), else a fresh one.
    #[allow(clippy::too_many_arguments)]
    fn insert_as(
        &mut self,
        wanted: Option<u64>,
        parent: u64,
        name: &str,
        key: String,
        kind: Kind,
        stat: Stat,
        expires: Option<Instant>,
        lookups: u64,
    ) -> Inode {
        let ino = match wanted.filter(|w| !self.inodes.contains_key(w) && *w < self.next_ino) {
            Some(wanted) => wanted,
            None => {
                self.next_ino += 1;
                self.next_ino - 1
            }
        };
        let inode = Inode {
            ino,
            parent,
            name: name.to_string(),
            key,
            kind,
            stat,
            expires,
            local: None,
            lookups,
            opens: 0,
        };
        self.children.insert((parent, name.to_string()), ino);
        self.inodes.insert(ino, inode.clone());
        inode
    }

    /// Removes `ino` and its name (if the name still stands for it).
    fn drop_inode(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.remove(&ino) {
            self.locals.remove(&ino);
            self.retries.remove(&ino);
            self.unkeep(inode.parent, ino);
            let index_key = (inode.parent, inode.name);
            if self.children.get(&index_key) == Some(&ino) {
                self.children.remove(&index_key);
            }
        }
    }

    /// Sets `ino`'s local state, keeping the per-directory index of local entries.
    fn set_local(&mut self, ino: u64, local: Option<Local>) -> Option<Inode> {
        let inode = self.inodes.get_mut(&ino)?;
        inode.local = local;
        let (parent, copy) = (inode.parent, inode.clone());
        if local.is_some() {
            self.keep(parent, ino);
        } else if !self.locals.contains_key(&ino) {
            self.unkeep(parent, ino);
        }
        Some(copy)
    }

    /// Records `ino` as a kept entry of `parent`, and `parent` as one of its own parent's,
    /// up to the root.
    fn keep(&mut self, parent: u64, ino: u64) {
        if parent == ino {
            return; // the root
        }
        let set = self.locals.entry(parent).or_default();
        let first = set.is_empty();
        set.insert(ino);
        if first && let Some(grandparent) = self.inodes.get(&parent).map(|p| p.parent) {
            self.keep(grandparent, parent);
        }
    }

    /// `ino` is no longer a kept entry of `parent`; a directory left holding no kept entry
    /// is no longer kept itself, and goes if the kernel does not hold it either.
    fn unkeep(&mut self, parent: u64, ino: u64) {
        let Some(set) = self.locals.get_mut(&parent) else {
            return;
        };
        set.remove(&ino);
        if !set.is_empty() {
            return;
        }
        self.locals.remove(&parent);
        let Some(dir) = self.inodes.get(&parent) else {
            return;
        };
        if dir.local.is_some() || parent == ROOT_INO {
            return;
        }
        let (grandparent, unheld) = (dir.parent, dir.lookups == 0 && dir.opens == 0);
        if unheld {
            self.drop_inode(parent);
        } else {
            self.unkeep(grandparent, parent);
        }
    }
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
                posix: None,
            },
            expires: None,
            local: None,
            lookups: 1,
            opens: 0,
        };
        let state = TableState {
            inodes: HashMap::from([(ROOT_INO, root)]),
            children: HashMap::new(),
            locals: HashMap::new(),
            retries: HashMap::new(),
            next_ino: ROOT_INO + 1,
        };
        Self {
            state: Mutex::new(state),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, TableState> {
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

    /// The child `name` of `parent` if it is known and its stat is fresh, with
    /// `add_lookups` kernel lookups counted on it under the same lock (so a FORGET cannot
    /// drop it in between).
    pub fn fresh_child(&self, parent: u64, name: &str, add_lookups: u64) -> Option<Inode> {
        let mut state = self.lock();
        let ino = *state.children.get(&(parent, name.to_string()))?;
        let inode = state.inodes.get_mut(&ino).filter(|i| i.is_fresh())?;
        inode.lookups += add_lookups;
        Some(inode.clone())
    }

    /// Records that `name` in `parent` is a `kind` with `stat`, seen just now, and returns its
    /// inode. An existing entry of the same kind keeps its number unless it is open at
    /// another object version; a kind change, or such a version change, gets a new number.
    /// `add_lookups` is what the kernel will count for this reply (0 for readdir).
    pub fn upsert_child(
        &self,
        parent: &Inode,
        name: &str,
        kind: Kind,
        stat: Stat,
        add_lookups: u64,
    ) -> Inode {
        self.adopt(parent, name, kind, stat, None, add_lookups)
    }

    /// [`InodeTable::upsert_child`], where a new entry takes the number `ino` handed out
    /// with a listing (see [`InodeTable::detached`]) when it is free.
    pub fn adopt(
        &self,
        parent: &Inode,
        name: &str,
        kind: Kind,
        stat: Stat,
        ino: Option<u64>,
        add_lookups: u64,
    ) -> Inode {
        let expires = expiry(self.ttl);
        let mut state = self.lock();
        let index_key = (parent.ino, name.to_string());
        if let Some(ino) = state.children.get(&index_key).copied() {
            if let Some(inode) = state
                .inodes
                .get_mut(&ino)
                .filter(|i| i.kind == kind && !i.must_move_for(&stat))
            {
                if inode.local.is_none() {
                    // A local entry's stat is ours (e.g. the growing size of a new upload).
                    inode.stat = stat;
                }
                inode.expires = expires;
                inode.lookups += add_lookups;
                return inode.clone();
            }
        }
        let key = child_key(parent, name, kind);
        state.insert_as(ino, parent.ino, name, key, kind, stat, expires, add_lookups)
    }

    /// Whether the table holds an entry for `name` in `parent` (fresh or not).
    pub fn knows(&self, parent: u64, name: &str) -> bool {
        self.lock()
            .children
            .contains_key(&(parent, name.to_string()))
    }

    /// A number for an entry the table does not hold (a listed name the kernel has not
    /// looked up): never handed out twice.
    pub fn allocate(&self) -> u64 {
        let mut state = self.lock();
        state.next_ino += 1;
        state.next_ino - 1
    }

    /// What `name` in `parent` would be as inode `ino`, without putting it in the table.
    pub fn detached(&self, parent: &Inode, name: &str, kind: Kind, stat: Stat, ino: u64) -> Inode {
        Inode {
            ino,
            parent: parent.ino,
            name: name.to_string(),
            key: child_key(parent, name, kind),
            kind,
            stat,
            expires: expiry(self.ttl),
            local: None,
            lookups: 0,
            opens: 0,
        }
    }

    /// Records a revalidation of `ino` (a HEAD found `stat`): the inode takes the stat,
    /// unless the object changed while files are open on it; then its name moves to a new
    /// inode with `stat` and the old one keeps its version (refreshed) for those files.
    pub fn observe(&self, ino: u64, stat: Stat) -> Observed {
        let expires = expiry(self.ttl);
        let mut state = self.lock();
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return Observed::Gone;
        };
        inode.expires = expires;
        if !inode.must_move_for(&stat) {
            inode.stat = stat;
            return Observed::Current(inode.clone());
        }
        let old = inode.clone();
        let index_key = (old.parent, old.name.clone());
        if state.children.get(&index_key) != Some(&ino) {
            // The name already stands for another inode: nothing to move.
            return Observed::Current(old);
        }
        let new = state.insert(
            old.parent,
            &old.name,
            old.key.clone(),
            old.kind,
            stat,
            expires,
            0,
        );
        Observed::Moved { old, new }
    }

    /// Gives `name` in `parent` a new inode with the same stat, leaving `ino` (open at an
    /// object version that must not share its page cache) to its handles; returns the new
    /// inode. Used before a write replaces an object that readers hold open.
    pub fn move_name(&self, ino: u64) -> Option<Inode> {
        let mut state = self.lock();
        let old = state.inodes.get(&ino)?.clone();
        let index_key = (old.parent, old.name.clone());
        if state.children.get(&index_key) != Some(&ino) {
            return None;
        }
        Some(state.insert(
            old.parent,
            &old.name,
            old.key.clone(),
            old.kind,
            old.stat.clone(),
            old.expires,
            0,
        ))
    }

    /// Expects the retry of thread `caller`'s open on the inode that now holds `ino`'s
    /// name, after that open of `ino` answered ESTALE (see `record::Retries`).
    pub fn expect_retry(&self, ino: u64, caller: u32) {
        let mut state = self.lock();
        let Some(inode) = state.inodes.get(&ino) else {
            return;
        };
        let index_key = (inode.parent, inode.name.clone());
        if let Some(&holder) = state.children.get(&index_key) {
            let retries = state.retries.entry(holder).or_default();
            retries.expect(caller, RETRY_GRACE);
        }
    }

    /// Whether this open of `ino` by thread `caller` is the retry of one that answered
    /// ESTALE (see [`InodeTable::expect_retry`]): it may go ahead without a HEAD. Taken once.
    pub fn take_retry(&self, ino: u64, caller: u32) -> bool {
        let mut state = self.lock();
        let Some(retries) = state.retries.get_mut(&ino) else {
            return false;
        };
        let taken = retries.take(caller);
        if retries.is_empty() {
            state.retries.remove(&ino);
        }
        taken
    }

    /// Counts an open file handle on `ino`.
    pub fn opened(&self, ino: u64) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.opens += 1;
        }
    }

    /// Counts a closed file handle on `ino`; a forgotten inode goes with its last one.
    pub fn closed(&self, ino: u64) {
        let mut state = self.lock();
        if let Some(inode) = state.inodes.get_mut(&ino) {
            inode.opens = inode.opens.saturating_sub(1);
            let unheld = inode.opens == 0 && inode.lookups == 0 && inode.local.is_none();
            if unheld && ino != ROOT_INO && !state.locals.contains_key(&ino) {
                state.drop_inode(ino);
            }
        }
    }

    /// Makes `ino`'s stat expired, so the next use revalidates it with S3.
    pub fn expire(&self, ino: u64) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.expires = Some(Instant::now());
        }
    }

    /// After a rename: `ino` is now `new_name` in `new_parent`, with key `key`, and `stat`
    /// when the rename made a new version (`None`: the inode keeps what it holds, as a file
    /// being written does); whatever that name stood for before leaves the index (the kernel
    /// replaced it).
    pub fn rename(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &str,
        key: String,
        stat: Option<Stat>,
    ) {
        let expires = expiry(self.ttl);
        let mut state = self.lock();
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return;
        };
        let old_key = (inode.parent, inode.name.clone());
        let was_local = inode.local.is_some();
        inode.parent = new_parent;
        inode.name = new_name.to_string();
        inode.key = key;
        if let Some(stat) = stat {
            inode.stat = stat;
            inode.expires = expires;
        }
        if state.children.get(&old_key) == Some(&ino) {
            state.children.remove(&old_key);
        }
        state
            .children
            .insert((new_parent, new_name.to_string()), ino);
        if was_local || state.locals.contains_key(&ino) {
            state.unkeep(old_key.0, ino);
            state.keep(new_parent, ino);
        }
    }

    /// Replaces the stat of `ino` with one this mount made (a commit, a restored stat).
    pub fn refresh(&self, ino: u64, stat: Stat) -> Option<Inode> {
        let expires = expiry(self.ttl);
        let mut state = self.lock();
        let inode = state.inodes.get_mut(&ino)?;
        inode.stat = stat;
        inode.expires = expires;
        Some(inode.clone())
    }

    /// Sets the POSIX attributes `ino` shows (a chmod/chown/utimes made or staged here).
    pub fn set_posix(&self, ino: u64, posix: Option<crate::s3::Posix>) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.stat.posix = posix;
        }
    }

    /// Marks `ino` as existing only here (or, with `None`, as real in S3 again).
    pub fn set_local(&self, ino: u64, local: Option<Local>) -> Option<Inode> {
        self.lock().set_local(ino, local)
    }

    /// Sets the size of a file being written (others see it grow).
    pub fn set_size(&self, ino: u64, size: u64) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.stat.size = size;
        }
    }

    /// Clears the local mark of `ino` and its ancestors: a committed file made them real.
    /// Returns the keys of the directories holding an entry that was local until now (their
    /// listings from before do not show it, and S3's now do).
    #[must_use]
    pub fn make_real(&self, ino: u64) -> Vec<String> {
        let mut state = self.lock();
        let mut listed_anew = Vec::new();
        let mut next = Some(ino);
        while let Some(ino) = next.take() {
            let was_local = state.inodes.get(&ino).is_some_and(|i| i.local.is_some());
            if let Some(inode) = state.set_local(ino, None) {
                if inode.parent != ino {
                    if was_local && let Some(parent) = state.inodes.get(&inode.parent) {
                        listed_anew.push(parent.key.clone());
                    }
                    next = Some(inode.parent);
                }
            }
        }
        listed_anew
    }

    /// Whether `parent` holds local entries (new directories, files being written), here
    /// or deeper down.
    pub fn has_local_children(&self, parent: u64) -> bool {
        self.lock().locals.contains_key(&parent)
    }

    /// The entries directly in `parent` that exist whatever S3 says: local ones (new
    /// directories, files being written) and directories holding such entries deeper down.
    pub fn local_children(&self, parent: u64) -> Vec<Inode> {
        let state = self.lock();
        let Some(locals) = state.locals.get(&parent) else {
            return Vec::new();
        };
        locals
            .iter()
            .filter_map(|ino| state.inodes.get(ino))
            .filter(|inode| state.children.get(&(parent, inode.name.clone())) == Some(&inode.ino))
            .cloned()
            .collect()
    }

    /// Removes `ino` from the table entirely (after rmdir).
    pub fn remove(&self, ino: u64) {
        self.lock().drop_inode(ino);
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
        if inode.lookups > 0 || inode.local.is_some() || inode.opens > 0 {
            // Local entries live until they are removed or become real; open ones until
            // their last handle closes.
            return;
        }
        if state.locals.contains_key(&ino) {
            return; // holds local entries, indexed by its number: kept while they are
        }
        state.drop_inode(ino);
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
