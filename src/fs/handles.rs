//! Open files: opening for reading or writing, reads, releases and attribute changes. A
//! handle is one or the other: reading a file while it is being written is refused. What a
//! write handle does at close (the commit) is [`super::commit`].
//!
//! One inode is one object version while files are open on it (see `inode`): an open that
//! finds the object changed under open handles, or a write that would replace what readers
//! hold open, moves the name to a new inode and answers ESTALE, on which the kernel looks the
//! name up again and retries the open on the new inode.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::commit::WriteHandle;
use super::inode::Local;
use super::posix::{AttrChange, Creator};
use super::read::FileReader;
use super::upload::Upload;
use super::write::{FileWriter, new_write_id};
use super::{Attr, FsError, Inode, Kind, Observed, OpenMode, S3Filesystem, Stat, names};
use crate::s3::posix::S_IFREG;
use crate::s3::{ObjectStore, Posix, WriteOptions};

/// What an open file handle does.
#[derive(Debug)]
pub(crate) enum OpenFile<S: ObjectStore> {
    /// Reads one pinned object version of inode `ino`.
    Read {
        /// The inode read.
        ino: u64,
        /// Its reader.
        reader: Arc<FileReader<S>>,
    },
    /// Uploads a new version of a file.
    Write(Arc<WriteHandle<S>>),
}

impl<S: ObjectStore> Clone for OpenFile<S> {
    fn clone(&self) -> Self {
        match self {
            OpenFile::Read { ino, reader } => OpenFile::Read {
                ino: *ino,
                reader: reader.clone(),
            },
            OpenFile::Write(handle) => OpenFile::Write(handle.clone()),
        }
    }
}

impl<S: ObjectStore> OpenFile<S> {
    fn ino(&self) -> u64 {
        match self {
            OpenFile::Read { ino, .. } => *ino,
            OpenFile::Write(handle) => handle.ino,
        }
    }
}

impl<S: ObjectStore> S3Filesystem<S> {
    pub(crate) fn handle(&self, fh: u64) -> Result<OpenFile<S>, FsError> {
        self.files.get(fh).ok_or(FsError::BadHandle)
    }

    /// The writing handles open on `ino`.
    pub(super) fn writers_of(&self, ino: u64) -> Vec<Arc<WriteHandle<S>>> {
        let writing = |f: &OpenFile<S>| matches!(f, OpenFile::Write(h) if h.ino == ino);
        let files = self.files.matching(writing).into_iter();
        files
            .filter_map(|file| match file {
                OpenFile::Write(handle) => Some(handle),
                OpenFile::Read { .. } => None,
            })
            .collect()
    }

    /// Opens a file and returns its handle number. A reading handle pins the ETag; a writing
    /// handle must replace the whole object (O_TRUNC, `--allow-overwrite`).
    pub async fn open(&self, ino: u64, mode: OpenMode, caller: u32) -> Result<u64, FsError> {
        let mut inode = self.inode(ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::IsADirectory);
        }
        if matches!(inode.local, Some(Local::Writing { .. })) {
            if let Some(file) = self.live_staged(ino)
                && (!mode.write || self.stages(mode))
            {
                return self.attach_staged(&inode, file, mode, caller).await;
            }
            // Closed, its release still to come: opened as the object once it landed.
            if !self.wait_released(ino).await {
                return Err(FsError::NotPermitted(
                    "the file is being written through another handle",
                ));
            }
            inode = self.inode(ino)?;
        }
        if mode.write && self.stages(mode) {
            self.check_writable()?;
            return self.open_staged(&inode, mode, caller).await;
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
            if inode.is_open() {
                // Readers hold this inode at the version being replaced: the new one gets
                // an inode (and a page cache) of its own.
                self.inodes.move_name(ino);
                return Err(FsError::Stale);
            }
            // The object keeps its attributes (mtime aside) when its content is replaced.
            let options = WriteOptions {
                write_id: new_write_id(),
                posix: inode.stat.posix.filter(|_| self.posix_on()),
                ..WriteOptions::default()
            };
            let writer = self.new_writer(&inode.key, options).await?;
            return Ok(self.start_upload(&inode, false, caller, writer.into()));
        }
        let current = match self.config.open_revalidates_after {
            Some(age) => inode.fetched_within(age, self.config.metadata_ttl),
            None => inode.is_fresh(),
        };
        // The open the kernel retries after an ESTALE goes ahead at the version that sent it
        // back (see `inode::Retries`).
        let retried = self.inodes.take_retry(ino, caller);
        let inode = if mode.direct || !current && !retried {
            match self.revalidate(&inode).await? {
                Observed::Current(current)
                    if inode.stat.etag.is_some() && current.stat.etag != inode.stat.etag =>
                {
                    // The object changed since the kernel last got this inode's attributes,
                    // and it may still trust them (its TTL runs from our last reply, which
                    // can be later than our last HEAD): with the old size it would cut the
                    // new version short. The name moves to a fresh inode; ESTALE makes the
                    // kernel look it up again, with the new attributes, and retry the open.
                    self.inodes.move_name(ino);
                    self.inodes.expect_retry(ino, caller);
                    return Err(FsError::Stale);
                }
                Observed::Current(inode) => inode,
                Observed::Moved { .. } => {
                    self.inodes.expect_retry(ino, caller);
                    return Err(FsError::Stale);
                }
                Observed::Gone => return Err(FsError::NotFound),
            }
        } else {
            inode
        };
        let reader = FileReader::new(
            self.store.clone(),
            super::read::Caches {
                local: self.cache.clone(),
                shared: self.shared.clone(),
            },
            inode.key.clone(),
            inode.stat.etag.clone().unwrap_or_default(),
            inode.stat.size,
            self.prefetch,
            &self.budgets,
            self.counters.clone(),
        );
        self.consider_whole_copy(&reader);
        self.inodes.opened(ino);
        Ok(self.files.insert(OpenFile::Read {
            ino,
            reader: Arc::new(reader),
        }))
    }

    /// The ETag pinned by a reading handle.
    pub fn read_etag(&self, fh: u64) -> Option<String> {
        match self.handle(fh).ok()? {
            OpenFile::Read { reader, .. } => reader.object().1.map(str::to_string),
            OpenFile::Write(_) => None,
        }
    }

    /// The whole-object copy of the object a reading handle reads, opened, and that
    /// object's ETag, when the cache holds one the kernel may read directly. Blocking file
    /// I/O.
    pub fn whole_file(&self, fh: u64) -> Option<(std::fs::File, String)> {
        let OpenFile::Read { reader, .. } = self.handle(fh).ok()? else {
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
    /// With `exclusive` (O_EXCL) an object of that name is EEXIST even with
    /// `--allow-overwrite`, and the commit is conditional on there being none still.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        caller: u32,
        exclusive: bool,
    ) -> Result<(Attr, u64), FsError> {
        self.create_as(parent, name, caller, exclusive, None).await
    }

    /// mknod(2): a regular file is made empty, as `touch` makes one (an exclusive create,
    /// committed at once); FIFOs, sockets and devices have no S3 form and are refused.
    pub async fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        caller: u32,
        creator: Option<Creator>,
    ) -> Result<Attr, FsError> {
        self.check_writable()?;
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::NotPermitted(
                "making a FIFO, socket or device node (S3 objects are regular files)",
            ));
        }
        let (attr, fh) = self.create_as(parent, name, caller, true, creator).await?;
        // fsync commits even a file with nothing written (a close of one leaves its commit
        // to the release, whose failure nobody would be told).
        let committed = self.fsync(fh).await;
        self.release(fh).await;
        match committed.and_then(|()| self.inode(attr.ino)) {
            Ok(inode) => Ok(self.attr_of(&inode)),
            Err(e) => {
                // The kernel gets no entry: the lookup `create_as` counted is not its own.
                self.inodes.forget(attr.ino, 1);
                Err(e)
            }
        }
    }

    /// [`S3Filesystem::create`] by `creator` (whose owner and mode the object gets with
    /// `--posix-metadata`; the mount's defaults when `None`).
    pub async fn create_as(
        &self,
        parent: u64,
        name: &str,
        caller: u32,
        exclusive: bool,
        creator: Option<Creator>,
    ) -> Result<(Attr, u64), FsError> {
        self.check_writable()?;
        let parent = self.dir_inode(parent)?;
        names::check_new_name(name)?;
        // Ask S3 rather than trust a cached "missing": creating must never clobber silently.
        let new = match self.child(&parent, name, true, 0).await? {
            None => true,
            Some(existing) if existing.kind == Kind::Dir => return Err(FsError::IsADirectory),
            Some(existing) if existing.local.is_some() => {
                return Err(FsError::NotPermitted(
                    "the file is being written through another handle",
                ));
            }
            Some(_) if exclusive => return Err(FsError::Exists),
            Some(_) if self.config.allow_overwrite => false,
            Some(_) => return Err(FsError::Exists),
        };
        // A name found missing stays ours only if nobody creates it meanwhile, unless the
        // mount may overwrite and the program did not ask for O_EXCL.
        let if_none_match = exclusive || (new && !self.config.allow_overwrite);
        let key = names::child_key(&parent.key, name);
        let posix = self.new_posix(S_IFREG, creator);
        let stat = Stat {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
            posix,
        };
        if self.staging_on() {
            // A new file from nothing (an object of that name is replaced at commit, with
            // --allow-overwrite, as an O_TRUNC open would).
            let file = self.new_staged(&key, None, posix)?;
            let upload = Upload::Staged {
                file: file.clone(),
                if_none_match,
            };
            let inode = self.inodes.upsert_child(&parent, name, Kind::File, stat, 1);
            self.forget_name(parent.ino, name);
            let fh = self.start_staged(&inode, file, upload, new, caller, false, 0);
            let inode = self.inode(inode.ino)?;
            return Ok((self.attr_of(&inode), fh));
        }
        let options = WriteOptions {
            write_id: new_write_id(),
            if_none_match,
            posix,
            ..WriteOptions::default()
        };
        let writer = self.new_writer(&key, options).await?;
        let inode = self.inodes.upsert_child(&parent, name, Kind::File, stat, 1);
        self.forget_name(parent.ino, name);
        let fh = self.start_upload(&inode, new, caller, writer.into());
        let inode = self.inode(inode.ino)?;
        Ok((self.attr_of(&inode), fh))
    }

    /// An uploader of `key`, holding the first bytes of its first part from the memory
    /// budget (ENOMEM if the budget cannot give them).
    async fn new_writer(&self, key: &str, options: WriteOptions) -> Result<FileWriter<S>, FsError> {
        let writer = FileWriter::new(
            self.store.clone(),
            key.to_string(),
            self.config.write_part_size,
            self.budgets.data.clone(),
            options,
            self.aborts.clone(),
        );
        writer.reserve_first().await?;
        Ok(writer)
    }

    /// Makes `writer` the writing handle of `inode`; `caller` is the thread id the kernel
    /// reports for the open.
    fn start_upload(&self, inode: &Inode, new: bool, caller: u32, upload: Upload<S>) -> u64 {
        self.inodes
            .set_local(inode.ino, Some(Local::Writing { new }));
        self.inodes.set_size(inode.ino, 0);
        self.inodes.opened(inode.ino);
        let before = (!new).then(|| inode.stat.clone());
        let handle = WriteHandle::new(inode.ino, upload, caller, before, false);
        self.files.insert(OpenFile::Write(Arc::new(handle)))
    }

    /// Reads up to `len` bytes at `offset` from a reading handle.
    pub async fn read(&self, fh: u64, offset: u64, len: u32) -> Result<Bytes, FsError> {
        match self.handle(fh)? {
            OpenFile::Read { reader, .. } => reader.read(offset, len).await,
            OpenFile::Write(handle) => handle.upload.read(offset, len).await,
        }
    }

    /// Drops a handle the kernel never got (its open was refused after all): an upload it
    /// started is abandoned, nothing is committed, and the file is as it was before.
    pub async fn abandon(&self, fh: u64) {
        let Some(file) = self.files.remove(fh) else {
            return;
        };
        if let OpenFile::Write(handle) = &file {
            handle.upload.abort(libc::EBUSY).await;
            self.restore(handle);
        }
        self.inodes.closed(file.ino());
        self.released.notify_waiters();
    }

    /// Closes a handle. A writing handle that was never committed commits now (nobody can
    /// see the error any more: it is logged by name and counted for the exit status).
    pub async fn release(&self, fh: u64) {
        let Some(file) = self.files.remove(fh) else {
            return;
        };
        if let OpenFile::Write(handle) = &file {
            self.commit_at_release(handle).await;
            self.staged_released(handle).await;
        }
        self.inodes.closed(file.ino());
        self.released.notify_waiters();
    }

    /// setattr: only what S3 can honour. A size goes through staging (`--staged-writes`);
    /// mode, owner, group and mtime into object metadata (`--posix-metadata`). Without those
    /// flags, truncating a file being written to its current size (`ftruncate(fd, 0)` after
    /// create) and setting times on it (`touch`) are accepted and have no effect (the
    /// object's LastModified is set by S3 at commit); everything else is refused.
    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        change: AttrChange,
    ) -> Result<Attr, FsError> {
        self.check_writable()?;
        let inode = self.inode(ino)?;
        let writing = matches!(inode.local, Some(Local::Writing { .. }));
        if let Some(size) = size {
            match self.live_staged(ino) {
                Some(file) => {
                    file.truncate(size).await?;
                    self.inodes.set_size(ino, size);
                }
                None if !writing && inode.kind == Kind::File && self.staging_on() => {
                    self.truncate_closed(&inode, size).await?;
                }
                _ if writing && size == inode.stat.size => {}
                _ => return Err(FsError::NotPermitted("truncating an S3 object")),
            }
        }
        if change.other {
            return Err(FsError::NotPermitted("changing file flags"));
        }
        if self.posix_on() {
            if change.posix != Posix::default() {
                let inode = self.inode(ino)?;
                self.change_posix(&inode, change.posix).await?;
            }
        } else if !change.is_empty() && !writing {
            return Err(FsError::NotPermitted(
                "changing mode, owner or times of an S3 object (mount with --posix-metadata)",
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

    /// Open file handles reading and writing, for the metrics.
    pub fn open_files_by_mode(&self) -> (usize, usize) {
        let writing = self.files.count(|f| matches!(f, OpenFile::Write(_)));
        (self.files.len().saturating_sub(writing), writing)
    }
}
