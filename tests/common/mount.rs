//! Mounting: [`MountArgs`] builds a `mount-s3` command line against a test server, and
//! [`Mount`] is a live mount (foreground or daemon) that is unmounted when dropped.
//!
//! Not here: running the binary to completion for the refusal tests (`run`).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::binary::{isolated_command_under, mount_s3_binary, reap_daemons};
use super::mountinfo::{MountEntry, lazy_unmount, mount_entry, unmount};
use super::process::{
    output_to_files, quiet_status, read_text, signal, tail_lines, terminate, wait_timeout,
};
use super::server::{REGION, S3Server};

/// How long a foreground mount may take to show up in the mount table.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `mount-s3` in daemon mode may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary directory for a command's output and empty AWS files.
pub(super) fn work_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("mount-s3-work-")
        .tempdir()
        .expect("work tempdir")
}

/// A new empty directory to mount on, its canonical path, and a work directory.
fn fresh_mountpoint() -> (TempDir, PathBuf, TempDir) {
    let mnt_dir = tempfile::Builder::new()
        .prefix("mount-s3-mnt-")
        .tempdir()
        .expect("mount point tempdir");
    let mountpoint = fs::canonicalize(mnt_dir.path()).expect("canonicalize mount point");
    (mnt_dir, mountpoint, work_dir())
}

/// A `mount-s3` command line: `--endpoint-url <url> --force-path-style [extra] <bucket> <dir>`,
/// with credentials in the environment and the machine's AWS configuration shut out.
#[derive(Clone, Debug)]
pub struct MountArgs {
    endpoint: Option<String>,
    access_key: String,
    secret_key: String,
    bucket: String,
    extra: Vec<OsString>,
    env: Vec<(String, String)>,
    /// Variables the harness sets that this mount must not see (`AWS_REGION`).
    removed_env: Vec<String>,
    /// A program that runs mount-s3 (`unshare --pid --fork`), if any.
    wrapper: Vec<OsString>,
    /// The directory mount-s3 starts in, if not the test's.
    cwd: Option<PathBuf>,
}

impl MountArgs {
    pub fn new(server: &S3Server, bucket: &str) -> MountArgs {
        MountArgs {
            endpoint: Some(server.endpoint().to_string()),
            access_key: server.access_key().to_string(),
            secret_key: server.secret_key().to_string(),
            bucket: bucket.to_string(),
            extra: Vec::new(),
            env: Vec::new(),
            removed_env: Vec::new(),
            wrapper: Vec::new(),
            cwd: None,
        }
    }

    /// Runs mount-s3 under `wrapper` (a program and its arguments).
    pub fn wrapped<I, S>(mut self, wrapper: I) -> MountArgs
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// Starts mount-s3 in `dir` (relative paths on its command line are relative to it).
    pub fn current_dir(mut self, dir: &Path) -> MountArgs {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Adds options before the positional arguments.
    pub fn args<I, S>(mut self, args: I) -> MountArgs
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn endpoint(mut self, url: &str) -> MountArgs {
        self.endpoint = Some(url.to_string());
        self
    }

    pub fn credentials(mut self, access_key: &str, secret_key: &str) -> MountArgs {
        self.access_key = access_key.to_string();
        self.secret_key = secret_key.to_string();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> MountArgs {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Leaves `key` out of the environment, even one the harness sets (`AWS_REGION`).
    pub fn without_env(mut self, key: &str) -> MountArgs {
        self.removed_env.push(key.to_string());
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The command for mounting at `mountpoint`; `work` holds the empty AWS config files.
    pub(super) fn command(&self, mountpoint: &Path, foreground: bool, work: &Path) -> Command {
        let mut cmd = isolated_command_under(work, &self.wrapper);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd.env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_REGION", REGION);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.removed_env {
            cmd.env_remove(k);
        }
        if let Some(url) = &self.endpoint {
            cmd.arg("--endpoint-url").arg(url);
        }
        cmd.arg("--force-path-style");
        if foreground {
            cmd.arg("--foreground");
        }
        cmd.args(&self.extra);
        cmd.arg(&self.bucket).arg(mountpoint);
        cmd
    }

    /// Mounts in the foreground (`--foreground`) on a fresh directory and waits until the mount
    /// is in the mount table. Panics, with the process's stderr, if it does not get there.
    pub fn mount(self) -> Mount {
        self.try_mount().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`MountArgs::mount`], but returns the failure as text.
    pub fn try_mount(self) -> Result<Mount, String> {
        let (mnt_dir, mountpoint, work) = fresh_mountpoint();
        self.start_foreground(Some(mnt_dir), mountpoint, work)
    }

    /// Foreground mount on an existing directory (which must not be removed while mounted).
    pub fn mount_at(self, mountpoint: &Path) -> Result<Mount, String> {
        let mountpoint = fs::canonicalize(mountpoint).expect("canonicalize mount point");
        self.start_foreground(None, mountpoint, work_dir())
    }

    fn start_foreground(
        self,
        mnt_dir: Option<TempDir>,
        mountpoint: PathBuf,
        work: TempDir,
    ) -> Result<Mount, String> {
        let stderr_path = work.path().join("mount-s3.stderr");
        let mut cmd = self.command(&mountpoint, true, work.path());
        output_to_files(&mut cmd, &work.path().join("mount-s3.stdout"), &stderr_path);
        // If the test process dies, the mount gets SIGTERM and unmounts itself.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", mount_s3_binary().display()))?;
        let mut mount = Mount {
            mountpoint,
            bucket: self.bucket.clone(),
            child: Some(child),
            daemon: false,
            stderr_path,
            work,
            mnt_dir,
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if mount.is_mounted() {
                return Ok(mount);
            }
            if let Some(status) = mount.try_exit_status() {
                return Err(format!(
                    "mount-s3 exited ({status}) before {} was mounted; stderr:\n{}",
                    mount.mountpoint.display(),
                    mount.log()
                ));
            }
            if Instant::now() > deadline {
                // `mount` is dropped on return: it kills the process and unmounts if needed.
                return Err(format!(
                    "{} was not mounted within {MOUNT_TIMEOUT:?}; mount-s3 stderr:\n{}",
                    mount.mountpoint.display(),
                    mount.log()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// As the Kubernetes CSI driver does: the test opens /dev/fuse, mounts it at a fresh
    /// directory with mount(2) (root only) and runs mount-s3 in the foreground on
    /// `/dev/fd/N`, that descriptor inherited. Ready once mount-s3 says it is mounted.
    pub fn mount_passed_fd(self) -> Result<Mount, String> {
        use std::os::fd::AsRawFd;
        let (mnt_dir, mountpoint, work) = fresh_mountpoint();
        let fuse = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| format!("open /dev/fuse: {e}"))?;
        let fd = fuse.as_raw_fd();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let data = c(&format!("fd={fd},rootmode=40000,user_id=0,group_id=0"));
        let (source, target, kind) = (c(&self.bucket), c(mountpoint.to_str().unwrap()), c("fuse"));
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                kind.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount(2) of /dev/fuse: {}",
                io::Error::last_os_error()
            ));
        }
        let stderr_path = work.path().join("mount-s3.stderr");
        let stdout_path = work.path().join("mount-s3.stdout");
        let mut cmd = self.command(Path::new(&format!("/dev/fd/{fd}")), true, work.path());
        output_to_files(&mut cmd, &stdout_path, &stderr_path);
        // SAFETY: only async-signal-safe calls between fork and exec; the descriptor is
        // inherited by this child only (the test's copy stays close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        // The child holds the connection now; with the test's copy gone, the mount lives
        // and dies with mount-s3.
        drop(fuse);
        let mut mount = Mount {
            mountpoint,
            bucket: self.bucket.clone(),
            child: Some(child.map_err(|e| format!("run mount-s3: {e}"))?),
            daemon: false,
            stderr_path,
            work,
            mnt_dir: Some(mnt_dir),
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !mount.stdout().contains("is mounted at") {
            if let Some(status) = mount.try_exit_status() {
                return Err(format!(
                    "mount-s3 exited ({status}) on /dev/fd/{fd}:\n{}",
                    mount.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "mount-s3 did not serve /dev/fd/{fd}:\n{}",
                    mount.log()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(mount)
    }

    /// Mounts without `--foreground`: the command must exit 0, and only once the file
    /// system is mounted. Panics otherwise.
    pub fn mount_daemon(self) -> Mount {
        let (mnt_dir, mountpoint, work) = fresh_mountpoint();
        let stderr_path = work.path().join("mount-s3.stderr");
        let mut cmd = self.command(&mountpoint, false, work.path());
        output_to_files(&mut cmd, &work.path().join("mount-s3.stdout"), &stderr_path);
        let start = Instant::now();
        let mut child = cmd.spawn().expect("run mount-s3");
        let status = wait_timeout(&mut child, EXIT_TIMEOUT);
        let mount = Mount {
            mountpoint,
            bucket: self.bucket.clone(),
            child: None,
            daemon: true,
            stderr_path,
            work,
            mnt_dir: Some(mnt_dir),
        };
        let Some(status) = status else {
            // Dropping `mount` cleans up whatever got mounted.
            panic!(
                "mount-s3 (daemon mode) did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                mount.log()
            );
        };
        assert!(
            status.success(),
            "mount-s3 (daemon mode) failed ({status}) after {:?}; stderr:\n{}",
            start.elapsed(),
            mount.log()
        );
        assert!(
            mount.is_mounted(),
            "mount-s3 (daemon mode) exited 0 but {} is not in the mount table; stderr:\n{}",
            mount.mountpoint.display(),
            mount.log()
        );
        mount
    }
}

/// A live `mount-s3` mount. Dropping it unmounts (`fusermount3 -u`, else `umount -l`) and
/// makes sure the process is gone.
pub struct Mount {
    mountpoint: PathBuf,
    bucket: String,
    /// The foreground process; `None` in daemon mode or once it has exited.
    child: Option<Child>,
    daemon: bool,
    stderr_path: PathBuf,
    work: TempDir,
    /// The temporary directory mounted on, when the harness made it. Declared last so it is
    /// removed only after the unmount in `drop`.
    mnt_dir: Option<TempDir>,
}

impl Mount {
    /// The mount point (canonical path).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `mountpoint/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The foreground process id (`None` in daemon mode).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything mount-s3 wrote on stderr so far.
    pub fn stderr(&self) -> String {
        read_text(&self.stderr_path)
    }

    /// Everything mount-s3 wrote on stdout so far (the daemon's parent, in daemon mode).
    pub fn stdout(&self) -> String {
        read_text(&self.stderr_path.with_file_name("mount-s3.stdout"))
    }

    /// The log of a foreground mount (which goes to stdout, as Mountpoint's), then anything
    /// written on stderr (start-up errors, panics).
    pub fn log(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// Whether the mount point is in the mount table.
    pub fn is_mounted(&self) -> bool {
        mount_entry(&self.mountpoint).is_some()
    }

    /// The mount table entry (panics if not mounted).
    pub fn entry(&self) -> MountEntry {
        mount_entry(&self.mountpoint)
            .unwrap_or_else(|| panic!("{} is not mounted", self.mountpoint.display()))
    }

    /// The foreground process's exit status if it has exited (it is then forgotten).
    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Sends `sig` to the foreground process and waits up to `timeout` for it to exit.
    /// Returns its exit status, or `None` if it did not exit in time.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .expect("signal_and_wait needs a running foreground mount");
        signal(child, sig);
        self.wait_exit(timeout)
    }

    /// Unmounts with `fusermount3 -u` the way a user would; returns whether that succeeded.
    /// Retried for up to 5 s while the kernel calls the mount busy (seen once under a
    /// loaded CI run, just after the test's last file was closed), then reported with
    /// fusermount3's own words.
    pub fn fusermount_unmount(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mountpoint)
                .output();
            match out {
                Ok(out) if out.status.success() => return true,
                Ok(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(200)),
                Ok(out) => {
                    eprintln!(
                        "fusermount3 -u {}: {} {}",
                        self.mountpoint.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    return false;
                }
                Err(e) => {
                    eprintln!("fusermount3 cannot run: {e}");
                    return false;
                }
            }
        }
    }

    /// Detaches the mount at once (`umount -l`), as one must after its process died;
    /// returns whether that succeeded.
    pub fn lazy_unmount(&self) -> bool {
        lazy_unmount(&self.mountpoint)
    }

    /// Waits up to `timeout` for the foreground process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(self.child.as_mut()?, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Whether the foreground process is still running.
    pub fn process_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit_status().is_none()
    }

    /// Unmounts with `fusermount3 -u` (retrying while busy for a few seconds), waits up to
    /// `timeout` for a clean exit, and returns the whole log, whose last lines are the
    /// summaries logged at unmount. Panics if any step fails.
    #[allow(dead_code)]
    pub fn unmount_for_log(mut self, timeout: Duration) -> String {
        let mut unmounted = false;
        for _ in 0..20 {
            if self.fusermount_unmount() || !self.is_mounted() {
                unmounted = true;
                break;
            }
            thread::sleep(Duration::from_millis(250));
        }
        assert!(unmounted, "fusermount3 -u {} failed", self.path().display());
        let status = self.wait_exit(timeout);
        let log = self.log();
        assert!(
            status.is_some_and(|s| s.success()),
            "mount-s3 did not exit cleanly after unmount ({status:?}); log:\n{log}"
        );
        log
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Shown by the test runner only when the test fails.
        let log = self.log();
        if !log.trim().is_empty() {
            let title = format!("mount-s3 log ({})", self.mountpoint.display());
            eprintln!("{}", tail_lines(&title, &log, 30));
        }
        if self.is_mounted() {
            unmount(&self.mountpoint);
        }
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                eprintln!("mount-s3 did not exit after unmount; sending SIGTERM");
                terminate(&mut child, Duration::from_secs(5));
            }
        }
        if self.daemon {
            reap_daemons(&self.mountpoint, Duration::from_secs(10));
        }
        if self.is_mounted() {
            eprintln!(
                "{} is still mounted after cleanup; detaching it",
                self.mountpoint.display()
            );
            lazy_unmount(&self.mountpoint);
        }
    }
}

/// The `name=value` numbers of the last log line holding `marker` (the summaries mount-s3
/// logs at unmount: `cache summary:`, `read summary:`), by name. Panics if no line has it.
#[allow(dead_code)]
pub fn summary_fields(log: &str, marker: &str) -> std::collections::BTreeMap<String, u64> {
    let line = log
        .lines()
        .rfind(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in the mount's log:\n{log}"));
    let (_, rest) = line.split_once(marker).expect("marker in line");
    rest.split_whitespace()
        .filter_map(|token| {
            let (name, value) = token.split_once('=')?;
            let value = value.trim_matches(|c: char| !c.is_ascii_digit());
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}
