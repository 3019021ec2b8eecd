//! What went wrong in the cache: a directory that cannot be used (one line for the user at
//! mount), a file operation that failed, or a cache file that is not what it claims to be.
//! Only the first reaches the user; the others make a read a miss.

use std::io;

use thiserror::Error;

use super::block::Rejected;

/// A failed cache operation.
#[derive(Debug, Error)]
pub enum CacheError {
    /// The cache directory cannot be used as asked.
    #[error("--cache {dir}: {source}")]
    Directory {
        /// The directory as given.
        dir: String,
        /// Why.
        source: io::Error,
    },
    /// Another mount holds the directory's lock.
    #[error(
        "--cache {dir} is in use by another mount-s3 (lock {lock}); give each mount its own cache directory"
    )]
    InUse {
        /// The directory as given.
        dir: String,
        /// The lock file.
        lock: String,
    },
    /// A file operation failed (disk full, permissions, a file gone).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A cache file does not verify: truncated, corrupt, or another object's.
    #[error("cache file rejected ({0:?})")]
    Rejected(Rejected),
}

impl From<Rejected> for CacheError {
    fn from(why: Rejected) -> Self {
        CacheError::Rejected(why)
    }
}
