//! Writes that cannot finish: the mount killed mid-write must leave no object (a partial
//! file never appears), and a server lost mid-write must give the program an error (EIO)
//! within a bounded time rather than a hang or a false success.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{PseudoRandomReader, S3Server, close, expect_errno, list_dir};

const MIB: usize = 1024 * 1024;
const PART: usize = 8 * MIB;

#[test]
fn killed_mount_leaves_no_partial_object() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("faults-sigkill");
    let mut mount = s3.mount_args(&bucket).mount();
    let path = mount.join("big.bin");

    // 100 MiB were meant; the mount dies after 3 parts' worth.
    let mut f = File::create(&path).unwrap();
    let mut source = PseudoRandomReader::new(9);
    let mut buf = vec![0u8; MIB];
    for i in 0..3 * PART / MIB {
        source.read_exact(&mut buf).unwrap();
        f.write_all(&buf)
            .unwrap_or_else(|e| panic!("write of MiB {i} before the kill: {e}"));
    }
    eprintln!(
        "multipart uploads before the kill: {:?}",
        s3.multipart_uploads(&bucket)
    );
    let status = mount
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
        .expect("mount-s3 did not die of SIGKILL within 10 s");
    eprintln!("mount-s3 exited: {status}");

    // The program learns that its file system is gone (ENOTCONN, typically).
    source.read_exact(&mut buf).unwrap();
    let errno = expect_errno(f.write_all(&buf), "write after the mount was killed");
    eprintln!("write after the kill: errno {errno}");
    let _ = close(f);
    assert!(mount.lazy_unmount(), "umount -l of the dead mount failed");
    assert!(
        !mount.is_mounted(),
        "the dead mount is still in the mount table"
    );

    s3.assert_no_object(&bucket, "big.bin", "after the mount was killed mid-write");
    assert!(s3.list_keys(&bucket).is_empty());
    // Nobody was left to abort it: an orphaned upload is expected here, and only reported.
    eprintln!(
        "multipart uploads after the kill (not asserted): {:?}",
        s3.multipart_uploads(&bucket)
    );

    let again = s3.mount_args(&bucket).mount();
    assert!(
        list_dir(again.path()).is_empty(),
        "the partial file shows after a remount"
    );
    let errno = expect_errno(
        std::fs::metadata(again.join("big.bin")),
        "stat after remount",
    );
    assert_eq!(errno, libc::ENOENT);
}

#[test]
fn lost_server_mid_write_gives_eio_within_a_minute() {
    let server = S3Server::start();
    let bucket = server.new_bucket("faults-lost-server");
    let mount = server.mount_args(&bucket).mount();
    let mut f = File::create(mount.join("f.bin")).unwrap();
    let mut source = PseudoRandomReader::new(10);
    let mut buf = vec![0u8; MIB];
    for i in 0..2 * PART / MIB + 1 {
        source.read_exact(&mut buf).unwrap();
        f.write_all(&buf)
            .unwrap_or_else(|e| panic!("write of MiB {i} before the server stopped: {e}"));
    }

    drop(server);
    let stopped = Instant::now();
    // Keep writing (up to 6 more parts, enough to exhaust the parts in flight), then close;
    // the first error wins.
    let mut first_error = None;
    for i in 0..6 * PART / MIB {
        source.read_exact(&mut buf).unwrap();
        if let Err(e) = f.write_all(&buf) {
            eprintln!("write of MiB {i} after the server stopped failed: {e}");
            first_error = Some(e);
            break;
        }
    }
    let closed = close(f);
    eprintln!("close after the server stopped: {closed:?}");
    let elapsed = stopped.elapsed();
    eprintln!("error reached the program {elapsed:?} after the server stopped");

    let error = first_error
        .or(closed.err())
        .expect("neither a write nor close failed although the server was gone");
    assert_eq!(
        error.raw_os_error(),
        Some(libc::EIO),
        "the error for a lost server: {error}"
    );
    assert!(
        elapsed < Duration::from_secs(60),
        "the error took {elapsed:?} to reach the program"
    );
    drop(mount);
}
