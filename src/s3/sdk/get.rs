//! The ranged GET: the body is received into one page-aligned buffer (from the pool of
//! `memory::pool` when large), and a body that breaks is resumed from the byte where it
//! stopped instead of from the start. For a plain `http://` endpoint the first try is the
//! GET's own exchange (`direct_get`), the SDK's client the rest.

use std::ops::Range;

use aws_sdk_s3::presigning::PresigningConfig;
use bytes::Bytes;
use tracing::{debug, warn};

use super::SdkStore;
use super::direct_get::{DirectGet, Fetched};
use super::errors::classify;
use crate::memory::BodyBuffer;
use crate::s3::S3Error;

/// How long a presigned GET stays valid (it is sent at once).
const PRESIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Wait before resuming a broken GET body (times the attempt number).
const RESUME_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

impl SdkStore {
    pub(super) async fn get_object_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let expected = (range.end - range.start) as usize;
        let mut body = BodyBuffer::with_capacity(expected);
        let mut resumes = 0;
        let mut direct = self.direct.as_deref().filter(|d| d.is_on());
        loop {
            let from = range.start + body.len() as u64;
            if let Some(exchange) = direct.take() {
                match self
                    .get_direct(exchange, key, from..range.end, if_match, &mut body)
                    .await
                {
                    Fetched::Whole => break,
                    Fetched::Failed(e) => return Err(e),
                    Fetched::Declined(why) => {
                        // The SDK's GET is this one's second attempt.
                        super::metrics::record_direct_retry();
                        debug!(
                            key,
                            at = range.start + body.len() as u64,
                            why,
                            "GET sent again through the SDK"
                        );
                        continue;
                    }
                    Fetched::NotSent(why) => {
                        debug!(key, why, "GET through the SDK");
                    }
                }
            }
            match self
                .get_into(key, from..range.end, if_match, &mut body)
                .await
            {
                Ok(()) if body.len() == expected => break,
                Ok(()) => {
                    // The server ended the body early; treat it like a broken connection.
                    warn!(key, got = body.len(), expected, "short GET body; resuming");
                }
                Err(BodyError::Request(e)) => return Err(e),
                Err(BodyError::Stream(e)) => {
                    warn!(key, at = from, "GET body broke ({e}); resuming");
                }
            }
            resumes += 1;
            if resumes >= self.max_attempts {
                return Err(S3Error::Network(format!(
                    "GET of {key} kept breaking after {} bytes of {expected}",
                    body.len()
                )));
            }
            tokio::time::sleep(RESUME_BACKOFF * resumes).await;
        }
        debug!(
            key,
            start = range.start,
            len = body.len(),
            resumes,
            "GET ok"
        );
        Ok(body.freeze())
    }
    /// The GetObject request for `range` of `key`, pinned to `if_match` when given.
    fn ranged_get(
        &self,
        key: &str,
        range: &Range<u64>,
        if_match: Option<&str>,
    ) -> aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(if_match.map(str::to_string))
    }

    /// One GET of `range` through the exchange of `direct_get`, signed by the SDK
    /// (presigned, with the same headers), appending the body to `out`.
    async fn get_direct(
        &self,
        exchange: &DirectGet,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        out: &mut BodyBuffer,
    ) -> Fetched {
        let Ok(presigning) = PresigningConfig::expires_in(PRESIGNED_FOR) else {
            return Fetched::NotSent("no presigning");
        };
        let presigned = self
            .ranged_get(key, &range, if_match)
            .customize()
            .interceptor(super::metrics::Presigning)
            .presigned(presigning)
            .await;
        let Ok(presigned) = presigned else {
            return Fetched::NotSent("not presigned");
        };
        let headers: Vec<(String, String)> = presigned
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let span = (range.start, range.end - range.start);
        exchange
            .fetch(presigned.uri(), &headers, span, if_match, out)
            .await
    }

    /// One GET of `range`, appending the body to `out` as it arrives, so that a broken body
    /// can be resumed from where it stopped instead of from the start.
    async fn get_into(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        out: &mut BodyBuffer,
    ) -> Result<(), BodyError> {
        let mut response = self
            .ranged_get(key, &range, if_match)
            .send()
            .await
            .map_err(|e| BodyError::Request(classify(e)))?;
        let limit = out.len() + (range.end - range.start) as usize;
        loop {
            // A body that stops for the no-progress timeout is a dead connection (it is
            // resumed on another); one that keeps coming, however slowly, is not cut.
            let next = tokio::time::timeout(self.no_progress, response.body.next()).await;
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => {
                    return Err(BodyError::Stream(format!(
                        "no byte for {}s",
                        self.no_progress.as_secs()
                    )));
                }
            };
            let chunk = chunk.map_err(|e| BodyError::Stream(e.to_string()))?;
            if out.len() + chunk.len() > limit || out.extend_from_slice(&chunk).is_err() {
                return Err(BodyError::Request(S3Error::Network(format!(
                    "GET of {key} returned more bytes than asked"
                ))));
            }
        }
        Ok(())
    }
}

/// How a ranged GET failed: before the body (the SDK already retried), or during it.
enum BodyError {
    Request(S3Error),
    Stream(String),
}
