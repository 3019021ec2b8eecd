//! Opening files through staging (`--staged-writes`): which opens stage, how the handles of
//! one inode share its staged file, and what the last one's release leaves.
//!
//! Every open for writing stages (an existing object from its current version, revalidated
//! with a HEAD; O_TRUNC empties it at once), and so does `truncate` of a file nobody has
//! open (staged, cut or grown, committed at once). While a staged file is open, every other
//! open of its inode (for reading too) shares it, so a program reads what was written. A
//! handle opened read-only never commits. When the last handle goes, what is not committed
//! is committed; the inode is a plain object again, or, if the file never landed, as it was.

use std::sync::{Arc, Weak};

use super::{Base, StagedFile};
use crate::fs::commit::WriteHandle;
use crate::fs::config::Staging;
use crate::fs::handles::OpenFile;
use crate::fs::inode::Local;
use crate::fs::upload::Upload;
use crate::fs::{FsError, Inode, Observed, OpenMode, S3Filesystem};
use crate::s3::{ObjectStore, Posix};

impl<S: ObjectStore> S3Filesystem<S> {
    /// Whether every write is staged on this mount (`--staged-writes`).
    pub(crate) fn staging_on(&self) -> bool {
        self.staging.is_some() && self.config.staging == Staging::All
    }

    /// Whether an open for writing with `mode` is staged.
    pub(crate) fn stages(&self, mode: OpenMode) -> bool {
        self.staging.is_some()
            && match self.config.staging {
                Staging::All => true,
                Staging::Appends => mode.append && !mode.truncate,
                Staging::Off => false,
            }
    }

    /// The staged file open on `ino`, if any.
    pub(crate) fn live_staged(&self, ino: u64) -> Option<Arc<StagedFile<S>>> {
        let mut staged = self.staged.lock().expect("staged lock poisoned");
        match staged.get(&ino).and_then(Weak::upgrade) {
            Some(file) => Some(file),
            None => {
                staged.remove(&ino);
                None
            }
        }
    }

    /// Makes `file` the staged file of `ino`, unless a live one is there already: that one is
    /// returned instead, and the table is left as it is. One lock for the check and the
    /// insert, so two racing opens cannot both stage.
    fn claim_staged(&self, ino: u64, file: &Arc<StagedFile<S>>) -> Option<Arc<StagedFile<S>>> {
        let mut staged = self.staged.lock().expect("staged lock poisoned");
        if let Some(theirs) = staged.get(&ino).and_then(Weak::upgrade) {
            return Some(theirs);
        }
        staged.insert(ino, Arc::downgrade(file));
        None
    }

    /// A new staged file of `key` from `base` (the object as it is, or none for a new file).
    /// `posix`: the attributes its commits write (`--posix-metadata`).
    pub(crate) fn new_staged(
        &self,
        key: &str,
        base: Option<Base>,
        posix: Option<Posix>,
    ) -> Result<Arc<StagedFile<S>>, FsError> {
        let area = self.staging.clone().ok_or(FsError::NotPermitted(
            "staged writes are off (--staged-writes)",
        ))?;
        Ok(Arc::new(
            StagedFile::new(
                self.store.clone(),
                key.to_string(),
                area,
                self.budgets.data.clone(),
                self.aborts.clone(),
                self.config.write_part_size,
                base,
            )?
            .with_posix(posix),
        ))
    }

    /// Opens `inode` (an existing file nobody writes) for writing through a new staged file
    /// of its current version.
    pub(crate) async fn open_staged(
        &self,
        inode: &Inode,
        mode: OpenMode,
        caller: u32,
    ) -> Result<u64, FsError> {
        if !self.config.allow_overwrite {
            return Err(FsError::NotPermitted(
                "overwriting an object (mount with --allow-overwrite)",
            ));
        }
        if inode.is_open() {
            // Readers hold this inode at the version being replaced: the new one gets an
            // inode (and a page cache) of its own.
            self.inodes.move_name(inode.ino);
            return Err(FsError::Stale);
        }
        let inode = match self.revalidate(inode).await? {
            Observed::Current(current) => current,
            Observed::Moved { .. } => return Err(FsError::Stale),
            Observed::Gone => return Err(FsError::NotFound),
        };
        let base = inode.stat.etag.clone().map(|etag| Base {
            etag,
            size: inode.stat.size,
        });
        let posix = inode.stat.posix.filter(|_| self.posix_on());
        let file = self.new_staged(&inode.key, base, posix)?;
        // Another open of this inode may have staged it while our HEAD was on its way: then
        // this open shares that file (ours is dropped unused), as an open after it would.
        if let Some(theirs) = self.claim_staged(inode.ino, &file) {
            drop(file);
            return self.attach_staged(&inode, theirs, mode, caller).await;
        }
        if mode.truncate {
            file.truncate(0).await?;
        }
        let size = file.size().await;
        let upload = Upload::Staged {
            file: file.clone(),
            if_none_match: false,
        };
        Ok(self.start_staged(&inode, file, upload, false, caller, false, size))
    }

    /// Another open of an inode whose staged file is open: shares it (read-only opens
    /// never commit).
    pub(crate) async fn attach_staged(
        &self,
        inode: &Inode,
        file: Arc<StagedFile<S>>,
        mode: OpenMode,
        caller: u32,
    ) -> Result<u64, FsError> {
        if mode.write {
            self.check_writable()?;
        }
        if mode.truncate && mode.write {
            file.truncate(0).await?;
        }
        let size = file.size().await;
        let upload = Upload::Staged {
            file: file.clone(),
            if_none_match: false,
        };
        self.inodes.opened(inode.ino);
        self.inodes.set_size(inode.ino, size);
        let before = Some(inode.stat.clone());
        let handle = WriteHandle::new(inode.ino, upload, caller, before, !mode.write);
        Ok(self.files.insert(OpenFile::Write(Arc::new(handle))))
    }

    /// Makes `upload` (of `file`) the handle of `inode`, which holds `size` bytes; `new`:
    /// no object of that name existed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_staged(
        &self,
        inode: &Inode,
        file: Arc<StagedFile<S>>,
        upload: Upload<S>,
        new: bool,
        caller: u32,
        read_only: bool,
        size: u64,
    ) -> u64 {
        self.staged
            .lock()
            .expect("staged lock poisoned")
            .insert(inode.ino, Arc::downgrade(&file));
        self.inodes
            .set_local(inode.ino, Some(Local::Writing { new }));
        self.inodes.set_size(inode.ino, size);
        self.inodes.opened(inode.ino);
        let before = (!new).then(|| inode.stat.clone());
        let handle = WriteHandle::new(inode.ino, upload, caller, before, read_only);
        self.files.insert(OpenFile::Write(Arc::new(handle)))
    }

    /// `truncate(2)` of a file nobody has open: staged, resized, committed at once.
    pub(crate) async fn truncate_closed(&self, inode: &Inode, size: u64) -> Result<(), FsError> {
        let mode = OpenMode {
            write: true,
            ..OpenMode::default()
        };
        let fh = self.open_staged(inode, mode, 0).await?;
        let result = async {
            let OpenFile::Write(handle) = self.handle(fh)? else {
                return Err(FsError::BadHandle);
            };
            let Upload::Staged { file, .. } = &handle.upload else {
                return Err(FsError::BadHandle);
            };
            file.truncate(size).await?;
            self.inodes.set_size(inode.ino, size);
            self.fsync(fh).await
        }
        .await;
        self.release(fh).await;
        result
    }

    /// After a staged handle's release: if it was the inode's last, the inode is a plain
    /// object again (or, never committed, as it was before). The staged file leaves the
    /// table first, so an open meanwhile waits for the inode to settle
    /// ([`S3Filesystem::wait_released`]) instead of sharing a file on its way out; a staged
    /// file opened since (the table holds another) is left alone.
    pub(crate) async fn staged_released(&self, handle: &WriteHandle<S>) {
        let Upload::Staged { file, .. } = &handle.upload else {
            return;
        };
        {
            let mut staged = self.staged.lock().expect("staged lock poisoned");
            let other = staged
                .get(&handle.ino)
                .is_some_and(|weak| !std::ptr::eq(weak.as_ptr(), Arc::as_ptr(file)));
            // The handle left the table before its release commit: none left means last (a
            // count of strong references would also see a lookup holding one for a moment).
            if other || self.has_write_handle(handle.ino) {
                return;
            }
            staged.remove(&handle.ino);
        }
        if file.has_changes().await {
            self.restore(handle);
        } else {
            self.make_real(handle.ino);
        }
    }
}
