//! Multipart uploads that must be aborted and could not be yet: an abort that fails (the
//! server is down) is retried in the background until it succeeds or the mount ends, and at
//! the end every upload still left behind is named, so no part is silently left to be billed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::s3::ObjectStore;

/// First wait before retrying a failed abort; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Aborts still owed, by upload id.
#[derive(Debug)]
pub struct PendingAborts<S> {
    store: Arc<S>,
    /// Upload id → key, for every abort that failed and is being retried.
    pending: Mutex<BTreeMap<String, String>>,
}

impl<S: ObjectStore> PendingAborts<S> {
    /// None owed yet, on `store`.
    pub fn new(store: Arc<S>) -> Arc<Self> {
        Arc::new(Self {
            store,
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.pending.lock().expect("pending aborts lock poisoned")
    }

    /// Aborts upload `upload_id` of `key`; if that fails, keeps trying in the background.
    pub async fn abort(self: &Arc<Self>, key: &str, upload_id: &str) {
        let Err(e) = self.store.abort_multipart(key, upload_id).await else {
            return;
        };
        warn!(
            key,
            upload_id, "could not abort multipart upload ({e}); retrying in the background"
        );
        self.lock().insert(upload_id.to_string(), key.to_string());
        let this = self.clone();
        let (key, upload_id) = (key.to_string(), upload_id.to_string());
        tokio::spawn(async move { this.retry(key, upload_id).await });
    }

    async fn retry(&self, key: String, upload_id: String) {
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            if !self.lock().contains_key(&upload_id) {
                return; // settled by `finish`
            }
            if self.store.abort_multipart(&key, &upload_id).await.is_ok() {
                self.lock().remove(&upload_id);
                info!(key, upload_id, "multipart upload aborted after retrying");
                return;
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// Aborts owed now.
    pub fn owed(&self) -> usize {
        self.lock().len()
    }

    /// At the end of the mount: one more try for each abort owed; returns the uploads left
    /// behind, as (key, upload id), each logged.
    pub async fn finish(&self) -> Vec<(String, String)> {
        let owed: Vec<(String, String)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        let mut left = Vec::new();
        for (upload_id, key) in owed {
            match self.store.abort_multipart(&key, &upload_id).await {
                Ok(()) => info!(key, upload_id, "multipart upload aborted at unmount"),
                Err(e) => {
                    warn!(
                        key,
                        upload_id,
                        "multipart upload left behind: it could not be aborted ({e}); abort it with `aws s3api abort-multipart-upload`"
                    );
                    left.push((key, upload_id));
                }
            }
        }
        left
    }
}
