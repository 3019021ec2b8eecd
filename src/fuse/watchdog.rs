//! `--auto-unmount` of our own, so it works without `--allow-other` (fuser hands the option
//! to fusermount3, which refuses it then). A forked child holds the read end of a pipe whose
//! write end only the mount process has: when the mount process ends in any way but the
//! orderly one (killed, crashed), the pipe reads EOF and the child unmounts the mount point:
//! umount2(MNT_DETACH) as root, else `fusermount3 -u -z`. The orderly end writes one byte
//! first ([`Watchdog::disarm`]): the child exits and touches nothing.
//!
//! The child is forked from a threaded process, so until it execs it only makes
//! async-signal-safe calls; everything it needs is allocated before the fork.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// fusermount3's candidate paths ([`super::fusermount::candidates`]) as C strings, made
/// before the fork, which may not allocate.
fn fusermount_candidates() -> Vec<CString> {
    super::fusermount::candidates()
        .into_iter()
        .filter_map(|p| CString::new(p.into_os_string().into_vec()).ok())
        .collect()
}

/// The file descriptor the child keeps its end of the pipe on; every other one above the
/// standard three is closed, so the child holds no /dev/fuse descriptor that would keep a
/// dead mount's connection alive.
const KEPT_FD: libc::c_int = 3;

/// The mount process's side: dropping it without [`Watchdog::disarm`] unmounts.
#[derive(Debug)]
pub struct Watchdog {
    write_end: OwnedFd,
    child: libc::pid_t,
}

impl Watchdog {
    /// Forks the child that unmounts `mount_point` when this process ends without disarming.
    pub fn spawn(mount_point: &Path) -> io::Result<Self> {
        let path = CString::new(mount_point.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let argv_tail = [c"-u".as_ptr(), c"-z".as_ptr(), path.as_ptr()];
        let programs = fusermount_candidates();
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these two descriptors, owned by nothing else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child calls only async-signal-safe functions on memory prepared above
        // (see `watch`), and never returns from it.
        let child = unsafe { libc::fork() };
        match child {
            -1 => Err(io::Error::last_os_error()),
            // SAFETY: in the child, as above.
            0 => unsafe { watch(read_end.as_raw_fd(), &path, &argv_tail, &programs) },
            child => {
                drop(read_end);
                Ok(Self { write_end, child })
            }
        }
    }

    /// The orderly end: tells the child to exit without unmounting, and reaps it.
    pub fn disarm(self) {
        let byte = [1u8];
        // SAFETY: writes one byte from a live buffer to a descriptor this value owns.
        let _ = unsafe { libc::write(self.write_end.as_raw_fd(), byte.as_ptr().cast(), 1) };
        drop(self.write_end);
        let mut status = 0;
        // SAFETY: waits for our own child; status is a live int.
        unsafe { libc::waitpid(self.child, &mut status, 0) };
    }
}

/// The child: waits for the byte or for EOF, unmounts on EOF, exits.
///
/// # Safety
/// Only after fork, in the child; `path`, `argv_tail` and `programs` point at memory
/// allocated before it.
unsafe fn watch(
    read_fd: libc::c_int,
    path: &CString,
    argv_tail: &[*const libc::c_char; 3],
    programs: &[CString],
) -> ! {
    // SAFETY: each call below is async-signal-safe and takes live pointers or plain ints.
    unsafe {
        libc::setsid();
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
        if libc::dup2(read_fd, KEPT_FD) < 0 {
            libc::_exit(1);
        }
        close_from(KEPT_FD + 1);
        let mut byte = 0u8;
        let n = loop {
            let n = libc::read(KEPT_FD, (&raw mut byte).cast(), 1);
            if n >= 0 || *libc::__errno_location() != libc::EINTR {
                break n;
            }
        };
        // Only EOF means the mount process is gone; a byte is the orderly end, and a read
        // error leaves nothing known: both exit without touching the mount.
        if n != 0 {
            libc::_exit(if n == 1 { 0 } else { 1 });
        }
        if libc::umount2(path.as_ptr(), libc::MNT_DETACH) == 0 {
            libc::_exit(0);
        }
        if *libc::__errno_location() == libc::EPERM {
            let env: [*const libc::c_char; 1] = [std::ptr::null()];
            for program in programs {
                let argv = [
                    program.as_ptr(),
                    argv_tail[0],
                    argv_tail[1],
                    argv_tail[2],
                    std::ptr::null(),
                ];
                libc::execve(program.as_ptr(), argv.as_ptr(), env.as_ptr());
            }
        }
        libc::_exit(1)
    }
}

/// Closes every descriptor from `first` up (close_range, or one by one on old kernels).
///
/// # Safety
/// Only in the watchdog child, which owns nothing those descriptors back.
unsafe fn close_from(first: libc::c_int) {
    // SAFETY: close_range and close take plain ints.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        ) != 0
        {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 20) as libc::c_int
            } else {
                1024
            };
            for fd in first..top {
                libc::close(fd);
            }
        }
    }
}
