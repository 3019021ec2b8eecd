//! Per-handle uploader: sequential writes stream to S3 as multipart parts while the program
//! keeps writing; the object appears only when the handle commits (close or fsync), whole.
//!
//! Writes must arrive in order from offset 0. Parts are uploaded in the background, a bounded
//! number at a time (the writer waits for the oldest when the bound is reached), and their
//! buffers are counted in the mount's memory budget. A file smaller than one part becomes one
//! PUT at commit. Any failure, or an out-of-order write, aborts the multipart upload so no
//! parts are left behind (an abort that fails is retried, [`aborts`]), and the handle answers
//! EIO (or EINVAL) from then on. A commit whose answer is lost is settled by asking S3
//! whether the object is ours ([`resolve`]): never reported failed when it landed, nor landed
//! when it did not.

pub mod aborts;
mod part_size;
pub(super) mod resolve;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::error::FsError;
use super::posix::Draft;
use crate::memory::{MemoryBudget, Reservation};
use crate::s3::{MAX_OBJECT_SIZE, ObjectStore, PartTag, Posix, S3Error, WriteOptions};
use aborts::PendingAborts;
pub use part_size::part_size_for;
pub use resolve::new_write_id;

/// Most parts uploading at once per handle.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 4;

/// How long an open for writing waits for its first part buffer, and a write for its next
/// one, before answering ENOMEM: the memory target is held by writers that do not progress
/// (a program writing many files round-robin with too small a `--memory-target`). Parts in
/// flight give their bytes back within a request deadline, and writers that write get theirs
/// in turn.
///
/// A writer reserves a whole part buffer before it fills it, never a piece of one: writers
/// that each held part of a buffer and waited for the rest could wait on each other forever.
/// While it waits it holds nothing but parts in flight, which give their bytes back by
/// themselves, so writers that keep writing always progress.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What the object looks like once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Size in bytes.
    pub size: u64,
    /// ETag of the new object.
    pub etag: String,
    /// The POSIX attributes it was written with (`--posix-metadata`).
    pub posix: Option<Posix>,
}

/// A part being uploaded; it holds its bytes in the budget until it is done.
type PartTask = JoinHandle<Result<PartTag, FsError>>;

/// Where an upload stands.
#[derive(Debug)]
enum Status {
    /// Accepting writes.
    Open,
    /// The object is in S3.
    Committed(Committed),
    /// Aborted; the errno every later call gets.
    Failed(i32),
}

#[derive(Debug)]
struct UploadState {
    status: Status,
    /// Bytes accepted so far (the only offset a write may start at).
    written: u64,
    /// Bytes not yet sent as a part.
    buffer: BytesMut,
    /// Budget held for `buffer`'s part (the whole part, from its first byte on).
    buffer_reservation: Option<Reservation>,
    upload_id: Option<String>,
    /// The POSIX attributes the object gets (fixed once the multipart upload is created).
    draft: Draft,
    /// Number of the next part to send (1-based).
    next_part: i32,
    in_flight: VecDeque<PartTask>,
    done: Vec<PartTag>,
}

/// An open file's uploader.
#[derive(Debug)]
pub struct FileWriter<S: ObjectStore> {
    store: Arc<S>,
    key: String,
    part_size: u64,
    budget: Arc<MemoryBudget>,
    /// The write id and condition of this upload.
    options: WriteOptions,
    /// Where an abort that failed goes to be retried.
    aborts: Arc<PendingAborts<S>>,
    /// Writes, commits and aborts of one handle take turns.
    state: tokio::sync::Mutex<UploadState>,
}

impl<S: ObjectStore> FileWriter<S> {
    /// An uploader of a new object at `key`, with parts of `part_size` bytes to begin with,
    /// written as `options` say.
    pub fn new(
        store: Arc<S>,
        key: String,
        part_size: u64,
        budget: Arc<MemoryBudget>,
        options: WriteOptions,
        aborts: Arc<PendingAborts<S>>,
    ) -> Self {
        Self {
            store,
            key,
            part_size,
            budget,
            options: options.clone(),
            aborts,
            state: tokio::sync::Mutex::new(UploadState {
                status: Status::Open,
                written: 0,
                buffer: BytesMut::new(),
                buffer_reservation: None,
                upload_id: None,
                draft: Draft::new(options.posix),
                next_part: 1,
                in_flight: VecDeque::new(),
                done: Vec::new(),
            }),
        }
    }

    /// The key being written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Applies a chmod/chown/utimes to what the object will be written with; `false` once
    /// that is fixed (its multipart upload was created): the change must then be made after
    /// the commit.
    pub async fn set_posix(&self, change: &Posix) -> bool {
        let mut state = self.state.lock().await;
        if state.upload_id.is_some() || !matches!(state.status, Status::Open) {
            return false;
        }
        state.draft.change(change);
        true
    }

    /// The options of the request that makes the object, with its POSIX attributes now.
    fn options_now(&self, state: &UploadState) -> WriteOptions {
        WriteOptions {
            posix: state.draft.at_commit(SystemTime::now()),
            ..self.options.clone()
        }
    }

    /// Reserves the first part buffer, waiting for it (see [`BUDGET_WAIT`]): an open for
    /// writing is ENOMEM at once when the memory target is smaller than one part, and after
    /// the wait when other writers hold it all.
    pub async fn reserve_first(&self) -> Result<(), FsError> {
        let mut state = self.state.lock().await;
        self.hold_for_buffer(&mut state).await
    }

    /// Makes sure the budget holds the whole current part buffer, waiting for it:
    /// back-pressure on the program writing.
    async fn hold_for_buffer(&self, state: &mut UploadState) -> Result<(), FsError> {
        if state.buffer_reservation.is_some() {
            return Ok(());
        }
        let target = part_size_for(state.next_part, self.part_size);
        let reserved = tokio::time::timeout(BUDGET_WAIT, self.budget.reserve(target)).await;
        let Ok(Some(reservation)) = reserved else {
            return Err(FsError::OutOfMemory {
                wanted: target,
                limit: self.budget.limit(),
            });
        };
        state.buffer_reservation = Some(reservation);
        Ok(())
    }

    /// Appends `data` at `offset`, which must be the current end. Returns the new size.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<u64, FsError> {
        let mut state = self.state.lock().await;
        match state.status {
            Status::Open => {}
            Status::Committed(_) => {
                return Err(FsError::InvalidArgument(
                    "the file was already committed (closed or fsynced); reopen it to write again",
                ));
            }
            Status::Failed(errno) => return Err(FsError::UploadFailed { errno }),
        }
        if offset != state.written {
            warn!(key = %self.key, offset, expected = state.written, "out-of-order write; upload aborted");
            self.fail(&mut state, libc::EINVAL).await;
            return Err(FsError::InvalidArgument(
                "writes must be sequential: S3 objects cannot be written out of order",
            ));
        }
        let new_size = state.written + data.len() as u64;
        if new_size > MAX_OBJECT_SIZE {
            self.fail(&mut state, libc::EFBIG).await;
            return Err(FsError::FileTooBig);
        }
        let mut rest = data;
        while !rest.is_empty() {
            let target = part_size_for(state.next_part, self.part_size) as usize;
            // The bytes are held in the budget before the buffer is allocated, so writers
            // waiting for the budget hold no memory.
            if let Err(e) = self.hold_for_buffer(&mut state).await {
                warn!(key = %self.key, "{e}; upload aborted");
                self.fail(&mut state, libc::ENOMEM).await;
                return Err(e);
            }
            if state.buffer.capacity() == 0 {
                state.buffer.reserve(target);
            }
            let take = rest.len().min(target - state.buffer.len());
            state.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if state.buffer.len() == target {
                if let Err(e) = self.send_part(&mut state).await {
                    self.fail(&mut state, libc::EIO).await;
                    return Err(e);
                }
            }
        }
        state.written = new_size;
        state.draft.written();
        Ok(new_size)
    }

    /// Sends the buffer as the next part, first waiting for the oldest part in flight when
    /// the bound is reached (back-pressure on the writer).
    async fn send_part(&self, state: &mut UploadState) -> Result<(), FsError> {
        if state.upload_id.is_none() {
            let options = self.options_now(state);
            state.draft = Draft::new(options.posix);
            let id = self.store.create_multipart(&self.key, &options).await;
            state.upload_id = Some(id.map_err(|e| FsError::s3(&self.key, e))?);
        }
        while state.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            Self::finish_oldest(state).await?;
        }
        let data = state.buffer.split().freeze();
        state.buffer = BytesMut::new();
        let reservation = state.buffer_reservation.take();
        let number = state.next_part;
        state.next_part += 1;
        let store = self.store.clone();
        let key = self.key.clone();
        let upload_id = state.upload_id.clone().expect("created above");
        let in_flight = PartInFlight::new();
        let task = tokio::spawn(async move {
            let _counted = in_flight; // out of the gauge when the task ends or is aborted
            let _held = reservation; // given back when the part is sent (or fails)
            let part = store.upload_part(&key, &upload_id, number, data).await;
            part.map_err(|e| FsError::s3(&key, e))
        });
        state.in_flight.push_back(task);
        Ok(())
    }

    async fn finish_oldest(state: &mut UploadState) -> Result<(), FsError> {
        if let Some(task) = state.in_flight.pop_front() {
            let tag = task.await.map_err(FsError::task)??;
            state.done.push(tag);
        }
        Ok(())
    }

    /// Makes the object appear in S3 with everything written so far. Idempotent once it
    /// succeeded; after a failure it keeps answering the failure's errno.
    pub async fn commit(&self) -> Result<Committed, FsError> {
        self.commit_fresh().await.map(|(done, _)| done)
    }

    /// [`FileWriter::commit`], and whether this call made the version (`false`: the answer
    /// of an earlier commit, which the object may have moved on from since, by a chmod made
    /// on it for example: it says what was committed, not what is there now).
    pub async fn commit_fresh(&self) -> Result<(Committed, bool), FsError> {
        let mut state = self.state.lock().await;
        match &state.status {
            Status::Open => {}
            Status::Committed(done) => return Ok((done.clone(), false)),
            Status::Failed(errno) => return Err(FsError::UploadFailed { errno: *errno }),
        }
        match self.finish(&mut state).await {
            Ok(etag) => {
                let done = Committed {
                    size: state.written,
                    etag,
                    posix: state.draft.current(),
                };
                debug!(key = %self.key, size = done.size, "upload committed");
                state.status = Status::Committed(done.clone());
                state.buffer_reservation = None;
                Ok((done, true))
            }
            Err(e) => {
                self.fail(&mut state, libc::EIO).await;
                Err(e)
            }
        }
    }

    async fn finish(&self, state: &mut UploadState) -> Result<String, FsError> {
        if state.upload_id.is_none() {
            let data = state.buffer.split().freeze();
            let options = self.options_now(state);
            state.draft = Draft::new(options.posix);
            return match self.store.put(&self.key, data, &options).await {
                Ok(etag) => Ok(etag),
                Err(e) => self.settle(e, None).await,
            };
        }
        if !state.buffer.is_empty() {
            self.send_part(state).await?;
        }
        while !state.in_flight.is_empty() {
            Self::finish_oldest(state).await?;
        }
        let upload_id = state.upload_id.clone().expect("checked above");
        let parts = std::mem::take(&mut state.done);
        let completed = self
            .store
            .complete_multipart(&self.key, &upload_id, parts, &self.options)
            .await;
        match completed {
            Ok(etag) => {
                state.upload_id = None; // nothing left to abort
                Ok(etag)
            }
            Err(e) => self.settle(e, Some(&upload_id)).await,
        }
    }

    /// After the commit call failed with `err`: the object's ETag if it landed all the same,
    /// else the error to report. A Complete that may still be running on the server is
    /// aborted first, so that it cannot land after the writer was told it failed.
    async fn settle(&self, err: S3Error, upload_id: Option<&str>) -> Result<String, FsError> {
        let write_id = &self.options.write_id;
        resolve::settle(self.store.as_ref(), &self.key, write_id, err, upload_id)
            .await
            .map_err(|err| resolve::refused(err, &self.key, self.options.if_none_match))
    }

    /// Abandons the upload (nothing appears in S3) and answers `errno` from now on.
    pub async fn abort(&self, errno: i32) {
        let mut state = self.state.lock().await;
        if matches!(state.status, Status::Open) {
            self.fail(&mut state, errno).await;
        }
    }

    /// Bytes accepted so far.
    pub async fn written(&self) -> u64 {
        self.state.lock().await.written
    }

    /// Whether the upload was committed.
    pub async fn is_committed(&self) -> bool {
        matches!(self.state.lock().await.status, Status::Committed(_))
    }

    /// Whether the upload has ended (committed, failed or aborted), without waiting: `None`
    /// while a write or commit holds it (it has not ended then).
    pub fn ended_now(&self) -> Option<bool> {
        let state = self.state.try_lock().ok()?;
        Some(!matches!(state.status, Status::Open))
    }

    /// Whether the upload failed or was aborted (its writer was told, or is being told).
    pub async fn has_failed(&self) -> bool {
        matches!(self.state.lock().await.status, Status::Failed(_))
    }

    async fn fail(&self, state: &mut UploadState, errno: i32) {
        state.status = Status::Failed(errno);
        state.buffer = BytesMut::new();
        state.buffer_reservation = None;
        for task in state.in_flight.drain(..) {
            task.abort();
        }
        if let Some(upload_id) = state.upload_id.take() {
            self.aborts.abort(&self.key, &upload_id).await;
        }
    }
}

#[cfg(test)]
mod tests;

/// One part being uploaded, counted in the `upload.parts_in_flight` gauge for as long as it
/// lives (its task may end, fail or be aborted: the drop counts it out every time).
pub(crate) struct PartInFlight;

impl PartInFlight {
    /// Counts one more part in the gauge until dropped.
    pub(crate) fn new() -> Self {
        metrics::gauge!(crate::metrics::UPLOAD_PARTS_IN_FLIGHT).increment(1.0);
        PartInFlight
    }
}

impl Drop for PartInFlight {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::UPLOAD_PARTS_IN_FLIGHT).decrement(1.0);
    }
}
