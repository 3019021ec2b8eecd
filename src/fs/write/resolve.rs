//! Did our write land? A PUT or CompleteMultipartUpload can fail in ways that hide its
//! success: the answer was lost and a retry found the upload gone (NoSuchUpload) or the object
//! present (412 on a conditional write), or the deadline fired while the server was still at
//! work. Guessing either way is wrong (on an overwrite the old object is already gone), so the
//! answer comes from S3: a HEAD, and the write id that every write of ours stores with the
//! object as user metadata.

use tracing::warn;

use crate::fs::FsError;
use crate::s3::{ObjectStore, S3Error};

/// Whether a failed commit call may have been executed by the server all the same.
pub(crate) fn may_have_landed(err: &S3Error) -> bool {
    match err {
        S3Error::Network(_) | S3Error::NotFound | S3Error::PreconditionFailed => true,
        S3Error::Service { status, .. } => *status >= 500 || *status == 429 || *status < 300,
        S3Error::AccessDenied(_) | S3Error::NoSuchBucket | S3Error::WrongRegion(_) => false,
    }
}

/// The ETag of `key` if the object there is the one we wrote with `write_id`; `None` if it
/// is absent or another's. An error means S3 could not say.
pub(crate) async fn landed<S: ObjectStore>(
    store: &S,
    key: &str,
    write_id: &str,
) -> Result<Option<String>, S3Error> {
    match store.head(key).await {
        Ok(info) if info.write_id.as_deref() == Some(write_id) => {
            warn!(
                key,
                "the answer to a commit was lost; S3 holds the object this mount wrote"
            );
            Ok(Some(info.etag))
        }
        Ok(_) | Err(S3Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// After a commit call (PUT or Complete of `upload_id`) of `key` with `write_id` failed
/// with `err`: the object's ETag if it landed all the same, else the error S3 gave (as
/// `Err(Some)`), or `Err(None)` when S3 could not say (reported as the original failure). A
/// Complete that may still be running on the server is aborted first, so that it cannot land
/// after the writer was told it failed.
pub(crate) async fn settle<S: ObjectStore>(
    store: &S,
    key: &str,
    write_id: &str,
    err: S3Error,
    upload_id: Option<&str>,
) -> Result<String, S3Error> {
    if !may_have_landed(&err) {
        return Err(err);
    }
    match landed(store, key, write_id).await {
        Ok(Some(etag)) => return Ok(etag),
        Ok(None) => {}
        Err(head) => {
            warn!(
                key,
                "cannot tell whether the commit landed ({head}); reporting it failed"
            );
            return Err(err);
        }
    }
    if let Some(upload_id) = upload_id {
        let _ = store.abort_multipart(key, upload_id).await;
        if let Ok(Some(etag)) = landed(store, key, write_id).await {
            return Ok(etag);
        }
    }
    Err(err)
}

/// What a commit refused by S3 means for the writer: a conditional create that found an
/// object is EEXIST; anything else as [`FsError::s3`] says (a failed If-Match: the object
/// changed).
pub(crate) fn refused(err: S3Error, key: &str, if_none_match: bool) -> FsError {
    match err {
        S3Error::PreconditionFailed if if_none_match => FsError::Exists,
        err => FsError::s3(key, err),
    }
}

/// A fresh write id: 128 random bits in hex (time and a counter if the system has no
/// randomness to give, which only weakens uniqueness across machines).
pub fn new_write_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id());
        bytes[8..].copy_from_slice(&n.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ids_are_fresh_hex() {
        let a = new_write_id();
        let b = new_write_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn refusals_cannot_hide_a_landed_write() {
        assert!(!may_have_landed(&S3Error::AccessDenied("403".into())));
        assert!(!may_have_landed(&S3Error::NoSuchBucket));
        let status = |status| S3Error::Service {
            status,
            code: String::new(),
            message: String::new(),
        };
        assert!(!may_have_landed(&status(400)));
        assert!(may_have_landed(&status(503)) && may_have_landed(&status(200)));
        assert!(
            may_have_landed(&S3Error::NotFound),
            "NoSuchUpload after a lost success"
        );
        assert!(
            may_have_landed(&S3Error::PreconditionFailed),
            "a retry seeing our object"
        );
        assert!(may_have_landed(&S3Error::Network("deadline".into())));
    }
}
