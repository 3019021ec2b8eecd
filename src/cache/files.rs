//! The cache's files on disk, and nothing else: every file the cache creates, reads, renames
//! or deletes lives in one subdirectory of `--cache DIR` that the cache creates and owns
//! (`DIR/mount-s3-cache`, mode 0700), and every operation is relative to a descriptor of one
//! of its directories, one name at a time, without following symlinks. Nothing outside that
//! subdirectory is ever deleted, whatever `DIR` holds, and a symlink planted inside it is
//! refused, never followed.
//!
//! The directory itself must be one only the mounting user (or root) can write: another user
//! who could write it could swap the subdirectory for one of theirs. Files are created 0600,
//! directories 0700, so a mount readable by its owner only does not leak through its cache.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::CacheError;
use super::index::BlockId;
use crate::private_dir::{check_owner, mode, open_dir_at};

/// The cache's own subdirectory of `--cache DIR`.
pub const SUBDIR: &str = "mount-s3-cache";

/// Subdirectories of [`SUBDIR`].
const BLOCKS: &str = "blocks";
const OBJECTS: &str = "objects";
const TMP: &str = "tmp";

/// The lock file a live mount holds (flock) in [`SUBDIR`].
const LOCK: &str = ".lock";

/// Where one cache file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A block file: `blocks/<first byte of hash>/<hash>-<index>`.
    Block(BlockId),
    /// A whole-object copy's data: `objects/<hash>`.
    Whole(u64),
    /// A whole-object copy's sidecar: `objects/<hash>.sum`.
    Sums(u64),
}

/// A file being written in `tmp/`, by name.
#[derive(Debug)]
pub struct TmpName(String);

/// A file found by a scan: where it is, its modification time and its size on disk.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// Where.
    pub place: Place,
    /// Last modified (the scan indexes oldest first).
    pub mtime: SystemTime,
    /// Bytes the disk gives it (allocated blocks, not its length).
    pub len: u64,
}

/// Bytes the disk gives a file of `stat` (its allocated 512-byte blocks): what the size
/// bound counts, since a 100-byte block file takes a whole filesystem block.
pub fn allocated(stat: &rustix::fs::Stat) -> u64 {
    (stat.st_blocks as u64).saturating_mul(512)
}

/// What a new file of `len` bytes will take on disk at least: whole 4 KiB blocks (the
/// smallest filesystem block in use; the real figure is read back once it is written).
pub fn allocation_estimate(len: u64) -> u64 {
    len.next_multiple_of(4096)
}

/// Descriptors of the cache's directories.
#[derive(Debug)]
pub struct CacheFiles {
    /// `DIR/mount-s3-cache`, for messages.
    shown: String,
    /// The subdirectory itself (for statvfs and the lock).
    root: OwnedFd,
    blocks: OwnedFd,
    objects: OwnedFd,
    tmp: OwnedFd,
    /// `blocks/xx`, opened (and created) on first use.
    shards: Box<[OnceLock<OwnedFd>]>,
    /// The flocked lock file, held for the life of the mount.
    _lock: File,
}

impl CacheFiles {
    /// Opens the cache's subdirectory of `dir` (creating `dir`, 0700, if missing), checks who
    /// may write them, takes the lock and opens the directories inside.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let given = dir.display().to_string();
        let shown = format!("{given}/{SUBDIR}");
        let unusable = |source: io::Error| CacheError::Directory {
            dir: given.clone(),
            source,
        };
        let refuse = |why: String| CacheError::Directory {
            dir: given.clone(),
            source: io::Error::new(io::ErrorKind::PermissionDenied, why),
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(unusable)?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent = rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| unusable(e.into()))?;
        let stat = rustix::fs::fstat(&parent).map_err(|e| unusable(e.into()))?;
        check_owner(&given, &stat, true).map_err(refuse)?;
        let root = open_dir_at(&parent, SUBDIR).map_err(|e| {
            refuse(format!(
                "{shown} is not a directory the cache can use ({e}); remove it"
            ))
        })?;
        let stat = rustix::fs::fstat(&root).map_err(|e| unusable(e.into()))?;
        check_owner(&shown, &stat, false).map_err(refuse)?;
        rustix::fs::fchmod(&root, mode(0o700)).map_err(|e| unusable(e.into()))?;
        let lock = Self::lock(&root, &given, &shown)?;
        let sub = |name: &str| {
            open_dir_at(&root, name).map_err(|e| {
                refuse(format!(
                    "{shown}/{name} is not a directory the cache can use ({e}); remove it"
                ))
            })
        };
        let (blocks, objects, tmp) = (sub(BLOCKS)?, sub(OBJECTS)?, sub(TMP)?);
        if rustix::fs::statat(&parent, BLOCKS, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            tracing::info!(
                dir = %given,
                "{given}/blocks, objects and tmp are an older cache layout, no longer used; delete them to reclaim their space"
            );
        }
        Ok(Self {
            shown,
            root,
            blocks,
            objects,
            tmp,
            shards: (0..256).map(|_| OnceLock::new()).collect(),
            _lock: lock,
        })
    }

    /// Takes the lock file, or explains who holds it.
    fn lock(root: &OwnedFd, given: &str, shown: &str) -> Result<File, CacheError> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(root, LOCK, flags, mode(0o600)).map_err(|e| {
            CacheError::Directory {
                dir: given.to_string(),
                source: e.into(),
            }
        })?;
        let operation = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        if rustix::fs::flock(&fd, operation).is_err() {
            return Err(CacheError::InUse {
                dir: given.to_string(),
                lock: format!("{shown}/{LOCK}"),
            });
        }
        Ok(File::from(fd))
    }

    /// The directory and file name of `place`.
    fn locate(&self, place: Place) -> io::Result<(&OwnedFd, String)> {
        Ok(match place {
            Place::Block((hash, index)) => (self.shard(hash)?, format!("{hash:016x}-{index}")),
            Place::Whole(hash) => (&self.objects, format!("{hash:016x}")),
            Place::Sums(hash) => (&self.objects, format!("{hash:016x}.sum")),
        })
    }

    /// `blocks/xx` for objects hashed `hash`, opened (and created) on first use.
    fn shard(&self, hash: u64) -> io::Result<&OwnedFd> {
        let slot = &self.shards[(hash >> 56) as usize];
        if let Some(fd) = slot.get() {
            return Ok(fd);
        }
        let fd = open_dir_at(&self.blocks, &format!("{:02x}", hash >> 56))?;
        Ok(slot.get_or_init(|| fd))
    }

    /// Opens the file at `place` for reading.
    pub fn open_read(&self, place: Place) -> io::Result<File> {
        let (dir, name) = self.locate(place)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(
            dir,
            name,
            flags,
            Mode::empty(),
        )?))
    }

    /// The whole content of the file at `place`.
    pub fn read_all(&self, place: Place) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut buf = Vec::new();
        self.open_read(place)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// A new file in `tmp/` named `name`, for writing (0600), with O_DIRECT if `direct`.
    pub fn create_tmp(&self, name: String, direct: bool) -> io::Result<(File, TmpName)> {
        let mut flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if direct {
            flags |= OFlags::DIRECT;
        }
        let fd = rustix::fs::openat(&self.tmp, name.as_str(), flags, mode(0o600))?;
        Ok((File::from(fd), TmpName(name)))
    }

    /// Puts the finished `tmp` file in place (replacing what is there).
    pub fn place(&self, tmp: &TmpName, place: Place) -> io::Result<()> {
        let (dir, name) = self.locate(place)?;
        Ok(rustix::fs::renameat(&self.tmp, tmp.0.as_str(), dir, name)?)
    }

    /// Bytes the disk gives the file `tmp` (see [`allocated`]).
    pub fn tmp_allocated(&self, tmp: &TmpName) -> io::Result<u64> {
        let stat = rustix::fs::statat(&self.tmp, tmp.0.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(allocated(&stat))
    }

    /// Deletes a file of `tmp/`.
    pub fn remove_tmp(&self, tmp: &TmpName) {
        let _ = rustix::fs::unlinkat(&self.tmp, tmp.0.as_str(), AtFlags::empty());
    }

    /// Deletes the file at `place`, if there is one.
    pub fn remove(&self, place: Place) {
        if let Ok((dir, name)) = self.locate(place) {
            let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        }
    }

    /// The file at `place`, as it is now (not following a symlink).
    pub fn stat(&self, place: Place) -> io::Result<rustix::fs::Stat> {
        let (dir, name) = self.locate(place)?;
        Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Deletes everything in `tmp/` (half-written files of a previous mount).
    pub fn clear_tmp(&self) {
        for (name, _) in entries(&self.tmp) {
            let _ = rustix::fs::unlinkat(&self.tmp, name.as_str(), AtFlags::empty());
        }
    }

    /// The block files and whole-object copies a previous mount left; anything else in
    /// `blocks/` and `objects/` (strays, half a copy, a symlink) is deleted.
    pub fn scan(&self) -> Vec<Found> {
        let mut found = Vec::new();
        for (shard, kind) in entries(&self.blocks) {
            let Some(prefix) = (kind == FileType::Directory)
                .then(|| {
                    u8::from_str_radix(&shard, 16)
                        .ok()
                        .filter(|_| shard.len() == 2)
                })
                .flatten()
            else {
                if kind != FileType::Directory {
                    let _ = rustix::fs::unlinkat(&self.blocks, shard.as_str(), AtFlags::empty());
                }
                continue;
            };
            let Ok(dir) = self.shard(u64::from(prefix) << 56) else {
                continue;
            };
            for (name, kind) in entries(dir) {
                let id = name.split_once('-').and_then(|(hash, index)| {
                    let hash = u64::from_str_radix(hash, 16).ok()?;
                    (hash >> 56 == u64::from(prefix)).then_some((hash, index.parse().ok()?))
                });
                match (id, kind) {
                    (Some(id), FileType::RegularFile) => {
                        if let Some(found_one) = describe(dir, &name, Place::Block(id)) {
                            found.push(found_one);
                        }
                    }
                    _ => {
                        let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty());
                    }
                }
            }
        }
        self.scan_objects(&mut found);
        found
    }

    /// Whole-object copies (a data file and its `.sum` sidecar, both regular files); a data
    /// file without its sidecar, a sidecar without its data file, and anything else are
    /// deleted. The sidecar's size counts with its data file's. Contents are checked when
    /// used.
    fn scan_objects(&self, found: &mut Vec<Found>) {
        let listed = entries(&self.objects);
        let regular = |name: &str| {
            listed
                .iter()
                .any(|(n, kind)| n == name && *kind == FileType::RegularFile)
        };
        let hash_of = |name: &str| {
            let hex = name.strip_suffix(".sum").unwrap_or(name);
            (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
        };
        for (name, kind) in &listed {
            let partner = match name.strip_suffix(".sum") {
                Some(data) => data.to_string(),
                None => format!("{name}.sum"),
            };
            let Some(hash) = hash_of(name).filter(|_| *kind == FileType::RegularFile) else {
                let _ = rustix::fs::unlinkat(&self.objects, name.as_str(), AtFlags::empty());
                continue;
            };
            if !regular(&partner) {
                let _ = rustix::fs::unlinkat(&self.objects, name.as_str(), AtFlags::empty());
                continue;
            }
            if name.ends_with(".sum") {
                continue; // counted with its data file
            }
            let sidecar = self.stat(Place::Sums(hash)).map_or(0, |s| allocated(&s));
            if let Some(mut data) = describe(&self.objects, name, Place::Whole(hash)) {
                data.len += sidecar;
                found.push(data);
            }
        }
    }

    /// Bytes the cache's filesystem has in all, and has available to us.
    pub fn space(&self) -> io::Result<(u64, u64)> {
        let stat = rustix::fs::fstatvfs(&self.root)?;
        let block = stat.f_frsize;
        Ok((stat.f_blocks * block, stat.f_bavail * block))
    }

    /// `DIR/mount-s3-cache`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// The names in directory `dir` with their types (`.` and `..` left out; an entry of unknown
/// type is looked at without following it).
fn entries(dir: &OwnedFd) -> Vec<(String, FileType)> {
    let Ok(reader) = rustix::fs::Dir::read_from(dir) else {
        return Vec::new();
    };
    reader
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str().ok()?.to_string();
            if name == "." || name == ".." {
                return None;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => {
                    rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_or(FileType::Unknown, |s| FileType::from_raw_mode(s.st_mode))
                }
                kind => kind,
            };
            Some((name, kind))
        })
        .collect()
}

/// A found file's modification time and size.
fn describe(dir: &OwnedFd, name: &str, place: Place) -> Option<Found> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    let mtime = SystemTime::UNIX_EPOCH
        + std::time::Duration::new(stat.st_mtime.max(0) as u64, stat.st_mtime_nsec as u32);
    Some(Found {
        place,
        mtime,
        len: allocated(&stat),
    })
}
