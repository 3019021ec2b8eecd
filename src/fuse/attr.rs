//! Conversion of the filesystem's attributes into the kernel's.

use fuser::{FileAttr, FileType, INodeNo};

use crate::fs::{Attr, Kind};

/// Block size reported in `st_blksize`: a hint for buffered readers to ask in large chunks.
const BLKSIZE: u32 = 1 << 20;

/// The kernel's view of `attr`.
pub(super) fn file_attr(attr: &Attr) -> FileAttr {
    let (kind, nlink) = match attr.kind {
        Kind::File if attr.link => (FileType::Symlink, 1),
        Kind::File => (FileType::RegularFile, 1),
        Kind::Dir => (FileType::Directory, 2),
    };
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind,
        perm: attr.perm,
        nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        flags: 0,
        blksize: BLKSIZE,
    }
}
