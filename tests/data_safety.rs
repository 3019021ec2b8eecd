//! Data safety through a real mount: never a wrong byte (cache geometry, versions sharing the
//! kernel's page cache), never a silent loss (a failed overwrite, an unseen writer, a commit
//! whose answer was lost, the mount ending during a commit, O_EXCL, `mv a b && cat b`), and
//! never touching what is not the mount's (the cache directory, file modes, relative paths).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Fault, FaultPlan, FaultProxy, S3Server, assert_bytes_eq, pread_full, pseudo_random_bytes,
};

const MIB: usize = 1024 * 1024;

/// A fresh private directory for a cache or logs.
fn private_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mount-s3-{tag}-"))
        .tempdir()
        .expect("tempdir")
}

fn arg(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_string()
}

/// A cache written with 1 MiB blocks is read with 4 MiB blocks after a remount: the old
/// blocks are another geometry and must never be served as the new one's.
#[test]
fn a_block_cut_with_another_size_is_never_served() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-geometry");
    let object = pseudo_random_bytes(1401, 20 * MIB);
    s3.put(&bucket, "big.bin", object.clone());
    let cache = private_dir("cache");
    let mount = s3
        .mount_args(&bucket)
        .args(["--cache", &arg(cache.path())])
        .mount();
    assert_bytes_eq(
        &fs::read(mount.join("big.bin")).unwrap(),
        &object,
        "first read",
    );
    mount.unmount_for_log(Duration::from_secs(30));
    let mount = s3
        .mount_args(&bucket)
        .args([
            "--cache",
            &arg(cache.path()),
            "--cache-block-size",
            "4096", // KiB
        ])
        .mount();
    let file = File::open(mount.join("big.bin")).unwrap();
    let got = pread_full(&file, 4 * MIB as u64, MIB);
    assert_bytes_eq(
        &got,
        &object[4 * MIB..5 * MIB],
        "1 MiB at 4 MiB after the remount",
    );
    drop(file);
    assert_bytes_eq(
        &fs::read(mount.join("big.bin")).unwrap(),
        &object,
        "whole read",
    );
}

/// A file held open at one version, and a later open of a newer version: the newer one's
/// reads fill the kernel's page cache, and none of those pages may reach the older reader.
#[test]
fn a_handle_of_an_older_version_never_reads_the_newer_ones_pages() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-versions");
    let v1 = pseudo_random_bytes(1402, 20 * MIB);
    let v2 = pseudo_random_bytes(1403, 20 * MIB);
    s3.put(&bucket, "f.bin", v1.clone());
    let mount = s3.mount_args(&bucket).mount();
    let path = mount.join("f.bin");
    let mut old = File::open(&path).unwrap();
    let mut head = vec![0u8; MIB];
    old.read_exact(&mut head).unwrap();
    assert_bytes_eq(&head, &v1[..MIB], "older handle, first MiB");
    s3.put(&bucket, "f.bin", v2.clone());
    thread::sleep(Duration::from_millis(1200)); // past --metadata-ttl minimal
    let newer = File::open(&path).unwrap();
    assert_ne!(
        newer.metadata().unwrap().ino(),
        old.metadata().unwrap().ino()
    );
    assert_bytes_eq(&pread_full(&newer, 0, v2.len()), &v2, "newer handle");
    // The older handle: every byte it returns is v1's (the rest of v1 is gone from S3, so
    // reads it has no pages for fail), never v2's.
    let mut at = MIB;
    let mut buf = vec![0u8; 256 * 1024];
    while at < v1.len() {
        match old.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert_bytes_eq(&buf[..n], &v1[at..at + n], &format!("older handle at {at}"));
                at += n;
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                break;
            }
        }
    }
}

/// An overwrite whose upload fails leaves the old object, and the file shows it again: its
/// size and its bytes, not the size that was being written.
/// Found by the hour soak: the kernel's attributes of an inode can outlive ours (its TTL runs
/// from our last reply, and an open's HEAD refreshes ours without telling it). An open that
/// then finds a longer new version must not be read with the old size: the file was cut
/// short, with no error.
#[test]
fn a_longer_new_version_is_never_cut_to_the_old_size() {
    use std::os::unix::fs::OpenOptionsExt;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-kernel-size");
    let old = pseudo_random_bytes(31, MIB);
    let new = pseudo_random_bytes(32, 3 * MIB);
    s3.put(&bucket, "f.bin", old.clone());
    let mount = s3.mount_args(&bucket).args(["--metadata-ttl", "2"]).mount();
    let path = mount.join("f.bin");
    let start = Instant::now();
    let at = |secs: f64| {
        let until = Duration::from_secs_f64(secs);
        if let Some(wait) = until.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    };
    assert_eq!(fs::metadata(&path).unwrap().len(), MIB as u64); // both trust it until 2 s
    at(1.0);
    // An O_DIRECT open asks S3 again: ours is good until 3 s, the kernel's still until 2 s.
    drop(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .unwrap(),
    );
    at(2.3);
    // The kernel asks; we answer from what is still fresh: it trusts the old size to 4.3 s.
    assert_eq!(fs::metadata(&path).unwrap().len(), MIB as u64);
    s3.put(&bucket, "f.bin", new.clone());
    at(3.3);
    // Ours expired: the open finds the new version while the kernel still has the old size.
    let got = fs::read(&path).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "too slow to test the window: {:?}",
        start.elapsed()
    );
    assert_bytes_eq(&got, &new, "a read after the object grew");
}

#[test]
fn a_failed_overwrite_shows_the_old_object_again() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-overwrite");
    let old = pseudo_random_bytes(1404, 4 * MIB);
    s3.put(&bucket, "f.bin", old.clone());
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .args(["--allow-overwrite"])
        .mount();
    let path = mount.join("f.bin");
    assert_eq!(fs::metadata(&path).unwrap().len(), old.len() as u64);
    proxy.script_matching(&format!("POST /{bucket}/f.bin?uploadId"), Fault::Status403);
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(&pseudo_random_bytes(1405, 20 * MIB))
        .unwrap();
    let err = common::close(file).expect_err("the commit was refused");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert_eq!(s3.get(&bucket, "f.bin"), old, "S3 keeps the old object");
    assert_eq!(fs::metadata(&path).unwrap().len(), old.len() as u64, "stat");
    assert_bytes_eq(&fs::read(&path).unwrap(), &old, "read after the failure");
    assert!(s3.multipart_uploads(&bucket).is_empty(), "no upload left");
}

/// A writer in another PID namespace than the mount (a sidecar): the kernel reports its pid
/// as 0. Its close must still commit, and tell it when the commit fails.
#[test]
fn a_writer_the_mount_cannot_see_is_told_whether_its_file_landed() {
    if !common::command_works("unshare", &["--pid", "--fork", "true"]) {
        eprintln!("skipped: unshare cannot make a PID namespace here");
        return;
    }
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-pidns");
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    // The mount in a PID namespace of its own: the test's processes are invisible to it.
    let mount = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .wrapped(["unshare", "--pid", "--fork", "--kill-child"])
        .mount();
    let data = pseudo_random_bytes(1406, 1000);
    let mut file = File::create(mount.join("landed.bin")).unwrap();
    file.write_all(&data).unwrap();
    common::close(file).expect("close of a file that lands");
    assert_eq!(s3.get(&bucket, "landed.bin"), data, "committed at close");

    proxy.script_matching(&format!("PUT /{bucket}/refused.bin"), Fault::Status403);
    let mut file = File::create(mount.join("refused.bin")).unwrap();
    file.write_all(&data).unwrap();
    let err = common::close(file).expect_err("the writer must hear of the failure");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert!(s3.head_if_exists(&bucket, "refused.bin").is_none());
}

/// CompleteMultipartUpload and PUT whose answers are lost: the client retries, the retry of
/// a conditional write finds the object there (412), and only asking S3 tells that it is
/// ours. The close must report success, and nothing be left behind.
#[test]
fn a_commit_whose_answer_was_lost_is_reported_as_landed() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-ambiguous");
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = s3.mount_args(&bucket).endpoint(&proxy.url()).mount();
    for (name, len, request) in [
        (
            "multi.bin",
            20 * MIB,
            format!("POST /{bucket}/multi.bin?uploadId"),
        ),
        ("small.bin", 1000, format!("PUT /{bucket}/small.bin")),
    ] {
        proxy.script_matching(&request, Fault::ResetBeforeResponse);
        let data = pseudo_random_bytes(len as u64, len);
        let mut file = File::create(mount.join(name)).unwrap();
        file.write_all(&data).unwrap();
        common::close(file).unwrap_or_else(|e| panic!("{name}: a landed write reported {e}"));
        assert!(proxy.targeted_done(), "{name}: the answer was not lost");
        assert_eq!(s3.get(&bucket, name), data, "{name}");
    }
    assert!(s3.multipart_uploads(&bucket).is_empty(), "no upload left");
    assert!(
        mount.log().contains("the answer to a commit was lost"),
        "{}",
        mount.log()
    );
}

/// The kernel lets go of the mount (the FUSE connection is aborted) while a file's last part
/// is on its way: the commit in flight finishes before the process exits, so no multipart
/// upload is left behind and the object is whole or absent.
#[test]
fn the_end_of_the_mount_waits_for_a_commit_in_flight() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-drain");
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mut mount = s3.mount_args(&bucket).endpoint(&proxy.url()).mount();
    proxy.script_matching("partNumber=3&uploadId", Fault::Stall(4000));
    let path = mount.join("drain.bin");
    let data = pseudo_random_bytes(1407, 20 * MIB);
    let writer = {
        let data = data.clone();
        thread::spawn(move || {
            let mut file = File::create(&path).unwrap();
            file.write_all(&data).unwrap();
            common::close(file)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.targeted_done() {
        assert!(Instant::now() < deadline, "the last part was never sent");
        thread::sleep(Duration::from_millis(20));
    }
    abort_fuse_connection(mount.path());
    let _ = writer.join();
    let status = mount.wait_exit(Duration::from_secs(60));
    assert!(status.is_some(), "mount-s3 did not exit");
    let log = mount.log();
    assert!(
        s3.multipart_uploads(&bucket).is_empty(),
        "upload left:\n{log}"
    );
    if let Some((len, _)) = s3.head_if_exists(&bucket, "drain.bin") {
        assert_eq!(len, data.len() as u64, "a partial object");
        assert_eq!(s3.get(&bucket, "drain.bin"), data);
    }
    mount.lazy_unmount();
}

/// Aborts the FUSE connection of the mount at `path`, as `umount -f` or a dying kernel side
/// would: through the fusectl filesystem (mounted if it is not).
fn abort_fuse_connection(path: &Path) {
    let connections = Path::new("/sys/fs/fuse/connections");
    let minor = libc::minor(fs::metadata(path).unwrap().dev());
    let abort = connections.join(format!("{minor}/abort"));
    if !abort.exists() {
        assert!(
            common::command_works(
                "mount",
                &["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"]
            ),
            "cannot mount fusectl to abort the connection"
        );
    }
    fs::write(&abort, "1").unwrap_or_else(|e| panic!("{}: {e}", abort.display()));
}

/// `mv a b && cat b`: the renamed file reads at once, with no wait for a metadata TTL.
#[test]
fn a_renamed_file_reads_at_once_under_its_new_name() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-rename");
    s3.put(&bucket, "a.txt", b"renamed bytes".to_vec());
    let mount = s3
        .mount_args(&bucket)
        .args(["--allow-delete", "--metadata-ttl", "60"])
        .mount();
    assert_eq!(fs::read(mount.join("a.txt")).unwrap(), b"renamed bytes");
    fs::rename(mount.join("a.txt"), mount.join("b.txt")).unwrap();
    assert_eq!(fs::read(mount.join("b.txt")).unwrap(), b"renamed bytes");
    assert!(s3.head_if_exists(&bucket, "a.txt").is_none());
}

/// O_CREAT|O_EXCL of a name another client created after the mount saw it missing: EEXIST,
/// and the other client's object stays, even with --allow-overwrite.
#[test]
fn o_excl_never_replaces_an_object_created_elsewhere() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-excl");
    let mount = s3
        .mount_args(&bucket)
        .args(["--allow-overwrite", "--metadata-ttl", "60"])
        .mount();
    let path = mount.join("f.bin");
    assert!(fs::metadata(&path).is_err(), "missing, and remembered so");
    let theirs = pseudo_random_bytes(1408, 3000);
    s3.put(&bucket, "f.bin", theirs.clone());
    let err = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .expect_err("O_EXCL over an existing object");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s3.get(&bucket, "f.bin"),
        theirs,
        "the other client's object"
    );
}

/// A cache directory that another user could write is refused with one line, before
/// anything is created in it; a symlink planted in the cache's own subdirectory is refused,
/// never followed.
#[test]
fn a_cache_directory_others_could_write_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-cachedir");
    let open = private_dir("open-cache");
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let refused = s3
        .mount_args(&bucket)
        .args(["--cache", &arg(open.path())])
        .try_mount()
        .err()
        .expect("a world-writable cache directory is refused");
    assert!(refused.contains("other users"), "{refused}");
    assert_eq!(
        fs::read_dir(open.path()).unwrap().count(),
        0,
        "nothing created"
    );

    let cache = private_dir("cache");
    let victim = private_dir("victim");
    fs::write(victim.path().join("precious"), b"keep").unwrap();
    fs::create_dir(cache.path().join("mount-s3-cache")).unwrap();
    std::os::unix::fs::symlink(victim.path(), cache.path().join("mount-s3-cache/tmp")).unwrap();
    let refused = s3
        .mount_args(&bucket)
        .args(["--cache", &arg(cache.path())])
        .try_mount()
        .err()
        .expect("a planted symlink is refused");
    assert!(refused.contains("tmp"), "{refused}");
    assert_eq!(fs::read(victim.path().join("precious")).unwrap(), b"keep");
}

/// The cache's directory and files, and the log file, are private to the mounting user
/// (logs readable by its group), and relative paths given in the background hold.
#[test]
fn cache_files_and_logs_are_private_and_relative_paths_hold() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("safety-modes");
    s3.put(&bucket, "f.bin", pseudo_random_bytes(1409, 2 * MIB));
    let cwd = private_dir("cwd");
    let mount = s3
        .mount_args(&bucket)
        .current_dir(cwd.path())
        .args(["--cache", "relcache", "--log-directory", "rellogs"])
        .mount_daemon();
    assert_eq!(fs::read(mount.join("f.bin")).unwrap().len(), 2 * MIB);
    let sub = cwd.path().join("relcache/mount-s3-cache");
    assert!(sub.is_dir(), "the cache is where the relative path says");
    assert!(!Path::new("/relcache").exists());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sub), 0o700);
    // A block file, or (with FUSE passthrough, as root) the whole-object copy that replaces
    // the object's blocks once it is read whole: whichever is there, it is private.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cached = loop {
        let block = fs::read_dir(sub.join("blocks"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|shard| fs::read_dir(shard.path()).into_iter().flatten().flatten())
            .map(|e| e.path());
        let whole = fs::read_dir(sub.join("objects"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path());
        if let Some(found) = block.chain(whole).next() {
            break found;
        }
        assert!(Instant::now() < deadline, "nothing was cached");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(mode(&cached), 0o600, "{}", cached.display());
    let logs: Vec<_> = fs::read_dir(cwd.path().join("rellogs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(mode(&logs[0]) & !0o640, 0, "log mode {:o}", mode(&logs[0]));
}
