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
        mount.log()
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
    assert!(!mount.log().contains("HEAD ok"), "not at debug yet");
    // SAFETY: a signal to the mount's own process.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mount.log().contains("log verbosity is now debug") {
        assert!(std::time::Instant::now() < deadline, "{}", mount.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    s3.put(&bucket, "g.txt", b"seen at debug".to_vec());
    assert_eq!(fs::read(mount.join("g.txt")).unwrap(), b"seen at debug");
    assert!(mount.log().contains("HEAD ok"), "{}", mount.log());
    for next in ["trace", "normal"] {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGUSR2) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !mount
            .log()
            .contains(&format!("log verbosity is now {next}"))
        {
            assert!(std::time::Instant::now() < deadline, "{}", mount.log());
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

/// Mountpoint's flags that change requests, seen from the server's side of the tests' proxy:
/// every request carries requester pays, the expected owner and the User-Agent prefix; the
/// requests that make objects (PUT, CreateMultipartUpload, CopyObject) carry the storage
/// class and a Content-Type from the extension; parts carry neither. (`--sse` is checked on
/// the SDK's own requests in `s3::sdk::headers`: SeaweedFS answers 500 to SSE-S3.)
#[test]
fn mountpoint_request_flags_reach_the_server() {
    use common::{FaultPlan, FaultProxy, RecordedRequest, pseudo_random_bytes};
    use std::io::Write;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-request-flags");
    s3.put(&bucket, "seen.bin", b"seen".to_vec());
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    proxy.record_requests();
    let mount = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .args([
            "--storage-class",
            "STANDARD",
            "--requester-pays",
            "--expected-bucket-owner",
            "111122223333",
            "--user-agent-prefix",
            "flags-test/1",
            "--infer-content-type",
            "--allow-delete",
        ])
        .mount();
    let small = b"{\"a\": 1}".to_vec();
    let large = pseudo_random_bytes(11, 12 * 1024 * 1024);
    for (name, data) in [("small.json", &small), ("large.html", &large)] {
        let mut f = fs::File::create(mount.join(name)).unwrap();
        f.write_all(data).unwrap();
        f.sync_all()
            .unwrap_or_else(|e| panic!("commit {name}: {e}; log:\n{}", mount.log()));
    }
    assert_eq!(fs::read(mount.join("seen.bin")).unwrap(), b"seen");
    fs::rename(mount.join("small.json"), mount.join("moved.json")).unwrap();
    drop(mount);
    assert_eq!(s3.get(&bucket, "moved.json"), small);
    assert_eq!(s3.get(&bucket, "large.html"), large);

    let requests = proxy.recorded();
    assert!(requests.len() >= 6, "{requests:?}");
    for r in &requests {
        assert_eq!(
            r.header("x-amz-request-payer"),
            Some("requester"),
            "{}",
            r.line
        );
        assert_eq!(
            r.header("x-amz-expected-bucket-owner"),
            Some("111122223333"),
            "{}",
            r.line
        );
        let agent = r.header("user-agent").unwrap_or_default();
        assert!(agent.starts_with("flags-test/1 "), "{}: {agent}", r.line);
    }
    let find = |what: &str, pick: &dyn Fn(&RecordedRequest) -> bool| {
        requests
            .iter()
            .find(|r| pick(r))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} among {requests:#?}"))
    };
    let put = find("PUT of small.json", &|r| {
        r.line.starts_with("PUT ")
            && r.line.contains("/small.json")
            && !r.line.contains("partNumber")
    });
    let create = find("CreateMultipartUpload of large.html", &|r| {
        r.line.starts_with("POST ") && r.line.contains("/large.html?uploads")
    });
    let part = find("UploadPart of large.html", &|r| {
        r.line.starts_with("PUT ") && r.line.contains("partNumber=")
    });
    let copy = find("CopyObject to moved.json", &|r| {
        r.line.starts_with("PUT ") && r.header("x-amz-copy-source").is_some()
    });
    for (r, content_type) in [
        (&put, Some("application/json")),
        (&create, Some("text/html")),
        (&copy, None),
    ] {
        assert_eq!(
            r.header("x-amz-storage-class"),
            Some("STANDARD"),
            "{}",
            r.line
        );
        if content_type.is_some() {
            assert_eq!(r.header("content-type"), content_type, "{}", r.line);
        }
    }
    assert_eq!(part.header("x-amz-storage-class"), None, "{}", part.line);
}

/// Mountpoint's success line, and its short flags.
#[test]
fn a_mount_says_where_it_is_like_mountpoint() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-mounted-line");
    let logs = tempfile::tempdir().unwrap();
    let mount = s3
        .mount_args(&bucket)
        .args(["-d", "-l", logs.path().to_str().unwrap()])
        .mount_daemon();
    let stdout = mount.stdout();
    assert_eq!(
        stdout.trim_end(),
        format!("bucket {bucket} is mounted at {}", mount.path().display())
    );
    drop(mount);
    let logged: usize = fs::read_dir(logs.path()).unwrap().flatten().count();
    assert_eq!(logged, 1, "-l names the log directory");
}

/// Mountpoint's own fstab form, `mount-s3 BUCKET DIRECTORY -o OPTIONS`, mounts for real (in
/// the background, as Mountpoint does in that form), with its escaping; a bad list is refused.
#[test]
fn mountpoints_dash_o_form_mounts() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cli-dash-o");
    s3.put(&bucket, "a,b/x.txt", b"comma".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let options = format!(
        "_netdev,nofail,ro,endpoint-url={},force-path-style,prefix=a\\,b/,x-systemd.automount",
        s3.endpoint()
    );
    let status = common::isolated_command(work.path())
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_REGION", s3.region())
        .arg(&bucket)
        .arg(dir.path())
        .args(["-o", &options])
        .status()
        .unwrap();
    let path = fs::canonicalize(dir.path()).unwrap();
    let entry = mount_entry(&path);
    let read = fs::read(path.join("x.txt"));
    common::unmount(&path);
    common::reap_daemons(&path, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let entry = entry.expect("mounted");
    assert!(entry.is_read_only(), "ro: {entry:?}");
    assert_eq!(
        read.unwrap(),
        b"comma",
        "the escaped comma reached --prefix"
    );

    let (status, _, stderr) = run_mount_s3_raw(&[&bucket, "/tmp", "-o", "ro,rw"], REFUSE_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("'ro' and 'rw'"), "{stderr}");
}
