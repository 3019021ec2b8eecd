//! Writing new files through the mount, checked through the SDK: the object appears at close
//! (or fsync) with exactly the bytes written and never before; large files stream as
//! multipart uploads; many files at once; what a writing handle refuses (writes out of
//! order, reads, writes after fsync); `--upload-checksums`.
//!
//! Replacing, deleting and renaming existing objects are in modify.rs; a mount killed or a
//! server lost mid-write in write_faults.rs.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    PseudoRandomReader, Rng, S3Server, assert_bytes_eq, close, expect_errno, list_dir, pread_full,
    pseudo_random_bytes,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The default `--part-size`: files larger than this are multipart uploads.
const PART: usize = 8 * MIB;

/// An empty file is committed at release, which the kernel sends without waiting after the
/// last close(2) returns: how long to wait for it to show in S3.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// How long an aborted upload may take to disappear from ListMultipartUploads.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// The multipart uploads still in progress in `bucket` once they have had [`ABORT_WAIT`] to
/// go away (empty at once if all is well).
fn uploads_left(s3: &S3Server, bucket: &str) -> Vec<String> {
    let deadline = Instant::now() + ABORT_WAIT;
    loop {
        let uploads = s3.multipart_uploads(bucket);
        if uploads.is_empty() || Instant::now() > deadline {
            return uploads;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn new_file_appears_at_close_with_exactly_the_bytes_written() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-sizes");
    let mount = s3.mount_args(&bucket).mount();
    let sizes = [0, 1, 4096 + 3, PART, PART + 1, 2 * PART + 12_345];
    let mut names = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("file-{size}.bin");
        let path = mount.join(&name);
        let data = pseudo_random_bytes(100 + i as u64, size);
        let mut f = File::create(&path).unwrap_or_else(|e| panic!("create {name}: {e}"));
        let half = size / 2;
        f.write_all(&data[..half]).unwrap();

        // Open and partly written: shown by the mount, absent from S3.
        s3.assert_no_object(&bucket, &name, "open and partly written");
        let md = fs::metadata(&path).unwrap_or_else(|e| panic!("stat {name} while open: {e}"));
        assert!(md.is_file(), "{name} while open: {md:?}");
        assert!(
            md.len() == 0 || md.len() == half as u64,
            "{name} while open has size {}, neither 0 nor the {half} bytes written",
            md.len()
        );
        assert!(
            list_dir(mount.path()).contains(&name),
            "{name} is not listed while it is written"
        );

        f.write_all(&data[half..]).unwrap();
        s3.assert_no_object(&bucket, &name, "written but not closed");
        close(f).unwrap_or_else(|e| panic!("close {name}: {e}"));

        let head = if size == 0 {
            s3.wait_for_object(&bucket, &name, RELEASE_WAIT)
        } else {
            s3.head_if_exists(&bucket, &name)
        };
        let (len, _) = head.unwrap_or_else(|| panic!("{name} is not in S3 after close"));
        assert_eq!(len, size as u64, "ContentLength of {name}");
        assert_bytes_eq(&s3.get(&bucket, &name), &data, &format!("{name} in S3"));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            size as u64,
            "size of {name}"
        );
        assert_bytes_eq(
            &fs::read(&path).unwrap(),
            &data,
            &format!("{name} read back"),
        );
        names.push(name);
    }
    names.sort();
    assert_eq!(s3.sorted_keys(&bucket), names);
    assert_eq!(list_dir(mount.path()), names);
    assert_eq!(uploads_left(s3, &bucket), Vec::<String>::new());
}

#[test]
fn large_file_streams_as_multipart_and_appears_whole_at_close() {
    const LEN: u64 = 200 * MIB as u64;
    const SEED: u64 = 200;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-large");
    let mount = s3.mount_args(&bucket).mount();
    let path = mount.join("large.bin");

    let start = Instant::now();
    let mut f = File::create(&path).unwrap();
    let mut source = PseudoRandomReader::new(SEED);
    // Not a divisor of the part size, so that writes straddle part boundaries.
    let mut buf = vec![0u8; MIB + 4099];
    let mut written = 0u64;
    let mut checked_midway = false;
    while written < LEN {
        let n = (LEN - written).min(buf.len() as u64) as usize;
        source.read_exact(&mut buf[..n]).unwrap();
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write at {written}: {e}"));
        written += n as u64;
        if !checked_midway && written >= 5 * PART as u64 {
            checked_midway = true;
            s3.assert_no_object(&bucket, "large.bin", "after 40 MiB of 200");
            assert_eq!(
                s3.multipart_uploads(&bucket),
                vec!["large.bin"],
                "parts must stream to S3 while the program writes"
            );
        }
    }
    s3.assert_no_object(&bucket, "large.bin", "written but not closed");
    close(f).unwrap();
    eprintln!(
        "wrote {LEN} bytes through the mount in {:?}",
        start.elapsed()
    );

    assert_eq!(s3.head(&bucket, "large.bin").0, LEN);
    s3.assert_object_matches(&bucket, "large.bin", PseudoRandomReader::new(SEED), LEN);
    assert_eq!(uploads_left(s3, &bucket), Vec::<String>::new());

    // The first and last MiB through the mount.
    let f = File::open(&path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), LEN);
    let first = pseudo_random_bytes(SEED, MIB);
    assert_bytes_eq(&pread_full(&f, 0, MIB), &first, "first MiB read back");
    let mut expected = PseudoRandomReader::new(SEED);
    io::copy(&mut (&mut expected).take(LEN - MIB as u64), &mut io::sink()).unwrap();
    let mut last = vec![0u8; MIB];
    expected.read_exact(&mut last).unwrap();
    assert_bytes_eq(
        &pread_full(&f, LEN - MIB as u64, MIB),
        &last,
        "last MiB read back",
    );
}

#[test]
fn many_small_files_written_in_parallel_all_land() {
    const FILES: usize = 64;
    const THREADS: usize = 8;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-parallel");
    let mount = s3.mount_args(&bucket).mount();
    let mut rng = Rng::new(64);
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| {
            let len = 10 * KIB + rng.below(90 * KIB as u64 + 1) as usize;
            (
                format!("small-{i:02}.bin"),
                pseudo_random_bytes(300 + i as u64, len),
            )
        })
        .collect();

    thread::scope(|scope| {
        for t in 0..THREADS {
            let files = &files;
            let root = mount.path();
            scope.spawn(move || {
                for (name, data) in files.iter().skip(t).step_by(THREADS) {
                    let mut f = File::create(root.join(name))
                        .unwrap_or_else(|e| panic!("thread {t}: create {name}: {e}"));
                    f.write_all(data)
                        .unwrap_or_else(|e| panic!("thread {t}: write {name}: {e}"));
                    close(f).unwrap_or_else(|e| panic!("thread {t}: close {name}: {e}"));
                }
            });
        }
    });

    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(s3.sorted_keys(&bucket), names);
    for (name, data) in &files {
        assert_bytes_eq(&s3.get(&bucket, name), data, name);
    }
    assert_eq!(list_dir(mount.path()), names);
}

/// A process started while a file is being written gets a copy of its descriptor: closed
/// at exec (close-on-exec) or when the child exits. The kernel sends the mount a flush for
/// each such close; none of them may commit the parent's half-written file.
#[test]
fn child_process_closing_an_inherited_descriptor_does_not_commit() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-fork");
    let mount = s3.mount_args(&bucket).mount();
    let path = mount.join("parent.bin");
    let data = pseudo_random_bytes(800, 3 * MIB + 5);
    let third = data.len() / 3;
    let mut f = File::create(&path).unwrap();
    f.write_all(&data[..third]).unwrap();

    // Close-on-exec (how Rust, Python and most libraries open files): closed by exec.
    let status = Command::new("true").status().expect("run true");
    assert!(status.success());
    s3.assert_no_object(
        &bucket,
        "parent.bin",
        "after a child's exec closed its copy",
    );
    f.write_all(&data[third..2 * third])
        .unwrap_or_else(|e| panic!("write after a child's exec closed its copy: {e}"));

    // Inherited for the child's whole life (as by fork without exec, or a shell).
    let fd = f.as_raw_fd();
    let mut child = Command::new("true");
    // SAFETY: only fcntl, which is async-signal-safe, between fork and exec.
    unsafe {
        child.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    assert!(child.status().expect("run true").success());
    s3.assert_no_object(&bucket, "parent.bin", "after a child exited with a copy");
    f.write_all(&data[2 * third..])
        .unwrap_or_else(|e| panic!("write after a child exited with a copy: {e}"));

    close(f).unwrap();
    assert_bytes_eq(&s3.get(&bucket, "parent.bin"), &data, "parent's file");
}

/// fsync commits the file as written so far; the handle is then done: a further write is
/// refused (EINVAL), and close still succeeds and changes nothing.
#[test]
fn fsync_commits_and_ends_the_handle() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-fsync");
    let mount = s3.mount_args(&bucket).mount();
    for (i, size) in [1000, PART + 5000].into_iter().enumerate() {
        let name = format!("synced-{size}.bin");
        let path = mount.join(&name);
        let data = pseudo_random_bytes(400 + i as u64, size);
        let mut f = File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        s3.assert_no_object(&bucket, &name, "before fsync");
        f.sync_all().unwrap_or_else(|e| panic!("fsync {name}: {e}"));
        assert_eq!(s3.head(&bucket, &name).0, size as u64, "{name} after fsync");
        assert_bytes_eq(
            &s3.get(&bucket, &name),
            &data,
            &format!("{name} after fsync"),
        );

        let errno = expect_errno(f.write(b"more"), &format!("write to {name} after fsync"));
        assert_eq!(errno, libc::EINVAL, "write after fsync");
        close(f).unwrap_or_else(|e| panic!("close {name} after fsync: {e}"));

        assert_bytes_eq(
            &s3.get(&bucket, &name),
            &data,
            &format!("{name} after close"),
        );
        assert_bytes_eq(
            &fs::read(&path).unwrap(),
            &data,
            &format!("{name} read back"),
        );
    }
    assert_eq!(uploads_left(s3, &bucket), Vec::<String>::new());
}

/// A write anywhere but at the end fails with EINVAL and aborts the upload: no object and no
/// multipart upload are left, whether parts had been sent or not.
#[test]
fn out_of_order_write_fails_and_leaves_nothing() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-out-of-order");
    let mount = s3.mount_args(&bucket).mount();
    // (bytes written in order first, offset of the write that breaks the order)
    let cases: &[(usize, u64)] = &[
        (100, 0),
        (100, 1000),
        (100, 50),
        (2 * PART + 100, 5),
        (2 * PART + 100, 3 * PART as u64),
    ];
    for (i, &(first, offset)) in cases.iter().enumerate() {
        let what = format!("{first} bytes, then a write at {offset}");
        let name = format!("unordered-{i}.bin");
        let mut f = File::create(mount.join(&name)).unwrap();
        f.write_all(&pseudo_random_bytes(500 + i as u64, first))
            .unwrap();
        let errno = expect_errno(f.write_at(b"out of order", offset), &what);
        assert_eq!(errno, libc::EINVAL, "{what}");
        // The handle is dead; what close says is not specified.
        let _ = close(f);
        s3.assert_no_object(&bucket, &name, &format!("{what}, closed"));
        assert_eq!(uploads_left(s3, &bucket), Vec::<String>::new(), "{what}");
    }
    assert!(s3.list_keys(&bucket).is_empty());
}

/// The same through `--allow-overwrite` on an existing object: the old object is untouched.
#[test]
fn out_of_order_overwrite_leaves_the_old_object() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-out-of-order-old");
    let old = pseudo_random_bytes(600, 3 * MIB + 1);
    s3.put(&bucket, "keep.bin", old.clone());
    let mount = s3.mount_args(&bucket).args(["--allow-overwrite"]).mount();
    let path = mount.join("keep.bin");
    for (i, &(first, offset)) in [(100usize, 0u64), (2 * PART + 1, 1)].iter().enumerate() {
        let what = format!("overwrite with {first} bytes, then a write at {offset}");
        let mut f = File::create(&path).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        f.write_all(&pseudo_random_bytes(601 + i as u64, first))
            .unwrap();
        let errno = expect_errno(f.write_at(b"out of order", offset), &what);
        assert_eq!(errno, libc::EINVAL, "{what}");
        let _ = close(f);
        assert_bytes_eq(&s3.get(&bucket, "keep.bin"), &old, &what);
        assert_eq!(uploads_left(s3, &bucket), Vec::<String>::new(), "{what}");
    }
    assert_eq!(s3.list_keys(&bucket), vec!["keep.bin"]);
    // Past the default metadata TTL, the mount shows the old object again.
    thread::sleep(Duration::from_secs(2));
    assert_bytes_eq(
        &fs::read(&path).unwrap(),
        &old,
        "old object through the mount",
    );
}

/// A file being written cannot be read: not through its own handle, not through another.
#[test]
fn reading_a_file_being_written_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("write-no-read");
    let mount = s3.mount_args(&bucket).mount();
    let mut buf = [0u8; 16];

    let rw_path = mount.join("rw.txt");
    let mut rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&rw_path)
        .unwrap();
    rw.write_all(b"0123456789").unwrap();
    let errno = expect_errno(rw.read_at(&mut buf, 0), "read through an O_RDWR handle");
    assert_eq!(errno, libc::EPERM, "read through an O_RDWR handle");
    let errno = expect_errno(File::open(&rw_path), "open for reading while written");
    assert_eq!(errno, libc::EPERM, "open for reading while written");
    close(rw).unwrap();
    assert_eq!(s3.get(&bucket, "rw.txt"), b"0123456789");

    let w_path = mount.join("w.txt");
    let mut w = File::create(&w_path).unwrap();
    w.write_all(b"abc").unwrap();
    // The kernel itself refuses to read from a write-only descriptor (EBADF), before the
    // mount sees the request; either way no bytes come back.
    let errno = expect_errno(w.read(&mut buf), "read through an O_WRONLY handle");
    assert!(
        errno == libc::EBADF || errno == libc::EPERM,
        "read through an O_WRONLY handle: errno {errno}"
    );
    let errno = expect_errno(File::open(&w_path), "open for reading while written");
    assert_eq!(errno, libc::EPERM, "open for reading while written");
    close(w).unwrap();
    assert_eq!(s3.get(&bucket, "w.txt"), b"abc");

    // Once committed, both read normally.
    assert_eq!(fs::read(&rw_path).unwrap(), b"0123456789");
    assert_eq!(fs::read(&w_path).unwrap(), b"abc");
}

#[test]
fn upload_checksums_crc32c_and_off_both_upload() {
    let s3 = S3Server::shared();
    for value in ["crc32c", "off"] {
        let bucket = s3.new_bucket(&format!("write-checksums-{value}"));
        let mount = s3
            .mount_args(&bucket)
            .args(["--upload-checksums", value])
            .mount();
        for (i, (name, len)) in [("small.bin", 70_000), ("multi.bin", PART + 777)]
            .into_iter()
            .enumerate()
        {
            let what = format!("--upload-checksums {value}: {name}");
            let data = pseudo_random_bytes(700 + i as u64, len);
            let mut f = File::create(mount.join(name)).unwrap();
            f.write_all(&data)
                .unwrap_or_else(|e| panic!("{what}: write: {e}"));
            close(f).unwrap_or_else(|e| panic!("{what}: close: {e}"));
            assert_bytes_eq(&s3.get(&bucket, name), &data, &what);
        }
    }
}
