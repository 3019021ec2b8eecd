//! Running in the background like Mountpoint: the parent returns 0 only once the mount is
//! live, or prints the child's one-line error and returns non-zero.
//!
//! The fork happens before any thread exists (no runtime yet), so the child is a plain copy.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// Message the child writes when the mount is live.
const READY: &[u8] = b"ready";

/// How long the parent waits for the child's report, as Mountpoint does; then it stops the
/// child and says so.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The child's end of the start-up pipe: report success or the reason for failure.
#[derive(Debug)]
pub struct StartupReport {
    pipe: File,
}

impl StartupReport {
    /// Tells the parent the mount is live; it exits 0.
    pub fn ready(mut self) {
        let _ = self.pipe.write_all(READY);
    }

    /// Tells the parent why start-up failed; it prints `message` and exits 1.
    pub fn failed(mut self, message: &str) {
        let _ = self.pipe.write_all(message.as_bytes());
    }
}

/// Forks. In the parent this never returns: it waits for the child's report and exits. In
/// the child it returns the report handle, after starting a new session and pointing stdin,
/// stdout and stderr at /dev/null.
pub fn fork_background(mounted: &str) -> io::Result<StartupReport> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (the caller forks before building the runtime).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read_end);
            detach()?;
            Ok(StartupReport {
                pipe: File::from(write_end),
            })
        }
        child => {
            drop(write_end);
            std::process::exit(wait_for_child(File::from(read_end), child, mounted))
        }
    }
}

fn detach() -> io::Result<()> {
    // SAFETY: setsid has no memory effects; it fails only if already a group leader.
    unsafe { libc::setsid() };
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: both descriptors are open; dup2 replaces the standard one atomically.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    std::env::set_current_dir("/")
}

/// Everything the child writes until it closes the pipe, or `None` if that takes longer
/// than `timeout`.
fn read_report(mut pipe: File, timeout: std::time::Duration) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let until = std::time::Instant::now() + timeout;
    let mut message = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut poll = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Some(message);
        }
        if ready == 0 {
            continue; // the deadline is checked above
        }
        match pipe.read(&mut buf) {
            Ok(0) => return Some(message),
            Ok(n) => message.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(message),
        }
    }
}

/// The parent's side: exit status for what the child reported.
fn wait_for_child(pipe: File, child: libc::pid_t, mounted: &str) -> i32 {
    let Some(message) = read_report(pipe, REPORT_TIMEOUT) else {
        // SAFETY: signals to our own child; waitpid with a valid out-pointer.
        unsafe {
            libc::kill(child, libc::SIGTERM);
            std::thread::sleep(std::time::Duration::from_secs(2));
            libc::kill(child, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(child, &mut status, 0);
        }
        eprintln!(
            "mount-s3: the background process did not report within {}s; it was stopped (run with --foreground to see where it hangs)",
            REPORT_TIMEOUT.as_secs()
        );
        return 1;
    };
    if message == READY {
        println!("{mounted}");
        return 0;
    }
    if message.is_empty() {
        let mut status = 0;
        // SAFETY: child is our own child's pid; status is a valid out-pointer.
        unsafe { libc::waitpid(child, &mut status, 0) };
        eprintln!(
            "mount-s3: the background process exited before the mount was ready (status {status})"
        );
    } else {
        let message = String::from_utf8_lossy(&message);
        eprintln!("mount-s3: {}", crate::logging::one_line(message.trim_end()));
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds were just opened and are owned by nobody else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn a_report_is_read_to_its_end() {
        let (read, mut write) = pipe();
        write.write_all(b"ready").unwrap();
        drop(write);
        assert_eq!(read_report(read, Duration::from_secs(5)).unwrap(), READY);
    }

    #[test]
    fn a_child_that_never_reports_is_given_up_on() {
        let (read, mut write) = pipe();
        write.write_all(b"half a mess").unwrap(); // and then nothing, pipe still open
        let started = Instant::now();
        assert_eq!(read_report(read, Duration::from_millis(300)), None);
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(write);
    }
}
