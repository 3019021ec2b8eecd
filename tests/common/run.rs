//! Running `mount-s3` to completion, for the invocations that must be refused (bad input)
//! or that print and exit (`--help`): what it printed, how it exited, and what it left.
//!
//! Not here: mounts that a test uses (`mount`).

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use super::binary::{isolated_command, kill_pid, mount_s3_processes_for};
use super::mount::{MountArgs, work_dir};
use super::mountinfo::{MountEntry, mount_table, unmount_topmost};
use super::process::{output_to_files, read_text, wait_timeout};

impl MountArgs {
    /// Runs mount-s3 on `mountpoint` (`--foreground` if asked) and waits for it to exit, for
    /// the invocations that must be refused. A process still running after `timeout` is
    /// killed (its outcome then has `status: None`). Whatever it mounted is unmounted again,
    /// and whatever processes it left behind are killed, before this returns; the outcome
    /// records both.
    pub fn run(&self, mountpoint: &Path, foreground: bool, timeout: Duration) -> RunOutcome {
        let work = work_dir();
        let stderr_path = work.path().join("stderr");
        let stdout_path = work.path().join("stdout");
        let canonical = fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let serving = || {
            let mut pids = mount_s3_processes_for(mountpoint);
            pids.extend(mount_s3_processes_for(&canonical));
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        let mounts_before = mount_table();
        // Processes already serving this mount point (a mount made by the test itself).
        let processes_before = serving();
        let mut cmd = self.command(mountpoint, foreground, work.path());
        output_to_files(&mut cmd, &stdout_path, &stderr_path);
        let start = Instant::now();
        let mut child = cmd.spawn().expect("run mount-s3");
        let status = wait_timeout(&mut child, timeout);
        let elapsed = start.elapsed();
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything new in the mount table that this run made (at the target, or for the bucket).
        let new_mounts: Vec<MountEntry> = mount_table()
            .into_iter()
            .filter(|m| !mounts_before.contains(m))
            .filter(|m| {
                Path::new(&m.mount_point) == canonical
                    || Path::new(&m.mount_point) == mountpoint
                    || (m.fs_type.starts_with("fuse") && m.source == self.bucket())
            })
            .collect();
        for m in new_mounts.iter().rev() {
            unmount_topmost(Path::new(&m.mount_point));
        }
        // Processes this run left behind for the mount point (daemons), not those before it.
        let leftover = || {
            let mut pids = serving();
            pids.retain(|p| !processes_before.contains(p));
            pids
        };
        let grace = Duration::from_secs(if new_mounts.is_empty() { 1 } else { 10 });
        let deadline = Instant::now() + grace;
        let mut leftover_processes = leftover();
        while !leftover_processes.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
            leftover_processes = leftover();
        }
        for pid in &leftover_processes {
            kill_pid(*pid);
        }
        RunOutcome {
            status,
            stdout: read_text(&stdout_path),
            stderr: read_text(&stderr_path),
            elapsed,
            new_mounts,
            leftover_processes,
        }
    }
}

/// What a run-to-completion of mount-s3 gave.
#[derive(Debug)]
pub struct RunOutcome {
    /// `None`: it did not exit in time and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Mount table entries it created (already unmounted again).
    pub new_mounts: Vec<MountEntry>,
    /// mount-s3 processes for the mount point still running after it exited (now killed).
    pub leftover_processes: Vec<libc::pid_t>,
}

impl RunOutcome {
    /// Asserts the run was refused the way bad input must be: it exited by itself with a
    /// non-zero code, printed exactly one non-empty, readable line on stderr, and mounted
    /// nothing. `what` names the case in failure messages. Returns the stderr line.
    pub fn assert_refused(&self, what: &str) -> String {
        let status = self
            .status
            .unwrap_or_else(|| panic!("{what}: mount-s3 did not exit (killed); {self:#?}"));
        assert!(
            status.code().is_some(),
            "{what}: mount-s3 died from signal {:?} instead of exiting; {self:#?}",
            status.signal()
        );
        assert_ne!(
            status.code(),
            Some(0),
            "{what}: mount-s3 exited 0 but must refuse; {self:#?}"
        );
        assert!(
            self.new_mounts.is_empty(),
            "{what}: mount-s3 mounted something although it must refuse: {:?}; {self:#?}",
            self.new_mounts
        );
        assert!(
            self.leftover_processes.is_empty(),
            "{what}: mount-s3 left processes running: {:?}; {self:#?}",
            self.leftover_processes
        );
        let text = self.stderr.trim();
        assert!(!text.is_empty(), "{what}: stderr is empty; {self:#?}");
        assert_eq!(
            text.lines().count(),
            1,
            "{what}: stderr must be exactly one line, got:\n{}",
            self.stderr
        );
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "{what}: mount-s3 panicked instead of reporting an error: {text}"
        );
        assert!(
            text.chars().any(|c| c.is_alphabetic()),
            "{what}: stderr is not readable: {text:?}"
        );
        text.to_string()
    }
}

/// Runs the mount-s3 binary with exactly `args` (no endpoint, bucket or mount point added),
/// the machine's AWS configuration shut out, and waits up to `timeout`.
/// Returns `(status, stdout, stderr)`; `status` is `None` if it had to be killed.
pub fn run_mount_s3_raw(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let work = work_dir();
    let out_path = work.path().join("stdout");
    let err_path = work.path().join("stderr");
    let mut cmd = isolated_command(work.path());
    cmd.args(args);
    output_to_files(&mut cmd, &out_path, &err_path);
    let mut child = cmd.spawn().expect("run mount-s3");
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status, read_text(&out_path), read_text(&err_path))
}
