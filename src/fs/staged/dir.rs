//! The staging area: `DIR/mount-s3-staging` (0700), where files being written with
//! `--staged-writes` are kept while they are open. Each staging file is created and at once
//! unlinked, so it lives exactly as long as the mount holds it: a crash leaves nothing behind
//! but what a crash between the two calls left (a name of ours), and those are removed when
//! a mount opens the area. Every operation is relative to the area's descriptor, without
//! following symlinks (see `private_dir`).
//!
//! The bytes staged files hold on disk are bounded (`--max-staging-size`, else what keeps 5%
//! of the filesystem free): a write that would pass the bound is ENOSPC.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::private_dir::{check_owner, mode, open_dir_at};

/// The staging area's subdirectory of its directory.
pub const SUBDIR: &str = "mount-s3-staging";

/// Names of staging files begin so (the rest is random hex).
const PREFIX: &str = "staged-";

/// Share of the filesystem kept free when no bound is given, in percent.
const FREE_SHARE_PERCENT: u64 = 5;

/// Settings of the staging area, built by `cli`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingConfig {
    /// The directory the area is made in.
    pub dir: std::path::PathBuf,
    /// Most bytes staged files may hold; `None`: keep 5% of the filesystem free.
    pub max_bytes: Option<u64>,
}

/// The staging area.
#[derive(Debug)]
pub struct StagingDir {
    /// `DIR/mount-s3-staging`, for messages.
    shown: String,
    root: OwnedFd,
    /// The bound, and the bytes staged files hold now.
    max_bytes: u64,
    held: AtomicU64,
}

impl StagingDir {
    /// Opens (creating) the area in `config.dir`, checking who may write it, and removes what
    /// a crashed mount left.
    pub fn open(config: &StagingConfig) -> Result<Self, String> {
        let given = config.dir.display().to_string();
        let shown = format!("{given}/{SUBDIR}");
        let unusable = |e: &dyn std::fmt::Display| format!("--staged-writes: {given}: {e}");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&config.dir)
                .map_err(|e| unusable(&e))?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent =
            rustix::fs::open(&config.dir, flags, Mode::empty()).map_err(|e| unusable(&e))?;
        let stat = rustix::fs::fstat(&parent).map_err(|e| unusable(&e))?;
        check_owner(&given, &stat, true).map_err(|e| unusable(&e))?;
        let root = open_dir_at(&parent, SUBDIR).map_err(|e| {
            unusable(&format!(
                "{shown} is not a directory mount-s3 can use ({e}); remove it"
            ))
        })?;
        let stat = rustix::fs::fstat(&root).map_err(|e| unusable(&e))?;
        check_owner(&shown, &stat, false).map_err(|e| unusable(&e))?;
        rustix::fs::fchmod(&root, mode(0o700)).map_err(|e| unusable(&e))?;
        let area = Self {
            shown,
            root,
            max_bytes: 0,
            held: AtomicU64::new(0),
        };
        area.remove_leftovers();
        let max_bytes = match config.max_bytes {
            Some(max) => max,
            None => {
                let vfs = rustix::fs::fstatvfs(&area.root).map_err(|e| unusable(&e))?;
                let total = vfs.f_blocks.saturating_mul(vfs.f_frsize);
                let available = vfs.f_bavail.saturating_mul(vfs.f_frsize);
                available.saturating_sub(total / 100 * FREE_SHARE_PERCENT)
            }
        };
        Ok(Self { max_bytes, ..area })
    }

    /// `DIR/mount-s3-staging`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The bound on staged bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes staged files hold now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Removes the staging files a crashed mount left (names of ours only).
    fn remove_leftovers(&self) {
        let Ok(dir) = rustix::fs::openat(
            &self.root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) {
                let _ = rustix::fs::unlinkat(&self.root, name.as_str(), AtFlags::empty());
                tracing::info!(dir = %self.shown, name, "removed a staging file a previous mount left");
            }
        }
    }

    /// A new, empty staging file, already unlinked.
    pub fn create(&self) -> io::Result<File> {
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
        let name: String = PREFIX
            .chars()
            .chain(bytes.iter().flat_map(|b| {
                let hex = format!("{b:02x}");
                hex.chars().collect::<Vec<_>>()
            }))
            .collect();
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.root, name.as_str(), flags, mode(0o600))?;
        rustix::fs::unlinkat(&self.root, name.as_str(), AtFlags::empty())?;
        Ok(File::from(fd))
    }

    /// Takes `bytes` more of the bound: false (nothing taken) when they do not fit.
    pub fn take(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&n| n <= self.max_bytes)
            })
            .is_ok()
    }

    /// Gives `bytes` of the bound back.
    pub fn give_back(&self, bytes: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    #[test]
    fn files_leave_no_name_and_leftovers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let config = StagingConfig {
            dir: tmp.path().to_path_buf(),
            max_bytes: Some(100),
        };
        let area = StagingDir::open(&config).unwrap();
        let _file = area.create().unwrap();
        let names = |p: &Path| std::fs::read_dir(p).unwrap().count();
        assert_eq!(names(&tmp.path().join(SUBDIR)), 0, "unlinked at once");
        std::fs::write(tmp.path().join(SUBDIR).join("staged-0123"), b"left").unwrap();
        std::fs::write(tmp.path().join(SUBDIR).join("other"), b"not ours").unwrap();
        drop(area);
        let _area = StagingDir::open(&config).unwrap();
        assert!(!tmp.path().join(SUBDIR).join("staged-0123").exists());
        assert!(
            tmp.path().join(SUBDIR).join("other").exists(),
            "only our names"
        );
        let mode = std::fs::metadata(tmp.path().join(SUBDIR))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn the_bound_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let area = StagingDir::open(&StagingConfig {
            dir: tmp.path().to_path_buf(),
            max_bytes: Some(100),
        })
        .unwrap();
        assert!(area.take(60));
        assert!(!area.take(41));
        assert!(area.take(40));
        area.give_back(50);
        assert_eq!(area.held(), 50);
        area.give_back(500);
        assert_eq!(area.held(), 0);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StagingDir::open(&StagingConfig {
            dir: tmp.path().to_path_buf(),
            max_bytes: None,
        })
        .unwrap_err();
        assert!(err.contains("can be written by other users"), "{err}");
    }
}
