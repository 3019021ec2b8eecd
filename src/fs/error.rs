//! What the filesystem decided, and the one place where that becomes an errno.

use thiserror::Error;

use crate::s3::S3Error;

/// A failed filesystem operation.
#[derive(Debug, Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// A directory operation on a file.
    #[error("not a directory")]
    NotADirectory,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsADirectory,
    /// The kernel used a handle we do not know.
    #[error("bad file handle")]
    BadHandle,
    /// The mount was made with `--read-only`.
    #[error("read-only mount")]
    ReadOnly,
    /// An operation S3 cannot do faithfully (or the mount does not allow), refused rather
    /// than pretended: EPERM.
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// Extended attributes are not stored. ENOSYS: on it the kernel marks the call
    /// unsupported for the whole mount and answers it itself from then on, with EOPNOTSUPP
    /// (what programs saw when each call came here to be refused). `ls -l` asks two xattrs
    /// per file and every write(2) asks `security.capability`: each was a round trip.
    #[error("extended attributes are not supported")]
    NoXattr,
    /// The object changed under an open handle (its pinned ETag no longer matches).
    #[error("object {key} changed while open; reopen the file")]
    ObjectChanged {
        /// The object's key.
        key: String,
    },
    /// A call S3 semantics cannot honour as asked (out-of-order write, write after commit).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The file would pass S3's 5 TiB object limit.
    #[error("file too large for S3 (5 TiB limit)")]
    FileTooBig,
    /// An earlier call of this handle failed and aborted its upload.
    #[error("the upload of this file already failed and was aborted")]
    UploadFailed {
        /// The errno of the original failure.
        errno: i32,
    },
    /// The memory target cannot hold what a writer needs (ENOMEM): other writers hold it and
    /// do not give it back, or it is smaller than one part.
    #[error(
        "the memory target ({limit} bytes) cannot give a writer the {wanted} bytes it needs; raise --memory-target or write fewer files at once"
    )]
    OutOfMemory {
        /// Bytes wanted.
        wanted: u64,
        /// The budget's limit.
        limit: u64,
    },
    /// The staging area (`--staged-writes`) is full: the write would pass its bound.
    #[error(
        "the staging area is full ({held} of {max} bytes); close files being written or raise --max-staging-size"
    )]
    NoSpace {
        /// Bytes staged files hold.
        held: u64,
        /// The bound.
        max: u64,
    },
    /// A local staging file could not be read or written.
    #[error("staging file: {0}")]
    Staging(String),
    /// The name is longer than NAME_MAX.
    #[error("file name too long")]
    NameTooLong,
    /// The name already exists.
    #[error("already exists")]
    Exists,
    /// The directory is not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// Directories cannot be renamed in S3 without copying every key; `mv` falls back to
    /// copying file by file on this errno.
    #[error("renaming directories is not supported")]
    CrossDevice,
    /// Files under a directory to rename are open: their handles read or write keys that
    /// the rename would move.
    #[error("files under the directory are open")]
    Busy,
    /// The inode the kernel used stands for an object version other than the one this
    /// call needs (the object changed while files are open on it, and its name moved to a
    /// new inode): ESTALE, on which the kernel looks the name up again and retries the open.
    #[error("stale inode: the object changed while open; the kernel looks it up again")]
    Stale,
    /// A task of ours that was doing the work panicked or was cancelled: not something S3
    /// said, but the call cannot be answered.
    #[error("internal task failed: {0}")]
    TaskFailed(String),
    /// The object store failed.
    #[error("S3 request for {key:?} failed: {source}")]
    S3 {
        /// The key (or prefix) of the request.
        key: String,
        /// What the store said.
        source: S3Error,
    },
}

impl FsError {
    /// A failed task (a panic or a cancellation, as a `JoinError` says).
    pub fn task(err: impl std::fmt::Display) -> Self {
        FsError::TaskFailed(err.to_string())
    }

    /// Wraps a store error, keeping the key for the log line.
    pub fn s3(key: &str, source: S3Error) -> Self {
        match source {
            S3Error::PreconditionFailed => FsError::ObjectChanged {
                key: key.to_string(),
            },
            source => FsError::S3 {
                key: key.to_string(),
                source,
            },
        }
    }

    /// The errno a program sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::BadHandle => libc::EBADF,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::NoXattr => libc::ENOSYS,
            FsError::ObjectChanged { .. } => libc::EIO,
            FsError::InvalidArgument(_) => libc::EINVAL,
            FsError::FileTooBig => libc::EFBIG,
            FsError::UploadFailed { errno } => *errno,
            FsError::Exists => libc::EEXIST,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::CrossDevice => libc::EXDEV,
            FsError::Busy => libc::EBUSY,
            FsError::TaskFailed(_) => libc::EIO,
            FsError::Stale => libc::ESTALE,
            FsError::OutOfMemory { .. } => libc::ENOMEM,
            FsError::NoSpace { .. } => libc::ENOSPC,
            FsError::Staging(_) => libc::EIO,
            FsError::S3 { source, .. } => match source {
                S3Error::NotFound => libc::ENOENT,
                S3Error::AccessDenied(_) => libc::EACCES,
                S3Error::NoSuchBucket
                | S3Error::PreconditionFailed
                | S3Error::Network(_)
                | S3Error::WrongRegion(_)
                | S3Error::Service { .. } => libc::EIO,
            },
        }
    }

    /// Whether this is a failure worth a log line at `warn`/`error` (as opposed to an ordinary
    /// answer such as ENOENT that programs expect).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            FsError::ObjectChanged { .. }
                | FsError::S3 { .. }
                | FsError::TaskFailed(_)
                | FsError::OutOfMemory { .. }
                | FsError::NoSpace { .. }
                | FsError::Staging(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos() {
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(FsError::NoXattr.errno(), libc::ENOSYS, "the kernel's cue");
        assert_eq!(
            FsError::s3("k", S3Error::PreconditionFailed).errno(),
            libc::EIO
        );
        assert!(matches!(
            FsError::s3("k", S3Error::PreconditionFailed),
            FsError::ObjectChanged { .. }
        ));
        assert_eq!(
            FsError::s3("k", S3Error::AccessDenied("x".into())).errno(),
            libc::EACCES
        );
        assert_eq!(FsError::s3("k", S3Error::NotFound).errno(), libc::ENOENT);
        assert_eq!(
            FsError::s3("k", S3Error::Network("reset".into())).errno(),
            libc::EIO
        );
        assert!(!FsError::NotFound.is_failure());
    }
}
