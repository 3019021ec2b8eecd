//! A store that fails on purpose, for the unit tests: a wrapper over any [`ObjectStore`] that,
//! for the Nth call of a given kind, fails before the call reaches the store, loses the
//! answer of a call the store executed, delays it, or never answers. Deterministic, so each
//! commit point can be tested against each fault.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::{Copied, ListPage, ObjectInfo, ObjectStore, PartTag, Posix, S3Error, WriteOptions};

/// A kind of store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Head,
    List,
    Get,
    Put,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    CompleteMultipart,
    AbortMultipart,
    Delete,
    Copy,
}

/// What happens to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this error without calling the store (the request never arrived).
    Fail(S3Error),
    /// Call the store, then answer this error instead of its answer (the answer was lost).
    LoseAnswer(S3Error),
    /// Wait this long, then call the store.
    Delay(Duration),
    /// Never answer (a deadline around the store turns this into an error).
    Hang,
    /// GETs only: answer success with only the first `n` bytes of the body (a store that
    /// breaks its promise of the range asked for). Other calls ignore it.
    ShortBody(usize),
}

/// A transient network failure, as the SDK reports one after its retries.
pub fn network() -> S3Error {
    S3Error::Network("connection reset (injected)".into())
}

/// A 500, as a server in trouble answers.
pub fn internal_error() -> S3Error {
    S3Error::Service {
        status: 500,
        code: "InternalError".into(),
        message: "injected".into(),
    }
}

#[derive(Debug)]
struct Rule {
    op: Op,
    /// 1-based number of the call of kind `op` this rule hits.
    nth: usize,
    fault: Fault,
}

/// `inner`, with faults injected as [`FaultyStore::inject`] says.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<HashMap<Op, usize>>,
}

impl<S: ObjectStore> FaultyStore<S> {
    /// `inner` without faults yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// The store behind the faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The `nth` call (1-based, counted from the store's creation) of kind `op` gets `fault`.
    pub fn inject(&self, op: Op, nth: usize, fault: Fault) {
        self.rules
            .lock()
            .expect("rules lock poisoned")
            .push(Rule { op, nth, fault });
    }

    /// Calls of kind `op` so far.
    pub fn calls(&self, op: Op) -> usize {
        self.calls
            .lock()
            .expect("calls lock poisoned")
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Counts a call of kind `op` and takes the fault it gets, if any.
    fn fault_for(&self, op: Op) -> Option<Fault> {
        let nth = {
            let mut calls = self.calls.lock().expect("calls lock poisoned");
            let n = calls.entry(op).or_insert(0);
            *n += 1;
            *n
        };
        let mut rules = self.rules.lock().expect("rules lock poisoned");
        let at = rules.iter().position(|r| r.op == op && r.nth == nth)?;
        Some(rules.remove(at).fault)
    }

    async fn run<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = Result<T, S3Error>>,
    ) -> Result<T, S3Error> {
        self.apply(self.fault_for(op), call).await
    }

    async fn apply<T>(
        &self,
        fault: Option<Fault>,
        call: impl std::future::Future<Output = Result<T, S3Error>>,
    ) -> Result<T, S3Error> {
        match fault {
            None | Some(Fault::ShortBody(_)) => call.await,
            Some(Fault::Fail(e)) => Err(e),
            Some(Fault::LoseAnswer(e)) => {
                let _ = call.await;
                Err(e)
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Some(Fault::Hang) => std::future::pending().await,
        }
    }
}

impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    async fn head(&self, key: &str) -> Result<ObjectInfo, S3Error> {
        self.run(Op::Head, self.inner.head(key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, S3Error> {
        let call = self.inner.list(prefix, delimited, token, max_keys);
        self.run(Op::List, call).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        let call = self.inner.get_range(key, range, if_match);
        match self.fault_for(Op::Get) {
            Some(Fault::ShortBody(n)) => call.await.map(|body| body.slice(..n.min(body.len()))),
            fault => self.apply(fault, call).await,
        }
    }

    async fn put(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<String, S3Error> {
        self.run(Op::Put, self.inner.put(key, data, options)).await
    }

    async fn create_multipart(&self, key: &str, options: &WriteOptions) -> Result<String, S3Error> {
        let call = self.inner.create_multipart(key, options);
        self.run(Op::CreateMultipart, call).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<PartTag, S3Error> {
        let call = self.inner.upload_part(key, upload_id, number, data);
        self.run(Op::UploadPart, call).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
        let call = self
            .inner
            .complete_multipart(key, upload_id, parts, options);
        self.run(Op::CompleteMultipart, call).await
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
        self.run(Op::UploadPartCopy, call).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let call = self.inner.abort_multipart(key, upload_id);
        self.run(Op::AbortMultipart, call).await
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        self.run(Op::Delete, self.inner.delete(key, if_match)).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> Result<Copied, S3Error> {
        let call = self.inner.copy(from, to, size, if_match, posix);
        self.run(Op::Copy, call).await
    }
}
