//! Behaviours a script written for Mountpoint relies on, checked against the real thing they
//! touch: the system log's socket, the kernel's auto-unmount on a killed process, a FUSE
//! descriptor passed by a parent (as the CSI driver does), and mount(8) reading an fstab.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Fault, FaultPlan, FaultProxy, S3Server, mount_entry, mount_s3_processes_for};

/// The system log's socket, bound by the test for as long as it lives, removed on drop.
struct FakeSyslog {
    socket: UnixDatagram,
    path: &'static Path,
}

impl FakeSyslog {
    /// Binds `/dev/log`, or says why it cannot (a real syslog daemon owns it, or no root).
    fn bind() -> Result<Self, String> {
        let path = Path::new("/dev/log");
        if path.symlink_metadata().is_ok() {
            return Err("/dev/log exists (a system logger runs here)".into());
        }
        let socket = UnixDatagram::bind(path).map_err(|e| format!("cannot bind /dev/log: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        Ok(Self { socket, path })
    }

    /// Messages received until `done` says the set is complete or `within` has passed.
    fn collect(&self, within: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < deadline && !done(&got) {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }
}

impl Drop for FakeSyslog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path);
    }
}

/// In the background without `--log-directory`, the log goes to syslog as Mountpoint's does:
/// facility user, ident `mount-s3[PID]`, and the level as severity (info 6, warning 4).
#[test]
fn background_logs_reach_syslog_with_mountpoints_facility_and_severity() {
    let syslog = match FakeSyslog::bind() {
        Ok(syslog) => syslog,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-syslog");
    // A variable we warn about gives a warning-level line.
    let mount = s3
        .mount_args(&bucket)
        .env("UNSTABLE_MOUNTPOINT_COMPAT_PROBE", "1")
        .mount_daemon();
    let has = |got: &[String], needle: &str| got.iter().any(|m| m.contains(needle));
    let got = syslog.collect(Duration::from_secs(10), |got| {
        has(got, "UNSTABLE_MOUNTPOINT_COMPAT_PROBE") && has(got, &bucket)
    });
    drop(mount);
    let ours: Vec<&String> = got.iter().filter(|m| m.contains("mount-s3[")).collect();
    let warning = ours
        .iter()
        .find(|m| m.contains("UNSTABLE_MOUNTPOINT_COMPAT_PROBE"))
        .unwrap_or_else(|| panic!("no warning reached syslog: {got:#?}"));
    assert!(
        warning.starts_with("<12>"),
        "user.warning is <12>: {warning}"
    );
    let mounted = ours
        .iter()
        .find(|m| m.contains(&bucket) && m.contains("mounted"))
        .unwrap_or_else(|| panic!("no 'mounted' line reached syslog: {got:#?}"));
    assert!(mounted.starts_with("<14>"), "user.info is <14>: {mounted}");
}

/// Waits up to `within` for `done`; returns whether it came true.
fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// `--auto-unmount` without `--allow-other` (Mountpoint allows it; fusermount3 does not): a
/// mount whose process is killed is unmounted by the watchdog, and an orderly exit leaves no
/// watchdog behind.
#[test]
fn auto_unmount_without_allow_other_unmounts_a_killed_mount() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-auto-unmount");
    s3.put(&bucket, "f.txt", b"served".to_vec());

    let mut orderly = s3.mount_args(&bucket).args(["--auto-unmount"]).mount();
    assert_eq!(std::fs::read(orderly.join("f.txt")).unwrap(), b"served");
    let path = orderly.path().to_path_buf();
    let status = orderly.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        orderly.log()
    );
    assert!(
        eventually(Duration::from_secs(5), || mount_s3_processes_for(&path)
            .is_empty()),
        "a watchdog outlived the orderly exit: {:?}",
        mount_s3_processes_for(&path)
    );
    drop(orderly);

    let mut killed = s3.mount_args(&bucket).args(["--auto-unmount"]).mount();
    assert_eq!(std::fs::read(killed.join("f.txt")).unwrap(), b"served");
    let path = killed.path().to_path_buf();
    assert!(
        killed
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
            .is_some()
    );
    assert!(
        eventually(Duration::from_secs(10), || mount_entry(&path).is_none()),
        "{} is still mounted 10 s after mount-s3 was killed",
        path.display()
    );
    // An ordinary, empty directory again (not "transport endpoint is not connected").
    assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
    assert!(eventually(Duration::from_secs(5), || {
        mount_s3_processes_for(&path).is_empty()
    }));
}

/// A FUSE descriptor mounted by the parent and passed as `/dev/fd/N` (the CSI driver's way):
/// mount-s3 serves it, and the parent's unmount ends mount-s3 cleanly.
#[test]
fn a_passed_fuse_descriptor_is_served_and_left_to_the_parent() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: mounting a /dev/fuse descriptor with mount(2) needs root");
        return;
    }
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-passed-fd");
    s3.put(&bucket, "dir/f.txt", b"through the parent's mount".to_vec());
    let mut mount = s3
        .mount_args(&bucket)
        .mount_passed_fd()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read(mount.join("dir/f.txt")).unwrap(),
        b"through the parent's mount"
    );
    std::fs::write(mount.join("new.txt"), b"written").unwrap();
    assert_eq!(s3.get(&bucket, "new.txt"), b"written");
    // The parent unmounts; mount-s3 sees its session end and exits 0.
    assert!(mount.fusermount_unmount() || mount.lazy_unmount());
    let status = mount.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        mount.log()
    );
}

/// Options of the mount itself cannot apply to a descriptor someone else mounted, and a
/// descriptor that is not /dev/fuse is no mount point: each refused with one line.
#[test]
fn bad_passed_descriptors_and_their_mount_options_are_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-passed-fd-refused");
    let args = s3.mount_args(&bucket);
    let timeout = Duration::from_secs(60);
    let line = args
        .clone()
        .args(["--read-only"])
        .run(Path::new("/dev/fd/3"), true, timeout)
        .assert_refused("--read-only with /dev/fd/3");
    assert!(line.contains("--read-only"), "{line}");
    // The harness gives mount-s3 /dev/null as stdin.
    let line = args
        .run(Path::new("/dev/fd/0"), true, timeout)
        .assert_refused("/dev/fd/0 (not /dev/fuse)");
    assert!(line.contains("/dev/fuse"), "{line}");
}

/// `--auto-unmount` when the session ends without an unmount (its connection aborted through
/// fusectl, as an administrator would a hung mount): the process exits and leaves no dead
/// mount ("transport endpoint is not connected") behind.
#[test]
fn auto_unmount_cleans_up_after_an_aborted_connection() {
    use std::os::unix::fs::MetadataExt;
    let connections = Path::new("/sys/fs/fuse/connections");
    let fusectl = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if !fusectl
        .lines()
        .any(|l| l.contains(" /sys/fs/fuse/connections fusectl "))
    {
        eprintln!("skipped: fusectl is not mounted at /sys/fs/fuse/connections");
        return;
    }
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-auto-unmount-abort");
    let mut mount = s3.mount_args(&bucket).args(["--auto-unmount"]).mount();
    let path = mount.path().to_path_buf();
    let minor = libc::minor(std::fs::metadata(&path).unwrap().dev());
    std::fs::write(connections.join(minor.to_string()).join("abort"), "1").unwrap();
    let status = mount.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "mount-s3 did not exit after the abort: {}",
        mount.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || mount_entry(&path).is_none()),
        "{} is still mounted after the aborted session ended: {}",
        path.display(),
        mount.log()
    );
}

/// `--metadata-ttl minimal` (the default without a cache) as Mountpoint's: no negative
/// entries (an object created elsewhere is there at the next look) and an open asks S3 again
/// (a re-open sees a replaced object, whole, at its new size).
#[test]
fn minimal_metadata_ttl_sees_changes_made_elsewhere_at_once() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-minimal-ttl");
    s3.put(&bucket, "f.txt", b"first version".to_vec());
    for ttl in [None, Some("minimal"), Some("0")] {
        let mut args = s3.mount_args(&bucket);
        if let Some(ttl) = ttl {
            args = args.args(["--metadata-ttl", ttl]);
        }
        let mount = args.mount();
        let late = format!("late-{}.txt", ttl.unwrap_or("default"));
        assert!(std::fs::metadata(mount.join(&late)).is_err());
        s3.put(&bucket, &late, b"made elsewhere".to_vec());
        assert_eq!(
            std::fs::read(mount.join(&late)).ok().as_deref(),
            Some(&b"made elsewhere"[..]),
            "{ttl:?}: a missing name is not remembered"
        );
        s3.put(&bucket, "f.txt", b"first version".to_vec());
        assert_eq!(
            std::fs::read(mount.join("f.txt")).unwrap(),
            b"first version"
        );
        s3.put(&bucket, "f.txt", b"the second, longer version".to_vec());
        // Past the lookup's own window (0.1 s), well within the 1 s stat TTL.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            std::fs::read(mount.join("f.txt")).unwrap(),
            b"the second, longer version",
            "{ttl:?}: a re-open sees the replaced object"
        );
    }
}

/// A bucket in another region than the one the client inferred: S3 answers 301 with
/// `x-amz-bucket-region`, and, as Mountpoint, the mount follows it there and works; a region
/// the user gave is not second-guessed: refused with one line naming the bucket's region.
#[test]
fn a_wrong_inferred_region_is_followed_and_a_given_one_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-region");
    s3.put(&bucket, "f.txt", b"from the right region".to_vec());
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    proxy.bucket_in_region("eu-test-7");
    proxy.record_requests();
    let mount = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .without_env("AWS_REGION")
        .mount();
    assert_eq!(
        std::fs::read(mount.join("f.txt")).unwrap(),
        b"from the right region"
    );
    let log = mount.log();
    assert!(log.contains("is in region eu-test-7"), "{log}");
    let regions: Vec<Option<String>> = proxy
        .recorded()
        .iter()
        .map(|r| r.signed_region().map(str::to_string))
        .collect();
    assert_ne!(
        regions.first(),
        Some(&Some("eu-test-7".to_string())),
        "{regions:?}"
    );
    assert_eq!(
        regions.last(),
        Some(&Some("eu-test-7".to_string())),
        "{regions:?}"
    );
    drop(mount);

    let dir = tempfile::tempdir().unwrap();
    let line = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .args(["--region", "us-east-1"])
        .run(dir.path(), true, Duration::from_secs(60))
        .assert_refused("--region naming the wrong region");
    assert!(line.contains("eu-test-7"), "{line}");
}

/// `--upload-checksums crc32c|crc64nvme`: every PUT and part carries the checksum in that
/// algorithm (as a header or an aws-chunked trailer), CreateMultipartUpload names it, and
/// the objects land whole.
#[test]
fn upload_checksums_name_their_algorithm_on_every_upload_request() {
    use std::io::Write;
    let s3 = S3Server::shared();
    for algorithm in ["crc32c", "crc64nvme"] {
        let bucket = s3.new_bucket(&format!("compat-checksum-{algorithm}"));
        let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
        proxy.record_requests();
        let mount = s3
            .mount_args(&bucket)
            .endpoint(&proxy.url())
            .args(["--upload-checksums", algorithm])
            .mount();
        let small = b"small and whole".to_vec();
        let large = common::pseudo_random_bytes(21, 8 * 1024 * 1024 + 4321);
        for (name, data) in [("small.bin", &small), ("large.bin", &large)] {
            let mut f = std::fs::File::create(mount.join(name)).unwrap();
            f.write_all(data).unwrap();
            f.sync_all().unwrap_or_else(|e| {
                panic!("{algorithm}: commit {name}: {e}; log:\n{}", mount.log())
            });
        }
        drop(mount);
        assert_eq!(s3.get(&bucket, "small.bin"), small, "{algorithm}");
        assert_eq!(s3.get(&bucket, "large.bin"), large, "{algorithm}");
        let header = format!("x-amz-checksum-{algorithm}");
        let carries = |r: &common::RecordedRequest| {
            r.header(&header).is_some()
                || r.header("x-amz-trailer")
                    .is_some_and(|t| t.contains(&header))
        };
        let requests = proxy.recorded();
        let uploads: Vec<_> = requests
            .iter()
            .filter(|r| r.line.starts_with("PUT ") && !r.line.contains("x-id=CopyObject"))
            .collect();
        assert!(uploads.len() >= 3, "a PUT and two parts: {requests:#?}");
        for r in uploads {
            assert!(carries(r), "{algorithm}: {} has no {header}: {r:?}", r.line);
        }
        let create = requests
            .iter()
            .find(|r| r.line.starts_with("POST ") && r.line.contains("uploads"))
            .unwrap_or_else(|| panic!("no CreateMultipartUpload: {requests:#?}"));
        assert_eq!(
            create
                .header("x-amz-checksum-algorithm")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some(algorithm),
            "{create:?}"
        );
    }
}

/// `UNSTABLE_MOUNTPOINT_PID_FILE`, as Mountpoint: the serving process's pid is written there
/// (in daemon mode, the background process's), for attaching tools.
#[test]
fn the_pid_file_names_the_serving_process() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-pid-file");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("mount-s3.pid");
    let mount = s3
        .mount_args(&bucket)
        .env("UNSTABLE_MOUNTPOINT_PID_FILE", pid_file.to_str().unwrap())
        .mount_daemon();
    let written = std::fs::read_to_string(&pid_file).expect("the pid file");
    let pid: libc::pid_t = written
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{written:?}: {e}"));
    let serving = mount_s3_processes_for(mount.path());
    assert!(serving.contains(&pid), "pid {pid} is not among {serving:?}");
}

/// `--bind`: connections are bound to the interface given. Bound to `lo`, the mount reaches
/// the loopback server; bound to another interface it cannot (so the binding is real); an
/// interface that does not exist is refused by name.
#[test]
fn bind_ties_the_connections_to_the_interface() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: SO_BINDTODEVICE needs root here");
        return;
    }
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-bind");
    s3.put(&bucket, "f.txt", b"over lo".to_vec());
    let mount = s3.mount_args(&bucket).args(["--bind", "lo"]).mount();
    assert_eq!(std::fs::read(mount.join("f.txt")).unwrap(), b"over lo");
    drop(mount);

    let timeout = Duration::from_secs(120);
    let dir = tempfile::tempdir().unwrap();
    let line = s3
        .mount_args(&bucket)
        .args(["--bind", "nosuchif9"])
        .run(dir.path(), true, timeout)
        .assert_refused("--bind of a missing interface");
    assert!(line.contains("nosuchif9"), "{line}");
    let other = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name != "lo");
    if let Some(other) = other {
        s3.mount_args(&bucket)
            .args(["--bind", other.as_str()])
            .run(dir.path(), true, timeout)
            .assert_refused(&format!("--bind {other}: no route to the loopback server"));
    }
}

/// `--maximum-throughput-gbps` caps the object GETs in flight (one per 0.72 Gbps, at least
/// 2). Four readers at once, every request held 100 ms at the proxy so that their GETs
/// overlap: at 1 Gbps the proxy never sees more than 2 waiting; without the flag (and no
/// instance type to derive one from) the same readers have more.
#[test]
fn maximum_throughput_caps_gets_in_flight() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("mp-throughput");
    let files: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|i| {
            let data = common::pseudo_random_bytes(40 + i, 12 << 20);
            (format!("f{i}.bin"), data)
        })
        .collect();
    s3.put_many(&bucket, files.clone(), 4);
    let most_waiting = |extra: &[&str]| {
        let slow = FaultPlan {
            probability: 1.0,
            kinds: vec![Fault::Stall(100)],
            seed: 3,
        };
        let proxy = FaultProxy::start(s3.endpoint(), slow);
        let mount = s3
            .mount_args(&bucket)
            .endpoint(&proxy.url())
            .args(extra)
            .mount();
        std::thread::scope(|scope| {
            for (name, data) in &files {
                let path = mount.join(name);
                scope.spawn(move || {
                    let got = std::fs::read(&path).unwrap();
                    assert!(got == *data, "{name}: wrong bytes");
                });
            }
        });
        (proxy.stats().most_ranged_gets_waiting, mount.log())
    };
    let (capped, log) = most_waiting(&["--maximum-throughput-gbps", "1"]);
    assert!(
        (1..=2).contains(&capped),
        "at 1 Gbps at most 2 GETs in flight, the proxy saw {capped} waiting at once"
    );
    assert!(log.contains("gets_in_flight=2"), "{log}");
    let (free, log) = most_waiting(&[]);
    assert!(
        free > 2,
        "without a target four readers have more than 2 GETs at once, saw {free}"
    );
    assert!(!log.contains("gets_in_flight"), "{log}");
}

/// An instance metadata service that knows one thing: this is a `p4d.24xlarge` (IMDSv2: a
/// token first, then the instance type with it). Serves until the test ends.
fn fake_instance_metadata() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                lines.push(line.to_ascii_lowercase());
            }
            let first = lines.first().cloned().unwrap_or_default();
            let has_token = lines
                .iter()
                .any(|l| l.starts_with("x-aws-ec2-metadata-token: t0k3n"));
            let (status, extra, body) = if first.starts_with("put /latest/api/token") {
                (
                    "200 OK",
                    "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
                    "t0k3n",
                )
            } else if first.starts_with("get /latest/meta-data/instance-type") && has_token {
                ("200 OK", "", "p4d.24xlarge")
            } else {
                ("401 Unauthorized", "", "")
            };
            let response = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

/// Without `--maximum-throughput-gbps`, the cap comes from the instance type's published
/// bandwidth, as Mountpoint's default does: a p4d.24xlarge (400 Gbps) gets 556 GETs. The
/// metadata service's session token is never logged, even with `--debug`.
#[test]
fn throughput_target_defaults_from_the_instance_type() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("mp-instance");
    s3.put(&bucket, "f.txt", b"on a p4d".to_vec());
    let mount = s3
        .mount_args(&bucket)
        .env("AWS_EC2_METADATA_DISABLED", "false")
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &fake_instance_metadata(),
        )
        .args(["--debug"])
        .mount();
    assert_eq!(std::fs::read(mount.join("f.txt")).unwrap(), b"on a p4d");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mount.log().contains("gets_in_flight=556") {
        assert!(
            Instant::now() < deadline,
            "no cap from the instance type: {}",
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = mount.log();
    assert!(log.contains("instance_type=p4d.24xlarge"), "{log}");
    assert!(!log.contains("t0k3n"), "the IMDS token in the log: {log}");
}

/// `--auto-unmount` as a user other than root: the watchdog has no umount2 then and unmounts
/// through `fusermount3 -u -z` (the mount itself went through fusermount3 too). Run as
/// `nobody` by `setpriv`; skipped where the test is not root (it cannot switch users).
#[test]
fn auto_unmount_as_a_user_goes_through_fusermount3() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 || !common::command_works("setpriv", &["--version"]) {
        eprintln!("skipped: switching to another user needs root and setpriv");
        return;
    }
    const NOBODY: u32 = 65534;
    // fusermount3 opens /dev/fuse as the user: Debian's udev makes it 0666, some containers
    // 0600. Opened up for the test (as on Debian), the old mode put back after it.
    struct DeviceMode(u32);
    impl Drop for DeviceMode {
        fn drop(&mut self) {
            let mode = std::fs::Permissions::from_mode(self.0);
            let _ = std::fs::set_permissions("/dev/fuse", mode);
        }
    }
    let old_mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
    let _restore = DeviceMode(old_mode);
    std::fs::set_permissions(
        "/dev/fuse",
        std::fs::Permissions::from_mode(old_mode | 0o666),
    )
    .unwrap();
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-auto-unmount-user");
    s3.put(&bucket, "f.txt", b"served to nobody".to_vec());
    // A mount point the user owns, under a directory every user can cross.
    let base = tempfile::Builder::new()
        .prefix("mount-s3-user-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = base.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let uid = format!("--reuid={NOBODY}");
    let gid = format!("--regid={NOBODY}");
    let mut mount = s3
        .mount_args(&bucket)
        .wrapped(["setpriv", uid.as_str(), gid.as_str(), "--clear-groups"])
        .args(["--auto-unmount"])
        .mount_at(&dir)
        .unwrap_or_else(|e| panic!("{e}"));
    // The user's mount: fusermount3 records the user in the mount options.
    let entry = mount_entry(mount.path()).expect("mounted");
    assert!(
        entry.super_options.contains(&format!("user_id={NOBODY}")),
        "not mounted as nobody: {entry:?}"
    );
    // Root reads it too (the kernel lets the mounting user only, unless allow_root; root is
    // refused without it): read as the user instead.
    let read = std::process::Command::new("setpriv")
        .args([uid.as_str(), gid.as_str(), "--clear-groups", "cat"])
        .arg(mount.join("f.txt"))
        .output()
        .unwrap();
    assert_eq!(read.stdout, b"served to nobody", "{read:?}");
    let path = mount.path().to_path_buf();
    assert!(
        mount
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
            .is_some()
    );
    assert!(
        eventually(Duration::from_secs(10), || mount_entry(&path).is_none()),
        "{} is still mounted 10 s after nobody's mount-s3 was killed: {}",
        path.display(),
        mount.log()
    );
    assert!(eventually(Duration::from_secs(5), || {
        mount_s3_processes_for(&path).is_empty()
    }));
}

/// Mountpoint's unstable tuning variables for what we tune too: the FUSE background queue
/// reaches the kernel (read back from fusectl), the prefetch window cap is taken, an
/// unreadable queue size is refused in one line, and a variable we do not read is named in
/// the log.
#[test]
fn unstable_tuning_variables_are_read_or_named() {
    use std::os::unix::fs::MetadataExt;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("compat-unstable");
    s3.put(&bucket, "f.bin", common::pseudo_random_bytes(9, 3 << 20));
    let mount = s3
        .mount_args(&bucket)
        .env("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND", "100")
        .env("UNSTABLE_MOUNTPOINT_CONGESTION_THRESHOLD", "90")
        .env("UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE", "16777216")
        .env("UNSTABLE_MOUNTPOINT_CACHE_KEY", "ours")
        .mount();
    assert_eq!(
        std::fs::read(mount.join("f.bin")).unwrap(),
        common::pseudo_random_bytes(9, 3 << 20)
    );
    let connection = Path::new("/sys/fs/fuse/connections")
        .join(libc::minor(std::fs::metadata(mount.path()).unwrap().dev()).to_string());
    if connection.exists() {
        let read = |name: &str| std::fs::read_to_string(connection.join(name)).unwrap();
        assert_eq!(read("max_background").trim(), "100");
        assert_eq!(read("congestion_threshold").trim(), "90");
    } else {
        eprintln!("fusectl not mounted: the kernel's queue size not read back");
    }
    let log = mount.log();
    assert!(
        log.contains("prefetch window at most 16777216 bytes"),
        "{log}"
    );
    assert!(
        log.contains("UNSTABLE_MOUNTPOINT_CACHE_KEY is set but not read"),
        "{log}"
    );
    drop(mount);

    let dir = tempfile::tempdir().unwrap();
    let line = s3
        .mount_args(&bucket)
        .env("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND", "lots")
        .run(dir.path(), false, Duration::from_secs(30))
        .assert_refused("an unreadable UNSTABLE_MOUNTPOINT_MAX_BACKGROUND");
    assert!(
        line.contains("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND=lots"),
        "{line}"
    );
}
