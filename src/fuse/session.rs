//! Mounting: the FUSE session on its dispatch threads, and a handle to unmount and wait.
//! Three ways in: mount(2) ourselves as root, fusermount3 otherwise, or a /dev/fuse
//! descriptor a parent mounted ([`super::passed_fd`]). `--auto-unmount` is our own
//! [`Watchdog`] on every path but the last.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use fuser::{Config, Session, SessionACL};
use tokio::sync::oneshot;
use tracing::debug;

use super::FuseAdapter;
use super::notify::KernelNotifier;
use super::passed_fd;
use super::watchdog::Watchdog;
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
    /// Refuse to execute files from the mount (MS_NOEXEC).
    pub noexec: bool,
    /// FUSE dispatch threads.
    pub threads: usize,
    /// Kernel readahead to set (`--read-ahead`, KiB); see [`DEFAULT_READ_AHEAD_KIB`].
    pub read_ahead_kib: u32,
}

impl MountConfig {
    /// fuser's settings for serving a mounted descriptor (the mount options themselves go to
    /// mount(2) or fusermount3: [`mount_direct`], [`super::fusermount`]).
    fn fuser_config(&self) -> Config {
        let mut config = Config::default();
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

/// Kernel readahead for the mount, in KiB, unless `--read-ahead` says otherwise: sequential
/// readers get 1 MiB FUSE reads instead of 128 KiB ones. The kernel also reads this much
/// around every mmap page fault (a numpy memmap touched at random fetches about 100× what it
/// touches at 1 MiB, 4.7× at 16 KiB), and with less than the program's read size it splits
/// reads into 128 KiB requests; above 1 MiB, requests grow only where root raised
/// `fs.fuse.max_pages_limit` (measured: 4 MiB requests cost 0.57 CPU-s per GiB against 0.65).
pub const DEFAULT_READ_AHEAD_KIB: u32 = 1024;

/// Filesystem type shown in /proc/mounts (`fuse.` + subtype, as fusermount3 would set it).
const FS_TYPE: &str = "fuse.mount-s3";

/// How the mount will be undone.
#[derive(Debug)]
enum Unmounter {
    /// Mounted through fusermount3 (no privilege for mount(2)): `fusermount3 -u -z`, once.
    Fusermount(Option<PathBuf>),
    /// Mounted directly with mount(2): a lazy umount2(2), once.
    Direct(Option<PathBuf>),
    /// A descriptor mounted by the parent that passed it: never unmounted here; once asked
    /// to unmount, the process stops waiting for the session and exits.
    Passed { left: bool },
}

/// Mounts with mount(2) on a fresh /dev/fuse descriptor, as root may, so the filesystem type
/// reads `fuse.mount-s3` (fuser's own direct path always says plain `fuse`). Returns
/// `Ok(None)` when the kernel refuses for lack of privilege: then fusermount3 must do it.
fn mount_direct(mount_point: &Path, config: &MountConfig) -> io::Result<Option<OwnedFd>> {
    // A user who may not open /dev/fuse (mode 0600 on some systems) may still mount through
    // the setuid fusermount3, which opens it as root.
    let device = match OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(device) => device,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            debug!("/dev/fuse not open to this user ({e}), mounting through fusermount3");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},default_permissions",
        device.as_raw_fd()
    );
    if config.allow_other || config.allow_root {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    if config.read_only {
        flags |= libc::MS_RDONLY;
    }
    if config.noexec {
        flags |= libc::MS_NOEXEC;
    }
    let to_c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let source = to_c(config.fs_name.as_bytes())?;
    let target = to_c(mount_point.as_os_str().as_bytes())?;
    let fs_type = to_c(FS_TYPE.as_bytes())?;
    let data = to_c(data.as_bytes())?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(Some(device.into()));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            debug!("mount(2) not permitted, falling back to fusermount3");
            Ok(None)
        }
        _ => Err(err),
    }
}

/// A live mount served by background threads.
#[derive(Debug)]
pub struct LiveMount {
    unmounter: Unmounter,
    /// `--auto-unmount`: unmounts if this process ends without [`LiveMount::join`].
    watchdog: Option<Watchdog>,
    thread: JoinHandle<io::Result<()>>,
    /// Fires when the session ends (unmounted from outside, or after [`LiveMount::unmount`]).
    pub ended: oneshot::Receiver<()>,
}

impl LiveMount {
    /// Mounts `adapter` at `mount_point` (or serves the descriptor `/dev/fd/N` names) and
    /// starts serving it.
    pub fn start<S: ObjectStore>(
        adapter: FuseAdapter<S>,
        mount_point: &Path,
        config: &MountConfig,
    ) -> io::Result<Self> {
        let fuser_config = config.fuser_config();
        let fs = adapter.filesystem().clone();
        let (session, unmounter) = if let Some(fd) = passed_fd::parse(mount_point) {
            passed_fd::check(fd).map_err(io::Error::other)?;
            // SAFETY: checked to be an open /dev/fuse descriptor, whose ownership the parent
            // hands over by naming it (as with Mountpoint).
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let session = Session::from_fd(adapter, fd, fuser_config.acl, fuser_config.clone())?;
            (session, Unmounter::Passed { left: false })
        } else if let Some(fd) = mount_direct(mount_point, config)? {
            let session = Session::from_fd(adapter, fd, fuser_config.acl, fuser_config.clone());
            let mut unmounter = Unmounter::Direct(Some(mount_point.to_path_buf()));
            match session {
                Ok(session) => (session, unmounter),
                Err(e) => {
                    let _ = unmount_with(&mut unmounter);
                    return Err(e);
                }
            }
        } else {
            let fd = super::fusermount::mount(mount_point, config)?;
            let session = Session::from_fd(adapter, fd, fuser_config.acl, fuser_config.clone());
            let mut unmounter = Unmounter::Fusermount(Some(mount_point.to_path_buf()));
            match session {
                Ok(session) => (session, unmounter),
                Err(e) => {
                    let _ = unmount_with(&mut unmounter);
                    return Err(e);
                }
            }
        };
        let passed = matches!(unmounter, Unmounter::Passed { .. });
        // Mounted: whatever fails from here on unmounts again before returning.
        let serving = (|| {
            let watchdog = match config.auto_unmount && !passed {
                true => Some(Watchdog::spawn(mount_point)?),
                false => None,
            };
            fs.set_kernel_cache(Box::new(KernelNotifier::start(session.notifier())?));
            let (tx, ended) = oneshot::channel();
            let thread = std::thread::Builder::new()
                .name("fuse-session".to_string())
                .spawn(move || {
                    let result = session.run();
                    let _ = tx.send(());
                    result
                })?;
            io::Result::Ok((watchdog, thread, ended))
        })();
        let mut unmounter = unmounter;
        let (watchdog, thread, ended) = match serving {
            Ok(serving) => serving,
            Err(e) => {
                let _ = unmount_with(&mut unmounter);
                return Err(e);
            }
        };
        if !passed {
            tune_readahead(mount_point, config.read_ahead_kib);
        }
        Ok(Self {
            unmounter,
            watchdog,
            thread,
            ended,
        })
    }

    /// Unmounts (lazily if the mount is busy: open files keep working until closed).
    pub fn unmount(&mut self) -> io::Result<()> {
        unmount_with(&mut self.unmounter)
    }

    /// Waits for the dispatch threads to finish (not for a passed descriptor's once asked
    /// to unmount: its parent ends that session), then disarms the watchdog. With
    /// `--auto-unmount`, a session that ended without an unmount (its connection aborted)
    /// is unmounted first, as the watchdog would have.
    pub fn join(mut self) -> io::Result<()> {
        if let Unmounter::Passed { left: true } = self.unmounter {
            return Ok(());
        }
        let result = self
            .thread
            .join()
            .map_err(|_| io::Error::other("FUSE session thread panicked"))?;
        if let Some(watchdog) = self.watchdog.take() {
            // Already unmounted on every other path: the error is expected then.
            let _ = unmount_with(&mut self.unmounter);
            watchdog.disarm();
        }
        result
    }
}

fn unmount_with(unmounter: &mut Unmounter) -> io::Result<()> {
    match unmounter {
        Unmounter::Fusermount(path) => match path.take() {
            Some(path) => super::fusermount::unmount(&path),
            None => Ok(()),
        },
        Unmounter::Passed { left } => {
            *left = true;
            Ok(())
        }
        Unmounter::Direct(path) => {
            let Some(path) = path.take() else {
                return Ok(());
            };
            let target = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: target is a NUL-terminated path that outlives the call.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
    }
}

/// Sets the mount's readahead through its backing device's sysfs entry (root only; others
/// keep the kernel's 128 KiB, which works, only slower). The session must already be
/// serving: finding the device stats the mount point.
fn tune_readahead(mount_point: &Path, kib: u32) {
    use std::os::unix::fs::MetadataExt;
    let result = std::fs::metadata(mount_point).and_then(|meta| {
        let dev = meta.dev();
        let path = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        std::fs::write(path, kib.to_string())
    });
    if let Err(e) = result {
        debug!("kernel readahead left at its default: {e}");
    }
}
