//! Telling the kernel to forget what it caches of an inode (FUSE_NOTIFY_INVAL_INODE) or of a
//! name (FUSE_NOTIFY_INVAL_ENTRY, so that it drops an entry it holds and forgets its inode),
//! for the filesystem's [`KernelCache`]. A notification is a write to the FUSE device that the
//! kernel handles in the writer's context, and invalidating an inode's pages waits for its
//! lock, which a request in progress (a write whose reply is not sent yet) may hold: so
//! notifications are sent from a thread of their own, never from a request's task.

use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};

use fuser::{INodeNo, Notifier};
use tracing::debug;

use crate::fs::KernelCache;

/// One notification to send.
#[derive(Debug)]
enum Notice {
    /// An inode's attributes and pages are stale.
    Inode(u64),
    /// A name in a directory is to be dropped.
    Entry(u64, String),
}

/// Sends invalidations to the kernel from a thread of its own.
#[derive(Debug)]
pub struct KernelNotifier {
    queue: Mutex<Sender<Notice>>,
}

impl KernelNotifier {
    /// Starts the notifying thread for the session `notifier` belongs to; it ends when the
    /// returned value is dropped.
    pub fn start(notifier: Notifier) -> std::io::Result<Self> {
        let (queue, notices) = mpsc::channel::<Notice>();
        std::thread::Builder::new()
            .name("fuse-notify".to_string())
            .spawn(move || {
                for notice in notices {
                    // ENOENT: the kernel no longer holds it, nothing to forget.
                    match notice {
                        Notice::Inode(ino) => {
                            if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                                debug!(ino, "kernel inode invalidation not delivered: {e}");
                            }
                        }
                        Notice::Entry(parent, name) => {
                            let name = std::ffi::OsStr::new(&name);
                            if let Err(e) = notifier.inval_entry(INodeNo(parent), name) {
                                debug!(
                                    parent,
                                    ?name,
                                    "kernel entry invalidation not delivered: {e}"
                                );
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            queue: Mutex::new(queue),
        })
    }
}

impl KernelNotifier {
    fn send(&self, notice: Notice) {
        if let Ok(queue) = self.queue.lock() {
            let _ = queue.send(notice);
        }
    }
}

impl KernelCache for KernelNotifier {
    fn inode_changed(&self, ino: u64) {
        self.send(Notice::Inode(ino));
    }

    fn drop_entry(&self, parent: u64, name: &str) {
        self.send(Notice::Entry(parent, name.to_string()));
    }
}
