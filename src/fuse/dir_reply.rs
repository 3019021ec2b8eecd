//! Filling the kernel's directory buffers from a batch of entries: READDIR gets names and
//! types, READDIRPLUS their attributes too, and each entry it takes counts as a lookup.

use fuser::{Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::attr::file_attr;
use crate::fs::{DirEntry, S3Filesystem};
use crate::s3::ObjectStore;

/// Adds `entries` to a READDIR reply until the kernel's buffer is full, and sends it.
pub(super) fn fill(mut reply: ReplyDirectory, entries: Vec<DirEntry>) {
    for entry in entries {
        let kind = file_attr(&entry.attr).kind;
        if reply.add(
            INodeNo(entry.attr.ino),
            entry.next_offset,
            kind,
            &entry.name,
        ) {
            break;
        }
    }
    reply.ok();
}

/// Adds `entries` of directory `dir` to a READDIRPLUS reply until the kernel's buffer is
/// full, counting a lookup for each one taken, and sends it.
pub(super) fn fill_plus<S: ObjectStore>(
    fs: &S3Filesystem<S>,
    dir: u64,
    mut reply: ReplyDirectoryPlus,
    entries: Vec<DirEntry>,
) {
    let ttl = fs.kernel_ttl();
    for entry in entries {
        let full = reply.add(
            INodeNo(entry.attr.ino),
            entry.next_offset,
            &entry.name,
            &ttl,
            &file_attr(&entry.attr),
            Generation(0),
        );
        if full {
            break;
        }
        // The kernel counts a lookup for every entry but `.` and `..`.
        if entry.name != "." && entry.name != ".." {
            fs.entry_looked_up(dir, &entry);
        }
    }
    reply.ok();
}
