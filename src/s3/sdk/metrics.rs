//! S3 request metrics, recorded by an SDK interceptor so that every attempt counts, the
//! SDK's own retries included: `s3.request_count`, `s3.request_errors` (by HTTP status, `0`
//! for no answer), `s3.request_first_byte_latency` (to the response's headers) and
//! `s3.request_total_latency` (to the end of the attempt), each by operation, with
//! Mountpoint's names and labels. A GET's attempt ends with its response's headers (the
//! body is read after it), so its total latency is its first-byte latency, and an error
//! while its body streams is not counted here (the read path retries it). GETs sent by the
//! exchange of `direct_get` are recorded by it the same way (`record_direct_get`), and the
//! SDK's GET after one of them that was not taken counts as a retry.

use std::time::Instant;

use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::metrics::{
    ATTR_HTTP_STATUS, ATTR_S3_REQUEST, S3_REQUEST_COUNT, S3_REQUEST_ERRORS,
    S3_REQUEST_FIRST_BYTE_LATENCY, S3_REQUEST_RETRIES, S3_REQUEST_TOTAL_LATENCY,
};

/// The interceptor (stateless: each attempt's start travels in its config bag).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RequestMetrics;

/// When the current attempt was handed to the HTTP client.
#[derive(Debug, Clone, Copy)]
struct AttemptStart(Instant);

impl Storable for AttemptStart {
    type Storer = StoreReplace<Self>;
}

/// Marks an operation that is only presigned (`direct_get` sends it itself and counts it
/// there): not counted by [`RequestMetrics`].
#[derive(Debug, Clone, Copy)]
struct PresignOnly;

impl Storable for PresignOnly {
    type Storer = StoreReplace<Self>;
}

/// The interceptor to add to an operation that is only presigned (see [`PresignOnly`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Presigning;

impl Intercept for Presigning {
    fn name(&self) -> &'static str {
        "mount-s3 presigning marker"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(PresignOnly);
        Ok(())
    }
}

/// Whether the operation is only presigned, not sent by the SDK.
fn presign_only(cfg: &ConfigBag) -> bool {
    cfg.load::<PresignOnly>().is_some()
}

/// The operation's name (`GetObject`), as the SDK's metadata gives it.
fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map_or_else(|| "unknown".to_string(), |m| m.name().to_string())
}

/// Microseconds since the attempt started, if it did.
fn elapsed_us(cfg: &ConfigBag) -> Option<f64> {
    cfg.load::<AttemptStart>()
        .map(|start| start.0.elapsed().as_secs_f64() * 1e6)
}

impl Intercept for RequestMetrics {
    fn name(&self) -> &'static str {
        "mount-s3 request metrics"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if presign_only(cfg) {
            return Ok(());
        }
        cfg.interceptor_state()
            .store_put(AttemptStart(Instant::now()));
        let op = operation(cfg);
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            metrics::counter!(S3_REQUEST_RETRIES, ATTR_S3_REQUEST => op.clone()).increment(1);
        }
        metrics::counter!(S3_REQUEST_COUNT, ATTR_S3_REQUEST => op).increment(1);
        Ok(())
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if presign_only(cfg) {
            return Ok(());
        }
        let op = operation(cfg);
        if let Some(us) = elapsed_us(cfg) {
            metrics::histogram!(S3_REQUEST_FIRST_BYTE_LATENCY, ATTR_S3_REQUEST => op.clone())
                .record(us);
        }
        count_if_error(op, context.response().status().as_u16());
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(us) = elapsed_us(cfg) else {
            return Ok(());
        };
        // The next attempt starts afresh: one that fails before it is sent must not be
        // timed from this one's start.
        cfg.interceptor_state().unset::<AttemptStart>();
        let op = operation(cfg);
        metrics::histogram!(S3_REQUEST_TOTAL_LATENCY, ATTR_S3_REQUEST => op.clone()).record(us);
        if context.response().is_none() {
            count_if_error(op, 0);
        }
        Ok(())
    }
}

/// Records one GET sent by the GET's own exchange (`direct_get`) as the interceptor records
/// the SDK's: counted, its latency to the answer's head (as for the SDK's GETs, its total
/// latency too), and an error by status (`0`: no answer).
pub(super) fn record_direct_get(status: u16, first_byte: std::time::Duration) {
    let op = "GetObject";
    let us = first_byte.as_secs_f64() * 1e6;
    metrics::counter!(S3_REQUEST_COUNT, ATTR_S3_REQUEST => op).increment(1);
    if status != 0 {
        // As for the SDK's: a first byte only where an answer came.
        metrics::histogram!(S3_REQUEST_FIRST_BYTE_LATENCY, ATTR_S3_REQUEST => op).record(us);
    }
    metrics::histogram!(S3_REQUEST_TOTAL_LATENCY, ATTR_S3_REQUEST => op).record(us);
    count_if_error(op.to_string(), status);
}

/// Counts a request of operation `op` answered with HTTP `status` as an error unless it is
/// 2xx (`0`: no answer).
fn count_if_error(op: String, status: u16) {
    if !(200..300).contains(&status) {
        metrics::counter!(
            S3_REQUEST_ERRORS,
            ATTR_S3_REQUEST => op,
            ATTR_HTTP_STATUS => status.to_string()
        )
        .increment(1);
    }
}

/// Records the SDK's GET after one the exchange of `direct_get` sent and did not take (an
/// error status but 404/412, no answer, a body that broke) as a retry of it, as the SDK
/// counts its own.
pub(super) fn record_direct_retry() {
    metrics::counter!(S3_REQUEST_RETRIES, ATTR_S3_REQUEST => "GetObject").increment(1);
}
