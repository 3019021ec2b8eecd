//! Failing fast while S3 does not answer. Once a request fails for want of an answer (a
//! connection refused or reset, nothing received within the no-progress timeout, the
//! deadline), S3 counts as unreachable, and every request is given only [`DOWN_TIMEOUT`] to
//! get its answer instead of its full timeouts and retries: a program's call that needs
//! several requests gets its error after the first one's wait plus a few seconds, not after
//! all of theirs. The first request that gets an answer (even an error status: the server is
//! there) makes S3 reachable again, at once and with no remount. Requests already under way
//! are not touched: a slow transfer that makes progress goes on.

use std::future::Future;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Copied, ListPage, ObjectInfo, ObjectStore, PartTag, Posix, S3Error, WriteOptions};

/// How long a request may wait for its answer while S3 counts as unreachable.
pub const DOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// `inner`, failing fast while S3 does not answer.
#[derive(Debug)]
pub struct WithHealth<S> {
    inner: S,
    /// Since when no request got an answer (`None`: S3 answers).
    down_since: Mutex<Option<Instant>>,
}

impl<S: ObjectStore> WithHealth<S> {
    /// Wraps `inner`, which counts as reachable until a request finds otherwise.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            down_since: Mutex::new(None),
        }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn down_since(&self) -> Option<Instant> {
        *self.down_since.lock().expect("health lock poisoned")
    }

    /// Records what a request found.
    fn observe<T>(&self, result: &Result<T, S3Error>) {
        let unanswered = matches!(result, Err(S3Error::Network(_)));
        let mut down_since = self.down_since.lock().expect("health lock poisoned");
        match (unanswered, *down_since) {
            (true, None) => {
                warn!(
                    "S3 does not answer; requests get {}s each until it does",
                    DOWN_TIMEOUT.as_secs()
                );
                *down_since = Some(Instant::now());
            }
            (false, Some(since)) => {
                info!(
                    "S3 answers again after {}s",
                    Instant::now().duration_since(since).as_secs()
                );
                *down_since = None;
            }
            _ => {}
        }
    }

    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, S3Error>>,
    ) -> Result<T, S3Error> {
        let result = match self.down_since() {
            None => request.await,
            Some(since) => match tokio::time::timeout(DOWN_TIMEOUT, request).await {
                Ok(result) => result,
                Err(_) => Err(S3Error::Network(format!(
                    "{what}: no answer within {}s; S3 has not answered for {}s",
                    DOWN_TIMEOUT.as_secs(),
                    Instant::now().duration_since(since).as_secs()
                ))),
            },
        };
        self.observe(&result);
        result
    }
}

impl<S: ObjectStore> ObjectStore for WithHealth<S> {
    async fn head(&self, key: &str) -> Result<ObjectInfo, S3Error> {
        self.call("HEAD", self.inner.head(key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, S3Error> {
        let request = self.inner.list(prefix, delimited, token, max_keys);
        self.call("LIST", request).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        let request = self.inner.get_range(key, range, if_match);
        self.call("GET", request).await
    }

    async fn put(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<String, S3Error> {
        self.call("PUT", self.inner.put(key, data, options)).await
    }

    async fn create_multipart(&self, key: &str, options: &WriteOptions) -> Result<String, S3Error> {
        let request = self.inner.create_multipart(key, options);
        self.call("CreateMultipartUpload", request).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<PartTag, S3Error> {
        let request = self.inner.upload_part(key, upload_id, number, data);
        self.call("UploadPart", request).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
        let request = self
            .inner
            .complete_multipart(key, upload_id, parts, options);
        self.call("CompleteMultipartUpload", request).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        from: &str,
        range: Range<u64>,
        if_match: &str,
    ) -> Result<PartTag, S3Error> {
        let request = self
            .inner
            .upload_part_copy(key, upload_id, number, from, range, if_match);
        self.call("UploadPartCopy", request).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let request = self.inner.abort_multipart(key, upload_id);
        self.call("AbortMultipartUpload", request).await
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        self.call("DELETE", self.inner.delete(key, if_match)).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> Result<Copied, S3Error> {
        let request = self.inner.copy(from, to, size, if_match, posix);
        self.call("CopyObject", request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::faulty::{Fault, FaultyStore, Op, network};
    use crate::s3::in_memory::InMemoryStore;

    #[tokio::test(start_paused = true)]
    async fn requests_wait_briefly_while_s3_is_down_and_recovery_is_at_once() {
        let store = WithHealth::new(FaultyStore::new(InMemoryStore::new()));
        store.inner().inner().put("k", b"v".to_vec());
        store.inner().inject(Op::Head, 1, Fault::Fail(network()));
        assert!(
            store.head("k").await.is_err(),
            "the first one found S3 down"
        );
        // While down, a request that gets no answer fails after the short wait...
        store.inner().inject(Op::Head, 2, Fault::Hang);
        let started = Instant::now();
        assert!(matches!(store.head("k").await, Err(S3Error::Network(_))));
        assert_eq!(started.elapsed(), DOWN_TIMEOUT);
        // ...and the first one that gets an answer brings it back, at once.
        assert_eq!(store.head("k").await.unwrap().size, 1);
        store
            .inner()
            .inject(Op::Head, 4, Fault::Delay(DOWN_TIMEOUT * 3));
        assert_eq!(
            store.head("k").await.unwrap().size,
            1,
            "back up: full time again"
        );
    }

    #[tokio::test]
    async fn an_error_status_is_an_answer() {
        let store = WithHealth::new(FaultyStore::new(InMemoryStore::new()));
        assert_eq!(store.head("missing").await.unwrap_err(), S3Error::NotFound);
        store.inner().inner().put("k", b"v".to_vec());
        assert!(
            store.head("k").await.is_ok(),
            "a 404 does not make S3 unreachable"
        );
    }
}
