//! An overall time limit on every S3 call, retries included, so that a dead or stalled server
//! becomes an error (EIO for the program) within a known time instead of a hang.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::{Copied, ListPage, ObjectInfo, ObjectStore, PartTag, Posix, S3Error, WriteOptions};

/// `inner`, with every call limited to `deadline`.
#[derive(Debug)]
pub struct WithDeadline<S> {
    inner: S,
    deadline: Duration,
}

impl<S: ObjectStore> WithDeadline<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, deadline: Duration) -> Self {
        Self { inner, deadline }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn limit<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, S3Error>>,
    ) -> Result<T, S3Error> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(S3Error::Network({
                metrics::counter!(crate::metrics::S3_DEADLINE_EXPIRIES, crate::metrics::ATTR_S3_REQUEST => what.to_string())
                    .increment(1);
                format!(
                    "{what} did not finish within {}s",
                    self.deadline.as_secs_f32()
                )
            })),
        }
    }
}

impl<S: ObjectStore> ObjectStore for WithDeadline<S> {
    async fn head(&self, key: &str) -> Result<ObjectInfo, S3Error> {
        self.limit("HEAD", self.inner.head(key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, S3Error> {
        self.limit("LIST", self.inner.list(prefix, delimited, token, max_keys))
            .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        self.limit("GET", self.inner.get_range(key, range, if_match))
            .await
    }

    async fn put(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<String, S3Error> {
        self.limit("PUT", self.inner.put(key, data, options)).await
    }

    async fn create_multipart(&self, key: &str, options: &WriteOptions) -> Result<String, S3Error> {
        self.limit(
            "CreateMultipartUpload",
            self.inner.create_multipart(key, options),
        )
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<PartTag, S3Error> {
        self.limit(
            "UploadPart",
            self.inner.upload_part(key, upload_id, number, data),
        )
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
        self.limit(
            "CompleteMultipartUpload",
            self.inner
                .complete_multipart(key, upload_id, parts, options),
        )
        .await
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
        let call = self
            .inner
            .upload_part_copy(key, upload_id, number, from, range, if_match);
        self.limit("UploadPartCopy", call).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.limit(
            "AbortMultipartUpload",
            self.inner.abort_multipart(key, upload_id),
        )
        .await
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        self.limit("DELETE", self.inner.delete(key, if_match)).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> Result<Copied, S3Error> {
        // A server-side copy of a large object legitimately takes long: one deadline per GiB.
        let parts = 1 + size / (1 << 30);
        let deadline = self
            .deadline
            .saturating_mul(u32::try_from(parts).unwrap_or(u32::MAX));
        match tokio::time::timeout(deadline, self.inner.copy(from, to, size, if_match, posix)).await
        {
            Ok(result) => result,
            Err(_) => Err(S3Error::Network(format!(
                "copy of {from} did not finish within {}s",
                deadline.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::in_memory::InMemoryStore;

    /// A store whose HEAD never answers.
    struct Stalled(InMemoryStore);

    impl ObjectStore for Stalled {
        async fn head(&self, _key: &str) -> Result<ObjectInfo, S3Error> {
            std::future::pending().await
        }
        async fn list(
            &self,
            p: &str,
            d: bool,
            t: Option<String>,
            m: usize,
        ) -> Result<ListPage, S3Error> {
            self.0.list(p, d, t, m).await
        }
        async fn get_range(
            &self,
            k: &str,
            r: Range<u64>,
            i: Option<&str>,
        ) -> Result<Bytes, S3Error> {
            self.0.get_range(k, r, i).await
        }
        async fn put(&self, k: &str, d: Bytes, o: &WriteOptions) -> Result<String, S3Error> {
            ObjectStore::put(&self.0, k, d, o).await
        }
        async fn create_multipart(&self, k: &str, o: &WriteOptions) -> Result<String, S3Error> {
            self.0.create_multipart(k, o).await
        }
        async fn upload_part(
            &self,
            k: &str,
            u: &str,
            n: i32,
            d: Bytes,
        ) -> Result<PartTag, S3Error> {
            self.0.upload_part(k, u, n, d).await
        }
        async fn complete_multipart(
            &self,
            k: &str,
            u: &str,
            p: Vec<PartTag>,
            o: &WriteOptions,
        ) -> Result<String, S3Error> {
            self.0.complete_multipart(k, u, p, o).await
        }
        async fn abort_multipart(&self, k: &str, u: &str) -> Result<(), S3Error> {
            self.0.abort_multipart(k, u).await
        }
        async fn upload_part_copy(
            &self,
            k: &str,
            u: &str,
            n: i32,
            f: &str,
            r: Range<u64>,
            m: &str,
        ) -> Result<PartTag, S3Error> {
            self.0.upload_part_copy(k, u, n, f, r, m).await
        }
        async fn delete(&self, k: &str, m: Option<&str>) -> Result<(), S3Error> {
            ObjectStore::delete(&self.0, k, m).await
        }
        async fn copy(
            &self,
            f: &str,
            t: &str,
            s: u64,
            m: &str,
            p: Option<&Posix>,
        ) -> Result<Copied, S3Error> {
            self.0.copy(f, t, s, m, p).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_call_fails_at_the_deadline_and_others_pass() {
        let inner = InMemoryStore::new();
        inner.put("k", b"v".to_vec());
        let store = WithDeadline::new(Stalled(inner), Duration::from_secs(5));
        let err = store.head("k").await.unwrap_err();
        assert!(
            matches!(err, S3Error::Network(ref m) if m.contains("HEAD")),
            "{err}"
        );
        assert_eq!(
            store.get_range("k", 0..1, None).await.unwrap().as_ref(),
            b"v"
        );
    }
}
