//! TLS for the GET's own exchange (`direct_get`) with an `https://` endpoint: the same trust
//! as the SDK's client (the system's certificates, or exactly those of `--ca-bundle`), the
//! server's name checked against its certificate, HTTP/1.1 asked for by ALPN. rustls
//! decrypts into its own buffer and the exchange reads from there straight into the GET's
//! buffer: one copy of each byte, where the SDK's client made two.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The exchange's TLS client set-up.
#[derive(Clone)]
pub(super) struct Tls {
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Trusting the certificates of the PEM bundle at `bundle`, or the system's; `None` when
    /// there is none to trust (the SDK's client then has the endpoint to itself).
    pub(super) fn trusting(bundle: Option<&Path>) -> Option<Self> {
        let roots = match bundle {
            Some(path) => super::tls::bundle(path).ok()?.0,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                let _ =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                roots
            }
        };
        if roots.is_empty() {
            return None;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Self {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The TLS session over `tcp` with the server named `host` (an IPv6 address without
    /// brackets).
    pub(super) async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let session = self.connector.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(session)))
    }
}

/// A connection of the exchange, plain or TLS.
#[derive(Debug)]
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Most bytes of a body that rustls may hold read from the socket and not yet handed on (a
/// record not yet whole, with some to spare): what the socket still has to receive is at
/// least what is left of the body less this.
const TLS_HELD: usize = 64 * 1024;

impl Stream {
    /// The wake-up threshold worth asking for (see [`Stream::set_wake_at`]) when `left` bytes
    /// of an answer are still to come: `bytes`, but never more than the socket still has to
    /// receive (over TLS, `left` less what rustls may hold: [`TLS_HELD`]); 1 where nothing
    /// is left after that.
    pub(super) fn threshold(&self, bytes: usize, left: usize) -> usize {
        let held = match self {
            Stream::Plain(_) => 0,
            Stream::Tls(_) => TLS_HELD,
        };
        bytes.min(left.saturating_sub(held)).max(1)
    }

    /// Asks the kernel to wake the reader only once `bytes` have arrived (`SO_RCVLOWAT`; 1
    /// is the kernel's default), or the connection ended. False where it could not be set.
    pub(super) fn set_wake_at(&self, bytes: usize) -> bool {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        };
        let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor is the open socket `tcp` owns; the option is an int read
        // from `value` for the length given.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(tcp),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        set == 0
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket's wake-up threshold (`SO_RCVLOWAT`).
    fn threshold(stream: &Stream) -> libc::c_int {
        let fd = match stream {
            Stream::Plain(tcp) => std::os::fd::AsRawFd::as_raw_fd(tcp),
            Stream::Tls(tls) => std::os::fd::AsRawFd::as_raw_fd(tls.get_ref().0),
        };
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads an int option of an open socket into `value`.
        let got = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(got, 0);
        value
    }

    #[tokio::test]
    async fn wake_up_thresholds_never_exceed_what_the_socket_has_to_receive() {
        const KIB: usize = 1024;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await;
        let plain = Stream::Plain(tcp.unwrap());
        assert_eq!(threshold(&plain), 1);
        assert_eq!(plain.threshold(256 * KIB, 1024 * KIB), 256 * KIB);
        assert_eq!(plain.threshold(256 * KIB, 100 * KIB), 100 * KIB);
        assert_eq!(plain.threshold(256 * KIB, 0), 1);
        assert!(plain.set_wake_at(256 * KIB));
        assert_eq!(threshold(&plain), 256 * 1024);
        assert!(plain.set_wake_at(1));
        assert_eq!(threshold(&plain), 1);
        // Over TLS, less what rustls may hold; 1 where nothing is left after that.
        let (addr, _) = crate::s3::sdk::scripted_server::scripted_tls(vec![]).await;
        let tls = Tls::trusting(Some(&crate::s3::sdk::scripted_server::testdata("ca.pem")));
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let tls = tls.unwrap().connect("127.0.0.1", tcp).await.unwrap();
        assert_eq!(tls.threshold(1024 * KIB, 100 * KIB), 100 * KIB - TLS_HELD);
        assert_eq!(tls.threshold(1024 * KIB, 2048 * KIB), 1024 * KIB);
        assert_eq!(tls.threshold(1024 * KIB, 1024 * KIB + 8 * KIB), 968 * KIB);
        assert_eq!(tls.threshold(1024 * KIB, TLS_HELD), 1);
        assert!(tls.set_wake_at(36 * KIB));
        assert_eq!(threshold(&tls), 36 * 1024);
    }

    #[test]
    fn a_bundle_without_certificates_gives_no_tls() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(Tls::trusting(Some(&empty)).is_none());
        assert!(Tls::trusting(Some(&dir.path().join("missing.pem"))).is_none());
    }
}
