//! Telling the kernel to forget what it caches of an inode (FUSE_NOTIFY_INVAL_INODE), for
//! the filesystem's [`KernelCache`]. A notification is a write to the FUSE device that the
//! kernel handles in the writer's context, and invalidating an inode's pages waits for its
//! lock, which a request in progress (a write whose reply is not sent yet) may hold: so
//! notifications are sent from a thread of their own, never from a request's task.

use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};

use fuser::{INodeNo, Notifier};
use tracing::debug;

use crate::fs::KernelCache;

/// Sends inode invalidations to the kernel from a thread of its own.
#[derive(Debug)]
pub struct KernelNotifier {
    queue: Mutex<Sender<u64>>,
}

impl KernelNotifier {
    /// Starts the notifying thread for the session `notifier` belongs to; it ends when the
    /// returned value is dropped.
    pub fn start(notifier: Notifier) -> std::io::Result<Self> {
        let (queue, inodes) = mpsc::channel::<u64>();
        std::thread::Builder::new()
            .name("fuse-notify".to_string())
            .spawn(move || {
                for ino in inodes {
                    // ENOENT: the kernel no longer holds the inode, nothing to forget.
                    if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                        debug!(ino, "kernel inode invalidation not delivered: {e}");
                    }
                }
            })?;
        Ok(Self {
            queue: Mutex::new(queue),
        })
    }
}

impl KernelCache for KernelNotifier {
    fn inode_changed(&self, ino: u64) {
        if let Ok(queue) = self.queue.lock() {
            let _ = queue.send(ino);
        }
    }
}
