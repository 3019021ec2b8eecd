//! File I/O through a mount as the checks need it: full reads, writes whose errors at close
//! are not lost, errno of a failure, byte comparisons that do not print megabytes, and the
//! two halves of a libc call that std does not wrap (the path, the result).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Reads up to `len` bytes at `offset` with as many `pread`s as it takes; stops early only
/// at end of file.
pub fn pread_full(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file
            .read_at(&mut buf[done..], offset + done as u64)
            .unwrap_or_else(|e| {
                panic!("pread at {} len {}: {e}", offset + done as u64, len - done)
            });
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// Seeks to `offset` and reads to end of file.
pub fn read_from(file: &mut File, offset: u64) -> Vec<u8> {
    file.seek(SeekFrom::Start(offset)).expect("seek");
    let mut out = Vec::new();
    file.read_to_end(&mut out).expect("read_to_end");
    out
}

/// Closes `file` and reports what close(2) said: a file system may refuse a write only at
/// close (FUSE flush), which `File`'s drop ignores.
pub fn close(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` and is closed exactly once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `data`, fsyncs and closes `file`, and reports the first error of the three.
pub fn write_and_close(mut file: File, data: &[u8]) -> io::Result<()> {
    let written = file.write_all(data).and_then(|_| file.sync_all());
    let closed = close(file);
    written.and(closed)
}

/// Asserts two byte strings are equal without printing megabytes: reports the length and
/// the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: bytes differ: got {} bytes, want {} bytes, first difference at offset {first}",
        got.len(),
        want.len()
    );
}

/// The raw OS error of an I/O result that must have failed.
#[track_caller]
pub fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// The mounting user's uid and gid.
pub fn my_uid_gid() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// `path` as the NUL-terminated string a libc call takes.
pub fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("a path without NUL")
}

/// What a libc call that returns -1 and sets errno on failure answered.
pub fn os_result(r: i64) -> io::Result<i64> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
