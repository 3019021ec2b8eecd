//! `--posix-metadata` and directory rename through real programs against SeaweedFS: git
//! clone, fsck and commit; tar -x of a tree with a symlink, an empty directory and an
//! executable; rsync twice; mv of a directory of 200 keys (and its EXDEV fallback under a
//! small --max-rename-keys); ln -s + readlink; chmod +x and run; metadata written by another
//! client in s3fs's headers read back by stat, and ours read back by that client. Each test
//! checks the keys, bodies or headers in S3 afterwards. Also the default mode (no opt-in
//! flags): git init/commit and an editor's safe save, which read files renamed onto.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use common::{Mount, S3Server, c_path, os_result};

/// S_IFLNK | 0777 and S_IFREG | 0755, as s3fs writes them in `x-amz-meta-mode`.
const SYMLINK_MODE: &str = "41471";
const EXECUTABLE_MODE: &str = "33261";

/// A mount in the opt-in mode (staged writes, POSIX metadata, directory rename up to
/// `--max-rename-keys 10000` unless `extra` says otherwise); `extra` adds flags.
fn posix_mount(s3: &S3Server, bucket: &str, extra: &[&str]) -> Mount {
    let limit = if extra.contains(&"--max-rename-keys") {
        &[][..]
    } else {
        &["--max-rename-keys", "10000"][..]
    };
    s3.mount_args(bucket)
        .args([
            "--staged-writes",
            "--posix-metadata",
            "--allow-overwrite",
            "--allow-delete",
        ])
        .args(limit)
        .args(extra)
        .mount()
}

/// Runs `program args` in `dir` and returns stdout; panics with its output unless it succeeds.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A local git repository with three commits.
fn local_repo(dir: &Path) {
    run(dir, "git", &["init", "-q"]);
    for i in 0..3 {
        std::fs::write(dir.join("f"), format!("v{i}\n")).unwrap();
        run(dir, "git", &["add", "f"]);
        run(dir, "git", &["commit", "-qm", &format!("c{i}")]);
    }
}

#[test]
fn git_clone_fsck_and_commit_work_and_survive_a_remount() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-git");
    let src = tempfile::tempdir().unwrap();
    local_repo(src.path());
    let url = format!("file://{}", src.path().display());
    {
        let mount = posix_mount(s3, &bucket, &[]);
        run(mount.path(), "git", &["clone", "-q", &url, "clone"]);
        run(&mount.join("clone"), "git", &["fsck", "--no-progress"]);
        std::fs::write(mount.join("clone/g"), "new\n").unwrap();
        run(&mount.join("clone"), "git", &["add", "g"]);
        run(
            &mount.join("clone"),
            "git",
            &["commit", "-qm", "on the mount"],
        );
    }
    assert!(
        s3.list_keys(&bucket)
            .contains(&"clone/.git/HEAD".to_string())
    );
    let mount = posix_mount(s3, &bucket, &[]);
    let clone = mount.join("clone");
    run(&clone, "git", &["fsck", "--no-progress", "--full"]);
    let log = run(&clone, "git", &["log", "--format=%s"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["on the mount", "c2", "c1", "c0"]
    );
    assert_eq!(s3.get(&bucket, "clone/g"), b"new\n");
}

#[test]
fn tar_extracts_symlinks_empty_directories_and_executables() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-tar");
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/data"), vec![7u8; 10_000]).unwrap();
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sub/data", tree.join("link")).unwrap();
    run(src.path(), "tar", &["-cf", "tree.tar", "tree"]);
    let archive = src.path().join("tree.tar");
    {
        let mount = posix_mount(s3, &bucket, &[]);
        run(mount.path(), "tar", &["-xf", archive.to_str().unwrap()]);
    }
    assert_eq!(s3.get(&bucket, "tree/link"), b"sub/data");
    assert_eq!(s3.user_metadata(&bucket, "tree/link")["mode"], SYMLINK_MODE);
    assert_eq!(
        s3.user_metadata(&bucket, "tree/run.sh")["mode"],
        EXECUTABLE_MODE
    );
    assert!(
        s3.list_keys(&bucket).contains(&"tree/empty/".to_string()),
        "the empty directory has its marker"
    );
    let mount = posix_mount(s3, &bucket, &[]);
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&tree)
        .arg(mount.join("tree"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read_link(mount.join("tree/link")).unwrap(),
        Path::new("sub/data")
    );
    assert_eq!(run(&mount.join("tree"), "./run.sh", &[]), "ran\n");
}

#[test]
fn rsync_twice_sends_only_the_changed_file() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-rsync");
    let src = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(src.path().join(format!("f{i}")), vec![i as u8; 1000 * i]).unwrap();
    }
    let from = format!("{}/", src.path().display());
    let mount = posix_mount(s3, &bucket, &[]);
    let to = format!("{}/", mount.join("dst").display());
    run(mount.path(), "rsync", &["-a", &from, &to]);
    std::fs::write(src.path().join("f3"), "changed").unwrap();
    let stats = run(mount.path(), "rsync", &["-a", "--stats", &from, &to]);
    assert!(
        stats.contains("Number of regular files transferred: 1"),
        "{stats}"
    );
    assert_eq!(s3.get(&bucket, "dst/f3"), b"changed");
    assert_eq!(s3.get(&bucket, "dst/f7"), vec![7u8; 7000]);
}

#[test]
fn mv_of_a_directory_of_200_keys_moves_every_key() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-mv");
    let objects = (0..200)
        .map(|i| {
            (
                format!("src/sub{}/f{i}", i % 4),
                format!("{i}").into_bytes(),
            )
        })
        .collect();
    s3.put_many(&bucket, objects, 16);
    let mount = posix_mount(s3, &bucket, &[]);
    run(mount.path(), "mv", &["src", "dst"]);
    let keys = s3.list_keys(&bucket);
    assert_eq!(keys.len(), 200, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("dst/")), "{keys:?}");
    assert_eq!(s3.get(&bucket, "dst/sub1/f77"), b"77");
    assert_eq!(
        std::fs::read_to_string(mount.join("dst/sub3/f199")).unwrap(),
        "199"
    );
    assert!(!mount.join("src").exists());
}

#[test]
fn mv_above_the_key_limit_falls_back_to_copying_file_by_file() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-mv-exdev");
    let objects = (0..30)
        .map(|i| (format!("src/f{i}"), format!("{i}").into_bytes()))
        .collect();
    s3.put_many(&bucket, objects, 16);
    let mount = posix_mount(s3, &bucket, &["--max-rename-keys", "10"]);
    let err = std::fs::rename(mount.join("src"), mount.join("direct")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    assert_eq!(
        s3.list_keys(&bucket).len(),
        30,
        "nothing moved by the refusal"
    );
    run(mount.path(), "mv", &["src", "dst"]);
    let mut keys = s3.list_keys(&bucket);
    keys.retain(|k| k != "dst/"); // mv's mkdir wrote the new directory's marker
    assert_eq!(keys.len(), 30, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("dst/")), "{keys:?}");
    assert_eq!(s3.get(&bucket, "dst/f29"), b"29");
}

#[test]
fn symlinks_and_chmod_x_work_and_persist() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-ln");
    {
        let mount = posix_mount(s3, &bucket, &[]);
        std::fs::write(mount.join("target"), "data").unwrap();
        std::os::unix::fs::symlink("target", mount.join("link")).unwrap();
        assert_eq!(
            std::fs::read_link(mount.join("link")).unwrap(),
            Path::new("target")
        );
        assert_eq!(std::fs::read_to_string(mount.join("link")).unwrap(), "data");
        std::fs::write(mount.join("tool.sh"), "#!/bin/sh\necho ran\n").unwrap();
        run(mount.path(), "chmod", &["+x", "tool.sh"]);
        assert_eq!(run(mount.path(), "./tool.sh", &[]), "ran\n");
    }
    assert_eq!(s3.get(&bucket, "link"), b"target");
    assert_eq!(s3.user_metadata(&bucket, "link")["mode"], SYMLINK_MODE);
    assert_eq!(
        s3.user_metadata(&bucket, "tool.sh")["mode"],
        EXECUTABLE_MODE
    );
    assert_eq!(
        s3.get(&bucket, "tool.sh"),
        b"#!/bin/sh\necho ran\n",
        "chmod kept the body"
    );
    let mount = posix_mount(s3, &bucket, &[]);
    assert_eq!(
        std::fs::read_link(mount.join("link")).unwrap(),
        Path::new("target")
    );
    assert_eq!(run(mount.path(), "./tool.sh", &[]), "ran\n");
}

#[test]
fn s3fs_metadata_is_read_and_ours_is_readable_by_other_clients() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-meta");
    s3.put_with_metadata(
        &bucket,
        "theirs",
        b"hello",
        &[
            ("mode", EXECUTABLE_MODE),
            ("uid", "1234"),
            ("gid", "5678"),
            ("mtime", "1600000000"),
        ],
    );
    s3.put(&bucket, "plain", b"no metadata");
    let mount = posix_mount(
        s3,
        &bucket,
        &["--uid", "42", "--gid", "43", "--file-mode", "0600"],
    );
    let theirs = std::fs::metadata(mount.join("theirs")).unwrap();
    assert_eq!(theirs.mode(), 0o100755);
    assert_eq!((theirs.uid(), theirs.gid()), (1234, 5678));
    assert_eq!(theirs.mtime(), 1_600_000_000);
    let plain = std::fs::metadata(mount.join("plain")).unwrap();
    assert_eq!(
        plain.mode(),
        0o100600,
        "no metadata: the mount's --file-mode"
    );
    assert_eq!((plain.uid(), plain.gid()), (42, 43));

    std::fs::write(mount.join("ours"), "x").unwrap();
    std::fs::set_permissions(mount.join("ours"), PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(mount.join("ours"), Some(7), Some(8)).unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let file = std::fs::File::options()
        .write(true)
        .open(mount.join("ours"))
        .unwrap();
    file.set_modified(when).unwrap();
    drop(file);
    let meta = s3.user_metadata(&bucket, "ours");
    assert_eq!(meta["mode"], (0o100640).to_string());
    assert_eq!((meta["uid"].as_str(), meta["gid"].as_str()), ("7", "8"));
    assert!(meta["mtime"].starts_with("1500000000"), "{meta:?}");
    assert_eq!(s3.get(&bucket, "ours"), b"x");
}

/// The default mode, without any opt-in flag: git and an editor's safe save read files
/// right after renaming onto them; refusals of the rest stay as they were.
#[test]
fn default_mode_runs_git_commit_and_a_safe_save_and_still_refuses_chmod() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("default-tools");
    let mount = s3
        .mount_args(&bucket)
        .args(["--allow-overwrite", "--allow-delete"])
        .mount();
    let repo = mount.join("repo");
    std::fs::create_dir(&repo).unwrap();
    run(&repo, "git", &["init", "-q"]);
    std::fs::write(repo.join("a"), "a\n").unwrap();
    run(&repo, "git", &["add", "a"]);
    run(&repo, "git", &["commit", "-qm", "one"]);
    assert_eq!(run(&repo, "git", &["show", "HEAD:a"]), "a\n");
    for v in 0..3 {
        let text = format!("version {v}\n");
        std::fs::write(mount.join("notes.txt.tmp"), &text).unwrap();
        std::fs::rename(mount.join("notes.txt.tmp"), mount.join("notes.txt")).unwrap();
        assert_eq!(
            std::fs::read_to_string(mount.join("notes.txt")).unwrap(),
            text
        );
    }
    assert_eq!(s3.get(&bucket, "notes.txt"), b"version 2\n");
    let err = std::fs::set_permissions(mount.join("notes.txt"), PermissionsExt::from_mode(0o755))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = std::os::unix::fs::symlink("a", mount.join("l")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
}

/// mknod(2) of a regular file, mode 0644.
fn mknod_regular(path: &Path) -> std::io::Result<i64> {
    // SAFETY: a NUL-terminated path alive for the call.
    os_result(unsafe { libc::mknod(c_path(path).as_ptr(), libc::S_IFREG | 0o644, 0) }.into())
}

/// The calls a program makes in passing, answered as README's table says and never with a
/// log line each: Python's `open` asks `isatty` (an ioctl) every time, and each one was a
/// WARN. mknod(2) of a regular file makes an empty object (as `touch`); fallocate is
/// EOPNOTSUPP and leaves the upload going; SEEK_DATA, `cp` inside the mount and a
/// directory's fsync are done by the kernel.
#[test]
fn calls_without_an_s3_form_answer_quietly_and_leave_objects_whole() {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("posix-quiet");
    s3.put(&bucket, "obj.bin", b"0123456789".to_vec());
    let mount = s3.mount_args(&bucket).mount();
    let obj = mount.join("obj.bin");
    for _ in 0..50 {
        let file = std::fs::File::open(&obj).unwrap();
        // SAFETY: a descriptor this test holds open.
        assert_eq!(unsafe { libc::isatty(file.as_raw_fd()) }, 0);
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(errno, Some(libc::ENOTTY), "isatty of a file in the mount");
    }

    mknod_regular(&mount.join("made")).expect("mknod of a regular file");
    assert_eq!(s3.get(&bucket, "made"), b"");
    let again = mknod_regular(&mount.join("made"));
    assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EEXIST));

    let mut new = std::fs::File::create(mount.join("new.bin")).unwrap();
    // SAFETY: a descriptor this test holds open.
    let preallocated = os_result(unsafe { libc::fallocate(new.as_raw_fd(), 0, 0, 4096) }.into());
    assert_eq!(
        preallocated.unwrap_err().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    new.write_all(b"written after fallocate").unwrap();
    common::close(new).unwrap();
    assert_eq!(s3.get(&bucket, "new.bin"), b"written after fallocate");

    let file = std::fs::File::open(&obj).unwrap();
    // SAFETY: a descriptor this test holds open.
    let data = os_result(unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) });
    assert_eq!(data.unwrap(), 0);
    // SAFETY: as above.
    let hole = os_result(unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) });
    assert_eq!(hole.unwrap(), 10, "the whole object is data");
    drop(file);
    run(mount.path(), "cp", &["obj.bin", "copy.bin"]);
    assert_eq!(s3.get(&bucket, "copy.bin"), b"0123456789");
    let dir = std::fs::File::open(mount.path()).unwrap();
    dir.sync_all().expect("fsync of the mount's root");

    let log = mount.log();
    assert!(!log.contains("Not Implemented"), "{log}");
    assert_eq!(s3.get(&bucket, "obj.bin"), b"0123456789");
}
