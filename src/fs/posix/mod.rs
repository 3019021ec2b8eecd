//! POSIX attributes and symbolic links (`--posix-metadata`): mode, owner, group and mtime
//! live in each object's user metadata in s3fs's format ([`crate::s3::posix`]); a symbolic
//! link is an object whose body is its target and whose mode says S_IFLNK; a directory's
//! attributes live on its `name/` marker object (which mkdir writes).
//!
//! chmod, chown and utimes on an object are a server-side copy onto itself that replaces
//! those attributes (and keeps the rest of its metadata), conditional on the version looked
//! up; on a file being written they go with its commit ([`Draft`]). A directory's change
//! rewrites its marker. Listings carry no metadata, so on such a mount each listed entry
//! costs a HEAD ([`listing`]); without the flag nothing here runs and no HEAD is added.

mod draft;
pub mod listing;
mod symlink;

use std::time::SystemTime;

use super::inode::Local;
use super::{Attr, FsError, Inode, Kind, S3Filesystem};
use crate::s3::posix::{S_IFDIR, S_IFMT, S_IFREG};
use crate::s3::{ObjectStore, Posix, WriteOptions};

pub use draft::Draft;

/// Who makes a new file, directory or link, and with which permission bits (the kernel's
/// request, umask applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creator {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
    /// Permission bits (the low 12 bits count).
    pub perm: u32,
}

/// What a setattr asks for besides a size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrChange {
    /// New permission bits (chmod), owner and group (chown), mtime (utimes).
    pub posix: Posix,
    /// An atime was given: not kept (the mount is `noatime`), never refused for that.
    pub atime: bool,
    /// Anything else (BSD flags): refused.
    pub other: bool,
}

impl AttrChange {
    /// What `touch` asks: both times, now.
    pub fn touch() -> Self {
        Self {
            posix: Posix {
                mtime: Some(SystemTime::now()),
                ..Posix::default()
            },
            atime: true,
            other: false,
        }
    }

    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Content-Type of a directory marker object, as s3fs writes it.
pub(crate) const DIRECTORY_TYPE: &str = "application/x-directory";

/// How a directory marker is written: empty, `application/x-directory`, a fresh write id,
/// with `posix` as its attributes; `if_none_match` when it must be new.
pub(crate) fn marker_options(posix: Option<Posix>, if_none_match: bool) -> WriteOptions {
    WriteOptions {
        write_id: super::write::new_write_id(),
        if_none_match,
        posix,
        content_type: Some(DIRECTORY_TYPE.to_string()),
        ..WriteOptions::default()
    }
}

impl<S: ObjectStore> S3Filesystem<S> {
    /// Whether POSIX attributes are kept in S3 (`--posix-metadata`).
    pub(crate) fn posix_on(&self) -> bool {
        self.config.posix_metadata
    }

    /// The attributes of a new object of file type `type_bits` made by `creator` (the
    /// mount's owner and modes when the request does not say), or `None` without
    /// `--posix-metadata`.
    pub(crate) fn new_posix(&self, type_bits: u32, creator: Option<Creator>) -> Option<Posix> {
        if !self.posix_on() {
            return None;
        }
        let default_perm = if type_bits == S_IFDIR {
            self.config.dir_mode
        } else {
            self.config.file_mode
        };
        let creator = creator.unwrap_or(Creator {
            uid: self.config.uid,
            gid: self.config.gid,
            perm: u32::from(default_perm),
        });
        Some(Posix {
            mode: Some(type_bits | (creator.perm & 0o7777)),
            uid: Some(creator.uid),
            gid: Some(creator.gid),
            mtime: Some(SystemTime::now()),
        })
    }

    /// `attr` with what `posix` says in place of the mount's defaults.
    pub(crate) fn with_posix(&self, mut attr: Attr, posix: Option<&Posix>) -> Attr {
        let Some(posix) = posix.filter(|_| self.posix_on()) else {
            return attr;
        };
        if let Some(mode) = posix.mode {
            attr.perm = (mode & 0o7777) as u16;
            attr.link = attr.kind == Kind::File && posix.is_symlink();
        }
        if let Some(uid) = posix.uid {
            attr.uid = uid;
        }
        if let Some(gid) = posix.gid {
            attr.gid = gid;
        }
        if let Some(mtime) = posix.mtime {
            attr.mtime = mtime;
        }
        attr
    }

    /// chmod/chown/utimes of `inode` with `--posix-metadata` (`change.mode`: the
    /// permission bits asked for; the file type stays).
    pub(crate) async fn change_posix(&self, inode: &Inode, change: Posix) -> Result<(), FsError> {
        let type_bits = match inode.kind {
            Kind::Dir => S_IFDIR,
            Kind::File => inode
                .stat
                .posix
                .and_then(|p| p.mode)
                .map(|m| m & S_IFMT)
                .filter(|&t| t != 0)
                .unwrap_or(S_IFREG),
        };
        let change = Posix {
            mode: change.mode.map(|m| type_bits | (m & 0o7777)),
            ..change
        };
        match (inode.kind, inode.local) {
            (Kind::Dir, _) => self.change_dir_posix(inode, &change).await,
            (Kind::File, Some(Local::Writing { .. })) => {
                self.change_writing_posix(inode, &change).await
            }
            (Kind::File, _) => self.change_object_posix(inode, &change).await.map(drop),
        }
    }

    /// A file being written: the change goes with its commit, or, when it cannot (nothing
    /// uncommitted, or a streaming upload already under way), it is made on the object.
    async fn change_writing_posix(&self, inode: &Inode, change: &Posix) -> Result<(), FsError> {
        let draft = |upload_posix: Option<Posix>| upload_posix.unwrap_or_default().merged(change);
        if let Some(staged) = self.live_staged(inode.ino) {
            if !staged.has_changes().await && inode.stat.etag.is_some() {
                let etag = self.change_object_posix(inode, change).await?;
                staged.moved_to(&inode.key, &etag).await;
            }
            staged.set_posix(change).await;
            self.inodes
                .set_posix(inode.ino, Some(draft(staged.posix().await)));
            return Ok(());
        }
        let writers = self.writers_of(inode.ino);
        let writer = writers.into_iter().find(|handle| !handle.read_only);
        let Some(handle) = writer else {
            // Its last handle was released and is still committing: the change waits for
            // that commit and is then made on the object.
            if self.wait_released(inode.ino).await {
                let inode = self.inode(inode.ino)?;
                return self.change_object_posix(&inode, change).await.map(drop);
            }
            return Err(FsError::NotPermitted(
                "changing attributes of a file being written elsewhere",
            ));
        };
        if !handle.upload.set_posix(change).await {
            if handle.upload.is_committed().await {
                // The commit landed after this change found the file being written: no
                // later commit of the handle makes a version to carry it.
                let inode = self.inode(inode.ino)?;
                return self.change_object_posix(&inode, change).await.map(drop);
            }
            handle.defer_posix(change);
        }
        self.inodes
            .set_posix(inode.ino, Some(draft(inode.stat.posix)));
        Ok(())
    }

    /// The object's attributes replaced by a copy onto itself, conditional on the version
    /// there now; returns the new ETag.
    pub(super) async fn change_object_posix(
        &self,
        inode: &Inode,
        change: &Posix,
    ) -> Result<String, FsError> {
        let current = match self.revalidate(inode).await? {
            super::Observed::Current(current) | super::Observed::Moved { new: current, .. } => {
                current
            }
            super::Observed::Gone => return Err(FsError::NotFound),
        };
        let etag = current.stat.etag.clone().ok_or(FsError::NotFound)?;
        let copied = self
            .store
            .copy(
                &current.key,
                &current.key,
                current.stat.size,
                &etag,
                Some(change),
            )
            .await
            .map_err(|e| FsError::s3(&current.key, e))?;
        let mut stat = current.stat.clone();
        stat.posix = Some(stat.posix.unwrap_or_default().merged(change));
        stat.etag = Some(copied.etag.clone());
        stat.mtime = copied.last_modified;
        self.inodes.refresh(inode.ino, stat);
        if current.ino != inode.ino {
            self.inodes.expire(current.ino);
        }
        Ok(copied.etag)
    }

    /// A directory's change: its marker object is (re)written with the new attributes.
    /// The mount's root has no marker: EPERM.
    async fn change_dir_posix(&self, inode: &Inode, change: &Posix) -> Result<(), FsError> {
        if inode.ino == super::ROOT_INO {
            return Err(FsError::NotPermitted(
                "changing the attributes of the mount's root",
            ));
        }
        let base = inode
            .stat
            .posix
            .or_else(|| self.new_posix(S_IFDIR, None))
            .unwrap_or_default();
        let posix = base.merged(change);
        self.put_marker(&inode.key, posix, false).await?;
        self.inodes.set_posix(inode.ino, Some(posix));
        self.inodes.set_local(inode.ino, None);
        Ok(())
    }

    /// Writes the marker object of directory `prefix` with `posix` (only if none exists
    /// when `new`).
    pub(crate) async fn put_marker(
        &self,
        prefix: &str,
        posix: Posix,
        new: bool,
    ) -> Result<(), FsError> {
        self.store
            .put(
                prefix,
                bytes::Bytes::new(),
                &marker_options(Some(posix), new),
            )
            .await
            .map(drop)
            .map_err(|e| match e {
                crate::s3::S3Error::PreconditionFailed => FsError::Exists,
                e => FsError::s3(prefix, e),
            })
    }

    /// The attributes on directory `prefix`'s marker object, if it has one with them.
    pub(crate) async fn marker_posix(&self, prefix: &str) -> Result<Option<Posix>, FsError> {
        match self.store.head(prefix).await {
            Ok(info) => Ok(info.posix),
            Err(crate::s3::S3Error::NotFound) => Ok(None),
            Err(e) => Err(FsError::s3(prefix, e)),
        }
    }
}
