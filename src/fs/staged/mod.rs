//! Staged writes (`--staged-writes`): a file opened for writing is kept in a local staging
//! file, so any write pattern works (writes anywhere, holes, truncation to any size, reads
//! of what was written, O_RDWR and O_APPEND on existing objects), and the object is replaced
//! at close or fsync, whole or not at all.
//!
//! The staging file is filled lazily: the old version's bytes are fetched (GET with its
//! ETag) only where a program reads them, or where a part to upload needs them; written
//! bytes are never fetched. What was written is remembered ([`ranges`]), so the commit
//! ([`commit`]) copies on the server every stretch of 5 MiB or more that is still the old
//! version's ([`plan`]) and uploads the rest: an in-place update of a large object uploads one
//! 5 MiB chunk around each change, an append to an object of 5 MiB or more uploads only the new
//! bytes (a smaller one is uploaded whole: S3's parts but the last are 5 MiB at least). The commit is conditional on the version the staging started from
//! (If-Match, and every copied part with `x-amz-copy-source-if-match`): if another client
//! replaced the object meanwhile, the writer gets EIO and nothing is overwritten. After a
//! commit the staging goes on from the new version, so the next fsync uploads only what
//! changed since.
//!
//! Staged bytes count against the staging area's bound ([`dir`]); past it a write is ENOSPC.

mod commit;
pub mod dir;
mod open;
pub mod plan;
pub mod ranges;

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::FsError;
use super::write::aborts::PendingAborts;
use crate::fs::posix::Draft;
use crate::memory::MemoryBudget;
use crate::s3::{ObjectStore, Posix};
use dir::StagingDir;
use ranges::RangeSet;

pub use commit::Committed;

/// The object version a staging file started from (or last committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// Its ETag (the commit's condition, and the copies' source version).
    pub etag: String,
    /// Its size.
    pub size: u64,
}

/// Why [`StagedFile::retarget_new`] left a file where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRetargeted {
    /// It has been committed: an object is under its old key (a rename copies it).
    Committed,
    /// It replaced an object at its name when renamed there, and is not committed yet.
    ReplacedAnObject,
    /// It was unlinked.
    Unlinked,
}

/// What a staged file holds, behind its lock.
#[derive(Debug)]
struct State {
    /// The key written (a rename of the file moves it).
    key: String,
    /// The file was unlinked: nothing is committed any more.
    deleted: bool,
    /// The local copy (sparse: only present ranges hold data).
    file: Arc<File>,
    /// The version the bytes below `copyable` that are not dirty come from; `None` for a new
    /// file.
    base: Option<Base>,
    /// The file's size now.
    size: u64,
    /// Offsets the local copy holds (fetched, written, or holes made by growing).
    present: RangeSet,
    /// Offsets written (or zeroed by growing) since `base`.
    dirty: RangeSet,
    /// Below this, a byte that is not dirty is the base's byte at the same offset (a
    /// truncation lowers it: what is past it was cut, and growing again gives zeros).
    copyable: u64,
    /// Bytes taken from the staging area's bound.
    held: u64,
    /// Whether there is anything to commit (a new file is something even when empty).
    changed: bool,
    /// The last commit failed and its caller was told (a close or fsync error), with
    /// nothing written since: the release does not commit behind the writer's back.
    told_failed: bool,
    /// The POSIX attributes the next commit writes (`--posix-metadata`).
    draft: Draft,
    /// The ETag of the object that a rename of this file, new and never committed, replaced:
    /// the first commit's condition (If-Match), so another client's newer version is not
    /// overwritten.
    replaces: Option<String>,
}

/// One file being written through staging; shared by the handles open on its inode.
#[derive(Debug)]
pub struct StagedFile<S: ObjectStore> {
    store: Arc<S>,
    area: Arc<StagingDir>,
    /// The memory budget that part buffers come from at commit.
    budget: Arc<MemoryBudget>,
    aborts: Arc<PendingAborts<S>>,
    /// Size up to which a file with nothing to copy is one PUT.
    put_limit: u64,
    state: tokio::sync::Mutex<State>,
}

impl<S: ObjectStore> StagedFile<S> {
    /// A staging of `key` starting from `base` (the object as it is now), or empty for a new
    /// file.
    pub fn new(
        store: Arc<S>,
        key: String,
        area: Arc<StagingDir>,
        budget: Arc<MemoryBudget>,
        aborts: Arc<PendingAborts<S>>,
        put_limit: u64,
        base: Option<Base>,
    ) -> Result<Self, FsError> {
        let file = area
            .create()
            .map_err(|e| FsError::Staging(format!("{}: {e}", area.shown())))?;
        let size = base.as_ref().map_or(0, |b| b.size);
        file.set_len(size)
            .map_err(|e| FsError::Staging(e.to_string()))?;
        Ok(Self {
            store,
            area,
            budget,
            aborts,
            put_limit,
            state: tokio::sync::Mutex::new(State {
                key,
                deleted: false,
                file: Arc::new(file),
                changed: base.is_none(),
                base,
                size,
                present: RangeSet::new(),
                dirty: RangeSet::new(),
                copyable: size,
                held: 0,
                told_failed: false,
                draft: Draft::default(),
                replaces: None,
            }),
        })
    }

    /// The same, committing `posix` as the object's POSIX attributes (the base's, or a new
    /// file's).
    pub fn with_posix(mut self, posix: Option<Posix>) -> Self {
        self.state.get_mut().draft = Draft::new(posix);
        self
    }

    /// Applies a chmod/chown/utimes to what the next commit writes.
    pub async fn set_posix(&self, change: &Posix) {
        self.state.lock().await.draft.change(change);
    }

    /// The POSIX attributes as they stand.
    pub async fn posix(&self) -> Option<Posix> {
        self.state.lock().await.draft.current()
    }

    /// The key written.
    pub async fn key(&self) -> String {
        self.state.lock().await.key.clone()
    }

    /// The file was unlinked: what is written from now on is never committed.
    pub async fn forget(&self) {
        let mut state = self.state.lock().await;
        state.deleted = true;
        state.changed = false;
    }

    /// The file was renamed to `key`, where the server copied it as `etag`: commits go there,
    /// conditional on that copy.
    pub async fn moved_to(&self, key: &str, etag: &str) {
        let mut state = self.state.lock().await;
        state.key = key.to_string();
        if let Some(base) = &mut state.base {
            base.etag = etag.to_string();
        }
    }

    /// The file, new and never committed, was renamed to `key` (tempfile's `persist`, as
    /// safetensors saves, renames before closing): its commits go there, and onto an object
    /// that was there (ETag `replaces`) only while that version is. Refused, with nothing
    /// changed, once the file has been committed (it is then in S3 under its old key), when
    /// it already replaced an object at its current name (that object would stay), or once
    /// it was unlinked.
    pub async fn retarget_new(
        &self,
        key: &str,
        replaces: Option<String>,
    ) -> Result<(), NotRetargeted> {
        let mut state = self.state.lock().await;
        if state.deleted {
            return Err(NotRetargeted::Unlinked);
        }
        if state.base.is_some() {
            return Err(NotRetargeted::Committed);
        }
        if state.replaces.is_some() {
            return Err(NotRetargeted::ReplacedAnObject);
        }
        state.key = key.to_string();
        state.replaces = replaces;
        Ok(())
    }

    /// The file's size now.
    pub async fn size(&self) -> u64 {
        self.state.lock().await.size
    }

    /// Whether anything is not committed yet.
    pub async fn has_changes(&self) -> bool {
        let state = self.state.lock().await;
        state.changed && !state.deleted
    }

    /// Whether nothing is left to commit, without waiting: `None` while a read, write or
    /// commit holds the file.
    pub fn settled_now(&self) -> Option<bool> {
        let state = self.state.try_lock().ok()?;
        Some(!state.changed || state.deleted)
    }

    /// Whether the release must commit: changes nobody was told failed to commit.
    pub async fn commits_at_release(&self) -> bool {
        let state = self.state.lock().await;
        state.changed && !state.deleted && !state.told_failed
    }

    /// The version the staging stands on now (the last commit, or the object it started
    /// from), if any.
    pub async fn current(&self) -> Option<crate::fs::write::Committed> {
        let state = self.state.lock().await;
        state.base.as_ref().map(|b| crate::fs::write::Committed {
            size: b.size,
            etag: b.etag.clone(),
            posix: state.draft.current(),
        })
    }

    /// Up to `len` bytes at `offset` (fewer at the end, none past it): what was written, the
    /// base's bytes elsewhere (fetched into the staging file on first read).
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let mut state = self.state.lock().await;
        let end = offset.saturating_add(u64::from(len)).min(state.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.fill(&mut state, offset..end).await?;
        commit::read_at(state.file.clone(), offset..end).await
    }

    /// Writes `data` at `offset` (past the end, the gap reads as zeros); returns the new size.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<u64, FsError> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= crate::s3::MAX_OBJECT_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let mut state = self.state.lock().await;
        let from = offset.min(state.size);
        self.hold(&mut state, from..end)?;
        let file = state.file.clone();
        let data = data.to_vec();
        let written = super::blocking::unblock(move || file.write_all_at(&data, offset))
            .await
            .map_err(FsError::task)
            .and_then(|r| r.map_err(|e| FsError::Staging(e.to_string())));
        if let Err(e) = written {
            self.return_unused(&mut state);
            return Err(e);
        }
        // A gap before `offset` is a hole: zeros, present and changed.
        state.present.insert(from..end);
        state.dirty.insert(from..end);
        state.size = state.size.max(end);
        state.changed = true;
        state.told_failed = false;
        state.draft.written();
        Ok(state.size)
    }

    /// Sets the size: cut, or grown with zeros.
    pub async fn truncate(&self, size: u64) -> Result<(), FsError> {
        if size > crate::s3::MAX_OBJECT_SIZE {
            return Err(FsError::FileTooBig);
        }
        let mut state = self.state.lock().await;
        if size == state.size {
            return Ok(());
        }
        if size > state.size {
            let grown = state.size..size;
            self.hold(&mut state, grown)?;
        }
        // The file first: if that fails, the records still say what it holds.
        let file = state.file.clone();
        let resized = super::blocking::unblock(move || file.set_len(size))
            .await
            .map_err(FsError::task)
            .and_then(|r| r.map_err(|e| FsError::Staging(e.to_string())));
        if let Err(e) = resized {
            self.return_unused(&mut state);
            return Err(e);
        }
        if size > state.size {
            let grown = state.size..size;
            state.present.insert(grown.clone());
            state.dirty.insert(grown);
        } else {
            state.present.cut_at(size);
            state.dirty.cut_at(size);
            state.copyable = state.copyable.min(size);
            // The bytes cut off are no longer held.
            self.return_unused(&mut state);
        }
        state.size = size;
        state.changed = true;
        state.told_failed = false;
        state.draft.written();
        Ok(())
    }

    /// Takes from the staging area's bound the bytes of `range` the local copy does not hold
    /// yet (ENOSPC when they do not fit).
    fn hold(&self, state: &mut State, range: Range<u64>) -> Result<(), FsError> {
        let new: u64 = state
            .present
            .missing(range)
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        if new == 0 {
            return Ok(());
        }
        if !self.area.take(new) {
            return Err(FsError::NoSpace {
                held: self.area.held(),
                max: self.area.max_bytes(),
            });
        }
        state.held += new;
        Ok(())
    }

    /// Gives back to the staging area's bound what is held beyond the bytes the local copy
    /// holds: after a cut, or a hold whose write or fetch failed (`held` is always the
    /// length of `present` once a call ends).
    fn return_unused(&self, state: &mut State) {
        let holds = state.present.len();
        if state.held > holds {
            self.area.give_back(state.held - holds);
            state.held = holds;
        }
    }

    /// Makes the local copy hold `range`: the missing stretches are fetched from the base
    /// (only the base's bytes can be missing: written bytes and holes are present).
    async fn fill(&self, state: &mut State, range: Range<u64>) -> Result<(), FsError> {
        let missing = state.present.missing(range);
        if missing.is_empty() {
            return Ok(());
        }
        let key = state.key.clone();
        let Some(base) = state.base.clone() else {
            return Err(FsError::Staging(format!(
                "{key}: bytes neither written nor in S3"
            )));
        };
        for gap in missing {
            self.hold(state, gap.clone())?;
            if let Err(e) = self.fetch(state, &key, &base.etag, gap.clone()).await {
                self.return_unused(state);
                return Err(e);
            }
            state.present.insert(gap);
        }
        Ok(())
    }

    /// Writes `gap` of the base (at `etag`) into the local copy.
    async fn fetch(
        &self,
        state: &State,
        key: &str,
        etag: &str,
        gap: Range<u64>,
    ) -> Result<(), FsError> {
        let bytes = self
            .store
            .get_range(key, gap.clone(), Some(etag))
            .await
            .map_err(|e| FsError::s3(key, e))?;
        if bytes.len() as u64 != gap.end - gap.start {
            return Err(FsError::Staging(format!("{key}: short GET of {gap:?}")));
        }
        let file = state.file.clone();
        super::blocking::unblock(move || file.write_all_at(&bytes, gap.start))
            .await
            .map_err(FsError::task)?
            .map_err(|e| FsError::Staging(e.to_string()))
    }
}

impl<S: ObjectStore> Drop for StagedFile<S> {
    fn drop(&mut self) {
        let held = self.state.get_mut().held;
        self.area.give_back(held);
    }
}

#[cfg(test)]
mod tests;
