//! Open files: reading handles, writing handles, and the commit that makes a written file an
//! object. A handle is one or the other: reading a file while it is being written is refused.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tracing::error;

use super::inode::Local;
use super::read::FileReader;
use super::write::{Committed, FileWriter};
use super::{Attr, FsError, Inode, Kind, OpenMode, S3Filesystem, Stat, names};
use crate::s3::ObjectStore;

/// What an open file handle does.
#[derive(Debug)]
pub(super) enum OpenFile<S: ObjectStore> {
    /// Reads one pinned object version.
    Read(Arc<FileReader<S>>),
    /// Uploads a new version of the file `ino`.
    Write {
        /// The inode being written.
        ino: u64,
        /// Its uploader.
        writer: Arc<FileWriter<S>>,
        /// The process (thread group) that opened it: only its close commits.
        opener: Option<u32>,
        /// The object's stat before the write began, if it existed (restored if the open is
        /// refused after all).
        before: Option<Stat>,
    },
}

impl<S: ObjectStore> Clone for OpenFile<S> {
    fn clone(&self) -> Self {
        match self {
            OpenFile::Read(reader) => OpenFile::Read(reader.clone()),
            OpenFile::Write {
                ino,
                writer,
                opener,
                before,
            } => OpenFile::Write {
                ino: *ino,
                writer: writer.clone(),
                opener: *opener,
                before: before.clone(),
            },
        }
    }
}

impl<S: ObjectStore> S3Filesystem<S> {
    fn handle(&self, fh: u64) -> Result<OpenFile<S>, FsError> {
        self.files.get(fh).ok_or(FsError::BadHandle)
    }

    /// Opens a file and returns its handle number. A reading handle pins the ETag; a writing
    /// handle must replace the whole object (O_TRUNC, `--allow-overwrite`).
    pub async fn open(&self, ino: u64, mode: OpenMode, caller: u32) -> Result<u64, FsError> {
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::IsADirectory);
        }
        if matches!(inode.local, Some(Local::Writing { .. })) {
            return Err(FsError::NotPermitted(
                "the file is being written through another handle",
            ));
        }
        if mode.write {
            self.check_writable()?;
            if mode.append {
                return Err(FsError::NotPermitted("appending to an S3 object"));
            }
            if !mode.truncate {
                return Err(FsError::NotPermitted(
                    "changing part of an S3 object (open with O_TRUNC to replace it)",
                ));
            }
            if !self.config.allow_overwrite {
                return Err(FsError::NotPermitted(
                    "overwriting an object (mount with --allow-overwrite)",
                ));
            }
            return Ok(self.start_upload(&inode, false, caller));
        }
        let inode = if mode.direct || !inode.is_fresh() {
            self.revalidate(&inode).await?
        } else {
            inode
        };
        let reader = FileReader::new(
            self.store.clone(),
            self.cache.clone(),
            inode.key.clone(),
            inode.stat.etag.clone().unwrap_or_default(),
            inode.stat.size,
            self.prefetch,
            self.budget.clone(),
            self.counters.clone(),
        );
        self.consider_whole_copy(&reader);
        Ok(self.files.insert(OpenFile::Read(Arc::new(reader))))
    }

    /// The ETag pinned by a reading handle.
    pub fn read_etag(&self, fh: u64) -> Option<String> {
        match self.handle(fh).ok()? {
            OpenFile::Read(reader) => reader.object().1.map(str::to_string),
            OpenFile::Write { .. } => None,
        }
    }

    /// The whole-object copy of the object a reading handle reads, opened, and that
    /// object's ETag, when the cache holds one the kernel may read directly.
    pub fn whole_file(&self, fh: u64) -> Option<(std::fs::File, String)> {
        let OpenFile::Read(reader) = self.handle(fh).ok()? else {
            return None;
        };
        let (key, etag, _) = reader.object();
        let etag = etag?;
        let file = self.cache.as_ref()?.whole_file(key, etag)?;
        Some((file, etag.to_string()))
    }

    /// Starts writing the whole-object copy of what `reader` reads, in the background, when
    /// whole copies are on and the cache holds every block of it (see `cache::whole`): for
    /// objects completed before (another mount, a failed copy). An object completed by this
    /// mount's reads gets its copy when its last blocks are stored (`read::source`).
    fn consider_whole_copy(&self, reader: &FileReader<S>) {
        let (Some(cache), (key, Some(etag), size)) = (&self.cache, reader.object()) else {
            return;
        };
        if let Some(copy) = cache.pending_copy(key, etag, size) {
            tokio::task::spawn_blocking(move || copy.run());
        }
    }

    /// Creates `name` in `parent` for writing; returns its attributes and handle number.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        caller: u32,
    ) -> Result<(Attr, u64), FsError> {
        self.check_writable()?;
        let parent = self.dir_inode(parent)?;
        names::check_new_name(name)?;
        // Ask S3 rather than trust a cached "missing": creating must never clobber silently.
        let new = match self.child(&parent, name, true).await? {
            None => true,
            Some(existing) if existing.kind == Kind::Dir => return Err(FsError::IsADirectory),
            Some(existing) if existing.local.is_some() => {
                return Err(FsError::NotPermitted(
                    "the file is being written through another handle",
                ));
            }
            Some(_) if self.config.allow_overwrite => false,
            Some(_) => return Err(FsError::Exists),
        };
        let stat = Stat {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
        };
        let inode = self.inodes.upsert_child(&parent, name, Kind::File, stat, 1);
        self.negative.invalidate(&(parent.ino, name.to_string()));
        let fh = self.start_upload(&inode, new, caller);
        let inode = self.inode(inode.ino)?;
        Ok((self.attr_of(&inode), fh))
    }

    /// `caller` is the thread id the kernel reports for the request.
    fn start_upload(&self, inode: &Inode, new: bool, caller: u32) -> u64 {
        let writer = FileWriter::new(
            self.store.clone(),
            inode.key.clone(),
            self.config.part_size,
            self.budget.clone(),
        );
        self.inodes
            .set_local(inode.ino, Some(Local::Writing { new }));
        self.inodes.set_size(inode.ino, 0);
        self.files.insert(OpenFile::Write {
            ino: inode.ino,
            writer: Arc::new(writer),
            opener: process_of(caller),
            before: (!new).then(|| inode.stat.clone()),
        })
    }

    /// Reads up to `len` bytes at `offset` from a reading handle.
    pub async fn read(&self, fh: u64, offset: u64, len: u32) -> Result<Bytes, FsError> {
        match self.handle(fh)? {
            OpenFile::Read(reader) => reader.read(offset, len).await,
            OpenFile::Write { .. } => Err(FsError::NotPermitted(
                "reading a file while it is being written",
            )),
        }
    }

    /// Appends `data` at `offset` (which must be the current end) through a writing handle.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        match self.handle(fh)? {
            OpenFile::Write { ino, writer, .. } => {
                let result = writer.write(offset, data).await;
                match result {
                    Ok(size) => {
                        self.inodes.set_size(ino, size);
                        Ok(data.len() as u32)
                    }
                    Err(e) => {
                        self.upload_gone(ino, &writer).await;
                        Err(e)
                    }
                }
            }
            OpenFile::Read(_) => Err(FsError::BadHandle),
        }
    }

    /// close(2) of some copy of the descriptor (`caller` is the closing thread). The opening
    /// process's close commits the object once something was written, and its error is the
    /// program's. Other closes wait for release: a child process closes the copies it
    /// inherited when it execs or exits, while the parent may still be writing; shells open
    /// a file, dup it onto stdout and close the original before writing; `touch` sets times
    /// before closing. Reading handles have nothing to do.
    pub async fn flush(&self, fh: u64, caller: u32) -> Result<(), FsError> {
        match self.handle(fh)? {
            OpenFile::Write {
                ino,
                writer,
                opener,
                ..
            } if opener.is_some() && opener == process_of(caller) => {
                if writer.written().await > 0 {
                    self.commit(ino, &writer).await.map(drop)
                } else {
                    Ok(())
                }
            }
            OpenFile::Write { .. } | OpenFile::Read(_) => Ok(()),
        }
    }

    /// fsync(2): a writing handle commits now, whatever it has written.
    pub async fn fsync(&self, fh: u64) -> Result<(), FsError> {
        match self.handle(fh)? {
            OpenFile::Write { ino, writer, .. } => self.commit(ino, &writer).await.map(drop),
            OpenFile::Read(_) => Ok(()),
        }
    }

    async fn commit(&self, ino: u64, writer: &FileWriter<S>) -> Result<Committed, FsError> {
        match writer.commit().await {
            Ok(done) => {
                let stat = Stat {
                    size: done.size,
                    mtime: SystemTime::now(),
                    etag: Some(done.etag.clone()),
                };
                self.inodes.refresh(ino, stat);
                self.inodes.make_real(ino);
                Ok(done)
            }
            Err(e) => {
                self.upload_gone(ino, writer).await;
                Err(e)
            }
        }
    }

    /// After a failed upload: a new name vanishes again; an overwritten one shows the old
    /// object (re-read from S3 on next use).
    async fn upload_gone(&self, ino: u64, writer: &FileWriter<S>) {
        if writer.is_committed().await {
            return;
        }
        if let Some(inode) = self.inodes.set_local(ino, None) {
            self.inodes.unlink(inode.ino);
        }
    }

    /// Drops a handle the kernel never got (its open was refused after all): an upload it
    /// started is abandoned, nothing is committed, and the file is as it was before.
    pub async fn abandon(&self, fh: u64) {
        let file = self.files.remove(fh);
        if let Some(OpenFile::Write {
            ino,
            writer,
            before,
            ..
        }) = file
        {
            writer.abort(libc::EBUSY).await;
            match before {
                Some(stat) => {
                    self.inodes.set_local(ino, None);
                    self.inodes.refresh(ino, stat);
                }
                None => self.upload_gone(ino, &writer).await,
            }
        }
    }

    /// Closes a handle. A writing handle that was never flushed commits now (nobody can see
    /// the error any more, so it is logged).
    pub async fn release(&self, fh: u64) {
        let file = self.files.remove(fh);
        if let Some(OpenFile::Write { ino, writer, .. }) = file {
            if let Err(e) = self.commit(ino, &writer).await {
                if !matches!(
                    e,
                    FsError::UploadFailed { .. } | FsError::InvalidArgument(_)
                ) {
                    error!(key = writer.key(), "upload failed at release: {e}");
                }
            }
        }
    }

    /// setattr: only what S3 can honour. Truncating a file being written to its current size
    /// (`ftruncate(fd, 0)` after create) and setting times on it (`touch`) are accepted; the
    /// object's LastModified is set by S3 at commit. Everything else is refused.
    pub async fn setattr(&self, ino: u64, size: Option<u64>, other: bool) -> Result<Attr, FsError> {
        self.check_writable()?;
        let inode = self.inode(ino)?;
        let writing = matches!(inode.local, Some(Local::Writing { .. }));
        if size.is_some_and(|s| !writing || s != inode.stat.size) {
            return Err(FsError::NotPermitted("truncating an S3 object"));
        }
        if other && !writing {
            return Err(FsError::NotPermitted(
                "changing mode, owner or times of an S3 object",
            ));
        }
        self.getattr(ino).await
    }

    /// Refuses changes on a read-only mount.
    pub(super) fn check_writable(&self) -> Result<(), FsError> {
        if self.config.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Number of open file and directory handles (for tests and the unmount summary).
    pub fn open_handles(&self) -> usize {
        self.files.len() + self.dirs.len()
    }
}

/// The process (thread group id) of thread `tid`, from /proc; `None` if it is gone. FUSE
/// reports the calling thread, and a process's threads must count as one opener.
fn process_of(tid: u32) -> Option<u32> {
    if tid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}
