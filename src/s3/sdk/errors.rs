//! What an SDK error means: the server's answer classified into an [`S3Error`], and which
//! failures are transient (worth a retry, and possibly hiding a request the server executed).

use std::time::SystemTime;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::s3::S3Error;

/// Whether an error may go away on retry, and may hide a request the server executed: a
/// network failure, a 5xx or 429, or a success status whose body did not arrive whole (the
/// fault tests truncate bodies: a 200 with half its XML is an executed request).
pub(super) fn is_transient(err: &S3Error) -> bool {
    match err {
        S3Error::Network(_) => true,
        S3Error::Service { status, .. } => *status >= 500 || *status == 429 || *status < 300,
        _ => false,
    }
}

/// Wait before attempt `attempt + 1`: exponential from 100 ms, capped at 5 s, with jitter.
pub(super) fn backoff(attempt: u32) -> std::time::Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| u64::from(t.subsec_nanos()) % (base / 2 + 1));
    std::time::Duration::from_millis(base / 2 + jitter)
}

/// Classifies an SDK error by what the server (or the network) said.
pub(super) fn classify<E>(err: SdkError<E>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    SdkError<E>: std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    let message = err.message().unwrap_or_default().to_string();
    let region = err
        .raw_response()
        .and_then(|r| r.headers().get("x-amz-bucket-region"))
        .map(str::to_string);
    match (&err, status) {
        (SdkError::ServiceError(_) | SdkError::ResponseError(_), Some(status)) => match region {
            Some(region) if is_region_redirect(status, &code) => S3Error::WrongRegion(region),
            _ => classify_status(status, code, message),
        },
        _ => S3Error::Network(error_chain(&err)),
    }
}

/// The error and its sources, each by its `Display`, joined: one readable line without the
/// SDK's `Debug` dump.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// Whether an answer carrying `x-amz-bucket-region` says the request went to the wrong
/// region (S3 answers 301 PermanentRedirect, or 400 AuthorizationHeaderMalformed when the
/// signature's scope names another region); other answers carry the header too.
fn is_region_redirect(status: u16, code: &str) -> bool {
    status == 301
        || matches!(
            code,
            "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException"
        )
}

/// The [`S3Error`] an answer of `status` with error `code` and `message` says.
pub(super) fn classify_status(status: u16, code: String, message: String) -> S3Error {
    match (status, code.as_str()) {
        (_, "NoSuchBucket") => S3Error::NoSuchBucket,
        (404, _) => S3Error::NotFound,
        (403, _) => S3Error::AccessDenied(if code.is_empty() {
            "403 Forbidden".to_string()
        } else {
            code
        }),
        (412, _) => S3Error::PreconditionFailed,
        _ => S3Error::Service {
            status,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_failures_are_transient() {
        let service = |status| S3Error::Service {
            status,
            code: String::new(),
            message: String::new(),
        };
        assert!(is_transient(&S3Error::Network("reset".into())));
        assert!(is_transient(&service(503)) && is_transient(&service(429)));
        assert!(is_transient(&service(200)), "a 200 whose body broke");
        assert!(!is_transient(&service(400)) && !is_transient(&S3Error::NotFound));
        assert!(!is_transient(&S3Error::AccessDenied("403".into())));
    }

    #[test]
    fn only_redirect_answers_name_a_wrong_region() {
        assert!(is_region_redirect(301, ""));
        assert!(is_region_redirect(400, "AuthorizationHeaderMalformed"));
        assert!(!is_region_redirect(403, "AccessDenied"));
        assert!(!is_region_redirect(404, "NoSuchKey"));
    }

    #[test]
    fn statuses_map_to_kinds() {
        let s = String::new;
        assert_eq!(classify_status(404, s(), s()), S3Error::NotFound);
        assert_eq!(
            classify_status(404, "NoSuchBucket".into(), s()),
            S3Error::NoSuchBucket
        );
        assert_eq!(classify_status(412, s(), s()), S3Error::PreconditionFailed);
        assert!(matches!(
            classify_status(403, "SignatureDoesNotMatch".into(), s()),
            S3Error::AccessDenied(code) if code == "SignatureDoesNotMatch"
        ));
        assert!(matches!(
            classify_status(500, "InternalError".into(), s()),
            S3Error::Service { status: 500, .. }
        ));
    }
}
