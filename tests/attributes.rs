//! What stat shows (size, mtime, mode, owner), the mount options that change it,
//! `--read-only`, and `--metadata-ttl`. Writes and refused changes are in write.rs and
//! modify.rs.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::thread;
use std::time::{Duration, SystemTime};

use common::{
    S3Server, assert_bytes_eq, assert_listing, expect_errno, my_uid_gid, pseudo_random_bytes,
    write_and_close,
};

fn abs_diff(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_else(|e| e.duration())
}

#[test]
fn stat_shows_size_mtime_and_default_mode_and_owner() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("attr-default");
    let before = SystemTime::now();
    s3.put(&bucket, "file.bin", pseudo_random_bytes(1, 123_457));
    s3.put(&bucket, "dir/inner.txt", b"inner".to_vec());
    s3.put(&bucket, "empty", Vec::new());
    let after = SystemTime::now();
    let (_, head_modified) = s3.head(&bucket, "file.bin");

    let mount = s3.mount_args(&bucket).mount();
    let (uid, gid) = my_uid_gid();

    let md = fs::metadata(mount.join("file.bin")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 123_457);
    assert_eq!(md.permissions().mode() & 0o7777, 0o644, "default file mode");
    assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(
        (md.uid(), md.gid()),
        (uid, gid),
        "owner is the mounting user"
    );
    let mtime = md.modified().unwrap();
    assert!(
        abs_diff(mtime, head_modified) <= Duration::from_millis(1500),
        "mtime {mtime:?} vs LastModified {head_modified:?}"
    );
    assert!(
        mtime + Duration::from_secs(3) >= before && mtime <= after + Duration::from_secs(3),
        "mtime {mtime:?} not within the put window {before:?}..{after:?}"
    );

    assert_eq!(fs::metadata(mount.join("empty")).unwrap().len(), 0);

    for d in [mount.path().to_path_buf(), mount.join("dir")] {
        let md = fs::metadata(&d).unwrap();
        assert!(md.is_dir(), "{d:?}");
        assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFDIR, "{d:?}");
        assert_eq!(
            md.permissions().mode() & 0o7777,
            0o755,
            "default dir mode of {d:?}"
        );
        assert_eq!((md.uid(), md.gid()), (uid, gid), "owner of {d:?}");
    }

    // The same attributes through an open handle (fstat).
    let f = File::open(mount.join("file.bin")).unwrap();
    let fmd = f.metadata().unwrap();
    assert_eq!(fmd.len(), 123_457);
    assert_eq!(fmd.permissions().mode() & 0o7777, 0o644);
}

#[test]
fn owner_and_mode_options() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("attr-options");
    s3.put(&bucket, "file.txt", b"0123456789".to_vec());
    s3.put(&bucket, "sub/nested.txt", b"nested".to_vec());
    let mount = s3
        .mount_args(&bucket)
        .args([
            "--uid",
            "1234",
            "--gid",
            "5678",
            "--file-mode",
            "0600",
            "--dir-mode",
            "0750",
        ])
        .mount();

    for f in [mount.join("file.txt"), mount.join("sub/nested.txt")] {
        let md = fs::metadata(&f).unwrap();
        assert!(md.is_file(), "{f:?}");
        assert_eq!(md.permissions().mode() & 0o7777, 0o600, "{f:?}");
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "{f:?}");
    }
    for d in [mount.path().to_path_buf(), mount.join("sub")] {
        let md = fs::metadata(&d).unwrap();
        assert!(md.is_dir(), "{d:?}");
        assert_eq!(md.permissions().mode() & 0o7777, 0o750, "{d:?}");
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "{d:?}");
    }
    assert_eq!(fs::metadata(mount.join("file.txt")).unwrap().len(), 10);
    // The test runs as root, so it can still read what it does not own.
    assert_eq!(fs::read(mount.join("file.txt")).unwrap(), b"0123456789");
}

#[test]
fn read_only_mount_refuses_changes_with_erofs() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("attr-readonly");
    s3.put(&bucket, "existing.txt", b"keep me".to_vec());
    s3.put(&bucket, "dir/inner.txt", b"inner".to_vec());
    let mount = s3.mount_args(&bucket).args(["--read-only"]).mount();
    assert!(
        mount.entry().is_read_only(),
        "mount options should include ro: {:?}",
        mount.entry()
    );

    // Reading works.
    assert_eq!(fs::read(mount.join("existing.txt")).unwrap(), b"keep me");

    assert_eq!(
        expect_errno(File::create(mount.join("new.txt")), "create"),
        libc::EROFS
    );
    assert_eq!(
        expect_errno(File::create(mount.join("dir/new.txt")), "create in subdir"),
        libc::EROFS
    );
    assert_eq!(
        expect_errno(
            OpenOptions::new()
                .write(true)
                .open(mount.join("existing.txt")),
            "open existing for writing"
        ),
        libc::EROFS
    );
    assert_eq!(
        expect_errno(fs::create_dir(mount.join("newdir")), "mkdir"),
        libc::EROFS
    );
    assert_eq!(
        expect_errno(fs::remove_file(mount.join("existing.txt")), "unlink"),
        libc::EROFS
    );

    // Nothing changed in the bucket.
    let mut keys = s3.list_keys(&bucket);
    keys.sort();
    assert_eq!(keys, vec!["dir/inner.txt", "existing.txt"]);
    assert_eq!(s3.get(&bucket, "existing.txt"), b"keep me");
    assert_listing(mount.path(), &["dir", "existing.txt"]);
}

/// A file written through the mount shows the mount's mode and owner, the size written, and
/// an mtime of about when it was written; S3 has the object under the same name.
#[test]
fn created_file_has_the_mount_attributes() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("attr-create");
    let mount = s3
        .mount_args(&bucket)
        .args(["--file-mode", "0640", "--uid", "4321"])
        .mount();
    let before = SystemTime::now();
    let data = pseudo_random_bytes(12, 54_321);
    let f = File::create(mount.join("new.bin")).unwrap();
    write_and_close(f, &data).unwrap();
    let after = SystemTime::now();

    let md = fs::metadata(mount.join("new.bin")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), data.len() as u64);
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!(md.uid(), 4321);
    assert_eq!(md.gid(), my_uid_gid().1);
    let mtime = md.modified().unwrap();
    assert!(
        mtime + Duration::from_secs(3) >= before && mtime <= after + Duration::from_secs(3),
        "mtime {mtime:?} not within the write window {before:?}..{after:?}"
    );
    assert_bytes_eq(&s3.get(&bucket, "new.bin"), &data, "object written");
    assert_listing(mount.path(), &["new.bin"]);
}

#[test]
fn replaced_object_shows_after_metadata_ttl() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("attr-ttl");
    let v1 = pseudo_random_bytes(10, 10_000);
    let v2 = pseudo_random_bytes(11, 25_001);
    s3.put(&bucket, "obj.bin", v1.clone());
    let mount = s3.mount_args(&bucket).args(["--metadata-ttl", "1"]).mount();

    let p = mount.join("obj.bin");
    assert_eq!(fs::metadata(&p).unwrap().len(), v1.len() as u64);
    assert_bytes_eq(&fs::read(&p).unwrap(), &v1, "first version");

    s3.put(&bucket, "obj.bin", v2.clone());
    thread::sleep(Duration::from_secs(3));

    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        v2.len() as u64,
        "size after the TTL"
    );
    assert_bytes_eq(&fs::read(&p).unwrap(), &v2, "second version after the TTL");
}

#[test]
fn added_and_deleted_objects_show_after_metadata_ttl() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("attr-ttl-list");
    s3.put(&bucket, "dir/keep.txt", b"keep".to_vec());
    s3.put(&bucket, "dir/gone.txt", b"gone soon".to_vec());
    let mount = s3.mount_args(&bucket).args(["--metadata-ttl", "1"]).mount();

    assert_listing(&mount.join("dir"), &["gone.txt", "keep.txt"]);
    assert_eq!(fs::read(mount.join("dir/gone.txt")).unwrap(), b"gone soon");
    assert_eq!(
        expect_errno(
            fs::metadata(mount.join("dir/new.txt")),
            "stat new before put"
        ),
        libc::ENOENT
    );

    s3.put(&bucket, "dir/new.txt", b"brand new".to_vec());
    s3.delete(&bucket, "dir/gone.txt");
    thread::sleep(Duration::from_secs(3));

    assert_listing(&mount.join("dir"), &["keep.txt", "new.txt"]);
    assert_eq!(fs::read(mount.join("dir/new.txt")).unwrap(), b"brand new");
    assert_eq!(
        expect_errno(fs::metadata(mount.join("dir/gone.txt")), "stat deleted"),
        libc::ENOENT
    );
}

#[test]
fn default_metadata_ttl_is_short() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("attr-ttl-default");
    s3.put(&bucket, "obj.txt", b"first".to_vec());
    let mount = s3.mount_args(&bucket).mount();
    let p = mount.join("obj.txt");
    assert_eq!(fs::read(&p).unwrap(), b"first");

    s3.put(&bucket, "obj.txt", b"second, longer".to_vec());
    thread::sleep(Duration::from_secs(3));
    assert_eq!(fs::metadata(&p).unwrap().len(), 14);
    assert_eq!(fs::read(&p).unwrap(), b"second, longer");
}
