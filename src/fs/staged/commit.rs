//! The commit of a staged file: the plan ([`super::plan`]) carried out. One PUT, or a
//! multipart upload whose copied parts come from the base version on the server
//! (UploadPartCopy with its ETag) and whose other parts are read from the staging file (the
//! base's bytes they need fetched first), four parts at a time, each part's buffer from the
//! memory budget. The PUT or the completion carries If-Match with the base's ETag (or
//! If-None-Match for a new file, as asked), so the object is replaced only if it is still the
//! version the staging started from. A failure aborts the upload (retried until it goes); a
//! lost answer is settled by the write id, as for every commit of ours.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::debug;

use super::plan::{Plan, PlanPart};
use super::{Base, StagedFile, State};
use crate::fs::FsError;
use crate::fs::write::{MAX_PARTS_IN_FLIGHT, PartInFlight, resolve};
use crate::s3::{ObjectStore, PartTag, S3Error, WriteOptions};

/// What a commit made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The object's size.
    pub size: u64,
    /// Its ETag.
    pub etag: String,
    /// Bytes sent (PUT body and uploaded parts) and bytes copied on the server.
    pub uploaded: u64,
    pub copied: u64,
}

impl<S: ObjectStore> StagedFile<S> {
    /// Replaces the object with the staged file, with write id `write_id`, conditional on the
    /// base version (If-Match), or for a new file on there being none when `if_none_match`.
    /// `None` when nothing changed since the last commit.
    pub async fn commit(
        &self,
        write_id: String,
        if_none_match: bool,
    ) -> Result<Option<Committed>, FsError> {
        let mut state = self.state.lock().await;
        if !state.changed || state.deleted {
            return Ok(None);
        }
        let key = state.key.clone();
        let size = state.size;
        let copyable = state
            .base
            .as_ref()
            .map_or(0, |b| state.copyable.min(b.size));
        let options = WriteOptions {
            write_id,
            if_none_match: state.base.is_none() && state.replaces.is_none() && if_none_match,
            // The version replaced: the base, or the object a rename put this new file over.
            if_match: (state.base.as_ref().map(|b| b.etag.clone()))
                .or_else(|| state.replaces.clone()),
            posix: state.draft.at_commit(std::time::SystemTime::now()),
            ..WriteOptions::default()
        };
        let plan = super::plan::plan(size, copyable, &state.dirty, self.put_limit);
        debug!(key, size, copyable, ?plan, "committing a staged file");
        let done = match plan {
            Plan::Put => self.put_whole(&mut state, &key, &options).await,
            Plan::Parts(parts) => self.upload_parts(&mut state, &key, parts, &options).await,
        };
        // The caller tells the writer (a close or fsync answers the error).
        state.told_failed = done.is_err();
        let done = done?;
        state.base = Some(Base {
            etag: done.etag.clone(),
            size,
        });
        state.dirty = super::RangeSet::new();
        state.copyable = size;
        state.changed = false;
        state.replaces = None;
        state.draft = crate::fs::posix::Draft::new(options.posix);
        Ok(Some(done))
    }

    /// The whole file in one PUT.
    async fn put_whole(
        &self,
        state: &mut State,
        key: &str,
        options: &WriteOptions,
    ) -> Result<Committed, FsError> {
        let size = state.size;
        self.fill(state, 0..size).await?;
        // In memory while it is sent, as a part is: from the same budget.
        let _held = self.budget.reserve(size.min(self.budget.limit())).await;
        let data = read_at(state.file.clone(), 0..size).await?;
        let etag = match self.store.put(key, data, options).await {
            Ok(etag) => etag,
            Err(e) => self.settle(e, key, options, None).await?,
        };
        Ok(Committed {
            size,
            etag,
            uploaded: size,
            copied: 0,
        })
    }

    /// A multipart upload of `parts`; aborted if anything fails.
    async fn upload_parts(
        &self,
        state: &mut State,
        key: &str,
        parts: Vec<PlanPart>,
        options: &WriteOptions,
    ) -> Result<Committed, FsError> {
        // The base's bytes the uploaded parts need, fetched first (this holds the state).
        for part in parts.iter().filter(|p| !p.copy) {
            self.fill(state, part.range.clone()).await?;
        }
        let upload_id = self
            .store
            .create_multipart(key, options)
            .await
            .map_err(|e| FsError::s3(key, e))?;
        let base_etag = state.base.as_ref().map(|b| b.etag.clone());
        let sent = self
            .send_parts(key, &upload_id, &parts, state.file.clone(), base_etag)
            .await;
        let tags = match sent {
            Ok(tags) => tags,
            Err(e) => {
                self.aborts.abort(key, &upload_id).await;
                return Err(e);
            }
        };
        let result = self
            .store
            .complete_multipart(key, &upload_id, tags, options)
            .await;
        let etag = match result {
            Ok(etag) => etag,
            Err(e) => match self.settle(e, key, options, Some(&upload_id)).await {
                Ok(etag) => etag,
                Err(e) => {
                    // Not landed: the upload's parts must not stay behind.
                    self.aborts.abort(key, &upload_id).await;
                    return Err(e);
                }
            },
        };
        let (copied, uploaded) = parts.iter().fold((0, 0), |(c, u), p| {
            let len = p.range.end - p.range.start;
            if p.copy { (c + len, u) } else { (c, u + len) }
        });
        Ok(Committed {
            size: state.size,
            etag,
            uploaded,
            copied,
        })
    }

    /// Sends every part, a few at a time; their tags in order.
    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PlanPart],
        file: Arc<std::fs::File>,
        base_etag: Option<String>,
    ) -> Result<Vec<PartTag>, FsError> {
        let mut tags: Vec<Option<PartTag>> = vec![None; parts.len()];
        let mut running = JoinSet::new();
        let mut next = 0;
        loop {
            while running.len() < MAX_PARTS_IN_FLIGHT && next < parts.len() {
                let part = parts[next].clone();
                let number = i32::try_from(next + 1).map_err(|_| FsError::FileTooBig)?;
                let (store, key, upload_id) =
                    (self.store.clone(), key.to_string(), upload_id.to_string());
                let (file, budget, base_etag) =
                    (file.clone(), self.budget.clone(), base_etag.clone());
                let index = next;
                running.spawn(async move {
                    let _counted = PartInFlight::new();
                    let tag = if part.copy {
                        let etag = base_etag.ok_or_else(|| {
                            FsError::Staging("a copied part without a base version".into())
                        })?;
                        store
                            .upload_part_copy(&key, &upload_id, number, &key, part.range, &etag)
                            .await
                            .map_err(|e| FsError::s3(&key, e))?
                    } else {
                        let len = part.range.end - part.range.start;
                        let _held = budget.reserve(len.min(budget.limit())).await;
                        let data = read_at(file, part.range).await?;
                        store
                            .upload_part(&key, &upload_id, number, data)
                            .await
                            .map_err(|e| FsError::s3(&key, e))?
                    };
                    Ok::<_, FsError>((index, tag))
                });
                next += 1;
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (index, tag) = done.map_err(FsError::task)??;
            tags[index] = Some(tag);
        }
        tags.into_iter()
            .map(|t| t.ok_or_else(|| FsError::Staging("a part was not sent".into())))
            .collect()
    }

    /// After a commit call failed: the ETag if it landed all the same (the write id says),
    /// else what the failure means for the writer: another version in place of the base is
    /// the object changed (EIO), an object where a new file was meant is EEXIST.
    async fn settle(
        &self,
        err: S3Error,
        key: &str,
        options: &WriteOptions,
        upload_id: Option<&str>,
    ) -> Result<String, FsError> {
        let store = self.store.as_ref();
        resolve::settle(store, key, &options.write_id, err, upload_id)
            .await
            .map_err(|err| resolve::refused(err, key, options.if_none_match))
    }
}

/// The bytes of `range` of the staging file.
pub(super) async fn read_at(
    file: Arc<std::fs::File>,
    range: std::ops::Range<u64>,
) -> Result<Bytes, FsError> {
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    crate::fs::blocking::unblock(move || file.read_exact_at(&mut buf, range.start).map(|()| buf))
        .await
        .map_err(FsError::task)?
        .map(Bytes::from)
        .map_err(|e| FsError::Staging(e.to_string()))
}
