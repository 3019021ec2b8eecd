//! `--ca-bundle` (and `AWS_CA_BUNDLE`): an HTTPS client that trusts the certificates of a
//! PEM bundle instead of the system's, for the bucket's requests and the credential
//! providers' alike.

use std::path::Path;

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The HTTPS client trusting exactly the certificates in the PEM file at `path`.
pub(super) fn client_trusting(path: &Path) -> Result<SharedHttpClient, String> {
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context_trusting(path)?)
        .build_https())
}

/// A TLS context trusting exactly the certificates in the PEM file at `path`. Every
/// certificate is checked here first: the SDK's TLS set-up panics on one it cannot use.
pub(super) fn context_trusting(path: &Path) -> Result<TlsContext, String> {
    let (_, pem) = bundle(path)?;
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem);
    TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| format!("--ca-bundle {}: {e}", path.display()))
}

/// The certificates of the PEM bundle at `path`, each checked usable, and the bundle's
/// bytes; an error, one line naming `--ca-bundle`, if it cannot be read, holds anything
/// but usable certificates, or none.
pub(super) fn bundle(path: &Path) -> Result<(rustls::RootCertStore, Vec<u8>), String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("--ca-bundle {shown}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("--ca-bundle {shown}: not a PEM bundle ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--ca-bundle {shown}: a certificate cannot be used ({e})"))?;
    }
    if roots.is_empty() {
        return Err(format!("--ca-bundle {shown}: no certificate in it"));
    }
    Ok((roots, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_checked_before_the_sdk_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(
            client_trusting(&empty)
                .unwrap_err()
                .contains("no certificate")
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_trusting(&garbage).unwrap_err();
        assert!(
            err.starts_with("--ca-bundle") && !err.contains('\n'),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        assert!(client_trusting(&missing).is_err());
        // The system's bundle, where there is one, is taken whole.
        let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if system.exists() {
            client_trusting(system).unwrap();
        }
    }
}
