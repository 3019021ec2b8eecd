//! What a writing handle writes through: the streaming uploader (the default: sequential
//! writes from offset 0, sent as parts while the program writes; [`super::write`]) or a
//! staged file (`--staged-writes`: any write, kept locally and uploaded at commit;
//! [`super::staged`]). The commit rules (which close commits) are the same for both
//! ([`super::commit`]); what differs is what may be written, and what a commit leaves:
//! the streaming upload is done once committed, a staged file goes on from the new version.

use std::sync::Arc;

use bytes::Bytes;

use super::FsError;
use super::staged::StagedFile;
use super::write::{Committed, FileWriter, new_write_id};

impl<S: ObjectStore> From<FileWriter<S>> for Upload<S> {
    fn from(writer: FileWriter<S>) -> Self {
        Upload::Stream(Box::new(writer))
    }
}
use crate::s3::{ObjectStore, Posix};

/// A writing handle's upload.
#[derive(Debug)]
pub enum Upload<S: ObjectStore> {
    /// Sequential writes streamed as parts.
    Stream(Box<FileWriter<S>>),
    /// Any writes, staged locally (shared by the inode's handles).
    Staged {
        /// The staged file.
        file: Arc<StagedFile<S>>,
        /// A new file's commit requires that no object of its name exists.
        if_none_match: bool,
    },
}

impl<S: ObjectStore> Upload<S> {
    /// The key written.
    pub async fn key(&self) -> String {
        match self {
            Upload::Stream(writer) => writer.key().to_string(),
            Upload::Staged { file, .. } => file.key().await,
        }
    }

    /// Whether this is a staged upload.
    pub fn is_staged(&self) -> bool {
        matches!(self, Upload::Staged { .. })
    }

    /// Writes `data` at `offset` (the streaming upload takes only the current end); returns
    /// the file's size.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<u64, FsError> {
        match self {
            Upload::Stream(writer) => writer.write(offset, data).await,
            Upload::Staged { file, .. } => file.write(offset, data).await,
        }
    }

    /// Reads what the file holds now (staged only: a streaming upload cannot be read back).
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        match self {
            Upload::Stream(_) => Err(FsError::NotPermitted(
                "reading a file while it is being written",
            )),
            Upload::Staged { file, .. } => file.read(offset, len).await,
        }
    }

    /// Whether a release must commit: changes nobody was told failed (the streaming upload's
    /// rule is [`Upload::has_changes`] with its own failure state).
    pub async fn commits_at_release(&self) -> bool {
        match self {
            Upload::Stream(_) => true,
            Upload::Staged { file, .. } => file.commits_at_release().await,
        }
    }

    /// Whether a close should commit: something was written (a new file always counts).
    pub async fn has_changes(&self) -> bool {
        match self {
            Upload::Stream(writer) => writer.written().await > 0,
            Upload::Staged { file, .. } => file.has_changes().await,
        }
    }

    /// Makes the file the object, and says whether this call made a new version: a
    /// committed streaming upload answers with its commit, a staged file with nothing new
    /// with its current version (see [`FileWriter::commit_fresh`]).
    pub async fn commit(&self) -> Result<(Committed, bool), FsError> {
        match self {
            Upload::Stream(writer) => writer.commit_fresh().await,
            Upload::Staged {
                file,
                if_none_match,
            } => match file.commit(new_write_id(), *if_none_match).await? {
                Some(done) => Ok((
                    Committed {
                        size: done.size,
                        etag: done.etag,
                        posix: file.posix().await,
                    },
                    true,
                )),
                None => file
                    .current()
                    .await
                    .map(|done| (done, false))
                    .ok_or(FsError::Staging(
                        "nothing committed yet and nothing to commit".into(),
                    )),
            },
        }
    }

    /// Applies a chmod/chown/utimes to what the commit writes; `false` when it can no longer
    /// go with the commit (a streaming upload whose multipart upload was created).
    pub async fn set_posix(&self, change: &Posix) -> bool {
        match self {
            Upload::Stream(writer) => writer.set_posix(change).await,
            Upload::Staged { file, .. } => {
                file.set_posix(change).await;
                true
            }
        }
    }

    /// Whether the upload is done (the streaming upload after its commit; a staged file
    /// while it holds nothing uncommitted).
    pub async fn is_committed(&self) -> bool {
        match self {
            Upload::Stream(writer) => writer.is_committed().await,
            Upload::Staged { file, .. } => !file.has_changes().await,
        }
    }

    /// Whether the upload is done (committed, or failed for good), asked without waiting:
    /// false while a write or commit holds it.
    pub fn done_now(&self) -> bool {
        match self {
            Upload::Stream(writer) => writer.ended_now(),
            Upload::Staged { file, .. } => file.settled_now(),
        }
        .unwrap_or(false)
    }

    /// Whether the upload failed for good (a staged file never does: its data stays for
    /// the next commit).
    pub async fn has_failed(&self) -> bool {
        match self {
            Upload::Stream(writer) => writer.has_failed().await,
            Upload::Staged { .. } => false,
        }
    }

    /// Abandons what is not committed (a streaming upload is aborted; a staged file's data
    /// goes with its last handle).
    pub async fn abort(&self, errno: i32) {
        if let Upload::Stream(writer) = self {
            writer.abort(errno).await;
        }
    }
}
