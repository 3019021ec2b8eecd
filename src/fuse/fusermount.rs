//! Mounting and unmounting through the setuid `fusermount3`, for a user who may not call
//! mount(2): fusermount3 opens /dev/fuse as root, mounts it, and hands the descriptor back
//! over a socket named by `_FUSE_COMMFD` (libfuse's protocol), which we then serve with
//! `fuser::Session::from_fd`.
//!
//! fuser has such a path of its own, but it first opens /dev/fuse itself and gives up when
//! that is refused (/dev/fuse is 0600 on some systems), never reaching fusermount3.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::session::MountConfig;

/// Where fusermount3 may be beyond `PATH`.
const USUAL_PLACES: [&str; 2] = ["/usr/bin/fusermount3", "/bin/fusermount3"];

/// fusermount3 in each `PATH` directory (its setuid wrapper may live in one, as on NixOS),
/// then the usual places.
pub fn candidates() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("fusermount3"))
        .filter(|p| p.is_absolute())
        .chain(USUAL_PLACES.iter().map(PathBuf::from))
        .filter(|p| p.exists())
        .collect()
}

/// The `-o` options fusermount3 takes for `config` (the kernel's `allow_other` serves both
/// `--allow-other` and `--allow-root`; the session's ACL narrows the latter).
pub fn options(config: &MountConfig) -> String {
    let mut options = vec![
        format!("fsname={}", escape(&config.fs_name)),
        "subtype=mount-s3".to_string(),
        "default_permissions".to_string(),
        "nosuid".to_string(),
        "nodev".to_string(),
        "noatime".to_string(),
        if config.read_only { "ro" } else { "rw" }.to_string(),
    ];
    if config.noexec {
        options.push("noexec".to_string());
    }
    if config.allow_other || config.allow_root {
        options.push("allow_other".to_string());
    }
    options.join(",")
}

/// A backslash before each comma and backslash, as fusermount3 reads `fsname=`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == ',' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Mounts `mount_point` through fusermount3 and returns the /dev/fuse descriptor it opened.
/// An error carries fusermount3's own words.
pub fn mount(mount_point: &Path, config: &MountConfig) -> io::Result<OwnedFd> {
    let program = candidates()
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "fusermount3 not found"))?;
    let (ours, theirs) = UnixStream::pair()?;
    let theirs_fd = theirs.as_raw_fd();
    let mut command = Command::new(&program);
    command
        .arg("-o")
        .arg(options(config))
        .arg("--")
        .arg(mount_point)
        .env("_FUSE_COMMFD", theirs_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec, only fcntl (async-signal-safe) on a descriptor this
    // process owns: fusermount3 must inherit its end of the socket.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(theirs_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(theirs_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    let received = receive_fd(&ours);
    let output = child.wait_with_output()?;
    let said = || {
        let text = String::from_utf8_lossy(&output.stderr);
        let line = text.lines().last().unwrap_or("").trim().to_string();
        if line.is_empty() {
            format!("fusermount3 exited with {}", output.status)
        } else {
            line
        }
    };
    // A descriptor means mounted (fusermount3 sends it only then), as libfuse reads it.
    match received {
        Ok(fd) => Ok(fd),
        Err(_) if !output.status.success() => {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, said()))
        }
        Err(e) => Err(e),
    }
}

/// Unmounts `mount_point` lazily through fusermount3 (`-u -z`).
pub fn unmount(mount_point: &Path) -> io::Result<()> {
    let program = candidates()
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "fusermount3 not found"))?;
    let output = Command::new(program)
        .args([
            OsString::from("-u"),
            OsString::from("-z"),
            OsString::from("--"),
        ])
        .arg(mount_point)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr);
    Err(io::Error::other(
        text.lines()
            .last()
            .unwrap_or("fusermount3 -u failed")
            .trim()
            .to_string(),
    ))
}

/// Receives one descriptor sent with SCM_RIGHTS on `socket` (fusermount3 sends it with one
/// byte of data). EOF without one is an error.
fn receive_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    // Room for one control message holding one int, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    message.msg_controllen =
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let received = loop {
        // SAFETY: message points at live buffers sized as declared.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if received == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "fusermount3 sent no descriptor",
        ));
    }
    // SAFETY: the header was filled by recvmsg; CMSG_FIRSTHDR/CMSG_DATA stay inside
    // `control` for a message of the length it reports.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        if header.is_null()
            || (*header).cmsg_level != libc::SOL_SOCKET
            || (*header).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "fusermount3 answered without a descriptor",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> MountConfig {
        MountConfig {
            fs_name: name.to_string(),
            read_only: true,
            allow_other: false,
            allow_root: true,
            auto_unmount: false,
            noexec: true,
            read_ahead_kib: crate::fuse::session::DEFAULT_READ_AHEAD_KIB,
            threads: 1,
        }
    }

    #[test]
    fn options_as_fusermount3_reads_them() {
        assert_eq!(
            options(&config("bucket")),
            "fsname=bucket,subtype=mount-s3,default_permissions,nosuid,nodev,noatime,ro,noexec,allow_other"
        );
        assert!(options(&config(r"a,b\c")).starts_with(r"fsname=a\,b\\c,"));
    }
}
