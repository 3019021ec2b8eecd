//! The mount table as `/proc/self/mountinfo` shows it, and unmounting what a test left.
//!
//! Not here: starting or owning a mount (`mount`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use super::process::quiet_status;

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: String,
    pub mount_point: String,
    /// Per-mount options, e.g. `ro,nosuid,nodev,relatime`.
    pub options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

impl MountEntry {
    /// Read-only as a mount (MS_RDONLY) or as a superblock.
    pub fn is_read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
            || self.super_options.split(',').any(|o| o == "ro")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mountinfo line: `id parent major:minor root mount-point options [optional...] - type
/// source super-options`.
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 6 || r.len() < 2 {
        return None;
    }
    Some(MountEntry {
        mount_id: l[0].to_string(),
        mount_point: unescape_mountinfo(l[4]),
        options: l[5].to_string(),
        fs_type: unescape_mountinfo(r[0]),
        source: unescape_mountinfo(r[1]),
        super_options: r.get(2).map(|s| s.to_string()).unwrap_or_default(),
    })
}

/// All mounts of this process's mount namespace.
pub fn mount_table() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines().filter_map(parse_line).collect()
}

/// The (last, i.e. topmost) mount at `path`, if any.
pub fn mount_entry(path: &Path) -> Option<MountEntry> {
    let want = path.to_string_lossy();
    mount_table().into_iter().rfind(|m| m.mount_point == want)
}

/// Unmounts `path`: `fusermount3 -u`, falling back to `umount -l`.
pub fn unmount(path: &Path) {
    for _ in 0..3 {
        if mount_entry(path).is_none() {
            return;
        }
        if unmount_topmost(path) {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    if mount_entry(path).is_some() {
        lazy_unmount(path);
    }
}

/// One `fusermount3 -u` (one mount, the topmost, at `path`); `umount -l` if that fails.
pub fn unmount_topmost(path: &Path) -> bool {
    quiet_status(Command::new("fusermount3").arg("-u").arg(path)) || lazy_unmount(path)
}

/// `umount -l`: detaches the mount now, even if it is busy or its process is dead.
pub fn lazy_unmount(path: &Path) -> bool {
    quiet_status(Command::new("umount").arg("-l").arg(path))
}
