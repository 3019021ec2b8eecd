//! Directories of the mount's own inside a user's directory (the cache's, the staging area's):
//! created 0700, opened by descriptor without following a symlink, and refused when another
//! user could write them (who could then swap them for one of theirs).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

/// A mode from its bits.
pub fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits)
}

/// Opens directory `name` in `dir`, creating it (0700) if missing, without following a
/// symlink: a symlink there is an error (ELOOP or ENOTDIR), never a way out.
pub fn open_dir_at(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(&dir, name, mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(&dir, name, flags, Mode::empty())?)
}

/// The effective uid.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses a directory (`shown` in messages) that another user could write: it must belong
/// to the mounting user (or to root, with `allow_root`) and not be writable by group or
/// others.
pub fn check_owner(shown: &str, stat: &rustix::fs::Stat, allow_root: bool) -> Result<(), String> {
    let uid = stat.st_uid;
    if uid != euid() && !(allow_root && uid == 0) {
        return Err(format!(
            "{shown} belongs to uid {uid}, not to the user mounting; use a directory of your own"
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(format!(
            "{shown} can be written by other users (mode {:o}); use a directory only you can write, such as a new one inside it",
            stat.st_mode & 0o7777
        ));
    }
    Ok(())
}
