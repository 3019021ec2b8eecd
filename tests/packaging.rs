//! Packaging and deployment: the man page against `--help` and shell completions here; the
//! fstab helper through the real mount(8) (`packaging/fstab.rs`); the container entrypoint
//! and the Kubernetes manifests (`packaging/containers.rs`); the container image built and run
//! as a sidecar by podman (`packaging/container_image.rs`); the systemd unit and the Debian
//! package, built only with `MOUNT_S3_TEST_DEB` set (`packaging/system_units.rs`).
//!
//! The fstab tests need `/sbin/mount.mount-s3`: util-linux's mount(8) looks for helpers only
//! in /sbin, /sbin/fs.d and /sbin/fs, never on PATH, so they link it to the binary under test
//! for as long as they run (`fstab::HelperLink`).

mod common;
#[path = "packaging/container_image.rs"]
mod container_image;
#[path = "packaging/containers.rs"]
mod containers;
#[path = "packaging/fstab.rs"]
mod fstab;
#[path = "packaging/system_units.rs"]
mod system_units;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{S3Server, mount_entry, mount_s3_processes_for, run_mount_s3_raw, unmount};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn repo(rel: &str) -> PathBuf {
    Path::new(REPO).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Runs `cmd` to completion with output in files (a daemon it starts must not hold a pipe),
/// killing it after `timeout`. Returns `(status, stdout, stderr)`.
fn run(cmd: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let status = wait_timeout(&mut child, timeout)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {timeout:?}"));
    let text = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    (status, text(&out), text(&err))
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `done` every 50 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The machine's AWS settings shut out and the test server's credentials put in, for a
/// command that runs mount-s3 (directly or through mount(8)); `work` holds empty AWS files.
fn with_server_credentials<'a>(
    cmd: &'a mut Command,
    s3: &S3Server,
    work: &Path,
) -> &'a mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let (config, creds) = (work.join("aws-config"), work.join("aws-credentials"));
    fs::write(&config, "").unwrap();
    fs::write(&creds, "").unwrap();
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", creds)
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_REGION", s3.region())
}

/// Unmounts `path` if mounted and waits for the mount-s3 processes serving it to go (killing
/// them after 10 s). Returns whether they went by themselves.
fn unmount_and_reap(path: &Path) -> bool {
    unmount(path);
    let gone = wait_until(Duration::from_secs(10), || {
        mount_s3_processes_for(path).is_empty()
    });
    for pid in mount_s3_processes_for(path) {
        // SAFETY: kill(2) by PID on a process just identified by its exe and arguments.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    gone
}

/// A fresh mount point (canonical path) and a work directory; the mount point is unmounted
/// when dropped, before its directory goes.
struct Dirs {
    mnt: PathBuf,
    work: tempfile::TempDir,
    _mnt_dir: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let mnt_dir = tempfile::Builder::new()
            .prefix("mount-s3-pkg-mnt-")
            .tempdir()
            .unwrap();
        Dirs {
            mnt: fs::canonicalize(mnt_dir.path()).unwrap(),
            work: tempfile::tempdir().unwrap(),
            _mnt_dir: mnt_dir,
        }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if mount_entry(&self.mnt).is_some() {
            unmount_and_reap(&self.mnt);
        }
    }
}

// --- man page and completions ---------------------------------------------------------------

/// The long flags `--help` lists (the first `--name` of each option line).
fn help_flags() -> Vec<String> {
    let (status, stdout, stderr) = run_mount_s3_raw(&["--help"], RUN_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "--help: {stderr}");
    let mut flags: Vec<String> = stdout
        .lines()
        .filter(|l| {
            let indent = l.len() - l.trim_start().len();
            indent <= 6 && l.trim_start().starts_with('-')
        })
        .filter_map(|l| first_long_flag(l, "--"))
        .collect();
    flags.sort();
    flags
}

/// The first `--name` in `line`, with `dashes` as the line spells `--`.
fn first_long_flag(line: &str, dashes: &str) -> Option<String> {
    let start = line.find(dashes)? + dashes.len();
    let name: String = line[start..]
        .replace(r"\-", "-")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!name.is_empty()).then(|| format!("--{name}"))
}

/// The long flags the man page documents: the tag line of each `.TP` entry under OPTIONS.
fn man_flags(man: &str) -> Vec<String> {
    let section = man
        .split("\n.SH ")
        .find(|s| s.starts_with("OPTIONS"))
        .expect("the man page has an OPTIONS section");
    let lines: Vec<&str> = section.lines().collect();
    let mut flags: Vec<String> = lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| first_long_flag(w[1], r"\-\-"))
        .collect();
    flags.sort();
    flags
}

#[test]
fn man_page_documents_exactly_the_flags_of_help() {
    let help = help_flags();
    let man = man_flags(&read("man/mount-s3.8"));
    assert!(
        help.len() > 20,
        "too few flags parsed from --help: {help:?}"
    );
    let missing: Vec<_> = help.iter().filter(|f| !man.contains(f)).collect();
    let extra: Vec<_> = man.iter().filter(|f| !help.contains(f)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "man/mount-s3.8 and --help disagree: missing from the man page {missing:?}, \
         in the man page but not in --help {extra:?}"
    );
    let mut unique = man.clone();
    unique.dedup();
    assert_eq!(unique, man, "a flag is documented twice");
    let version = format!(r#""mount\-s3 {}""#, env!("CARGO_PKG_VERSION"));
    let title = read("man/mount-s3.8");
    let title = title.lines().find(|l| l.starts_with(".TH")).unwrap();
    assert!(title.contains(&version), "{title} must name {version}");
}

#[test]
fn man_page_renders_without_warnings() {
    let mut cmd = Command::new("man");
    cmd.args(["--warnings", "-l"])
        .arg(repo("man/mount-s3.8"))
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env_remove("PAGER");
    let (status, stdout, stderr) = match cmd.stdin(Stdio::null()).output() {
        Ok(out) => (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => {
            panic!("cannot run man ({e}): run scripts/setup-test-env.sh (man-db, groff-base)")
        }
    };
    assert!(status.success(), "man failed ({status}): {stderr}");
    assert_eq!(stderr, "", "man --warnings printed warnings");
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXAMPLES",
        "EXIT STATUS",
    ] {
        assert!(stdout.contains(&format!("\n{heading}\n")), "no {heading}");
    }
    for heading in ["ENVIRONMENT", "FILES", "SEE ALSO", "FSTAB AND MOUNT(8)"] {
        assert!(stdout.contains(&format!("\n{heading}\n")), "no {heading}");
    }
    assert!(stdout.contains("--allow-delete") && stdout.contains("AWS_ACCESS_KEY_ID"));
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (status, stdout, stderr) = run_mount_s3_raw(&["completions", shell], RUN_TIMEOUT);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{shell}: {stderr}");
        // fish and elvish spell flags without their dashes.
        assert!(stdout.contains("allow-delete"), "{shell}: {stdout}");
        assert!(stdout.contains("metadata-ttl"), "{shell}");
        if shell == "bash" {
            assert!(stdout.contains("--allow-delete") && stdout.contains("complete -F"));
        }
    }
    let (status, stdout, stderr) = run_mount_s3_raw(&["completions", "tcsh"], RUN_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("tcsh"), "{stderr}");
}
