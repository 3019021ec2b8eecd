//! The `mount-s3` binary under test: a command for it that cannot see the machine's AWS
//! configuration, and the processes running it for a mount point.
//!
//! Not here: the command line for a server and bucket (`mount`), or waiting for the result
//! (`mount`, `run`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The `mount-s3` binary under test.
pub fn mount_s3_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mount-s3"))
}

/// A command for the binary with every `AWS_*` variable removed, the instance metadata
/// service off, and empty shared config and credentials files (made in `work`), so that only
/// what the test passes counts.
pub fn isolated_command(work: &Path) -> Command {
    isolated_command_under(work, &[])
}

/// [`isolated_command`], run by `wrapper` (a program and its arguments, such as
/// `unshare --pid --fork`) when it is not empty.
pub fn isolated_command_under(work: &Path, wrapper: &[std::ffi::OsString]) -> Command {
    let empty_config = work.join("aws-config");
    let empty_creds = work.join("aws-credentials");
    for f in [&empty_config, &empty_creds] {
        if !f.exists() {
            File::create(f).expect("create empty AWS config file");
        }
    }
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(mount_s3_binary());
            cmd
        }
        None => Command::new(mount_s3_binary()),
    };
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &empty_config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty_creds);
    cmd
}

/// PIDs of processes whose executable is the mount-s3 binary under test and whose
/// arguments include `mountpoint` (the daemons behind a mount: they are not our children).
pub fn mount_s3_processes_for(mountpoint: &Path) -> Vec<libc::pid_t> {
    let binary = fs::canonicalize(mount_s3_binary()).unwrap_or_else(|_| mount_s3_binary());
    let me = std::process::id() as libc::pid_t;
    let target = mountpoint.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(exe) = fs::read_link(e.path().join("exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy();
        let exe = exe.trim_end_matches(" (deleted)");
        if Path::new(exe) != binary {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == target) {
            found.push(pid);
        }
    }
    found
}

/// SIGKILL by PID, for daemons just identified by [`mount_s3_processes_for`].
pub fn kill_pid(pid: libc::pid_t) {
    // SAFETY: kill(2) by PID on a process just identified by exe and arguments.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Waits up to `timeout` for the daemons serving `mountpoint` to exit by themselves, then
/// kills the rest.
pub fn reap_daemons(mountpoint: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = mount_s3_processes_for(mountpoint);
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pid in pids {
                eprintln!(
                    "mount-s3 daemon {pid} for {} still running; killing it",
                    mountpoint.display()
                );
                kill_pid(pid);
            }
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
