//! What the object store said, before anyone decides what it means for a file.

use thiserror::Error;

/// An error from one S3 call, already classified. Transient errors have been retried by the
/// client before they reach this type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum S3Error {
    /// The key (or the bucket, see [`S3Error::NoSuchBucket`]) does not exist.
    #[error("not found")]
    NotFound,
    /// The bucket does not exist.
    #[error("bucket does not exist")]
    NoSuchBucket,
    /// 403: the credentials are wrong or lack permission.
    #[error("access denied ({0})")]
    AccessDenied(String),
    /// 412: the object changed since the handle pinned its ETag.
    #[error("object changed (If-Match failed)")]
    PreconditionFailed,
    /// The server could not be reached or did not answer in time (after retries).
    #[error("network error: {0}")]
    Network(String),
    /// 301 (or a malformed-authorization 400) naming the bucket's real region in
    /// `x-amz-bucket-region`: the requests were signed for another one.
    #[error("the bucket is in region {0}")]
    WrongRegion(String),
    /// Any other answer from the server.
    #[error("HTTP {status} {code}: {message}")]
    Service {
        /// HTTP status code.
        status: u16,
        /// S3 error code, e.g. `InternalError`.
        code: String,
        /// The server's message.
        message: String,
    },
}
