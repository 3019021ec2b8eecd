//! A fault-injecting HTTP/1.1 proxy on loopback, between `mount-s3` and the test S3 server.
//!
//! The proxy forwards each request's bytes unchanged (SigV4 signs the Host header, and the
//! server checks it as sent), and parses just enough HTTP/1.1 to know where each request and
//! response ends (request line, headers, Content-Length, chunked bodies, keep-alive), so that
//! it can pick a fault per request: from a script first, else at random with a seeded RNG.
//!
//! It can also play a dead server: [`Liveness::Blackhole`] accepts connections and never
//! answers (requests in flight stall too); [`Liveness::Refuse`] resets every connection at once.
//!
//! Not here: the S3 server itself (`server`), or mounting (`mount`).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::data::Rng;

/// One fault the proxy can inject into one request/response exchange.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Forward the request, drop the response, reset the connection (RST).
    ResetBeforeResponse,
    /// Forward the request and half of the response body, then reset the connection.
    ResetMidBody,
    /// Answer 500 InternalError without forwarding.
    Status500,
    /// Answer 503 SlowDown without forwarding.
    Status503,
    /// Answer 403 AccessDenied without forwarding (a permanent error).
    Status403,
    /// Wait this many milliseconds, then forward normally.
    Stall(u64),
    /// Forward, send the headers and half of the body, then close (FIN) early.
    Truncate,
    /// Forward, relaying the response at this many bytes per second.
    Slow(u64),
}

impl Fault {
    /// The counter name of this kind of fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::ResetBeforeResponse => "reset-before-response",
            Fault::ResetMidBody => "reset-mid-body",
            Fault::Status500 => "500",
            Fault::Status503 => "503-slowdown",
            Fault::Status403 => "403",
            Fault::Stall(_) => "stall",
            Fault::Truncate => "truncate",
            Fault::Slow(_) => "slow",
        }
    }
}

/// Whether the "server" behind the proxy is reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive = 0,
    /// Accept and read, never answer; responses in flight stop.
    Blackhole = 1,
    /// Reset every connection and every request at once.
    Refuse = 2,
}

/// Random faults: each request gets one with `probability`, its kind drawn from `kinds`.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub probability: f64,
    pub kinds: Vec<Fault>,
    pub seed: u64,
}

impl FaultPlan {
    /// No random faults.
    pub fn none() -> FaultPlan {
        FaultPlan {
            probability: 0.0,
            kinds: Vec::new(),
            seed: 1,
        }
    }

    /// The transient faults a real S3 endpoint shows: resets before and during the
    /// response, 500, 503 SlowDown, truncated bodies and stalls of `stall_ms` (one of them
    /// drawn uniformly per request). No 403.
    pub fn transient(probability: f64, seed: u64, stall_ms: &[u64]) -> FaultPlan {
        let mut kinds = vec![
            Fault::ResetBeforeResponse,
            Fault::ResetMidBody,
            Fault::Status500,
            Fault::Status503,
            Fault::Truncate,
        ];
        kinds.extend(stall_ms.iter().map(|ms| Fault::Stall(*ms)));
        FaultPlan {
            probability,
            kinds,
            seed,
        }
    }
}

/// What the proxy counted so far.
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    /// Requests read from clients (whether or not forwarded).
    pub requests: u64,
    /// Requests per method (GET, PUT, POST, HEAD, DELETE).
    pub by_method: BTreeMap<String, u64>,
    /// Faults injected, per kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Connections accepted.
    pub connections: u64,
    /// Ranged (object) GETs between their request and their response's head now, and the
    /// most there ever were: each such interval lies inside the client's own GET, so the
    /// most is a lower bound of the client's GETs in flight, never more.
    pub ranged_gets_waiting: u64,
    pub most_ranged_gets_waiting: u64,
}

impl ProxyStats {
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

impl std::fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests {:?} on {} connections, {} faults injected {:?}",
            self.requests,
            self.by_method,
            self.connections,
            self.faults_total(),
            self.faults
        )
    }
}

struct Shared {
    upstream: SocketAddr,
    liveness: AtomicU8,
    stop: AtomicBool,
    plan: Mutex<(FaultPlan, Rng)>,
    script: Mutex<VecDeque<Fault>>,
    /// One-shot faults for the first request whose request line contains the text.
    targeted: Mutex<Vec<(String, Fault)>>,
    /// Faults for every request whose request line contains the needle, for good.
    rules: Mutex<Vec<(String, Fault)>>,
    stats: Mutex<ProxyStats>,
    /// Close a client connection that sends nothing for this long (None: never).
    idle_timeout: Mutex<Option<Duration>>,
    /// Request heads seen, when [`FaultProxy::record_requests`] asked for them.
    recorded: Mutex<Option<Vec<RecordedRequest>>>,
    /// The bucket's region, as S3 enforces it ([`FaultProxy::bucket_in_region`]).
    bucket_region: Mutex<Option<String>>,
}

/// A request as the server got it: its request line and its headers (names lowercased).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The region in the signature's credential scope (`Credential=AK/DATE/REGION/s3/...`).
    pub fn signed_region(&self) -> Option<&str> {
        let scope = self.header("authorization")?.split("Credential=").nth(1)?;
        scope.split('/').nth(2)
    }

    fn parse(raw: &[u8]) -> RecordedRequest {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RecordedRequest { line, headers }
    }
}

impl Shared {
    fn liveness(&self) -> Liveness {
        match self.liveness.load(Ordering::SeqCst) {
            1 => Liveness::Blackhole,
            2 => Liveness::Refuse,
            _ => Liveness::Alive,
        }
    }

    fn choose(&self, request_line: &str) -> Option<Fault> {
        if let Some((_, fault)) = self
            .rules
            .lock()
            .unwrap()
            .iter()
            .find(|(needle, _)| request_line.contains(needle.as_str()))
        {
            return Some(*fault);
        }
        {
            let mut targeted = self.targeted.lock().unwrap();
            if let Some(i) = targeted
                .iter()
                .position(|(needle, _)| request_line.contains(needle.as_str()))
            {
                return Some(targeted.remove(i).1);
            }
        }
        if let Some(f) = self.script.lock().unwrap().pop_front() {
            return Some(f);
        }
        let mut guard = self.plan.lock().unwrap();
        let (plan, rng) = &mut *guard;
        if plan.probability <= 0.0 || plan.kinds.is_empty() {
            return None;
        }
        let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if draw >= plan.probability {
            return None;
        }
        Some(plan.kinds[rng.below(plan.kinds.len() as u64) as usize])
    }

    fn count_fault(&self, f: Fault) {
        *self
            .stats
            .lock()
            .unwrap()
            .faults
            .entry(f.kind())
            .or_insert(0) += 1;
    }
}

/// A running proxy; stopped (listener closed, connection threads told to end) when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream` (an `http://host:port` URL).
    pub fn start(upstream: &str, plan: FaultPlan) -> FaultProxy {
        let host_port = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = host_port
            .parse()
            .unwrap_or_else(|e| panic!("upstream {host_port} is not an address: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let rng = Rng::new(plan.seed);
        let shared = Arc::new(Shared {
            upstream,
            liveness: AtomicU8::new(Liveness::Alive as u8),
            stop: AtomicBool::new(false),
            plan: Mutex::new((plan, rng)),
            script: Mutex::new(VecDeque::new()),
            targeted: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            stats: Mutex::new(ProxyStats::default()),
            idle_timeout: Mutex::new(None),
            recorded: Mutex::new(None),
            bucket_region: Mutex::new(None),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, s))
            .expect("spawn the proxy");
        FaultProxy {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>`, for `--endpoint-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        let rng = Rng::new(plan.seed);
        *self.shared.plan.lock().unwrap() = (plan, rng);
    }

    /// Faults for the next requests, in order, before any random one.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.script.lock().unwrap().extend(faults);
    }

    /// `fault`, once, for the first request whose request line (`POST /bucket/key?uploads
    /// HTTP/1.1`) contains `needle`; it takes precedence over the script and the plan.
    pub fn script_matching(&self, needle: &str, fault: Fault) {
        self.shared
            .targeted
            .lock()
            .unwrap()
            .push((needle.to_string(), fault));
    }

    /// `fault` for every request whose request line contains `needle`, from now on (a
    /// bucket that denies writes: `"PUT /bucket/"` with [`Fault::Status403`]); before any
    /// other fault.
    pub fn rule_matching(&self, needle: &str, fault: Fault) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .push((needle.to_string(), fault));
    }

    /// Answers as S3 does for a bucket in `region`: a request signed for another region
    /// gets 301 PermanentRedirect with `x-amz-bucket-region`, without being forwarded.
    pub fn bucket_in_region(&self, region: &str) {
        *self.shared.bucket_region.lock().unwrap() = Some(region.to_string());
    }

    /// Whether every [`FaultProxy::script_matching`] fault has been used.
    pub fn targeted_done(&self) -> bool {
        self.shared.targeted.lock().unwrap().is_empty()
    }

    pub fn set_liveness(&self, l: Liveness) {
        self.shared.liveness.store(l as u8, Ordering::SeqCst);
    }

    /// Closes client connections idle for `t` (as real servers do), so that a client's
    /// pooled connections do not outlive the test's interest in them.
    pub fn set_idle_timeout(&self, t: Option<Duration>) {
        *self.shared.idle_timeout.lock().unwrap() = t;
    }

    pub fn stats(&self) -> ProxyStats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// From now on, keeps the head of every request (see [`FaultProxy::recorded`]).
    pub fn record_requests(&self) {
        *self.shared.recorded.lock().unwrap() = Some(Vec::new());
    }

    /// The requests recorded since [`FaultProxy::record_requests`], in arrival order.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.shared
            .recorded
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                shared.stats.lock().unwrap().connections += 1;
                if shared.liveness() == Liveness::Refuse {
                    reset(&client);
                    continue;
                }
                let s = shared.clone();
                let _ = thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || {
                        let _ = serve_connection(client, &s);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Closes with RST (SO_LINGER 0) rather than FIN.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Holds a connection open, answering nothing, while the server plays dead.
fn hold_while_blackholed(shared: &Shared) {
    while shared.liveness() == Liveness::Blackhole && !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP message head: the raw bytes and the few things parsed from it.
struct Head {
    raw: Vec<u8>,
    first_line: String,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    expect_continue: bool,
}

/// Reads a message head (up to the empty line); `None` on a clean EOF before any byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first_line = String::new();
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    let mut expect_continue = false;
    loop {
        let start = raw.len();
        let n = r.read_until(b'\n', &mut raw)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in head"));
        }
        let line = String::from_utf8_lossy(&raw[start..])
            .trim_end()
            .to_string();
        if start == 0 {
            first_line = line;
            continue;
        }
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_ascii_lowercase();
            match name.as_str() {
                "content-length" => content_length = value.parse().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                "expect" => expect_continue = value.contains("100-continue"),
                _ => {}
            }
        }
        if raw.len() > 256 * 1024 {
            return Err(io::Error::other("head too large"));
        }
    }
    Ok(Some(Head {
        raw,
        first_line,
        content_length,
        chunked,
        close,
        expect_continue,
    }))
}

/// Reads a whole body (Content-Length or chunked) as raw bytes, framing included.
fn read_body(r: &mut impl BufRead, head: &Head) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        loop {
            let start = body.len();
            if r.read_until(b'\n', &mut body)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let size_line = String::from_utf8_lossy(&body[start..]).trim().to_string();
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let s = body.len();
                    if r.read_until(b'\n', &mut body)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    if body[s..].iter().all(|b| *b == b'\r' || *b == b'\n') {
                        return Ok(body);
                    }
                }
            }
            let s = body.len();
            body.resize(s + size as usize + 2, 0);
            r.read_exact(&mut body[s..])?;
        }
    }
    if let Some(len) = head.content_length {
        body.resize(len as usize, 0);
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

fn error_response(status: u16, reason: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>FAULTPROXY</RequestId>\
         <HostId>fault-proxy</HostId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nx-amz-request-id: FAULTPROXY\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Serves one client connection: request by request, over one upstream connection (made
/// again when the server closes it).
fn serve_connection(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut client_w = client.try_clone()?;
    let mut client_r = BufReader::with_capacity(64 * 1024, client.try_clone()?);
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    loop {
        let idle = *shared.idle_timeout.lock().unwrap();
        client.set_read_timeout(idle.or(Some(Duration::from_millis(500))))?;
        // Wait for the next request (or the proxy's end, or the idle limit).
        let idle_start = Instant::now();
        let head = loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match client_r.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(_) => break read_head_blocking(&client, &mut client_r)?,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    if let Some(t) = idle {
                        if idle_start.elapsed() >= t {
                            let _ = client.shutdown(Shutdown::Both);
                            return Ok(());
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        let Some(head) = head else { return Ok(()) };
        if head.expect_continue {
            client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = read_body(&mut client_r, &head)?;
        let method = head.first_line.split(' ').next().unwrap_or("").to_string();
        let request = RecordedRequest::parse(&head.raw);
        if let Some(recorded) = shared.recorded.lock().unwrap().as_mut() {
            recorded.push(request.clone());
        }
        let region = shared.bucket_region.lock().unwrap().clone();
        if let Some(region) = region.filter(|r| request.signed_region() != Some(r)) {
            let mut resp = error_response(
                301,
                "Moved Permanently",
                "PermanentRedirect",
                "The bucket you are attempting to access must be addressed using the specified endpoint.",
            );
            let at = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 2;
            let header = format!("x-amz-bucket-region: {region}\r\n");
            resp.splice(at..at, header.into_bytes());
            client_w.write_all(&resp)?;
            if head.close {
                return Ok(());
            }
            continue;
        }
        {
            let mut st = shared.stats.lock().unwrap();
            st.requests += 1;
            *st.by_method.entry(method.clone()).or_insert(0) += 1;
        }
        let ranged_get =
            method == "GET" && RecordedRequest::parse(&head.raw).header("range").is_some();
        let mut waiting = ranged_get.then(|| RangedGetWaiting::start(shared));
        match shared.liveness() {
            Liveness::Alive => {}
            Liveness::Blackhole => {
                hold_while_blackholed(shared);
                reset(&client);
                return Ok(());
            }
            Liveness::Refuse => {
                reset(&client);
                return Ok(());
            }
        }
        let fault = shared.choose(&head.first_line);
        if let Some(f) = fault {
            shared.count_fault(f);
        }
        let canned = match fault {
            Some(Fault::Status500) => Some(error_response(
                500,
                "Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
            )),
            Some(Fault::Status503) => Some(error_response(
                503,
                "Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            )),
            Some(Fault::Status403) => Some(error_response(
                403,
                "Forbidden",
                "AccessDenied",
                "Access Denied",
            )),
            _ => None,
        };
        if let Some(resp) = canned {
            client_w.write_all(&resp)?;
            if head.close {
                return Ok(());
            }
            continue;
        }
        if let Some(Fault::Stall(ms)) = fault {
            thread::sleep(Duration::from_millis(ms));
        }
        // Forward the request unchanged.
        let (mut up_w, mut up_r) = match upstream.take() {
            Some(u) => u,
            None => {
                let s = TcpStream::connect(shared.upstream)?;
                let r = BufReader::with_capacity(64 * 1024, s.try_clone()?);
                (s, r)
            }
        };
        up_w.write_all(&head.raw)?;
        up_w.write_all(&body)?;
        // The response head (skipping any 1xx).
        let resp = loop {
            let Some(h) = read_head(&mut up_r)? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            let status: u16 = h
                .first_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&status) {
                continue;
            }
            break (h, status);
        };
        let (resp_head, status) = resp;
        if fault == Some(Fault::ResetBeforeResponse) {
            reset(&client);
            return Ok(());
        }
        let no_body = method == "HEAD" || status == 204 || status == 304;
        let body_len = if no_body {
            Some(0)
        } else if resp_head.chunked {
            None
        } else {
            resp_head.content_length
        };
        waiting.take(); // before the head goes out: the client still waits for it
        client_w.write_all(&resp_head.raw)?;
        let cut_at = match fault {
            Some(Fault::ResetMidBody) | Some(Fault::Truncate) => {
                Some(body_len.map(|l| l / 2).unwrap_or(4096))
            }
            _ => None,
        };
        let rate = match fault {
            Some(Fault::Slow(bps)) => Some(bps.max(1)),
            _ => None,
        };
        let raw_body = if no_body {
            Vec::new()
        } else if resp_head.chunked || resp_head.content_length.is_some() {
            // Relay in slices so that a dead server can stop a body mid-way.
            if resp_head.chunked {
                read_body(&mut up_r, &resp_head)?
            } else {
                let mut remaining = resp_head.content_length.unwrap_or(0);
                let mut sent = 0u64;
                let mut buf = vec![0u8; 64 * 1024];
                while remaining > 0 {
                    let n = up_r.read(&mut buf[..remaining.min(65536) as usize])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    remaining -= n as u64;
                    let mut slice = &buf[..n];
                    if let Some(cut) = cut_at {
                        if sent + slice.len() as u64 > cut {
                            slice = &slice[..(cut - sent) as usize];
                            client_w.write_all(slice)?;
                            end_early(&client, fault);
                            return Ok(());
                        }
                    }
                    if !relay_slice(&mut client_w, slice, rate, shared)? {
                        return Ok(());
                    }
                    sent += slice.len() as u64;
                }
                Vec::new()
            }
        } else {
            // No length: the body runs to the server's close.
            let mut all = Vec::new();
            up_r.read_to_end(&mut all)?;
            all
        };
        if !raw_body.is_empty() {
            if let Some(cut) = cut_at {
                client_w.write_all(&raw_body[..(cut as usize).min(raw_body.len())])?;
                end_early(&client, fault);
                return Ok(());
            }
            if !relay_slice(&mut client_w, &raw_body, rate, shared)? {
                return Ok(());
            }
        }
        client_w.flush()?;
        if head.close || resp_head.close {
            return Ok(());
        }
        upstream = Some((up_w, up_r));
    }
}

/// A ranged GET counted in [`ProxyStats::ranged_gets_waiting`] until dropped.
struct RangedGetWaiting<'a>(&'a Shared);

impl<'a> RangedGetWaiting<'a> {
    fn start(shared: &'a Shared) -> Self {
        let mut st = shared.stats.lock().unwrap();
        st.ranged_gets_waiting += 1;
        st.most_ranged_gets_waiting = st.most_ranged_gets_waiting.max(st.ranged_gets_waiting);
        RangedGetWaiting(shared)
    }
}

impl Drop for RangedGetWaiting<'_> {
    fn drop(&mut self) {
        self.0.stats.lock().unwrap().ranged_gets_waiting -= 1;
    }
}

/// Reads a head with a long timeout (the first byte is already there).
fn read_head_blocking(
    client: &TcpStream,
    r: &mut BufReader<TcpStream>,
) -> io::Result<Option<Head>> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    read_head(r)
}

fn end_early(client: &TcpStream, fault: Option<Fault>) {
    if fault == Some(Fault::ResetMidBody) {
        reset(client);
    } else {
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// Sends `data` to the client, at `rate` bytes per second if given; stops (returning false)
/// if the server goes dead meanwhile: blackholed, then reset once it is alive again.
fn relay_slice(
    w: &mut TcpStream,
    data: &[u8],
    rate: Option<u64>,
    shared: &Shared,
) -> io::Result<bool> {
    let step = match rate {
        Some(r) => (r / 10).max(1) as usize,
        None => 64 * 1024,
    };
    for piece in data.chunks(step) {
        match shared.liveness() {
            Liveness::Alive => {}
            Liveness::Blackhole => {
                hold_while_blackholed(shared);
                reset(w);
                return Ok(false);
            }
            Liveness::Refuse => {
                reset(w);
                return Ok(false);
            }
        }
        w.write_all(piece)?;
        if rate.is_some() {
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(true)
}
