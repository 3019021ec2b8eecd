//! The fstab helper through the real mount(8): `mount --fstab FILE DIR`, `mount -a`, `-f`,
//! `-s`, and an unknown option.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;

use super::common::{S3Server, expect_errno, mount_entry, mount_s3_binary, mount_s3_processes_for};
use super::{Dirs, RUN_TIMEOUT, run, unmount_and_reap, wait_until, with_server_credentials};

/// Where mount(8) looks for the helper of type `mount-s3`.
const HELPER: &str = "/sbin/mount.mount-s3";

/// `/sbin/mount.mount-s3` → the binary under test, while at least one test holds a
/// `HelperLink`. It refuses to replace a helper that is not ours (an installed package).
struct HelperLink;

static HELPER_USERS: Mutex<usize> = Mutex::new(0);

impl HelperLink {
    fn install() -> HelperLink {
        let mut users = HELPER_USERS.lock().unwrap_or_else(|e| e.into_inner());
        let binary = mount_s3_binary();
        match fs::read_link(HELPER) {
            Ok(target) if target == binary => {}
            Ok(target) => panic!(
                "{HELPER} already exists and points at {}: the fstab tests need to link it to \
                 {} while they run; remove it (or run the tests in a container)",
                target.display(),
                binary.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                symlink(&binary, HELPER).unwrap_or_else(|e| panic!("create {HELPER}: {e}"))
            }
            Err(e) => panic!(
                "{HELPER} exists and is not a symbolic link ({e}); the fstab tests need it \
                 for the binary under test: remove it, or run the tests in a container"
            ),
        }
        *users += 1;
        HelperLink
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let mut users = HELPER_USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            let _ = fs::remove_file(HELPER);
        }
    }
}

/// `mount ARGS` with the server's credentials in the environment.
fn mount_8(s3: &S3Server, work: &Path, args: &[&OsStr]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new("mount");
    with_server_credentials(&mut cmd, s3, work).args(args);
    run(&mut cmd, RUN_TIMEOUT)
}

/// An fstab line for `bucket` on the test server: `s3://bucket/prefix dir mount-s3 opts,...`.
fn fstab_line(s3: &S3Server, source: &str, dir: &Path, options: &str) -> String {
    format!(
        "{source} {} mount-s3 {options},endpoint-url={},force-path-style 0 0\n",
        dir.display(),
        s3.endpoint()
    )
}

#[test]
fn fstab_line_mounts_through_mount_8() {
    let _helper = HelperLink::install();
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("pkg-fstab");
    s3.put(&bucket, "prefix/hello.txt", b"hello from fstab".to_vec());
    s3.put(&bucket, "outside.txt", b"not under the prefix".to_vec());
    let dirs = Dirs::new();
    let fstab = dirs.work.path().join("fstab");
    let options = "_netdev,nosuid,nodev,nofail,ro,uid=4321,gid=4322,x-systemd.automount";
    fs::write(
        &fstab,
        fstab_line(s3, &format!("s3://{bucket}/prefix/"), &dirs.mnt, options),
    )
    .unwrap();

    let (status, out, err) = mount_8(
        s3,
        dirs.work.path(),
        &["--fstab".as_ref(), fstab.as_os_str(), dirs.mnt.as_os_str()],
    );
    assert!(
        status.success(),
        "mount --fstab failed ({status}): {out}{err}"
    );
    // mount(8) returned, so the mount is live already: the helper mounts in the background.
    let entry = mount_entry(&dirs.mnt).expect("mounted once mount(8) returned");
    assert_eq!(entry.fs_type, "fuse.mount-s3", "{entry:?}");
    assert_eq!(entry.source, bucket, "{entry:?}");
    assert!(entry.is_read_only(), "ro must mount read-only: {entry:?}");

    let file = dirs.mnt.join("hello.txt");
    assert_eq!(fs::read(&file).unwrap(), b"hello from fstab");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322), "uid=/gid= options");
    assert!(
        !dirs.mnt.join("outside.txt").exists(),
        "the prefix is mounted"
    );
    let errno = expect_errno(fs::File::create(dirs.mnt.join("new.txt")), "create on ro");
    assert_eq!(errno, libc::EROFS);

    let (status, _, err) = run(Command::new("umount").arg(&dirs.mnt), RUN_TIMEOUT);
    assert!(status.success(), "umount: {err}");
    assert!(
        wait_until(Duration::from_secs(10), || mount_s3_processes_for(
            &dirs.mnt
        )
        .is_empty()),
        "mount-s3 still serves {} after umount",
        dirs.mnt.display()
    );
}

#[test]
fn mount_a_mounts_the_auto_lines_read_write() {
    let _helper = HelperLink::install();
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("pkg-mount-a");
    s3.put(&bucket, "old.txt", b"delete me".to_vec());
    let (auto, noauto) = (Dirs::new(), Dirs::new());
    let fstab = auto.work.path().join("fstab");
    let lines = fstab_line(
        s3,
        &bucket,
        &auto.mnt,
        "defaults,rw,allow-delete,metadata_ttl=0",
    ) + &fstab_line(s3, &bucket, &noauto.mnt, "noauto,ro");
    fs::write(&fstab, lines).unwrap();

    let args = [
        "-a".as_ref(),
        "-t".as_ref(),
        "mount-s3".as_ref(),
        "--fstab".as_ref(),
    ];
    let args: Vec<&OsStr> = args.into_iter().chain([fstab.as_os_str()]).collect();
    let (status, out, err) = mount_8(s3, auto.work.path(), &args);
    assert!(status.success(), "mount -a failed ({status}): {out}{err}");
    assert!(mount_entry(&auto.mnt).is_some(), "the auto line is mounted");
    assert!(mount_entry(&noauto.mnt).is_none(), "noauto is left alone");

    fs::write(auto.mnt.join("new.txt"), b"written through fstab").unwrap();
    assert!(
        s3.wait_for_object(&bucket, "new.txt", Duration::from_secs(10))
            .is_some()
    );
    assert_eq!(s3.get(&bucket, "new.txt"), b"written through fstab");
    fs::remove_file(auto.mnt.join("old.txt")).expect("allow-delete");
    s3.assert_no_object(&bucket, "old.txt", "after unlink");
    assert!(
        unmount_and_reap(&auto.mnt),
        "mount-s3 did not exit after unmount"
    );
}

#[test]
fn fake_mount_checks_and_bad_options_are_named() {
    let _helper = HelperLink::install();
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("pkg-fake");
    let dirs = Dirs::new();
    let fstab = dirs.work.path().join("fstab");
    fs::write(&fstab, fstab_line(s3, &bucket, &dirs.mnt, "rw")).unwrap();
    let run_mount = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
        args.extend([
            OsStr::new("--fstab"),
            fstab.as_os_str(),
            dirs.mnt.as_os_str(),
        ]);
        mount_8(s3, dirs.work.path(), &args)
    };

    // -f: mount(8) passes it on; the helper checks everything and mounts nothing.
    let (status, out, err) = run_mount(&["-f", "-v"]);
    assert!(status.success(), "mount -f ({status}): {out}{err}");
    assert!(
        err.contains("mount-s3 --endpoint-url"),
        "-v shows the command: {err}"
    );
    assert!(
        mount_entry(&dirs.mnt).is_none(),
        "mount -f mounted something"
    );

    // An unknown option: an error naming it, and nothing mounted.
    fs::write(
        &fstab,
        fstab_line(s3, &bucket, &dirs.mnt, "rw,bogus-option"),
    )
    .unwrap();
    let (status, out, err) = run_mount(&[]);
    assert!(!status.success(), "an unknown option must fail: {out}{err}");
    assert!(err.contains("unknown option 'bogus-option'"), "{err}");
    assert!(mount_entry(&dirs.mnt).is_none());
    // -s (sloppy) ignores it with a warning, and mounts.
    let (status, out, err) = run_mount(&["-s"]);
    assert!(status.success(), "mount -s ({status}): {out}{err}");
    assert!(
        err.contains("ignoring unknown option 'bogus-option'"),
        "{err}"
    );
    assert!(mount_entry(&dirs.mnt).is_some());
    assert!(unmount_and_reap(&dirs.mnt));
}
