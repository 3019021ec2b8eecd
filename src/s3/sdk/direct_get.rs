//! The ranged GET's own HTTP/1.1 exchange: the SDK signs the request (a presigned URL
//! carrying the same headers), and the body is read from the socket (or from rustls's
//! buffer, for `https://`: `direct_tls`) straight into the GET's buffer. Through the SDK's
//! HTTP client every chunk of a body is copied once more, from the client's buffers into
//! ours: 14–16% of the mount's CPU on a sequential read over plain HTTP.
//!
//! Only the answer it can vouch for is taken here: status 206 with exactly the range asked
//! (`Content-Range`, `Content-Length`, no transfer coding) and, when the read is pinned to
//! an ETag, that ETag. A 404 or 412 is final: the error it says. Anything else (another
//! status, a header it does not expect, a connection that fails before the body) is handed
//! back, and the caller asks the SDK, which retries, classifies errors and counts them. A
//! body that breaks midway keeps what came and is resumed like the SDK's. Servers that
//! refuse presigned requests turn this path off for the mount. The URL is never logged: its
//! query holds the signature.

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::info;

use super::direct_tls::{Stream, Tls};
use super::errors::classify_status;
use super::metrics;
use crate::memory::BodyBuffer;
use crate::s3::S3Error;

/// Most bytes of a response's status line and headers.
const MAX_HEAD: usize = 64 * 1024;
/// Answers in a row that the exchange could not take before it turns itself off (see
/// [`DirectGet::unvouched`]): a server that refuses presigned requests, or answers other
/// than it checks, would otherwise have every GET sent twice. One refusal is not enough: a
/// 403 may be about one key.
const MAX_UNVOUCHED: u32 = 8;
/// Most bytes of an error answer's body read for its `<Code>`.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Bytes of a body gathered by the kernel before the exchange is woken to read them (see
/// [`Stream::wake_at`]).
const WAKE_AT: usize = 1024 * 1024;
/// Bodies shorter than this are read as they come (see [`DirectGet::read_body`]): a
/// sequential reader's parts grow past it, a random reader's GETs stay under it.
const LONG_BODY: usize = 4 * WAKE_AT;
/// The shortest wait for a byte after the wait for [`WAKE_AT`] bytes ran out (see
/// [`DirectGet::read_body`]).
const LAST_LOOK: Duration = Duration::from_millis(100);
/// How long a read waits for [`WAKE_AT`] bytes before it takes what has come.
const WAKE_PATIENCE: Duration = Duration::from_millis(20);
/// Kept-alive connections waiting for the next GET, at most.
const MAX_IDLE: usize = 64;
/// How long a kept-alive connection may wait for the next GET: the server may have closed
/// it meanwhile, and an unused one is a descriptor held for nothing.
pub(super) const IDLE_FOR: Duration = Duration::from_secs(5);

/// The exchange: where it may connect and the connections kept alive.
#[derive(Debug)]
pub(super) struct DirectGet {
    connect_timeout: Duration,
    /// Longest wait for the next byte of an answer.
    no_progress: Duration,
    /// Off once the server sent [`MAX_UNVOUCHED`] answers in a row that could not be taken
    /// (each one a GET sent twice).
    on: AtomicBool,
    /// Answers not taken since the last one taken (see [`DirectGet::unvouched`]).
    unvouched: AtomicU32,
    /// Connections whose last answer was read whole, by `host:port`, and since when idle.
    idle: Mutex<Vec<(String, Stream, tokio::time::Instant)>>,
    /// The `User-Agent` sent: `--user-agent-prefix` first, as on the SDK's requests.
    user_agent: String,
    /// For an `https://` endpoint.
    tls: Option<Tls>,
}

/// How a GET through [`DirectGet::fetch`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fetched {
    /// Every byte of the range was appended.
    Whole,
    /// Sent, and not taken here (the reason, for the log); bytes already appended are the
    /// range's first ones, and the rest is for the SDK to fetch (a retry of the GET).
    Declined(&'static str),
    /// Not sent (the reason): the GET is for the SDK.
    NotSent(&'static str),
    /// A final answer about the object (404, 412): the SDK's GET would only be told the same.
    Failed(S3Error),
}

/// What a response's head says, as far as this exchange needs it.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    /// First and last byte of `Content-Range`.
    content_range: Option<(u64, u64)>,
    etag: Option<String>,
    chunked: bool,
    close: bool,
}

impl DirectGet {
    /// The exchange for an endpoint whose URL is `endpoint`: `http://`, or `https://` with
    /// the TLS set-up `tls` makes (asked only then; none: the SDK's client has the endpoint
    /// to itself).
    pub(super) fn for_endpoint(
        endpoint: Option<&str>,
        tls: impl FnOnce() -> Option<Tls>,
        user_agent_prefix: Option<&str>,
        (connect_timeout, no_progress): (Duration, Duration),
    ) -> Option<Self> {
        let (scheme, _) = endpoint?.split_once("://")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => None,
            "https" => Some(tls()?),
            _ => return None,
        };
        Some(Self {
            connect_timeout,
            no_progress,
            on: AtomicBool::new(true),
            unvouched: AtomicU32::new(0),
            idle: Mutex::new(Vec::new()),
            user_agent: match user_agent_prefix {
                Some(prefix) => format!("{prefix} {OWN_AGENT}"),
                None => OWN_AGENT.to_string(),
            },
            tls,
        })
    }

    /// Whether the exchange speaks TLS (an `https://` endpoint).
    pub(super) fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether GETs may try this exchange.
    pub(super) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Sends the presigned GET `uri` with `headers` and appends its body, `want` bytes from
    /// `first`, to `out`; `etag`: the version the read is pinned to.
    pub(super) async fn fetch(
        &self,
        uri: &str,
        headers: &[(String, String)],
        (first, want): (u64, u64),
        etag: Option<&str>,
        out: &mut BodyBuffer,
    ) -> Fetched {
        let Some((authority, target)) = split_uri(uri, self.tls.is_some()) else {
            return Fetched::NotSent("not a URL of the endpoint's scheme");
        };
        let request = request_text(authority, target, headers, &self.user_agent);
        let started = Instant::now();
        // A kept-alive connection the server has closed meanwhile fails before any answer:
        // then once more on a new one.
        let (mut stream, head, early) = match self.exchange(authority, &request, true).await {
            Ok(answer) => answer,
            Err(Retry::Yes) => match self.exchange(authority, &request, false).await {
                Ok(answer) => answer,
                Err(_) => return no_answer(started),
            },
            Err(Retry::No) => return no_answer(started),
        };
        metrics::record_direct_get(head.status, started.elapsed());
        if matches!(head.status, 404 | 412) {
            return self.failed(authority, stream, &head, early).await;
        }
        if let Some(why) = refusal(&head, first, want, etag) {
            if !about_the_object_or_passing(head.status) {
                self.unvouched();
            }
            return Fetched::Declined(why);
        }
        self.unvouched.store(0, Ordering::Relaxed);
        let limit = out.len() + want as usize;
        if early.len() as u64 > want || out.extend_from_slice(&early).is_err() {
            return Fetched::Declined("more bytes than asked");
        }
        match self.read_body(&mut stream, out, limit).await {
            Ok(reusable) if reusable && !head.close => self.keep(authority, stream),
            Ok(_) => {}
            Err(why) => return Fetched::Declined(why),
        }
        Fetched::Whole
    }

    /// The error a 404 or 412 answer with `head` says, its `<Code>` read from the body (S3's
    /// error XML: `NoSuchBucket` is a 404 too); the connection is kept if the body was read
    /// whole.
    async fn failed(
        &self,
        authority: &str,
        mut stream: Stream,
        head: &Head,
        early: Vec<u8>,
    ) -> Fetched {
        let mut body = early;
        // A body of unknown length, or too long, is not read further (nor the connection
        // kept): the code is looked for in what came with the head.
        if let Some(length) = head
            .content_length
            .filter(|&l| !head.chunked && l <= MAX_ERROR_BODY)
        {
            let length = length as usize;
            while body.len() < length {
                let read = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut body);
                match tokio::time::timeout(self.no_progress, read).await {
                    Ok(Ok(read)) if read > 0 => {}
                    _ => break,
                }
            }
            if body.len() == length && !head.close {
                self.keep(authority, stream);
            }
        }
        let text = String::from_utf8_lossy(&body);
        let element = |name: &str| {
            let open = format!("<{name}>");
            let from = text.find(&open)? + open.len();
            let to = text[from..].find('<')? + from;
            Some(text[from..to].to_string())
        };
        let (code, message) = (element("Code"), element("Message"));
        Fetched::Failed(classify_status(
            head.status,
            code.unwrap_or_default(),
            message.unwrap_or_default(),
        ))
    }

    /// Reads the body into `out` until it holds `limit` bytes, and says whether the
    /// connection can be kept for another GET; why not, if the body broke. The reader of a
    /// long body ([`LONG_BODY`]) is woken once a good part of it has come ([`WAKE_AT`], never
    /// more than the socket still has to receive: [`Stream::threshold`]), not for every
    /// segment: on loopback one wake-up came for every 190 KiB, each a switch of the
    /// runtime's thread. When the threshold has not come within [`WAKE_PATIENCE`] (a slow
    /// body, or a receive window that cannot hold it yet: a fresh connection's sender stops
    /// short of it), that read takes what is there. A body is broken after `no_progress`
    /// without a byte.
    async fn read_body(
        &self,
        stream: &mut Stream,
        out: &mut BodyBuffer,
        limit: usize,
    ) -> Result<bool, &'static str> {
        // Whether thresholds are asked for: a long body, on a socket that takes them.
        let mut raise = limit - out.len() >= LONG_BODY;
        // The threshold set on the socket (1: the kernel's default).
        let mut waking_at = 1;
        // The last wait for the threshold ran out: this read takes what has come.
        let mut stuck = false;
        // Waited without a byte since the last one.
        let mut waited = Duration::ZERO;
        while out.len() < limit {
            let left = limit - out.len();
            let wanted = match raise && !stuck {
                true => stream.threshold(WAKE_AT, left),
                false => 1,
            };
            if wanted != waking_at && (waking_at == 1 || wanted < waking_at) {
                if stream.set_wake_at(wanted) {
                    waking_at = wanted;
                } else {
                    raise = false;
                }
            }
            let room = left.min(out.spare().len());
            if room == 0 {
                return Err("more bytes than the buffer holds");
            }
            let wait_left = self.no_progress.saturating_sub(waited);
            let patience = match waking_at > 1 {
                true => WAKE_PATIENCE.min(wait_left),
                // At least a moment: bytes already queued are seen once the runtime hears of
                // them, which a wait of nothing would not allow.
                false => wait_left.max(LAST_LOOK),
            };
            let read = {
                let spare = &mut out.spare()[..room];
                let mut buf = ReadBuf::uninit(spare);
                let read =
                    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut buf));
                match tokio::time::timeout(patience, read).await {
                    Ok(Ok(())) => Some(buf.filled().len()),
                    Ok(Err(_)) => Some(0),
                    Err(_) => None,
                }
            };
            let read = match read {
                Some(0) => return Err("the body broke"),
                Some(read) => read,
                None if waking_at > 1 => {
                    (stuck, waited) = (true, waited + patience);
                    continue;
                }
                None => return Err("the body broke"),
            };
            (stuck, waited) = (false, Duration::ZERO);
            // SAFETY: `ReadBuf` counts as filled only bytes the read wrote, at the start of
            // the room given.
            unsafe { out.advance(read) };
        }
        // The next answer's head may be shorter than the last threshold.
        Ok(waking_at == 1 || stream.set_wake_at(1))
    }

    /// Counts an answer not taken that says the endpoint may not serve the exchange (a
    /// refusal of the presigned request, a 200, a partial answer not as asked); the exchange
    /// goes off at [`MAX_UNVOUCHED`] in a row.
    fn unvouched(&self) {
        let in_a_row = self.unvouched.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= MAX_UNVOUCHED && self.on.swap(false, Ordering::Relaxed) {
            info!(
                in_a_row,
                "the endpoint's answers to presigned GETs were not usable; GETs go through the SDK's client"
            );
        }
    }

    /// One request on a kept-alive connection to `authority` (when `reuse` and there is one)
    /// or a new one; the answer's head and the body's bytes read with it.
    async fn exchange(
        &self,
        authority: &str,
        request: &str,
        reuse: bool,
    ) -> Result<(Stream, Head, Vec<u8>), Retry> {
        let kept = reuse.then(|| self.take(authority)).flatten();
        let reused = kept.is_some();
        let mut stream = match kept {
            Some(stream) => stream,
            None => {
                let connect = tokio::time::timeout(self.connect_timeout, self.connect(authority));
                match connect.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(_)) | Err(_) => return Err(Retry::No),
                }
            }
        };
        let stale = if reused { Retry::Yes } else { Retry::No };
        // Flushed: over TLS a write may leave the request in rustls's buffer.
        let send = async {
            stream.write_all(request.as_bytes()).await?;
            stream.flush().await
        };
        if !matches!(
            tokio::time::timeout(self.no_progress, send).await,
            Ok(Ok(()))
        ) {
            return Err(stale);
        }
        match self.read_head(&mut stream).await {
            Ok((head, early)) => Ok((stream, head, early)),
            Err(None) => Err(stale),
            Err(Some(())) => Err(Retry::No),
        }
    }

    /// A new connection to `authority`, in TLS for an `https://` endpoint.
    async fn connect(&self, authority: &str) -> std::io::Result<Stream> {
        let (host, port) = host_and_port(authority, self.tls.is_some())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some(tls) => tls.connect(host, tcp).await,
            None => Ok(Stream::Plain(tcp)),
        }
    }

    /// Reads a response's head; the bytes read past it are the body's first. `Err(None)`:
    /// the connection ended before a byte came; `Err(Some(()))`: anything else wrong.
    async fn read_head(&self, stream: &mut Stream) -> Result<(Head, Vec<u8>), Option<()>> {
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            if buf.len() >= MAX_HEAD {
                return Err(Some(()));
            }
            buf.reserve(16 * 1024);
            let read = tokio::io::AsyncReadExt::read_buf(stream, &mut buf);
            match tokio::time::timeout(self.no_progress, read).await {
                Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return Err(None),
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(Some(())),
                Ok(Ok(_)) => {}
            }
            if let Some((head, end)) = parse_head(&buf).map_err(|()| Some(()))? {
                return Ok((head, buf[end..].to_vec()));
            }
        }
    }

    /// A kept-alive connection to `authority` idle for less than [`IDLE_FOR`], the most
    /// recently used first.
    fn take(&self, authority: &str) -> Option<Stream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, _, since)| since.elapsed() < IDLE_FOR);
        let at = idle.iter().rposition(|(a, _, _)| a == authority)?;
        Some(idle.remove(at).1)
    }

    fn keep(&self, authority: &str, stream: Stream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((authority.to_string(), stream, tokio::time::Instant::now()));
        }
    }

    /// Closes the kept-alive connections idle for [`IDLE_FOR`] or longer (run every second
    /// by [`DirectGet::sweep_while_alive`]); how many are left.
    pub(super) fn close_idle(&self) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, _, since)| since.elapsed() < IDLE_FOR);
        idle.len()
    }

    /// Closes idle connections every second (on the current runtime, if any) until `this`
    /// is dropped.
    pub(super) fn sweep_while_alive(this: &std::sync::Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = std::sync::Arc::downgrade(this);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(exchange) => exchange.close_idle(),
                    None => return,
                };
            }
        });
    }
}

/// This program's part of the `User-Agent`.
const OWN_AGENT: &str = concat!("mount-s3/", env!("CARGO_PKG_VERSION"));

/// Why the answer `head` to a GET of `want` bytes from `first` is not taken here, if it
/// is not.
fn refusal(head: &Head, first: u64, want: u64, etag: Option<&str>) -> Option<&'static str> {
    if head.status != 206 {
        return Some("not 206");
    }
    if head.chunked {
        return Some("a transfer coding");
    }
    if head.content_length != Some(want) || head.content_range != Some((first, first + want - 1)) {
        return Some("not the range asked");
    }
    if let Some(etag) = etag
        && head.etag.as_deref().map(unquoted) != Some(unquoted(etag))
    {
        return Some("another ETag");
    }
    None
}

/// Whether an answer of `status` says something about this object (416; 404 and 412 are
/// taken as final, see [`DirectGet::failed`]) or the moment (5xx but 501, Not Implemented),
/// so that it is no sign the endpoint cannot serve the exchange.
fn about_the_object_or_passing(status: u16) -> bool {
    matches!(status, 416 | 500 | 502..=599)
}

/// A GET that got no answer: counted as an error without status, and left to the SDK.
fn no_answer(started: Instant) -> Fetched {
    metrics::record_direct_get(0, started.elapsed());
    Fetched::Declined("no answer")
}

/// Whether a failed exchange is worth once more on a new connection.
enum Retry {
    Yes,
    No,
}

/// `http://host:port/path?query` (`https://` when `tls`) as (`host:port`, `/path?query`).
fn split_uri(uri: &str, tls: bool) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    if !scheme.eq_ignore_ascii_case(if tls { "https" } else { "http" }) {
        return None;
    }
    let slash = rest.find('/')?;
    let (authority, target) = rest.split_at(slash);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return None;
    }
    Some((authority, target))
}

/// `authority` (`host`, `host:port`, `[v6]`, `[v6]:port`) as its host (an IPv6 address
/// without its brackets) and the port to connect to: the one it names, else 80 (443 with
/// `tls`); `None` if the port is not a number.
fn host_and_port(authority: &str, tls: bool) -> Option<(&str, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None if tls => 443,
        None => 80,
    };
    Some((host, port))
}

/// The request's text: `GET target`, the host, the signed headers, our user agent.
fn request_text(
    authority: &str,
    target: &str,
    headers: &[(String, String)],
    user_agent: &str,
) -> String {
    let mut text = format!("GET {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("host: {authority}\r\n"));
    }
    // The presigned request may carry the prefix alone as its agent (the SDK sets its own
    // only when it sends); this one is ours, and an unsigned header.
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("user-agent") {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    text.push_str(&format!("user-agent: {user_agent}\r\n\r\n"));
    text
}

/// Most headers an answer may have (S3 sends about fifteen).
const MAX_HEADERS: usize = 64;

/// The status line and the headers this exchange reads, at the start of `buf`, and the
/// head's length; `Ok(None)` if it has not come whole yet, `Err` if it is malformed.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut head = Head {
        status: response.code.ok_or(())?,
        content_length: None,
        content_range: None,
        etag: None,
        chunked: false,
        close: response.version != Some(1),
    };
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| ())?.trim();
        match header.name.to_ascii_lowercase().as_str() {
            // Two lengths: believe neither.
            "content-length" if head.content_length.is_some() => return Err(()),
            "content-length" => head.content_length = Some(value.parse().map_err(|_| ())?),
            "content-range" => head.content_range = parse_content_range(value),
            "etag" => head.etag = Some(value.to_string()),
            "transfer-encoding" => head.chunked = true,
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Ok(Some((head, length)))
}

/// An ETag without its weak mark and quotes, as the same ETag may be written either way.
fn unquoted(etag: &str) -> &str {
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"')
}

/// `bytes FIRST-LAST/TOTAL` as (first, last).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let range = value.strip_prefix("bytes ")?.split('/').next()?;
    let (first, last) = range.split_once('-')?;
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
}

#[cfg(test)]
#[path = "direct_get_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "direct_get_parse_tests.rs"]
mod parse_tests;
