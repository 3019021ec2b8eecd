//! A scripted HTTP server on loopback, plain or TLS, for the tests of the GET's own exchange
//! (`direct_get`): it answers each request with the next scripted reply and records what it
//! saw. The TLS certificates are in `testdata/`: a CA, a server certificate it signed for
//! 127.0.0.1 (both valid until 2126), and another CA that signed nothing here.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

/// One scripted answer: its bytes, pieces sent later (each after its pause: a body that
/// comes after its head, or slowly), and whether the server closes the connection after it.
pub(super) struct Reply {
    pub(super) bytes: Vec<u8>,
    pub(super) later: Vec<(std::time::Duration, Vec<u8>)>,
    pub(super) close: bool,
}

/// A 206 for `len` bytes from `first` of an object of 100 bytes, ETag `"e"`, body `body`.
pub(super) fn partial(first: u64, len: u64, body: &[u8]) -> Vec<u8> {
    let mut reply = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\n\
         Content-Range: bytes {first}-{}/100\r\nETag: \"e\"\r\n\r\n",
        first + len - 1
    )
    .into_bytes();
    reply.extend_from_slice(body);
    reply
}

pub(super) fn reply(bytes: Vec<u8>) -> Reply {
    Reply {
        bytes,
        later: Vec::new(),
        close: false,
    }
}

/// What the scripted server saw: connections accepted and request heads read.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) connections: usize,
    pub(super) requests: Vec<String>,
}

/// A server on loopback answering each request with the next reply (a request past the
/// script gets no answer: the connection just stays open); its `host:port` and what it saw.
pub(super) async fn scripted(replies: Vec<Reply>) -> (String, Arc<std::sync::Mutex<Seen>>) {
    serve(replies, None).await
}

/// [`scripted`], in TLS with the test server certificate (`testdata/`: a CA, and a server
/// certificate it signed for 127.0.0.1, both valid until 2126; another CA that signed
/// nothing here).
pub(super) async fn scripted_tls(replies: Vec<Reply>) -> (String, Arc<std::sync::Mutex<Seen>>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(include_bytes!("testdata/server.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("testdata/server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    serve(
        replies,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await
}

/// A test CA's bundle in `testdata/`.
pub(super) fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/s3/sdk/testdata")
        .join(name)
}

/// One accepted connection of the scripted server, plain or TLS.
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

async fn serve(
    replies: Vec<Reply>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Arc<std::sync::Mutex<Seen>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let replies = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        replies,
    )));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            record.lock().unwrap().connections += 1;
            let (record, replies, tls) = (record.clone(), replies.clone(), tls.clone());
            tokio::spawn(async move {
                let mut conn: Box<dyn Conn> = match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(session) => Box::new(session),
                        Err(_) => return, // the client refused the certificate
                    },
                    None => Box::new(tcp),
                };
                loop {
                    let mut head = Vec::new();
                    while find(&head, b"\r\n\r\n").is_none() {
                        let mut byte = [0u8; 1024];
                        match conn.read(&mut byte).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&byte[..n]),
                        }
                    }
                    record
                        .lock()
                        .unwrap()
                        .requests
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let Some(next) = replies.lock().unwrap().pop_front() else {
                        std::future::pending::<()>().await;
                        return;
                    };
                    if conn.write_all(&next.bytes).await.is_err() {
                        return;
                    }
                    for (pause, piece) in &next.later {
                        let _ = conn.flush().await;
                        tokio::time::sleep(*pause).await;
                        if conn.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                    if next.close {
                        let _ = conn.shutdown().await;
                        return;
                    }
                    let _ = conn.flush().await;
                }
            });
        }
    });
    (addr, seen)
}

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
