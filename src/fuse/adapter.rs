//! The adapter's state and the plumbing every request shares: how a request's future is
//! run (first poll inline on the dispatch thread, then as a task), how an error becomes the
//! errno a program sees (logged and counted once), and what the kernel's arguments mean.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Instant;

use fuser::{BackingId, Errno, Request};
use tokio::runtime::Handle;
use tracing::{debug, error};

use super::passthrough::PassthroughTable;
use crate::fs::posix::Creator;
use crate::fs::{FsError, OpenMode, S3Filesystem, blocking};
use crate::metrics::{ATTR_FUSE_REQUEST, FUSE_REQUEST_ERRORS, FUSE_REQUEST_LATENCY};
use crate::s3::ObjectStore;

/// Directory entries asked of the filesystem per readdir request (the kernel's buffer holds
/// about this many typical names; what does not fit is asked again at the next offset).
pub(super) const READDIR_BATCH: usize = 128;

/// Most asynchronous (background) requests the kernel keeps in flight.
pub(super) const MAX_BACKGROUND: u16 = 64;

/// Turns an error into the errno the program sees, logging it once: failures that a program
/// will see as EIO/EACCES at `error`, ordinary answers (ENOENT…) at `debug`.
pub(super) fn fail(op: &'static str, err: FsError) -> Errno {
    let errno = counted(op, err.errno());
    if err.is_failure() {
        error!(op, "{err}");
    } else {
        debug!(op, "{err}");
    }
    errno
}

/// Answers a call this filesystem does not serve with `errno` (what README's table says for
/// it), counted like any error and logged only at `debug`: some come with every open (a
/// program asking `isatty` sends an ioctl), so a line each would flood the log.
pub(super) fn refuse(op: &'static str, errno: i32) -> Errno {
    debug!(op, errno, "not supported");
    counted(op, errno)
}

/// Counts an error answer to `op` in `fuse_request_errors`, by errno.
fn counted(op: &'static str, errno: i32) -> Errno {
    metrics::counter!(FUSE_REQUEST_ERRORS, ATTR_FUSE_REQUEST => op, "errno" => errno.to_string())
        .increment(1);
    Errno::from_i32(errno)
}

/// `fuser::Filesystem` over an [`S3Filesystem`].
#[derive(Debug)]
pub struct FuseAdapter<S: ObjectStore> {
    pub(super) fs: Arc<S3Filesystem<S>>,
    pub(super) runtime: Handle,
    /// I/O modes of open files, for passthrough of objects the cache holds whole.
    pub(super) passthrough: Arc<PassthroughTable<BackingId>>,
    /// The kernel's most background requests, and its congestion threshold.
    pub(super) queue: (u16, u16),
}

impl<S: ObjectStore> FuseAdapter<S> {
    /// The filesystem this adapter serves.
    pub fn filesystem(&self) -> &Arc<S3Filesystem<S>> {
        &self.fs
    }

    /// An adapter that runs every request of `fs` on `runtime`.
    pub fn new(fs: Arc<S3Filesystem<S>>, runtime: Handle) -> Self {
        Self {
            fs,
            runtime,
            passthrough: Arc::default(),
            queue: (MAX_BACKGROUND, MAX_BACKGROUND * 3 / 4),
        }
    }

    /// Sets the kernel's background queue (Mountpoint's `UNSTABLE_MOUNTPOINT_MAX_BACKGROUND`
    /// and `..._CONGESTION_THRESHOLD`): the most background requests, and the congestion
    /// threshold (default three quarters of it).
    pub fn with_queue(mut self, max_background: Option<u16>, congestion: Option<u16>) -> Self {
        let max = max_background.unwrap_or(self.queue.0);
        self.queue = (max, congestion.unwrap_or(max - max / 4));
        self
    }

    /// Runs a request's future: first polled right here on the dispatch thread (with
    /// blocking local I/O allowed, see [`blocking`]), so a request that needs no waiting (a
    /// cached read, a read of prefetched bytes, a cached stat) is answered without a thread
    /// hop; one that has to wait (on S3) continues as a task, and this thread goes back to
    /// the kernel.
    ///
    /// Its latency, to the reply, is recorded as `fuse.request_latency` by `op`.
    pub(super) fn run<F>(&self, op: &'static str, request: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let start = Instant::now();
        let mut request = Box::pin(async move {
            request.await;
            let us = start.elapsed().as_secs_f64() * 1e6;
            metrics::histogram!(FUSE_REQUEST_LATENCY, ATTR_FUSE_REQUEST => op).record(us);
        });
        let _runtime = self.runtime.enter();
        let mut first_poll = Context::from_waker(Waker::noop());
        // The no-op waker is never relied on: a pending future is spawned, and the task's
        // first poll registers the real waker before anything can be missed.
        if blocking::inline(|| request.as_mut().poll(&mut first_poll)).is_pending() {
            self.runtime.spawn(request);
        }
    }

    pub(super) fn refuse(&self, op: &'static str, what: &'static str) -> Errno {
        let err = if self.fs.config().read_only {
            FsError::ReadOnly
        } else {
            FsError::NotPermitted(what)
        };
        fail(op, err)
    }
}

/// What the filesystem needs to know of open(2) flags.
pub(super) fn open_mode(flags: i32) -> OpenMode {
    OpenMode {
        write: flags & libc::O_ACCMODE != libc::O_RDONLY,
        truncate: flags & libc::O_TRUNC != 0,
        append: flags & libc::O_APPEND != 0,
        direct: flags & libc::O_DIRECT != 0,
    }
}

/// Who asks for a new entry, with mode `mode` less `umask` (the kernel's request).
pub(super) fn creator(req: &Request, mode: u32, umask: u32) -> Creator {
    Creator {
        uid: req.uid(),
        gid: req.gid(),
        perm: mode & !umask & 0o7777,
    }
}

/// The name as UTF-8 (S3 keys are UTF-8; any other name cannot exist).
pub(super) fn utf8(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_string)
}
