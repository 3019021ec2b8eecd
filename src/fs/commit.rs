//! Writing handles and the commit that makes a written file an object, and what happens to
//! uncommitted writes when the mount ends.
//!
//! Which close commits. A flush (every close(2) of a descriptor) commits a handle that has
//! been written when it comes from the process that opened the file or from a process that
//! wrote through it, and that close returns the commit's error. Other closes do not commit: a
//! child closing a descriptor it inherited and never wrote to (exec, exit, `close_fds`), a
//! shell's dup-and-close before it writes. Processes are compared by thread-group id, so a
//! process's threads are one writer. The kernel reports pid 0 for a caller outside the
//! mount's PID namespace (a writer in another container than a sidecar mount): those are one
//! "unseen" process, so for them the first close after a write commits. That is never a
//! silent loss: a later write through the same descriptor fails with EINVAL, which its writer
//! sees. A handle whose last writer never closed that way commits at its release, where
//! nobody can be told; a failure there is logged by name and counted for the exit status.
//!
//! At the end of the mount ([`S3Filesystem::shutdown`]) commits in flight finish (bounded),
//! handles still open for writing are aborted and named, and aborts still owed are tried once
//! more and named if they fail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tracing::error;

use super::handles::OpenFile;
use super::upload::Upload;
use super::write::Committed;
use super::{FsError, S3Filesystem, Stat};
use crate::s3::{ObjectStore, Posix};

/// A writing handle: the uploader, and who may commit it by closing.
#[derive(Debug)]
pub(crate) struct WriteHandle<S: ObjectStore> {
    /// The inode being written.
    pub(crate) ino: u64,
    /// Its upload.
    pub(crate) upload: Upload<S>,
    /// The process that opened it (0: one the mount cannot see).
    opener: u32,
    /// The processes that wrote through it, and the thread last seen writing.
    writers: Mutex<Writers>,
    /// The object's stat before the write began, if it existed: restored when the upload
    /// fails or the open is refused after all.
    pub(super) before: Option<Stat>,
    /// Opened for reading only (an open beside a staged file's writers): never commits at
    /// close or release.
    pub(crate) read_only: bool,
    /// A chmod/chown/utimes that came too late to go with a streaming upload's commit:
    /// made after it, by a copy of the object onto itself.
    deferred_posix: Mutex<Option<Posix>>,
}

/// The processes that wrote through a handle.
#[derive(Debug, Default)]
struct Writers {
    /// The thread of the last write (its process is already in `processes`): most writes
    /// come from one thread, and finding a thread's process reads /proc.
    last_thread: Option<u32>,
    processes: Vec<u32>,
}

impl<S: ObjectStore> WriteHandle<S> {
    /// A handle of inode `ino` opened by thread `caller`.
    pub(crate) fn new(
        ino: u64,
        upload: Upload<S>,
        caller: u32,
        before: Option<Stat>,
        read_only: bool,
    ) -> Self {
        Self {
            ino,
            upload,
            opener: process_of(caller),
            writers: Mutex::new(Writers::default()),
            before,
            read_only,
            deferred_posix: Mutex::new(None),
        }
    }

    /// Keeps `change` for after the commit (see [`WriteHandle::deferred_posix`]).
    pub(crate) fn defer_posix(&self, change: &Posix) {
        let mut deferred = self.deferred_posix.lock().expect("posix lock poisoned");
        *deferred = Some(deferred.unwrap_or_default().merged(change));
    }

    fn take_deferred_posix(&self) -> Option<Posix> {
        self.deferred_posix
            .lock()
            .expect("posix lock poisoned")
            .take()
    }

    /// Notes that thread `caller` writes through this handle.
    fn wrote(&self, caller: u32) {
        let mut writers = self.writers.lock().expect("writers lock poisoned");
        if writers.last_thread == Some(caller) {
            return;
        }
        let process = process_of(caller);
        if !writers.processes.contains(&process) {
            writers.processes.push(process);
        }
        writers.last_thread = Some(caller);
    }

    /// Whether a close by thread `caller` commits (see the module comment).
    fn commits_on_close_by(&self, caller: u32) -> bool {
        let process = process_of(caller);
        process == self.opener
            || self
                .writers
                .lock()
                .expect("writers lock poisoned")
                .processes
                .contains(&process)
    }
}

/// The process (thread group id) of thread `tid`, from /proc: FUSE reports the calling
/// thread, and a process's threads must count as one. 0 stays 0 (a caller the mount cannot
/// see); a thread that is gone counts as its own process.
fn process_of(tid: u32) -> u32 {
    if tid == 0 {
        return 0;
    }
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Commits under way, so that the end of the mount can wait for them.
#[derive(Debug, Default)]
pub(super) struct CommitsInFlight(AtomicUsize);

/// One commit under way, until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl CommitsInFlight {
    fn start(&self) -> InFlight<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlight(&self.0)
    }

    pub(super) fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the end of the mount found (see [`S3Filesystem::shutdown`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Keys of files that were written and did not land: their upload was aborted at the
    /// end, or failed at a release where nobody could be told.
    pub not_landed: Vec<String>,
    /// Multipart uploads that could not be aborted, as (key, upload id).
    pub left_behind: Vec<(String, String)>,
    /// Commits still running when the wait ended.
    pub unfinished: usize,
}

impl ShutdownReport {
    /// Whether every written file landed and nothing was left behind.
    pub fn is_clean(&self) -> bool {
        self.not_landed.is_empty() && self.left_behind.is_empty() && self.unfinished == 0
    }
}

impl<S: ObjectStore> S3Filesystem<S> {
    /// Appends `data` at `offset` (which must be the current end) through a writing handle;
    /// `caller` is the writing thread.
    pub async fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        caller: u32,
    ) -> Result<u32, FsError> {
        let OpenFile::Write(handle) = self.handle(fh)? else {
            return Err(FsError::BadHandle);
        };
        if handle.read_only {
            return Err(FsError::BadHandle);
        }
        handle.wrote(caller);
        match handle.upload.write(offset, data).await {
            Ok(size) => {
                self.inodes.set_size(handle.ino, size);
                Ok(data.len() as u32)
            }
            Err(e) => {
                self.upload_gone(&handle).await;
                Err(e)
            }
        }
    }

    /// close(2) of some copy of the descriptor (`caller` is the closing thread): commits
    /// by the rule of the module comment, and the error is that close's. Reading handles
    /// have nothing to do.
    pub async fn flush(&self, fh: u64, caller: u32) -> Result<(), FsError> {
        match self.handle(fh)? {
            OpenFile::Write(handle)
                if !handle.read_only
                    && handle.commits_on_close_by(caller)
                    && handle.upload.has_changes().await =>
            {
                self.commit(&handle).await.map(drop)
            }
            OpenFile::Write(_) | OpenFile::Read { .. } => Ok(()),
        }
    }

    /// fsync(2): a writing handle commits now, whatever it has written.
    pub async fn fsync(&self, fh: u64) -> Result<(), FsError> {
        match self.handle(fh)? {
            OpenFile::Write(handle) => self.commit(&handle).await.map(drop),
            OpenFile::Read { .. } => Ok(()),
        }
    }

    async fn commit(&self, handle: &WriteHandle<S>) -> Result<Committed, FsError> {
        let _in_flight = self.commits.start();
        match handle.upload.commit().await {
            Ok((done, fresh)) => {
                let done = match (fresh, handle.take_deferred_posix()) {
                    (true, Some(change)) => self.posix_after_commit(handle, done, &change).await?,
                    (false, Some(change)) => {
                        // Deferred just as the earlier commit took its own: made on the object
                        // as it is now (which refreshes the inode).
                        let inode = self.inode(handle.ino)?;
                        self.change_object_posix(&inode, &change).await?;
                        done
                    }
                    (_, None) => done,
                };
                // Only a version this call made goes on the inode: an earlier commit's answer
                // may name a version changed in place since (a chmod copies the object onto
                // itself), and a reader would then ask S3 for one it no longer has.
                if fresh {
                    let stat = Stat {
                        size: done.size,
                        mtime: SystemTime::now(),
                        etag: Some(done.etag.clone()),
                        posix: done.posix,
                    };
                    self.inodes.refresh(handle.ino, stat);
                }
                self.make_real(handle.ino);
                if handle.upload.is_staged() {
                    // Its handles may write on: the file stays this mount's until the last
                    // one goes.
                    self.inodes.set_local(
                        handle.ino,
                        Some(super::inode::Local::Writing { new: false }),
                    );
                }
                let key = handle.upload.key().await;
                self.listing_changed(&key[..key.rfind('/').map_or(0, |at| at + 1)]);
                Ok(done)
            }
            Err(e) => {
                // A staged file keeps its data for the next commit (the last handle's
                // release settles what the inode shows).
                if !handle.upload.is_staged() {
                    self.upload_gone(handle).await;
                }
                Err(e)
            }
        }
    }

    /// A chmod/chown/utimes that could not go with the commit `done` (see
    /// [`WriteHandle::defer_posix`]): made now, on the version just committed.
    async fn posix_after_commit(
        &self,
        handle: &WriteHandle<S>,
        done: Committed,
        change: &Posix,
    ) -> Result<Committed, FsError> {
        let key = handle.upload.key().await;
        let copied = self
            .store
            .copy(&key, &key, done.size, &done.etag, Some(change))
            .await
            .map_err(|e| FsError::s3(&key, e))?;
        Ok(Committed {
            etag: copied.etag,
            posix: Some(done.posix.unwrap_or_default().merged(change)),
            ..done
        })
    }

    /// The commit of a handle at its release: a failure nobody was told of is logged by
    /// name and remembered for the end of the mount.
    pub(super) async fn commit_at_release(&self, handle: &WriteHandle<S>) {
        if handle.read_only || !handle.upload.commits_at_release().await {
            return;
        }
        let Err(e) = self.commit(handle).await else {
            return;
        };
        // These failures were answered to a write or close already.
        if matches!(
            e,
            FsError::UploadFailed { .. } | FsError::InvalidArgument(_)
        ) {
            return;
        }
        let key = handle.upload.key().await;
        error!(
            key,
            "the file did not land: its upload failed at release ({e})"
        );
        self.lost.lock().expect("lost lock poisoned").push(key);
    }

    /// After a failed upload: a new name vanishes again; an overwritten one shows the old
    /// object with its old stat, to be revalidated at the next use.
    async fn upload_gone(&self, handle: &WriteHandle<S>) {
        if handle.upload.is_committed().await {
            return;
        }
        self.restore(handle);
    }

    /// The file as it was before `handle` began writing it; the kernel is told to forget
    /// the size it saw grow.
    pub(crate) fn restore(&self, handle: &WriteHandle<S>) {
        match &handle.before {
            Some(stat) => {
                self.inodes.set_local(handle.ino, None);
                self.inodes.refresh(handle.ino, stat.clone());
                self.inodes.expire(handle.ino);
            }
            None => {
                if let Some(inode) = self.inodes.set_local(handle.ino, None) {
                    self.inodes.unlink(inode.ino);
                    // The kernel may still hold the name on this inode: its next look asks
                    // S3 (a file renamed onto an object before its commit failed shows that
                    // object again, not the local size).
                    self.inodes.expire(inode.ino);
                }
            }
        }
        self.kernel_forget(handle.ino);
    }

    /// The end of the mount, once the kernel sends nothing more: waits at most `wait` for
    /// commits in flight, aborts the uploads of handles still open for writing, and makes a
    /// last try at aborts still owed. Everything that did not land is logged by name.
    pub async fn shutdown(&self, wait: Duration) -> ShutdownReport {
        let until = Instant::now() + wait;
        while self.commits.count() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut report = ShutdownReport {
            unfinished: self.commits.count(),
            ..ShutdownReport::default()
        };
        for file in self.files.values() {
            let OpenFile::Write(handle) = file else {
                continue;
            };
            if handle.upload.is_committed().await || handle.upload.has_failed().await {
                continue;
            }
            handle.upload.abort(libc::EIO).await;
            let key = handle.upload.key().await;
            error!(
                key,
                "the file did not land: it was still open for writing when the mount ended; its upload was aborted"
            );
            report.not_landed.push(key);
        }
        report.not_landed.extend(std::mem::take(
            &mut *self.lost.lock().expect("lost lock poisoned"),
        ));
        report.left_behind = self.aborts.finish().await;
        report
    }
}
