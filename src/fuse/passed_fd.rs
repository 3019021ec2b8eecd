//! A mount point of the form `/dev/fd/N`: a /dev/fuse descriptor that a parent process (the
//! Kubernetes CSI driver, say) opened and mounted itself, then passed to us, as Mountpoint
//! accepts it. We serve it and never mount or unmount: the parent owns the mount.

use std::os::fd::RawFd;
use std::path::Path;

/// The descriptor number in `/dev/fd/N`, or `None` for any other path.
pub fn parse(mount_point: &Path) -> Option<RawFd> {
    let digits = mount_point.to_str()?.strip_prefix("/dev/fd/")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks that `fd` is open on /dev/fuse for reading and writing; the error is one line
/// naming the mount point.
pub fn check(fd: RawFd) -> Result<(), String> {
    let shown = format!("/dev/fd/{fd}");
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_err(|e| format!("mount point {shown} is not an open file descriptor ({e})"))?;
    if target != Path::new("/dev/fuse") {
        return Err(format!(
            "mount point {shown} must be a /dev/fuse descriptor, not {}",
            target.display()
        ));
    }
    // SAFETY: F_GETFL on a descriptor number only reads its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE != libc::O_RDWR {
        return Err(format!(
            "mount point {shown} must be open for reading and writing"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dev_fd_and_digits_is_a_descriptor() {
        assert_eq!(parse(Path::new("/dev/fd/3")), Some(3));
        assert_eq!(parse(Path::new("/dev/fd/378")), Some(378));
        for other in [
            "/dev/fd/-1",
            "/dev/fd/",
            "/dev/fd/3/",
            "/dev/fd/x",
            "/mnt/3",
            "dev/fd/3",
        ] {
            assert_eq!(parse(Path::new(other)), None, "{other}");
        }
        assert_eq!(parse(Path::new("/dev/fd/99999999999")), None);
    }

    #[test]
    fn a_descriptor_that_is_not_dev_fuse_is_refused() {
        let file = tempfile::tempfile().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let err = check(fd).unwrap_err();
        assert!(err.contains("must be a /dev/fuse descriptor"), "{err}");
        assert!(
            check(1 << 20)
                .unwrap_err()
                .contains("not an open file descriptor")
        );
    }
}
