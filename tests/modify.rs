//! Changing what exists, checked through the SDK: overwriting (`--allow-overwrite`, O_TRUNC
//! only), unlink (`--allow-delete`), local directories (mkdir, rmdir), rename (copy then
//! delete), and the changes S3 cannot honour (chmod, chown, truncate, links, xattrs, FIFOs), which
//! are refused and leave the object as it was.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{
    S3Server, assert_bytes_eq, assert_listing, assert_typed_listing, c_path, close, expect_errno,
    os_result, pseudo_random_bytes,
};

const MIB: usize = 1024 * 1024;

/// Every way of opening an existing object for writing, by name.
fn write_opens() -> Vec<(&'static str, OpenOptions)> {
    let mut create = OpenOptions::new();
    create.write(true).create(true).truncate(true);
    let mut truncate = OpenOptions::new();
    truncate.write(true).truncate(true);
    let mut plain = OpenOptions::new();
    plain.write(true);
    let mut read_write = OpenOptions::new();
    read_write.read(true).write(true);
    let mut append = OpenOptions::new();
    append.append(true);
    let mut append_create = OpenOptions::new();
    append_create.append(true).create(true);
    vec![
        ("O_CREAT|O_TRUNC", create),
        ("O_TRUNC", truncate),
        ("O_WRONLY", plain),
        ("O_RDWR", read_write),
        ("O_APPEND", append),
        ("O_APPEND|O_CREAT", append_create),
    ]
}

#[test]
fn overwrite_is_refused_without_the_flag() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-no-overwrite");
    s3.put(&bucket, "existing.txt", b"original".to_vec());
    let mount = s3.mount_args(&bucket).mount();
    let path = mount.join("existing.txt");
    for (how, options) in write_opens() {
        let errno = expect_errno(options.open(&path), &format!("open existing {how}"));
        assert_eq!(errno, libc::EPERM, "open existing {how}");
    }
    assert_eq!(s3.get(&bucket, "existing.txt"), b"original");
    assert_eq!(s3.list_keys(&bucket), vec!["existing.txt"]);
    assert_eq!(fs::read(&path).unwrap(), b"original");
}

#[test]
fn overwrite_with_the_flag_replaces_only_through_o_trunc() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-overwrite");
    let old = pseudo_random_bytes(1, 5000);
    s3.put(&bucket, "small.bin", old.clone());
    s3.put(&bucket, "big.bin", old.clone());
    let mount = s3.mount_args(&bucket).args(["--allow-overwrite"]).mount();

    // Changing part of an object or appending to it stays refused.
    for (how, options) in write_opens() {
        if how.contains("TRUNC") {
            continue;
        }
        let errno = expect_errno(
            options.open(mount.join("small.bin")),
            &format!("open existing {how} with --allow-overwrite"),
        );
        assert_eq!(
            errno,
            libc::EPERM,
            "open existing {how} with --allow-overwrite"
        );
    }
    assert_bytes_eq(&s3.get(&bucket, "small.bin"), &old, "after refused opens");

    // O_TRUNC replaces it; until close S3 keeps the old object whole.
    for (i, (name, len)) in [("small.bin", 12_345), ("big.bin", 2 * 8 * MIB + 3)]
        .into_iter()
        .enumerate()
    {
        let new = pseudo_random_bytes(10 + i as u64, len);
        let mut f = File::create(mount.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        f.write_all(&new[..len / 2]).unwrap();
        assert_bytes_eq(
            &s3.get(&bucket, name),
            &old,
            &format!("{name} while replaced"),
        );
        f.write_all(&new[len / 2..]).unwrap();
        close(f).unwrap_or_else(|e| panic!("close {name}: {e}"));
        assert_bytes_eq(&s3.get(&bucket, name), &new, &format!("{name} replaced"));
        assert_eq!(fs::metadata(mount.join(name)).unwrap().len(), len as u64);
        assert_bytes_eq(&fs::read(mount.join(name)).unwrap(), &new, name);
    }
    assert_eq!(s3.sorted_keys(&bucket), vec!["big.bin", "small.bin"]);
}

#[test]
fn unlink_needs_allow_delete() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-unlink");
    s3.put(&bucket, "a.txt", b"a".to_vec());
    s3.put(&bucket, "dir/b.txt", b"b".to_vec());
    s3.put(&bucket, "dir/c.txt", b"c".to_vec());

    {
        let mount = s3.mount_args(&bucket).mount();
        let errno = expect_errno(fs::remove_file(mount.join("a.txt")), "unlink without flag");
        assert_eq!(errno, libc::EPERM);
        assert_eq!(s3.get(&bucket, "a.txt"), b"a");
        assert_listing(mount.path(), &["a.txt", "dir"]);
    }

    let mount = s3.mount_args(&bucket).args(["--allow-delete"]).mount();
    fs::remove_file(mount.join("a.txt")).unwrap();
    s3.assert_no_object(&bucket, "a.txt", "after unlink");
    assert_listing(mount.path(), &["dir"]);
    let errno = expect_errno(fs::metadata(mount.join("a.txt")), "stat after unlink");
    assert_eq!(errno, libc::ENOENT);

    fs::remove_file(mount.join("dir/b.txt")).unwrap();
    assert_eq!(s3.sorted_keys(&bucket), vec!["dir/c.txt"]);
    assert_listing(&mount.join("dir"), &["c.txt"]);

    let errno = expect_errno(fs::remove_file(mount.join("nope.txt")), "unlink missing");
    assert_eq!(errno, libc::ENOENT);
    assert_eq!(s3.sorted_keys(&bucket), vec!["dir/c.txt"]);
}

#[test]
fn mkdir_is_local_until_a_file_is_written_in_it() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-mkdir");
    s3.put(&bucket, "s3dir/x.txt", b"x".to_vec());
    let mount = s3.mount_args(&bucket).mount();

    fs::create_dir(mount.join("d")).unwrap();
    assert_typed_listing(mount.path(), &[("d", 'd'), ("s3dir", 'd')]);
    assert_listing(&mount.join("d"), &[]);
    assert_eq!(
        s3.sorted_keys(&bucket),
        vec!["s3dir/x.txt"],
        "mkdir must not create an object"
    );
    let errno = expect_errno(fs::create_dir(mount.join("d")), "mkdir of an existing dir");
    assert_eq!(errno, libc::EEXIST);

    let mut f = File::create(mount.join("d/f.txt")).unwrap();
    f.write_all(b"in d").unwrap();
    close(f).unwrap();
    assert_eq!(s3.get(&bucket, "d/f.txt"), b"in d");
    assert_eq!(s3.sorted_keys(&bucket), vec!["d/f.txt", "s3dir/x.txt"]);
    assert_typed_listing(&mount.join("d"), &[("f.txt", 'f')]);

    fs::create_dir_all(mount.join("a/b/c")).unwrap();
    let mut f = File::create(mount.join("a/b/c/g.txt")).unwrap();
    f.write_all(b"deep").unwrap();
    close(f).unwrap();
    assert_eq!(s3.get(&bucket, "a/b/c/g.txt"), b"deep");

    // rmdir: an empty local directory goes; a non-empty one, local or from S3, stays.
    fs::create_dir(mount.join("e")).unwrap();
    fs::remove_dir(mount.join("e")).unwrap();
    assert_typed_listing(mount.path(), &[("a", 'd'), ("d", 'd'), ("s3dir", 'd')]);
    for dir in ["d", "s3dir", "a/b"] {
        let errno = expect_errno(fs::remove_dir(mount.join(dir)), &format!("rmdir {dir}"));
        assert_eq!(errno, libc::ENOTEMPTY, "rmdir {dir}");
    }
    assert_eq!(
        s3.sorted_keys(&bucket),
        vec!["a/b/c/g.txt", "d/f.txt", "s3dir/x.txt"]
    );
}

#[test]
fn rename_of_a_file_copies_then_deletes() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-rename");
    let a = pseudo_random_bytes(20, 3 * MIB + 11);
    let b = b"the old b".to_vec();
    s3.put(&bucket, "a.bin", a.clone());
    s3.put(&bucket, "b.bin", b.clone());
    s3.put(&bucket, "c.bin", b"c".to_vec());

    // Without --allow-delete: refused, nothing changes.
    {
        let mount = s3.mount_args(&bucket).mount();
        let errno = expect_errno(
            fs::rename(mount.join("c.bin"), mount.join("new.bin")),
            "rename without --allow-delete",
        );
        assert_eq!(errno, libc::EPERM);
        assert_eq!(s3.sorted_keys(&bucket), vec!["a.bin", "b.bin", "c.bin"]);
    }

    // With --allow-delete: to a new name works; onto an existing one needs --allow-overwrite.
    {
        let mount = s3.mount_args(&bucket).args(["--allow-delete"]).mount();
        fs::rename(mount.join("c.bin"), mount.join("d.bin")).unwrap();
        assert_eq!(s3.sorted_keys(&bucket), vec!["a.bin", "b.bin", "d.bin"]);
        assert_eq!(s3.get(&bucket, "d.bin"), b"c");
        assert_listing(mount.path(), &["a.bin", "b.bin", "d.bin"]);
        assert_eq!(fs::read(mount.join("d.bin")).unwrap(), b"c");

        let errno = expect_errno(
            fs::rename(mount.join("a.bin"), mount.join("b.bin")),
            "rename onto an existing file without --allow-overwrite",
        );
        assert_eq!(errno, libc::EPERM);
        assert_bytes_eq(&s3.get(&bucket, "a.bin"), &a, "a after refused rename");
        assert_eq!(s3.get(&bucket, "b.bin"), b, "b after refused rename");
    }

    let mount = s3
        .mount_args(&bucket)
        .args(["--allow-delete", "--allow-overwrite"])
        .mount();
    fs::rename(mount.join("a.bin"), mount.join("b.bin")).unwrap();
    assert_eq!(s3.sorted_keys(&bucket), vec!["b.bin", "d.bin"]);
    assert_bytes_eq(&s3.get(&bucket, "b.bin"), &a, "b after rename onto it");
    assert_listing(mount.path(), &["b.bin", "d.bin"]);
    assert_bytes_eq(&fs::read(mount.join("b.bin")).unwrap(), &a, "b read back");
}

#[test]
fn rename_of_a_directory_is_refused_with_exdev() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-rename-dir");
    s3.put(&bucket, "d/x.txt", b"x".to_vec());
    let mount = s3
        .mount_args(&bucket)
        .args(["--allow-delete", "--allow-overwrite"])
        .mount();
    fs::create_dir(mount.join("local")).unwrap();
    for dir in ["d", "local"] {
        let errno = expect_errno(
            fs::rename(mount.join(dir), mount.join("renamed")),
            &format!("rename directory {dir}"),
        );
        assert_eq!(errno, libc::EXDEV, "rename directory {dir}");
    }
    assert_eq!(s3.sorted_keys(&bucket), vec!["d/x.txt"]);
    assert_typed_listing(mount.path(), &[("d", 'd'), ("local", 'd')]);
}

fn set_xattr(path: &Path) -> io::Result<()> {
    let value = b"v";
    // SAFETY: NUL-terminated strings and a buffer with its length, all alive for the call.
    let r = unsafe {
        libc::setxattr(
            c_path(path).as_ptr(),
            c"user.mount-s3-test".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    os_result(r.into()).map(drop)
}

fn mkfifo(path: &Path) -> io::Result<()> {
    // SAFETY: a NUL-terminated path alive for the call.
    os_result(unsafe { libc::mkfifo(c_path(path).as_ptr(), 0o644) }.into()).map(drop)
}

fn truncate_path(path: &Path, len: i64) -> io::Result<()> {
    // SAFETY: a NUL-terminated path alive for the call.
    os_result(unsafe { libc::truncate(c_path(path).as_ptr(), len) }.into()).map(drop)
}

/// The changes S3 cannot honour, each with the errno it must give; the object is untouched.
fn assert_unsupported_changes_refused(mount_flags: &[&str], errno_for: impl Fn(&str) -> i32) {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-refused");
    s3.put(&bucket, "obj.txt", b"untouched".to_vec());
    let mount = s3
        .mount_args(&bucket)
        .args(mount_flags.iter().copied())
        .mount();
    let obj = mount.join("obj.txt");
    let attempts: Vec<(&str, io::Result<()>)> = vec![
        (
            "chmod",
            fs::set_permissions(&obj, fs::Permissions::from_mode(0o600)),
        ),
        (
            "chown",
            std::os::unix::fs::chown(&obj, Some(1234), Some(5678)),
        ),
        ("truncate", truncate_path(&obj, 3)),
        (
            "symlink",
            std::os::unix::fs::symlink("obj.txt", mount.join("link")),
        ),
        ("link", fs::hard_link(&obj, mount.join("hard"))),
        ("setxattr", set_xattr(&obj)),
        ("mkfifo", mkfifo(&mount.join("fifo"))),
    ];
    for (what, result) in attempts {
        let errno = expect_errno(result, &format!("{what} with {mount_flags:?}"));
        assert_eq!(errno, errno_for(what), "{what} with {mount_flags:?}");
    }
    assert_eq!(s3.list_keys(&bucket), vec!["obj.txt"]);
    assert_eq!(s3.get(&bucket, "obj.txt"), b"untouched");
    assert_listing(mount.path(), &["obj.txt"]);
    assert_eq!(fs::read(&obj).unwrap(), b"untouched");
}

#[test]
fn unsupported_changes_are_refused() {
    let errno_for = |what: &str| {
        if what == "setxattr" {
            libc::ENOTSUP
        } else {
            libc::EPERM
        }
    };
    assert_unsupported_changes_refused(&[], errno_for);
    assert_unsupported_changes_refused(&["--allow-delete", "--allow-overwrite"], errno_for);
}

#[test]
fn read_only_mount_refuses_every_change_with_erofs() {
    assert_unsupported_changes_refused(&["--read-only"], |_| libc::EROFS);

    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("modify-read-only");
    s3.put(&bucket, "obj.txt", b"kept".to_vec());
    s3.put(&bucket, "dir/x.txt", b"x".to_vec());
    let mount = s3.mount_args(&bucket).args(["--read-only"]).mount();
    let attempts: Vec<(&str, io::Result<()>)> = vec![
        ("unlink", fs::remove_file(mount.join("obj.txt"))),
        (
            "rename",
            fs::rename(mount.join("obj.txt"), mount.join("new.txt")),
        ),
        ("rmdir", fs::remove_dir(mount.join("dir"))),
        ("mkdir", fs::create_dir(mount.join("newdir"))),
        ("create", File::create(mount.join("new.txt")).map(drop)),
    ];
    for (what, result) in attempts {
        let errno = expect_errno(result, &format!("{what} on a read-only mount"));
        assert_eq!(errno, libc::EROFS, "{what} on a read-only mount");
    }
    assert_eq!(s3.sorted_keys(&bucket), vec!["dir/x.txt", "obj.txt"]);
}
