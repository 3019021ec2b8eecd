//! Symbolic links as s3fs stores them (`--posix-metadata`): an object at the link's key
//! whose body is the target, byte for byte, and whose mode metadata says S_IFLNK|0777. The
//! kernel follows links itself; the filesystem only makes them and reads them back.

use bytes::Bytes;

use super::Creator;
use crate::fs::{Attr, FsError, Kind, S3Filesystem, Stat, names};
use crate::s3::posix::S_IFLNK;
use crate::s3::{ObjectStore, WriteOptions};

/// The longest target a link may hold (PATH_MAX).
const MAX_TARGET: usize = 4096;

impl<S: ObjectStore> S3Filesystem<S> {
    /// symlink(2): `name` in `parent` pointing at `target`. Never replaces anything (EEXIST),
    /// as on any filesystem; EPERM without `--posix-metadata`.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &[u8],
        creator: Option<Creator>,
    ) -> Result<Attr, FsError> {
        self.check_writable()?;
        let Some(mut posix) = self.new_posix(S_IFLNK, creator) else {
            return Err(FsError::NotPermitted(
                "symbolic links (mount with --posix-metadata)",
            ));
        };
        posix.mode = Some(S_IFLNK | 0o777);
        if target.is_empty() || target.len() > MAX_TARGET || target.contains(&0) {
            return Err(FsError::InvalidArgument(
                "a link target must be 1 to 4096 bytes",
            ));
        }
        let parent = self.dir_inode(parent)?;
        names::check_new_name(name)?;
        if self.child(&parent, name, true, 0).await?.is_some() {
            return Err(FsError::Exists);
        }
        let key = names::child_key(&parent.key, name);
        let options = WriteOptions {
            write_id: crate::fs::write::new_write_id(),
            if_none_match: true,
            posix: Some(posix),
            ..WriteOptions::default()
        };
        let etag = self
            .store
            .put(&key, Bytes::copy_from_slice(target), &options)
            .await
            .map_err(|e| crate::fs::write::resolve::refused(e, &key, true))?;
        let stat = Stat {
            size: target.len() as u64,
            mtime: posix.mtime.unwrap_or_else(std::time::SystemTime::now),
            etag: Some(etag),
            posix: Some(posix),
        };
        let inode = self.inodes.upsert_child(&parent, name, Kind::File, stat, 1);
        self.forget_name(parent.ino, name);
        self.make_real(parent.ino);
        Ok(self.attr_of(&inode))
    }

    /// readlink(2): the target a link object holds (EINVAL for anything else).
    pub async fn readlink(&self, ino: u64) -> Result<Bytes, FsError> {
        let inode = self.inode(ino)?;
        let is_link = self.posix_on() && inode.stat.posix.is_some_and(|p| p.is_symlink());
        if !is_link || inode.kind != Kind::File {
            return Err(FsError::InvalidArgument("not a symbolic link"));
        }
        let size = inode.stat.size;
        if size == 0 || size > MAX_TARGET as u64 {
            return Err(FsError::InvalidArgument(
                "a link object's body is not a target (empty, or over 4096 bytes)",
            ));
        }
        let etag = inode.stat.etag.as_deref();
        self.store
            .get_range(&inode.key, 0..size, etag)
            .await
            .map_err(|e| FsError::s3(&inode.key, e))
    }
}
