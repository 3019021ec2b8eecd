//! Changes to the namespace: mkdir, rmdir, unlink, rename. Each is refused unless the mount
//! allows it, and none leaves S3 half-changed: rename copies exactly the version it looked up
//! (If-Match on every copy request) before it deletes, and deletes the source only while it
//! is still that version.

use std::sync::Arc;

use tracing::warn;

use super::handles::OpenFile;
use super::inode::Local;
use super::staged::{NotRetargeted, StagedFile};
use super::upload::Upload;
use super::{Attr, FsError, Inode, Kind, S3Filesystem, Stat, names};
use crate::s3::{ObjectStore, S3Error};

/// How often [`S3Filesystem::wait_released`] looks again without being woken by a release.
const RELEASE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// How rename must treat an existing target (from renameat2 flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenameMode {
    /// Replace an existing target (with `--allow-overwrite`).
    #[default]
    Replace,
    /// RENAME_NOREPLACE: fail with EEXIST if the target exists.
    NoReplace,
    /// RENAME_EXCHANGE: not possible in S3.
    Exchange,
}

impl<S: ObjectStore> S3Filesystem<S> {
    /// Makes a directory that exists only in this mount until a file is written inside it
    /// (S3 has no directories; no marker object is written).
    pub async fn mkdir(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        self.mkdir_as(parent, name, None).await
    }

    /// [`S3Filesystem::mkdir`] by `creator`. With `--posix-metadata` the directory is a
    /// `name/` marker object carrying its attributes, as s3fs makes it: it exists in S3 at
    /// once, empty or not.
    pub async fn mkdir_as(
        &self,
        parent: u64,
        name: &str,
        creator: Option<super::posix::Creator>,
    ) -> Result<Attr, FsError> {
        self.check_writable()?;
        let parent = self.dir_inode(parent)?;
        names::check_new_name(name)?;
        if self.child(&parent, name, true, 0).await?.is_some() {
            return Err(FsError::Exists);
        }
        if let Some(posix) = self.new_posix(crate::s3::posix::S_IFDIR, creator) {
            let prefix = names::child_prefix(&parent.key, name);
            self.put_marker(&prefix, posix, true).await?;
            let stat = Stat {
                posix: Some(posix),
                ..self.dir_stat()
            };
            let inode = self.inodes.upsert_child(&parent, name, Kind::Dir, stat, 1);
            self.forget_name(parent.ino, name);
            self.make_real(parent.ino);
            return Ok(self.attr_of(&inode));
        }
        let inode = self
            .inodes
            .upsert_child(&parent, name, Kind::Dir, self.dir_stat(), 1);
        let inode = self
            .inodes
            .set_local(inode.ino, Some(Local::Dir))
            .unwrap_or(inode);
        self.forget_name(parent.ino, name);
        Ok(self.attr_of(&inode))
    }

    /// Removes an empty directory: a local one from the table; one that is only a `name/`
    /// marker object by deleting the marker (with `--allow-delete`).
    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<(), FsError> {
        self.check_writable()?;
        let parent = self.dir_inode(parent)?;
        // A directory the kernel knows may have vanished from S3 with its last file (`rm -r`
        // deletes the files first); removing it then just forgets it.
        let dir = match self.inodes.known_child(parent.ino, name) {
            Some(dir) if dir.kind == Kind::Dir => dir,
            _ => self.existing_child(&parent, name).await?,
        };
        if dir.kind != Kind::Dir {
            return Err(FsError::NotADirectory);
        }
        let marker_only = self.check_empty(&dir).await?;
        if !marker_only && self.config.allow_delete {
            // No key: a server that keeps empty directories (SeaweedFS lists one after its
            // last key went) is told to drop it; anywhere else this deletes nothing.
            if let Err(e) = self.store.delete(&dir.key, None).await
                && !matches!(e, S3Error::NotFound)
            {
                warn!(
                    key = dir.key,
                    "cannot remove an empty directory's prefix: {e}"
                );
            }
        }
        if marker_only {
            if !self.config.allow_delete {
                return Err(FsError::NotPermitted(
                    "deleting a directory marker object (mount with --allow-delete)",
                ));
            }
            self.store
                .delete(&dir.key, None)
                .await
                .map_err(|e| FsError::s3(&dir.key, e))?;
        }
        self.inodes.remove(dir.ino);
        self.name_removed(&parent, name);
        Ok(())
    }

    /// Deletes a file's object (with `--allow-delete`).
    pub async fn unlink(&self, parent: u64, name: &str) -> Result<(), FsError> {
        self.check_writable()?;
        let parent = self.dir_inode(parent)?;
        if !self.config.allow_delete {
            return Err(FsError::NotPermitted(
                "deleting objects (mount with --allow-delete)",
            ));
        }
        let file = self.existing_child(&parent, name).await?;
        if file.kind == Kind::Dir {
            return Err(FsError::IsADirectory);
        }
        // A staged file may be unlinked while open (POSIX): what its handles still write is
        // never committed. A streaming upload may not.
        let (staged, _) = self.writer_of(&file, true).await?;
        self.store
            .delete(&file.key, None)
            .await
            .map_err(|e| FsError::s3(&file.key, e))?;
        if let Some(staged) = staged {
            staged.forget().await;
        }
        self.inodes.unlink(file.ino);
        self.name_removed(&parent, name);
        Ok(())
    }

    /// Renames a file: a server-side copy, then the delete of the source (which needs
    /// `--allow-delete`; replacing an existing target also needs `--allow-overwrite`). The
    /// source stays until the copy succeeded. Directories are refused with EXDEV, on which
    /// `mv` falls back to copying file by file.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> Result<(), FsError> {
        self.check_writable()?;
        if mode == RenameMode::Exchange {
            return Err(FsError::InvalidArgument(
                "S3 cannot swap two objects atomically",
            ));
        }
        let parent = self.dir_inode(parent)?;
        let new_parent = self.dir_inode(new_parent)?;
        names::check_new_name(new_name)?;
        let source = self.existing_child(&parent, name).await?;
        if source.kind == Kind::Dir {
            // Boxed: its state is large, and the first poll runs on a FUSE thread's stack.
            return Box::pin(self.rename_dir(&parent, &source, &new_parent, new_name, mode)).await;
        }
        let mut source = source;
        if let (Some(Local::Writing { new: true }), Some(staged)) =
            (source.local, self.live_staged(source.ino))
        {
            let names = (&parent, name, &new_parent, new_name);
            if self
                .rename_new_staged(names, &source, &staged, mode)
                .await?
            {
                return Ok(());
            }
            // Committed meanwhile: renamed as any object is, below, at the version committed.
            source = self.inode(source.ino)?;
        }
        let (staged_source, source) = self.writer_of(&source, false).await?;
        if !self.config.allow_delete {
            return Err(FsError::NotPermitted(
                "renaming (it deletes the source; mount with --allow-delete)",
            ));
        }
        let target = self.rename_target(&new_parent, new_name, mode).await?;
        let target_key = names::child_key(&new_parent.key, new_name);
        if target_key == source.key {
            return Ok(());
        }
        let Some(etag) = source.stat.etag.clone() else {
            return Err(FsError::NotPermitted("renaming a file that is not in S3"));
        };
        let copied = self
            .store
            .copy(&source.key, &target_key, source.stat.size, &etag, None)
            .await
            .map_err(|e| FsError::s3(&source.key, e))?;
        self.delete_if_still(&source.key, &etag).await?;
        if let Some(staged) = staged_source {
            staged.moved_to(&target_key, &copied.etag).await;
        }
        if let Some(target) = target {
            if let Some(staged) = self.live_staged(target.ino) {
                staged.forget().await;
            }
            self.inodes.unlink(target.ino);
        }
        // The kernel moved its entry to the new name, with this inode: it must read the
        // new key from now on.
        let stat = Stat {
            size: source.stat.size,
            mtime: copied.last_modified,
            etag: Some(copied.etag),
            posix: source.stat.posix,
        };
        self.inodes
            .rename(source.ino, new_parent.ino, new_name, target_key, Some(stat));
        self.name_removed(&parent, name);
        self.forget_name(new_parent.ino, new_name);
        self.make_real(new_parent.ino);
        Ok(())
    }

    /// What a file renamed to `name` in `dir` replaces, if anything, once it may: not a
    /// directory, not a file being written, not with RENAME_NOREPLACE, and only with
    /// `--allow-overwrite`.
    async fn rename_target(
        &self,
        dir: &Inode,
        name: &str,
        mode: RenameMode,
    ) -> Result<Option<Inode>, FsError> {
        let Some(target) = self.child(dir, name, true, 0).await? else {
            return Ok(None);
        };
        if target.kind == Kind::Dir {
            return Err(FsError::IsADirectory);
        }
        let (_, target) = self.writer_of(&target, false).await?;
        if mode == RenameMode::NoReplace {
            return Err(FsError::Exists);
        }
        if !self.config.allow_overwrite {
            return Err(FsError::NotPermitted(
                "renaming onto an existing object (mount with --allow-overwrite)",
            ));
        }
        Ok(Some(target))
    }

    /// Rename of a staged file that is new and not committed yet (a temporary file renamed
    /// into place before it is closed): nothing is in S3 to copy or delete (so no
    /// `--allow-delete`), and its commit goes to the new key. False when the file was
    /// committed meanwhile (an object is under its old key: the caller renames it as any
    /// other). One that replaced an object would leave that object behind: EPERM.
    async fn rename_new_staged(
        &self,
        (parent, name, new_parent, new_name): (&Inode, &str, &Inode, &str),
        source: &Inode,
        staged: &StagedFile<S>,
        mode: RenameMode,
    ) -> Result<bool, FsError> {
        let target = self.rename_target(new_parent, new_name, mode).await?;
        let target_key = names::child_key(&new_parent.key, new_name);
        if target_key == source.key {
            return Ok(true);
        }
        let replaces = target.as_ref().and_then(|t| t.stat.etag.clone());
        match staged.retarget_new(&target_key, replaces).await {
            Ok(()) => {}
            Err(NotRetargeted::Committed) => return Ok(false),
            Err(NotRetargeted::Unlinked) => return Err(FsError::NotFound),
            Err(NotRetargeted::ReplacedAnObject) => {
                return Err(FsError::NotPermitted(
                    "the file replaced an object when renamed and is not committed yet \
                     (close or fsync it first)",
                ));
            }
        }
        if let Some(target) = target {
            if let Some(theirs) = self.live_staged(target.ino) {
                theirs.forget().await;
            }
            self.inodes.unlink(target.ino);
        }
        // The inode keeps its local stat (size, mode): writes may have come meanwhile.
        self.inodes
            .rename(source.ino, new_parent.ino, new_name, target_key, None);
        self.forget_name(parent.ino, name);
        self.forget_name(new_parent.ino, new_name);
        Ok(true)
    }

    /// `name` left `parent` (deleted, or renamed away). S3 has no directories: if it was the
    /// last key under `parent`'s prefix, `parent` is gone from S3 too (and a file of its
    /// name, which it shadowed, shows again), and so may be its parent, up to the root. So
    /// the stat of each directory up the chain is expired and each one's name forgotten in
    /// its parent (listing pages included): the next look at them asks S3.
    pub(super) fn name_removed(&self, parent: &Inode, name: &str) {
        self.forget_name(parent.ino, name);
        let mut dir = parent.clone();
        while dir.ino != super::ROOT_INO && dir.local.is_none() {
            self.inodes.expire(dir.ino);
            let Some(up) = self.inodes.get(dir.parent) else {
                break;
            };
            self.forget_name(up.ino, &dir.name);
            dir = up;
        }
    }

    /// Deletes `key` only while it still has ETag `etag` (the version a rename copied):
    /// see [`delete_if_unchanged`].
    pub(super) async fn delete_if_still(&self, key: &str, etag: &str) -> Result<(), FsError> {
        delete_if_unchanged(self.store.as_ref(), key, etag).await
    }

    /// ENOTEMPTY unless directory `dir` holds nothing: no entry made here in it (or deeper
    /// down), no key below it in S3 but its own marker. Whether that marker is there.
    pub(super) async fn check_empty(&self, dir: &Inode) -> Result<bool, FsError> {
        if self.inodes.has_local_children(dir.ino) {
            return Err(FsError::NotEmpty);
        }
        let page = self
            .store
            .list(&dir.key, false, None, 2)
            .await
            .map_err(|e| FsError::s3(&dir.key, e))?;
        if page.objects.iter().any(|o| o.key != dir.key) {
            return Err(FsError::NotEmpty);
        }
        Ok(!page.objects.is_empty())
    }

    async fn existing_child(&self, parent: &Inode, name: &str) -> Result<Inode, FsError> {
        self.child(parent, name, false, 0)
            .await?
            .ok_or(FsError::NotFound)
    }

    /// The staged file of `inode` if it is being written through one; a staged file with
    /// writes not committed yet only when `uncommitted_ok` (its data goes with it), a
    /// streaming upload never: both EPERM. With it, `inode` as it is now: a release that
    /// was committing has been waited for, and the inode then carries what landed.
    async fn writer_of(
        &self,
        inode: &Inode,
        uncommitted_ok: bool,
    ) -> Result<(Option<Arc<StagedFile<S>>>, Inode), FsError> {
        if !matches!(inode.local, Some(Local::Writing { .. })) {
            return Ok((None, inode.clone()));
        }
        match self.live_staged(inode.ino) {
            Some(staged) if uncommitted_ok || !staged.has_changes().await => {
                Ok((Some(staged), inode.clone()))
            }
            Some(_) => Err(FsError::NotPermitted(
                "the file has writes not committed yet (close or fsync it first)",
            )),
            None if self.wait_released(inode.ino).await => Ok((None, self.inode(inode.ino)?)),
            None if uncommitted_ok && self.drop_empty_uploads(inode.ino).await => {
                Ok((None, inode.clone()))
            }
            None => Err(FsError::NotPermitted(
                "the file is being written through another handle",
            )),
        }
    }

    /// A new file created and not written yet (git's lock file, opened and closed again
    /// before the kernel's release arrives) may be unlinked: its uploads are abandoned, so
    /// nothing appears at release. False (and nothing abandoned) if any has data.
    async fn drop_empty_uploads(&self, ino: u64) -> bool {
        let mut uploads = Vec::new();
        for handle in self.writers_of(ino) {
            match &handle.upload {
                Upload::Stream(writer) if writer.written().await == 0 => uploads.push(handle),
                _ => return false,
            }
        }
        for handle in &uploads {
            handle.upload.abort(libc::ENOENT).await;
        }
        !uploads.is_empty()
    }

    /// Waits until `ino` is no longer being written, when all that is left of its writing
    /// is the kernel's release, which comes after close(2) has returned: an unlink, chmod
    /// or open can arrive before it. Up to a minute while a release commits; up to 5 s while
    /// a handle whose upload is done is still open. False at once if a handle still has
    /// writes not committed (or is busy writing or committing), or at the deadline. Woken by
    /// each release; looks again every [`RELEASE_RECHECK`] for the states a release does not
    /// end.
    pub(super) async fn wait_released(&self, ino: u64) -> bool {
        let start = tokio::time::Instant::now();
        loop {
            // Asked before looking, so that a release between the look and the wait wakes it.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let handles = self.writers_of(ino);
            if !handles.iter().all(|handle| handle.upload.done_now()) {
                return false;
            }
            let writing = self
                .inodes
                .get(ino)
                .is_some_and(|i| matches!(i.local, Some(Local::Writing { .. })));
            if handles.is_empty() && !writing {
                return true;
            }
            let limit = if handles.is_empty() { 60 } else { 5 };
            if start.elapsed() > std::time::Duration::from_secs(limit) {
                return false;
            }
            drop(handles);
            let _ = tokio::time::timeout(RELEASE_RECHECK, released).await;
        }
    }

    /// Whether a writing handle of `ino` is open.
    pub(super) fn has_write_handle(&self, ino: u64) -> bool {
        self.files
            .count(|f| matches!(f, OpenFile::Write(h) if h.ino == ino))
            > 0
    }
}

/// Deletes `key` only while it still has ETag `etag`: checked with a HEAD, and sent as
/// If-Match for the servers that honour it. If it changed, the new version stays and the
/// rename fails (its copy of the old version stays at the target).
pub(super) async fn delete_if_unchanged<S: ObjectStore>(
    store: &S,
    key: &str,
    etag: &str,
) -> Result<(), FsError> {
    let changed = || {
        warn!(
            key,
            "the source changed after it was copied; it is kept and the rename fails"
        );
        FsError::ObjectChanged {
            key: key.to_string(),
        }
    };
    match store.head(key).await {
        Ok(info) if info.etag != etag => return Err(changed()),
        Ok(_) => {}
        Err(S3Error::NotFound) => return Ok(()),
        Err(e) => return Err(FsError::s3(key, e)),
    }
    match store.delete(key, Some(etag)).await {
        Ok(()) => Ok(()),
        Err(S3Error::PreconditionFailed) => Err(changed()),
        Err(e) => Err(FsError::s3(key, e)),
    }
}
