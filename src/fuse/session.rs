//! Mounting: the FUSE session on its dispatch threads, and a handle to unmount and wait.

use std::io;
use std::path::Path;
use std::thread::JoinHandle;

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use tokio::sync::oneshot;

use super::FuseAdapter;
use crate::s3::ObjectStore;

/// Kernel-facing mount settings, built by `cli`.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Source shown in /proc/mounts (the bucket).
    pub fs_name: String,
    /// Mount read-only (the kernel refuses changes with EROFS).
    pub read_only: bool,
    /// Let every user access the mount.
    pub allow_other: bool,
    /// Let root access the mount too.
    pub allow_root: bool,
    /// Unmount when the process exits, even if killed.
    pub auto_unmount: bool,
    /// FUSE dispatch threads.
    pub threads: usize,
}

impl MountConfig {
    fn fuser_config(&self) -> Config {
        let mut options = vec![
            MountOption::FSName(self.fs_name.clone()),
            MountOption::Subtype("mount-s3".to_string()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoAtime,
            if self.read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
        ];
        if self.auto_unmount {
            options.push(MountOption::AutoUnmount);
        }
        let mut config = Config::default();
        config.mount_options = options;
        config.acl = if self.allow_other {
            SessionACL::All
        } else if self.allow_root {
            SessionACL::RootAndOwner
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(self.threads.max(1));
        config.clone_fd = true;
        config
    }
}

/// A live mount served by background threads.
#[derive(Debug)]
pub struct LiveMount {
    unmounter: SessionUnmounter,
    thread: JoinHandle<io::Result<()>>,
    /// Fires when the session ends (unmounted from outside, or after [`LiveMount::unmount`]).
    pub ended: oneshot::Receiver<()>,
}

impl LiveMount {
    /// Mounts `adapter` at `mount_point` and starts serving it.
    pub fn start<S: ObjectStore>(
        adapter: FuseAdapter<S>,
        mount_point: &Path,
        config: &MountConfig,
    ) -> io::Result<Self> {
        let mut session = Session::new(adapter, mount_point, &config.fuser_config())?;
        let unmounter = session.unmount_callable();
        let (tx, ended) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fuse-session".to_string())
            .spawn(move || {
                let result = session.run();
                let _ = tx.send(());
                result
            })?;
        Ok(Self {
            unmounter,
            thread,
            ended,
        })
    }

    /// Unmounts (lazily if the mount is busy: open files keep working until closed).
    pub fn unmount(&mut self) -> io::Result<()> {
        self.unmounter.unmount()
    }

    /// Waits for the dispatch threads to finish.
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("FUSE session thread panicked"))?
    }
}
