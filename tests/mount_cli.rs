//! The command line and the process: how the mount shows in the mount table, daemon and
//! foreground modes, signals, and every kind of bad input refused before anything is mounted.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::{MountArgs, S3Server, mount_entry, mount_s3_processes_for, run_mount_s3_raw};

/// How long a refused invocation may run before it is killed and the test fails.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn mount_shows_in_mount_table_with_fstype_and_source() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-mountinfo");
    s3.put(&bucket, "hello.txt", b"hi".to_vec());
    let mount = s3.mount_args(&bucket).mount();
    let entry = mount.entry();
    assert_eq!(entry.fs_type, "fuse.mount-s3", "{entry:?}");
    assert_eq!(entry.source, bucket, "{entry:?}");
    assert!(!entry.is_read_only(), "{entry:?}");
    assert_eq!(fs::read(mount.join("hello.txt")).unwrap(), b"hi");
}

fn signal_unmounts_and_exits_zero(sig: i32, name: &str) {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket(&format!("cli-{name}"));
    s3.put(&bucket, "f.txt", b"before the signal".to_vec());
    let mut mount = s3.mount_args(&bucket).mount();
    assert_eq!(fs::read(mount.join("f.txt")).unwrap(), b"before the signal");
    let path = mount.path().to_path_buf();

    let status = mount
        .signal_and_wait(sig, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("mount-s3 did not exit within 20 s of {name}"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after {name}: {status}; stderr:\n{}",
        mount.stderr()
    );
    assert!(
        mount_entry(&path).is_none(),
        "{} still mounted after {name} and exit",
        path.display()
    );
    // The mount point is an ordinary empty directory again.
    assert!(fs::read_dir(&path).unwrap().next().is_none());
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    signal_unmounts_and_exits_zero(libc::SIGTERM, "sigterm");
}

#[test]
fn sigint_unmounts_and_exits_zero() {
    signal_unmounts_and_exits_zero(libc::SIGINT, "sigint");
}

#[test]
fn sighup_unmounts_and_exits_zero() {
    signal_unmounts_and_exits_zero(libc::SIGHUP, "sighup");
}

/// SIGUSR2 cycles the log verbosity of a running mount (normal → debug → trace → normal):
/// request lines appear once it is at debug, and the mount keeps serving throughout.
#[test]
fn sigusr2_cycles_the_log_verbosity() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-sigusr2");
    s3.put(&bucket, "f.txt", b"still here".to_vec());
    let mut mount = s3.mount_args(&bucket).mount();
    let pid = mount.pid().expect("a foreground mount") as libc::pid_t;
    assert_eq!(fs::read(mount.join("f.txt")).unwrap(), b"still here");
    assert!(!mount.stderr().contains("HEAD ok"), "not at debug yet");
    // SAFETY: a signal to the mount's own process.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mount.stderr().contains("log verbosity is now debug") {
        assert!(std::time::Instant::now() < deadline, "{}", mount.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    s3.put(&bucket, "g.txt", b"seen at debug".to_vec());
    assert_eq!(fs::read(mount.join("g.txt")).unwrap(), b"seen at debug");
    assert!(mount.stderr().contains("HEAD ok"), "{}", mount.stderr());
    for next in ["trace", "normal"] {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGUSR2) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !mount
            .stderr()
            .contains(&format!("log verbosity is now {next}"))
        {
            assert!(std::time::Instant::now() < deadline, "{}", mount.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(mount.process_running());
    assert_eq!(fs::read(mount.join("f.txt")).unwrap(), b"still here");
}

#[test]
fn daemon_mode_returns_once_mounted() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-daemon");
    s3.put(&bucket, "dir/file.txt", b"served by the daemon".to_vec());
    // `mount_daemon` asserts exit 0 and that the mount is in the table when it returns.
    let mount = s3.mount_args(&bucket).mount_daemon();
    let entry = mount.entry();
    assert_eq!(entry.fs_type, "fuse.mount-s3", "{entry:?}");
    assert_eq!(entry.source, bucket);
    assert_eq!(
        fs::read(mount.join("dir/file.txt")).unwrap(),
        b"served by the daemon"
    );
    let daemons = mount_s3_processes_for(mount.path());
    assert!(
        !daemons.is_empty(),
        "no mount-s3 process serves {}",
        mount.path().display()
    );

    // Unmounted from outside, the daemon goes away by itself.
    assert!(mount.fusermount_unmount(), "fusermount3 -u failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mount_s3_processes_for(mount.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "mount-s3 daemon still running 10 s after unmount: {:?}",
            mount_s3_processes_for(mount.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!mount.is_mounted());
}

#[test]
fn version_and_help() {
    let (status, stdout, stderr) = run_mount_s3_raw(&["--version"], Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "--version: {stderr}"
    );
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version output {stdout:?} lacks {}",
        env!("CARGO_PKG_VERSION")
    );
    let (status, stdout, stderr) = run_mount_s3_raw(&["--help"], Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "--help: {stderr}");
    for flag in [
        "--read-only",
        "--prefix",
        "--metadata-ttl",
        "--foreground",
        "--allow-delete",
        "--allow-overwrite",
        "--upload-checksums",
    ] {
        assert!(stdout.contains(flag), "--help does not mention {flag}");
    }
}

// --- bad input ------------------------------------------------------------------------------

/// Runs `args` on `mountpoint` in daemon mode and in foreground mode; both must be refused.
/// Returns the daemon-mode stderr line.
fn assert_refused_both_modes(args: &MountArgs, mountpoint: &Path, what: &str) -> String {
    let line = args
        .run(mountpoint, false, REFUSE_TIMEOUT)
        .assert_refused(&format!("{what} (daemon mode)"));
    args.run(mountpoint, true, REFUSE_TIMEOUT)
        .assert_refused(&format!("{what} (foreground)"));
    line
}

fn empty_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mount-s3-mnt-")
        .tempdir()
        .unwrap()
}

#[test]
fn invalid_bucket_names_are_refused() {
    let s3 = S3Server::shared();
    let dir = empty_dir();
    // Invalid under every S3 naming rule, the legacy ones included.
    let too_long = "a".repeat(300);
    for name in [
        "Not_A_Valid_Bucket!",
        "ab",
        "has/slash",
        "spaces in name",
        too_long.as_str(),
    ] {
        let args = s3.mount_args(name);
        assert_refused_both_modes(&args, dir.path(), &format!("bucket name {name:?}"));
    }
}

#[test]
fn missing_mount_point_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-nomnt");
    let dir = empty_dir();
    let missing = dir.path().join("does-not-exist");
    assert_refused_both_modes(&s3.mount_args(&bucket), &missing, "missing mount point");
    assert!(
        !missing.exists(),
        "mount-s3 created the missing mount point"
    );
}

#[test]
fn mount_point_that_is_a_file_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-filemnt");
    let dir = empty_dir();
    let file = dir.path().join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    assert_refused_both_modes(&s3.mount_args(&bucket), &file, "mount point is a file");
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn mount_point_already_mounted_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-twice");
    s3.put(&bucket, "f.txt", b"first mount".to_vec());
    let first = s3.mount_args(&bucket).mount();
    let other = s3.new_bucket("cli-twice-other");
    let before = first.entry();

    for b in [bucket.as_str(), other.as_str()] {
        let args = s3.mount_args(b);
        args.run(first.path(), false, REFUSE_TIMEOUT)
            .assert_refused(&format!("already a mount point, bucket {b} (daemon mode)"));
        args.run(first.path(), true, REFUSE_TIMEOUT)
            .assert_refused(&format!("already a mount point, bucket {b} (foreground)"));
    }
    // The first mount is untouched.
    assert_eq!(first.entry(), before);
    assert_eq!(fs::read(first.join("f.txt")).unwrap(), b"first mount");
}

#[test]
fn unreachable_endpoint_is_refused_quickly() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-unreachable");
    // A loopback port that was free a moment ago and has nothing listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = empty_dir();
    let args = s3
        .mount_args(&bucket)
        .endpoint(&format!("http://127.0.0.1:{port}"));
    for foreground in [false, true] {
        let outcome = args.run(dir.path(), foreground, REFUSE_TIMEOUT);
        outcome.assert_refused(&format!("unreachable endpoint (foreground={foreground})"));
        assert!(
            outcome.elapsed < Duration::from_secs(20),
            "refusing an unreachable endpoint took {:?}",
            outcome.elapsed
        );
    }
}

#[test]
fn wrong_credentials_are_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-badcreds");
    let dir = empty_dir();
    let wrong_secret = s3
        .mount_args(&bucket)
        .credentials(s3.access_key(), "definitely-not-the-secret");
    assert_refused_both_modes(&wrong_secret, dir.path(), "wrong secret key");
    let unknown_key = s3
        .mount_args(&bucket)
        .credentials("AKIDOESNOTEXIST", s3.secret_key());
    assert_refused_both_modes(&unknown_key, dir.path(), "unknown access key");
}

#[test]
fn missing_bucket_is_refused() {
    let s3 = S3Server::shared();
    let bucket = common::unique_bucket_name("cli-never-created");
    let dir = empty_dir();
    assert_refused_both_modes(&s3.mount_args(&bucket), dir.path(), "bucket does not exist");
}

#[test]
fn unknown_flag_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-unknown-flag");
    let dir = empty_dir();
    let args = s3.mount_args(&bucket).args(["--no-such-flag"]);
    assert_refused_both_modes(&args, dir.path(), "unknown flag");
}

#[test]
fn invalid_option_values_are_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-bad-values");
    let dir = empty_dir();
    let cases: &[&[&str]] = &[
        &["--prefix", "no-trailing-slash"],
        &["--metadata-ttl", "soon"],
        &["--uid", "not-a-number"],
        &["--file-mode", "rwx"],
        &["--upload-checksums", "md5"],
        &["--upload-checksums", ""],
    ];
    for case in cases {
        let args = s3.mount_args(&bucket).args(case.iter().copied());
        assert_refused_both_modes(&args, dir.path(), &format!("options {case:?}"));
    }
}

/// Accepted for Mountpoint compatibility but not implemented yet: refused with a clear error.
/// `--cache` mounts; the cache directory is locked against a second mount.
#[test]
fn cache_flags_mount_and_a_shared_cache_directory_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-cache");
    s3.put(&bucket, "f.txt", b"cached".to_vec());
    let dir = empty_dir();
    let cache = empty_dir();
    let cache_path = cache.path().to_string_lossy().into_owned();
    let cache_args = ["--cache", cache_path.as_str(), "--max-cache-size", "100"];
    let mount = s3.mount_args(&bucket).args(cache_args).mount();
    assert_eq!(std::fs::read(mount.join("f.txt")).unwrap(), b"cached");
    // A second mount may not use the same cache directory while the first holds it.
    let line = assert_refused_both_modes(
        &s3.mount_args(&bucket).args(cache_args),
        dir.path(),
        "second mount on the same --cache",
    );
    assert!(line.contains("in use"), "{line}");
    drop(mount);
    // --max-cache-size means nothing without --cache.
    assert_refused_both_modes(
        &s3.mount_args(&bucket).args(["--max-cache-size", "100"]),
        dir.path(),
        "--max-cache-size without --cache",
    );
}

/// The flags that allow changes mount, alone and together, in both modes.
#[test]
fn write_permission_flags_are_accepted() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-write-flags");
    s3.put(&bucket, "f.txt", b"flags".to_vec());
    let cases: &[&[&str]] = &[
        &["--allow-delete"],
        &["--allow-overwrite"],
        &["--allow-delete", "--allow-overwrite"],
        &["--upload-checksums", "crc32c"],
        &["--upload-checksums", "off"],
    ];
    for case in cases {
        let mount = s3.mount_args(&bucket).args(case.iter().copied()).mount();
        assert!(
            !mount.entry().is_read_only(),
            "{case:?}: {:?}",
            mount.entry()
        );
        assert_eq!(fs::read(mount.join("f.txt")).unwrap(), b"flags", "{case:?}");
    }
    let daemon = s3
        .mount_args(&bucket)
        .args(["--allow-delete", "--allow-overwrite"])
        .mount_daemon();
    assert_eq!(fs::read(daemon.join("f.txt")).unwrap(), b"flags");
}

/// `--noexec` (fstab's `noexec`) is applied to the mount, like nosuid and nodev always are.
#[test]
fn noexec_is_a_mount_flag() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-noexec");
    let mount = s3.mount_args(&bucket).args(["--noexec"]).mount();
    let options = mount.entry().options;
    for flag in ["noexec", "nosuid", "nodev"] {
        assert!(options.split(',').any(|o| o == flag), "{flag} in {options}");
    }
    drop(mount);
    let mount = s3.mount_args(&bucket).mount();
    let options = mount.entry().options;
    assert!(!options.split(',').any(|o| o == "noexec"), "{options}");
}
