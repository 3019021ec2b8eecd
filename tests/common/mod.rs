//! Test harness shared by the integration tests.
//!
//! * [`S3Server`] runs a real S3 server (SeaweedFS `weed server`) on loopback ports with its
//!   own temporary directory and an identity, so request signatures are really checked.
//!   [`S3Server::shared`] gives one server per test binary; [`S3Server::start`] an owned one
//!   that stops when dropped.
//! * [`MountArgs`] builds a `mount-s3` command line against such a server and runs the real
//!   binary, either as a mount ([`Mount`], unmounted on drop) or to completion
//!   ([`MountArgs::run`]) for the bad-input tests.
//! * Small helpers for the checks: mount table lookups, directory listings, full `pread`s,
//!   pseudo-random data.
//!
//! Every test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use tempfile::TempDir;

/// Region used by the server's clients and passed to `mount-s3`.
pub const REGION: &str = "us-east-1";

/// How long the S3 server may take to answer after it is started.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a foreground mount may take to show up in the mount table.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `mount-s3` in daemon mode (or a refused invocation) may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// tokio runtime shared by the SDK helpers
// ---------------------------------------------------------------------------------------------

/// One multi-threaded runtime per test binary; the tests are plain threads and `block_on` it.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harness-rt")
            .enable_all()
            .build()
            .expect("build the harness tokio runtime")
    })
}

// ---------------------------------------------------------------------------------------------
// The S3 server
// ---------------------------------------------------------------------------------------------

/// Where the `weed` binary is: `$WEED_BIN`, else `<repo>/.venv/bin/weed`, else `weed` on PATH.
pub fn weed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WEED_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "WEED_BIN={} is not a file; unset it or run scripts/setup-test-env.sh",
            p.display()
        );
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed");
    if venv.is_file() {
        return venv;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("weed");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the SeaweedFS `weed` binary was not found (looked at $WEED_BIN, {}, and PATH): \
         run scripts/setup-test-env.sh to install it",
        venv.display()
    );
}

/// The ports one `weed server` listens on. Each gRPC port is its HTTP port + 10000.
#[derive(Clone, Copy, Debug)]
struct Ports {
    master: u16,
    volume: u16,
    filer: u16,
    s3: u16,
}

impl Ports {
    fn all_grpc(&self) -> [u16; 4] {
        [self.master, self.volume, self.filer, self.s3].map(|p| p + 10000)
    }
}

/// Picks four free loopback ports whose port + 10000 is free too. The listeners are held
/// until all four are chosen so that no port is picked twice.
fn pick_ports() -> Ports {
    let mut held = Vec::new();
    let mut chosen = Vec::new();
    for _ in 0..500 {
        if chosen.len() == 4 {
            break;
        }
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let p = l.local_addr().expect("local addr").port();
        held.push(l);
        if p > 55000 {
            continue;
        }
        if let Ok(g) = TcpListener::bind(("127.0.0.1", p + 10000)) {
            held.push(g);
            chosen.push(p);
        }
    }
    assert_eq!(chosen.len(), 4, "could not find free loopback ports");
    Ports {
        master: chosen[0],
        volume: chosen[1],
        filer: chosen[2],
        s3: chosen[3],
    }
}

/// A running child process owned by a keeper thread (see [`spawn_kept`]).
///
/// The process may only be signalled while the `Mutex<Child>` is held and `try_wait` says it
/// has not been reaped, so a signal can never reach a recycled PID.
struct KeptChild {
    pid: u32,
    child: Arc<Mutex<Child>>,
    /// Dropping this lets the keeper thread end.
    release: Option<mpsc::Sender<()>>,
}

impl KeptChild {
    fn has_exited(&self) -> Option<ExitStatus> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        c.try_wait().ok().flatten()
    }

    fn signal(&self, sig: i32) {
        signal_child(&self.child, sig);
    }

    /// SIGTERM, a short grace period, then SIGKILL; waits until the process is reaped.
    fn stop(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.has_exited().is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if self.has_exited().is_none() {
            self.signal(libc::SIGKILL);
            let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
            let _ = c.wait();
        }
        self.release.take();
    }
}

fn signal_child(child: &Mutex<Child>, sig: i32) {
    let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(None) = c.try_wait() {
        // SAFETY: plain kill(2) on a child of ours that has not been reaped yet.
        unsafe {
            libc::kill(c.id() as libc::pid_t, sig);
        }
    }
}

/// Spawns `make()`'s command from a dedicated thread that lives as long as the child is
/// wanted. The child gets SIGKILL when that thread ends (PR_SET_PDEATHSIG follows the thread
/// that forked, not the process), so a test thread that finishes cannot take the shared
/// server down, while a test process that dies takes it with it. The child also gets its own
/// process group, so a terminal's Ctrl-C reaches it only through the parent's death.
fn spawn_kept(make: impl FnOnce() -> Command + Send + 'static) -> io::Result<KeptChild> {
    let (result_tx, result_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("weed-keeper".into())
        .spawn(move || {
            let mut cmd = make();
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setpgid(0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(child) => {
                    let child = Arc::new(Mutex::new(child));
                    let _ = result_tx.send(Ok(child));
                    // Wait until released (the sender is dropped) or forever.
                    let _ = release_rx.recv();
                }
                Err(e) => {
                    let _ = result_tx.send(Err(e));
                }
            }
        })?;
    let child = result_rx
        .recv()
        .map_err(|_| io::Error::other("keeper thread died"))??;
    let pid = child.lock().unwrap().id();
    Ok(KeptChild {
        pid,
        child,
        release: Some(release_tx),
    })
}

/// What the exit hook needs to tear down a server that is never dropped (the shared one).
struct LiveServer {
    id: u64,
    child: Arc<Mutex<Child>>,
    dir: PathBuf,
    grpc_ports: [u16; 4],
}

fn live_servers() -> &'static Mutex<Vec<LiveServer>> {
    static LIVE: OnceLock<Mutex<Vec<LiveServer>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

extern "C" fn stop_live_servers_at_exit() {
    let Ok(mut live) = live_servers().try_lock() else {
        return;
    };
    for s in live.drain(..) {
        if let Ok(mut c) = s.child.try_lock() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        remove_grpc_sockets(&s.grpc_ports);
        let _ = fs::remove_dir_all(&s.dir);
    }
}

fn register_exit_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(stop_live_servers_at_exit);
        }
    });
}

/// `weed` creates these unix sockets in /tmp whatever TMPDIR says, and leaves them behind.
fn remove_grpc_sockets(grpc_ports: &[u16; 4]) {
    for (kind, port) in ["master", "volume", "filer", "s3"].iter().zip(grpc_ports) {
        let _ = fs::remove_file(format!("/tmp/seaweedfs-{kind}-grpc-{port}.sock"));
    }
}

const SERVER_DIR_PREFIX: &str = "mount-s3-weed-";
const OWNER_FILE: &str = "owner";

/// Removes server directories (and their sockets) left by test processes that were killed
/// before they could clean up: each directory names its owner's PID in `owner`.
fn sweep_stale_server_dirs() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .starts_with(SERVER_DIR_PREFIX)
            {
                continue;
            }
            let Ok(owner) = fs::read_to_string(e.path().join(OWNER_FILE)) else {
                continue;
            };
            let mut lines = owner.lines();
            let Some(Ok(pid)) = lines.next().map(|l| l.trim().parse::<libc::pid_t>()) else {
                continue;
            };
            // SAFETY: kill with signal 0 only checks whether the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0
                || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
            if alive {
                continue;
            }
            let ports: Vec<u16> = lines
                .next()
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if let Ok(ports) = <[u16; 4]>::try_from(ports) {
                remove_grpc_sockets(&ports);
            }
            let _ = fs::remove_dir_all(e.path());
        }
    });
}

fn unique_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A SeaweedFS server with an S3 gateway on loopback, and an SDK client for it.
pub struct S3Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
    client: Client,
    ports: Ports,
    process: KeptChild,
    id: u64,
    dir: Option<TempDir>,
}

impl S3Server {
    /// The server shared by all tests of this test binary. It is started on first use and
    /// killed when the test process exits (or dies).
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<Result<S3Server, String>> = OnceLock::new();
        let server = SHARED.get_or_init(|| {
            std::panic::catch_unwind(S3Server::start).map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            })
        });
        match server {
            Ok(s) => s,
            Err(e) => panic!("the shared S3 server could not be started: {e}"),
        }
    }

    /// Starts a new server, owned by the caller and stopped when dropped.
    pub fn start() -> S3Server {
        let weed = weed_binary();
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&weed) {
                Ok(s) => return s,
                // A port may have been taken between picking and binding: try new ports.
                Err(StartError::Exited(msg)) => last_error = msg,
                Err(StartError::Fatal(msg)) => panic!("{msg}"),
            }
        }
        panic!("weed server failed to start three times; last attempt:\n{last_error}");
    }

    fn try_start(weed: &Path) -> Result<S3Server, StartError> {
        sweep_stale_server_dirs();
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(SERVER_DIR_PREFIX)
            .tempdir()
            .map_err(|e| StartError::Fatal(format!("tempdir: {e}")))?;
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        fs::create_dir(&data).map_err(|e| StartError::Fatal(format!("mkdir: {e}")))?;

        let token = unique_token();
        let access_key = format!("MS3TEST{}", token.to_uppercase());
        let secret_key = format!("secret-{token}-{}", id * 7919);
        let identity = format!(
            r#"{{"identities":[{{"name":"tester","credentials":[{{"accessKey":"{access_key}","secretKey":"{secret_key}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        fs::write(root.join("s3.json"), identity)
            .map_err(|e| StartError::Fatal(format!("write s3.json: {e}")))?;
        // Each bucket is a SeaweedFS collection; the default grows 7 volumes for each one.
        // One is plenty for tests and keeps many buckets cheap.
        fs::write(
            root.join("master.toml"),
            "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n",
        )
        .map_err(|e| StartError::Fatal(format!("write master.toml: {e}")))?;

        let ports = pick_ports();
        let grpc = ports.all_grpc();
        fs::write(
            root.join(OWNER_FILE),
            format!(
                "{}\n{} {} {} {}\n",
                std::process::id(),
                grpc[0],
                grpc[1],
                grpc[2],
                grpc[3]
            ),
        )
        .map_err(|e| StartError::Fatal(format!("write {OWNER_FILE}: {e}")))?;
        let log_path = root.join("weed.log");
        let log = File::create(&log_path)
            .map_err(|e| StartError::Fatal(format!("create weed.log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| StartError::Fatal(format!("dup weed.log: {e}")))?;

        let mut args: Vec<OsString> = Vec::new();
        let mut arg = |s: String| args.push(s.into());
        arg(format!("-config_dir={}", root.display()));
        arg("-v=0".into());
        arg("-logtostderr".into());
        arg("server".into());
        arg(format!("-dir={}", data.display()));
        arg("-ip=127.0.0.1".into());
        arg("-ip.bind=127.0.0.1".into());
        arg("-master.telemetry=false".into());
        arg("-master.volumeSizeLimitMB=256".into());
        arg("-volume.max=0".into());
        for (name, port) in [
            ("master", ports.master),
            ("volume", ports.volume),
            ("filer", ports.filer),
            ("s3", ports.s3),
        ] {
            arg(format!("-{name}.port={port}"));
            arg(format!("-{name}.port.grpc={}", port + 10000));
        }
        arg("-filer".into());
        arg(format!(
            "-filer.localSocket={}",
            root.join("filer.sock").display()
        ));
        arg("-s3".into());
        arg(format!("-s3.config={}", root.join("s3.json").display()));
        arg(format!(
            "-s3.localSocket={}",
            root.join("s3.sock").display()
        ));
        arg("-s3.autoCreateBucket=false".into());
        arg("-s3.port.iceberg=0".into());
        arg("-s3.port.lance=0".into());

        let weed_path = weed.to_path_buf();
        let cwd = root.clone();
        let process = spawn_kept(move || {
            let mut cmd = Command::new(weed_path);
            cmd.args(args)
                .current_dir(cwd)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            cmd
        })
        .map_err(|e| StartError::Fatal(format!("could not run {}: {e}", weed.display())))?;

        register_exit_hook();
        live_servers().lock().unwrap().push(LiveServer {
            id,
            child: process.child.clone(),
            dir: root.clone(),
            grpc_ports: ports.all_grpc(),
        });

        let endpoint = format!("http://127.0.0.1:{}", ports.s3);
        let client = make_client(&endpoint, &access_key, &secret_key);
        let mut server = S3Server {
            endpoint,
            access_key,
            secret_key,
            client,
            ports,
            process,
            id,
            dir: Some(dir),
        };

        match server.wait_ready(&log_path) {
            Ok(()) => Ok(server),
            Err(e) => {
                let tail = log_tail(&log_path, 40);
                server.stop();
                Err(match e {
                    StartError::Exited(m) => StartError::Exited(format!("{m}\n{tail}")),
                    StartError::Fatal(m) => StartError::Fatal(format!("{m}\n{tail}")),
                })
            }
        }
    }

    /// Polls until the gateway answers signed requests and a write round-trips (the volume
    /// server registers with the master a little after the S3 port opens).
    fn wait_ready(&self, log_path: &Path) -> Result<(), StartError> {
        let probe = make_probe_client(&self.endpoint, &self.access_key, &self.secret_key);
        let bucket = format!("harness-ready-{}", self.id);
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let mut last = String::from("no answer yet");
        let mut bucket_made = false;
        loop {
            if let Some(status) = self.process.has_exited() {
                return Err(StartError::Exited(format!(
                    "weed server exited early ({status}); log {}:",
                    log_path.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(StartError::Fatal(format!(
                    "weed server did not become ready within {SERVER_START_TIMEOUT:?} \
                     (last error: {last}); log {}:",
                    log_path.display()
                )));
            }
            let result = runtime().block_on(async {
                probe
                    .list_buckets()
                    .send()
                    .await
                    .map_err(|e| format!("ListBuckets: {}", error_text(&e)))?;
                if !bucket_made {
                    match probe.create_bucket().bucket(&bucket).send().await {
                        Ok(_) => {}
                        Err(e) => {
                            let text = error_text(&e);
                            if !text.contains("BucketAlready") {
                                return Err(format!("CreateBucket: {text}"));
                            }
                        }
                    }
                }
                probe
                    .put_object()
                    .bucket(&bucket)
                    .key("probe")
                    .body(ByteStream::from_static(b"ready"))
                    .send()
                    .await
                    .map_err(|e| format!("PutObject: {}", error_text(&e)))?;
                let got = probe
                    .get_object()
                    .bucket(&bucket)
                    .key("probe")
                    .send()
                    .await
                    .map_err(|e| format!("GetObject: {}", error_text(&e)))?
                    .body
                    .collect()
                    .await
                    .map_err(|e| format!("GetObject body: {e}"))?
                    .into_bytes();
                if got.as_ref() != b"ready" {
                    return Err(format!("GetObject returned {got:?}"));
                }
                Ok::<(), String>(())
            });
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if e.starts_with("PutObject") || e.starts_with("GetObject") {
                        bucket_made = true;
                    }
                    last = e;
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    fn stop(&mut self) {
        self.process.stop(Duration::from_secs(1));
        remove_grpc_sockets(&self.ports.all_grpc());
        live_servers().lock().unwrap().retain(|s| s.id != self.id);
    }

    /// The S3 endpoint, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    pub fn access_key(&self) -> &str {
        &self.access_key
    }
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
    pub fn region(&self) -> &str {
        REGION
    }
    /// The `weed` process id.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }
    /// The directory holding the server's data, configuration and `weed.log`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("server dir").path()
    }
    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir().join("weed.log"), lines)
    }
    /// An async SDK client (path style, static credentials, checksums only when required).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a future on the harness runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        runtime().block_on(f)
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.block_on(self.client.create_bucket().bucket(bucket).send())
            .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {}", error_text(&e)));
    }

    /// A new bucket with a unique valid name that starts with (a sanitised) `tag`.
    pub fn new_bucket(&self, tag: &str) -> String {
        let name = unique_bucket_name(tag);
        self.create_bucket(&name);
        name
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        let body = ByteStream::from(bytes.into());
        self.block_on(
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send(),
        )
        .unwrap_or_else(|e| panic!("PutObject {bucket}/{key}: {}", error_text(&e)));
    }

    /// Puts many objects with up to `concurrency` requests in flight.
    pub fn put_many(&self, bucket: &str, objects: Vec<(String, Vec<u8>)>, concurrency: usize) {
        let client = self.client.clone();
        let bucket = bucket.to_string();
        self.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for (key, bytes) in objects {
                let permit = sem.clone().acquire_owned().await.expect("semaphore");
                let client = client.clone();
                let bucket = bucket.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(&key)
                        .body(ByteStream::from(bytes))
                        .send()
                        .await
                        .map_err(|e| format!("PutObject {bucket}/{key}: {}", error_text(&e)))
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("put task panicked")
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        });
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {}", error_text(&e)));
            out.body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("GetObject {bucket}/{key} body: {e}"))
                .into_bytes()
                .to_vec()
        })
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .unwrap_or_else(|e| panic!("DeleteObject {bucket}/{key}: {}", error_text(&e)));
    }

    /// `(ContentLength, LastModified)` from HeadObject.
    pub fn head(&self, bucket: &str, key: &str) -> (u64, SystemTime) {
        let out = self
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .unwrap_or_else(|e| panic!("HeadObject {bucket}/{key}: {}", error_text(&e)));
        let len = out.content_length().unwrap_or(-1);
        let modified = out
            .last_modified()
            .map(|t| SystemTime::try_from(*t).expect("LastModified as SystemTime"))
            .expect("HeadObject without LastModified");
        (u64::try_from(len).expect("ContentLength"), modified)
    }

    /// All keys of a bucket (ListObjectsV2, every page).
    pub fn list_keys(&self, bucket: &str) -> Vec<String> {
        self.block_on(async {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .client
                    .list_objects_v2()
                    .bucket(bucket)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {}", error_text(&e)));
                keys.extend(
                    out.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
                match out.next_continuation_token() {
                    Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            keys
        })
    }

    /// The start of a `mount-s3` command line for `bucket` on this server.
    pub fn mount_args(&self, bucket: &str) -> MountArgs {
        MountArgs::new(self, bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

enum StartError {
    /// The process exited by itself (for example a port was taken): worth another try.
    Exited(String),
    Fatal(String),
}

fn make_client_with(
    endpoint: &str,
    access_key: &str,
    secret_key: &str,
    timeouts: TimeoutConfig,
    attempts: u32,
) -> Client {
    let creds = Credentials::new(access_key, secret_key, None, None, "mount-s3-tests");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(creds)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(timeouts)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(attempts),
        )
        .build();
    Client::from_conf(config)
}

/// The SDK client the tests use: path style, static credentials, and checksums only when
/// an operation requires them (SeaweedFS refuses trailing-checksum uploads when an identity
/// is configured).
pub fn make_client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    make_client_with(
        endpoint,
        access_key,
        secret_key,
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(120))
            .build(),
        5,
    )
}

fn make_probe_client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    make_client_with(
        endpoint,
        access_key,
        secret_key,
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(5))
            .build(),
        1,
    )
}

/// An SDK error with its service error code and message, not just "service error".
pub fn error_text<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => format!(
            "{} ({}: {})",
            e,
            se.code().unwrap_or("no code"),
            se.message().unwrap_or("no message")
        ),
        None => format!("{e} ({:?})", std::error::Error::source(e)),
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            format!(
                "--- last {} lines of {} ---\n{}\n--- end ---",
                all.len() - start,
                path.display(),
                all[start..].join("\n")
            )
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// A valid S3 bucket name, unique in this run: `tag` lowercased, anything but letters and
/// digits turned into '-', then a unique suffix; at most 63 characters.
pub fn unique_bucket_name(tag: &str) -> String {
    let mut base: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let base = base.trim_matches('-');
    let base: String = base.chars().take(36).collect();
    let base = base.trim_end_matches('-');
    let suffix = unique_token();
    let name = if base.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{base}-{suffix}")
    };
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches('-').to_string();
    assert!(name.len() >= 3, "bucket name too short: {name}");
    name
}

// ---------------------------------------------------------------------------------------------
// Running mount-s3
// ---------------------------------------------------------------------------------------------

/// The `mount-s3` binary under test.
pub fn mount_s3_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mount-s3"))
}

/// A `mount-s3` command line: `--endpoint-url <url> --force-path-style [extra] <bucket> <dir>`,
/// with credentials in the environment and the machine's AWS configuration shut out.
#[derive(Clone, Debug)]
pub struct MountArgs {
    endpoint: Option<String>,
    access_key: String,
    secret_key: String,
    bucket: String,
    extra: Vec<OsString>,
    env: Vec<(String, String)>,
}

impl MountArgs {
    pub fn new(server: &S3Server, bucket: &str) -> MountArgs {
        MountArgs {
            endpoint: Some(server.endpoint().to_string()),
            access_key: server.access_key().to_string(),
            secret_key: server.secret_key().to_string(),
            bucket: bucket.to_string(),
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds options before the positional arguments.
    pub fn args<I, S>(mut self, args: I) -> MountArgs
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn endpoint(mut self, url: &str) -> MountArgs {
        self.endpoint = Some(url.to_string());
        self
    }

    pub fn credentials(mut self, access_key: &str, secret_key: &str) -> MountArgs {
        self.access_key = access_key.to_string();
        self.secret_key = secret_key.to_string();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> MountArgs {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The command for mounting at `mountpoint`; `work` holds the empty AWS config files.
    fn command(&self, mountpoint: &Path, foreground: bool, work: &Path) -> Command {
        let empty_config = work.join("aws-config");
        let empty_creds = work.join("aws-credentials");
        for f in [&empty_config, &empty_creds] {
            if !f.exists() {
                File::create(f).expect("create empty AWS config file");
            }
        }
        let mut cmd = Command::new(mount_s3_binary());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", &empty_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty_creds);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(url) = &self.endpoint {
            cmd.arg("--endpoint-url").arg(url);
        }
        cmd.arg("--force-path-style");
        if foreground {
            cmd.arg("--foreground");
        }
        cmd.args(&self.extra);
        cmd.arg(&self.bucket).arg(mountpoint);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Mounts in the foreground (`--foreground`) on a fresh directory and waits until the mount
    /// is in the mount table. Panics, with the process's stderr, if it does not get there.
    pub fn mount(self) -> Mount {
        self.try_mount().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`MountArgs::mount`], but returns the failure as text.
    pub fn try_mount(self) -> Result<Mount, String> {
        let (mnt_dir, mountpoint, work) = fresh_mountpoint();
        self.start_foreground(Some(mnt_dir), mountpoint, work)
    }

    /// Foreground mount on an existing directory (which must not be removed while mounted).
    pub fn mount_at(self, mountpoint: &Path) -> Result<Mount, String> {
        let work = tempfile::Builder::new()
            .prefix("mount-s3-work-")
            .tempdir()
            .expect("work tempdir");
        let mountpoint = fs::canonicalize(mountpoint).expect("canonicalize mount point");
        self.start_foreground(None, mountpoint, work)
    }

    fn start_foreground(
        self,
        mnt_dir: Option<TempDir>,
        mountpoint: PathBuf,
        work: TempDir,
    ) -> Result<Mount, String> {
        let stderr_path = work.path().join("mount-s3.stderr");
        let stdout_path = work.path().join("mount-s3.stdout");
        let mut cmd = self.command(&mountpoint, true, work.path());
        cmd.stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"));
        // If the test process dies, the mount gets SIGTERM and unmounts itself.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", mount_s3_binary().display()))?;
        let mut mount = Mount {
            mountpoint,
            bucket: self.bucket.clone(),
            child: Some(child),
            daemon: false,
            stderr_path,
            work,
            mnt_dir,
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if mount_entry(&mount.mountpoint).is_some() {
                return Ok(mount);
            }
            if let Some(child) = mount.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    mount.child = None;
                    return Err(format!(
                        "mount-s3 exited ({status}) before {} was mounted; stderr:\n{}",
                        mount.mountpoint.display(),
                        mount.stderr()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} was not mounted within {MOUNT_TIMEOUT:?}; mount-s3 stderr:\n{}",
                    mount.mountpoint.display(),
                    mount.stderr()
                ));
                // `mount` is dropped here: it kills the process and unmounts if needed.
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Mounts without `--foreground`: the command must exit 0, and only once the file
    /// system is mounted. Panics otherwise.
    pub fn mount_daemon(self) -> Mount {
        let (mnt_dir, mountpoint, work) = fresh_mountpoint();
        let stderr_path = work.path().join("mount-s3.stderr");
        let stdout_path = work.path().join("mount-s3.stdout");
        let mut cmd = self.command(&mountpoint, false, work.path());
        // Files, not pipes: a daemon that keeps the descriptors open must not hang the test.
        cmd.stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"));
        let start = Instant::now();
        let mut child = cmd.spawn().expect("run mount-s3");
        let status = wait_timeout(&mut child, EXIT_TIMEOUT);
        let mount = Mount {
            mountpoint,
            bucket: self.bucket.clone(),
            child: None,
            daemon: true,
            stderr_path,
            work,
            mnt_dir: Some(mnt_dir),
        };
        let Some(status) = status else {
            // Dropping `mount` cleans up whatever got mounted.
            panic!(
                "mount-s3 (daemon mode) did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                mount.stderr()
            );
        };
        assert!(
            status.success(),
            "mount-s3 (daemon mode) failed ({status}) after {:?}; stderr:\n{}",
            start.elapsed(),
            mount.stderr()
        );
        assert!(
            mount_entry(&mount.mountpoint).is_some(),
            "mount-s3 (daemon mode) exited 0 but {} is not in the mount table; stderr:\n{}",
            mount.mountpoint.display(),
            mount.stderr()
        );
        mount
    }

    /// Runs mount-s3 on `mountpoint` (`--foreground` if asked) and waits for it to exit, for
    /// the invocations that must be refused. A process still running after `timeout` is
    /// killed (its outcome then has `status: None`). Whatever it mounted is unmounted again,
    /// and whatever processes it left behind are killed, before this returns; the outcome
    /// records both.
    pub fn run(&self, mountpoint: &Path, foreground: bool, timeout: Duration) -> RunOutcome {
        let work = tempfile::Builder::new()
            .prefix("mount-s3-work-")
            .tempdir()
            .expect("work tempdir");
        let stderr_path = work.path().join("stderr");
        let stdout_path = work.path().join("stdout");
        let canonical = fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let mounts_before = mount_table();
        // Processes already serving this mount point (a mount made by the test itself).
        let mut processes_before = mount_s3_processes_for(mountpoint);
        processes_before.extend(mount_s3_processes_for(&canonical));
        let mut cmd = self.command(mountpoint, foreground, work.path());
        cmd.stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"));
        let start = Instant::now();
        let mut child = cmd.spawn().expect("run mount-s3");
        let status = wait_timeout(&mut child, timeout);
        let elapsed = start.elapsed();
        if status.is_none() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        // Anything new in the mount table that this run made (at the target, or for the bucket).
        let new_mounts: Vec<MountEntry> = mount_table()
            .into_iter()
            .filter(|m| !mounts_before.contains(m))
            .filter(|m| {
                Path::new(&m.mount_point) == canonical
                    || Path::new(&m.mount_point) == mountpoint
                    || (m.fs_type.starts_with("fuse") && m.source == self.bucket)
            })
            .collect();
        for m in new_mounts.iter().rev() {
            unmount_topmost(Path::new(&m.mount_point));
        }
        // Processes this run left behind for the mount point (daemons), not those before it.
        let leftover = || {
            let mut pids = mount_s3_processes_for(mountpoint);
            pids.extend(mount_s3_processes_for(&canonical));
            pids.retain(|p| !processes_before.contains(p));
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        let deadline =
            Instant::now() + Duration::from_secs(if new_mounts.is_empty() { 1 } else { 10 });
        let mut leftover_processes = leftover();
        while !leftover_processes.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
            leftover_processes = leftover();
        }
        for pid in &leftover_processes {
            // SAFETY: kill(2) by PID on a process just identified by exe and arguments.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        RunOutcome {
            status,
            stdout: String::from_utf8_lossy(&fs::read(&stdout_path).unwrap_or_default())
                .into_owned(),
            stderr: String::from_utf8_lossy(&fs::read(&stderr_path).unwrap_or_default())
                .into_owned(),
            elapsed,
            new_mounts,
            leftover_processes,
        }
    }
}

/// What a run-to-completion of mount-s3 gave.
#[derive(Debug)]
pub struct RunOutcome {
    /// `None`: it did not exit in time and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Mount table entries it created (already unmounted again).
    pub new_mounts: Vec<MountEntry>,
    /// mount-s3 processes for the mount point still running after it exited (now killed).
    pub leftover_processes: Vec<libc::pid_t>,
}

impl RunOutcome {
    /// Asserts the run was refused the way bad input must be: it exited by itself with a
    /// non-zero code, printed exactly one non-empty, readable line on stderr, and mounted
    /// nothing. `what` names the case in failure messages. Returns the stderr line.
    pub fn assert_refused(&self, what: &str) -> String {
        let status = self
            .status
            .unwrap_or_else(|| panic!("{what}: mount-s3 did not exit (killed); {self:#?}"));
        assert!(
            status.code().is_some(),
            "{what}: mount-s3 died from signal {:?} instead of exiting; {self:#?}",
            status.signal()
        );
        assert_ne!(
            status.code(),
            Some(0),
            "{what}: mount-s3 exited 0 but must refuse; {self:#?}"
        );
        assert!(
            self.new_mounts.is_empty(),
            "{what}: mount-s3 mounted something although it must refuse: {:?}; {self:#?}",
            self.new_mounts
        );
        assert!(
            self.leftover_processes.is_empty(),
            "{what}: mount-s3 left processes running: {:?}; {self:#?}",
            self.leftover_processes
        );
        let text = self.stderr.trim();
        assert!(!text.is_empty(), "{what}: stderr is empty; {self:#?}");
        assert_eq!(
            text.lines().count(),
            1,
            "{what}: stderr must be exactly one line, got:\n{}",
            self.stderr
        );
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "{what}: mount-s3 panicked instead of reporting an error: {text}"
        );
        assert!(
            text.chars().any(|c| c.is_alphabetic()),
            "{what}: stderr is not readable: {text:?}"
        );
        text.to_string()
    }
}

/// Runs the mount-s3 binary with exactly `args` (no endpoint, bucket or mount point added),
/// the machine's AWS configuration shut out, and waits up to `timeout`.
/// Returns `(status, stdout, stderr)`; `status` is `None` if it had to be killed.
pub fn run_mount_s3_raw(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let work = tempfile::Builder::new()
        .prefix("mount-s3-work-")
        .tempdir()
        .expect("work tempdir");
    let empty = work.path().join("empty");
    File::create(&empty).expect("empty file");
    let out_path = work.path().join("stdout");
    let err_path = work.path().join("stderr");
    let mut cmd = Command::new(mount_s3_binary());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("run mount-s3");
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    (status, read(&out_path), read(&err_path))
}

fn fresh_mountpoint() -> (TempDir, PathBuf, TempDir) {
    let mnt_dir = tempfile::Builder::new()
        .prefix("mount-s3-mnt-")
        .tempdir()
        .expect("mount point tempdir");
    let mountpoint = fs::canonicalize(mnt_dir.path()).expect("canonicalize mount point");
    let work = tempfile::Builder::new()
        .prefix("mount-s3-work-")
        .tempdir()
        .expect("work tempdir");
    (mnt_dir, mountpoint, work)
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// A live `mount-s3` mount. Dropping it unmounts (`fusermount3 -u`, else `umount -l`) and
/// makes sure the process is gone.
pub struct Mount {
    mountpoint: PathBuf,
    bucket: String,
    /// The foreground process; `None` in daemon mode or once it has exited.
    child: Option<Child>,
    daemon: bool,
    stderr_path: PathBuf,
    work: TempDir,
    /// The temporary directory mounted on, when the harness made it. Declared last so it is
    /// removed only after the unmount in `drop`.
    mnt_dir: Option<TempDir>,
}

impl Mount {
    /// The mount point (canonical path).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `mountpoint/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The foreground process id (`None` in daemon mode).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything mount-s3 wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// Whether the mount point is in the mount table.
    pub fn is_mounted(&self) -> bool {
        mount_entry(&self.mountpoint).is_some()
    }

    /// The mount table entry (panics if not mounted).
    pub fn entry(&self) -> MountEntry {
        mount_entry(&self.mountpoint)
            .unwrap_or_else(|| panic!("{} is not mounted", self.mountpoint.display()))
    }

    /// Sends `sig` to the foreground process and waits up to `timeout` for it to exit.
    /// Returns its exit status, or `None` if it did not exit in time.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .expect("signal_and_wait needs a running foreground mount");
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            return Some(status);
        }
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
        let status = wait_timeout(child, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Unmounts with `fusermount3 -u` the way a user would; returns whether that succeeded.
    pub fn fusermount_unmount(&self) -> bool {
        Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Waits up to `timeout` for the foreground process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_timeout(child, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Whether the foreground process is still running.
    pub fn process_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Shown by the test runner only when the test fails.
        let log = self.stderr();
        if !log.trim().is_empty() {
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(30);
            eprintln!(
                "--- mount-s3 stderr ({}), last {} lines ---\n{}\n--- end ---",
                self.mountpoint.display(),
                lines.len() - start,
                lines[start..].join("\n")
            );
        }
        if mount_entry(&self.mountpoint).is_some() {
            unmount(&self.mountpoint);
        }
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                eprintln!("mount-s3 did not exit after unmount; sending SIGTERM");
                // SAFETY: kill(2) on our own unreaped child.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
                if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        if self.daemon {
            reap_daemons(&self.mountpoint, Duration::from_secs(10));
        }
        if mount_entry(&self.mountpoint).is_some() {
            eprintln!(
                "{} is still mounted after cleanup; detaching it",
                self.mountpoint.display()
            );
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

/// Unmounts `path`: `fusermount3 -u`, falling back to `umount -l`.
pub fn unmount(path: &Path) {
    for _ in 0..3 {
        if mount_entry(path).is_none() {
            return;
        }
        if unmount_topmost(path) {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    if mount_entry(path).is_some() {
        quiet_status(Command::new("umount").arg("-l").arg(path));
    }
}

/// One `fusermount3 -u` (one mount, the topmost, at `path`); `umount -l` if that fails.
fn unmount_topmost(path: &Path) -> bool {
    quiet_status(Command::new("fusermount3").arg("-u").arg(path))
        || quiet_status(Command::new("umount").arg("-l").arg(path))
}

fn quiet_status(c: &mut Command) -> bool {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Processes running the mount-s3 binary with `mountpoint` among their arguments (the
/// daemons behind a mount: they are not our children). Waits up to `timeout` for them to
/// exit by themselves, then kills the rest by PID.
fn reap_daemons(mountpoint: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = mount_s3_processes_for(mountpoint);
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pid in pids {
                eprintln!(
                    "mount-s3 daemon {pid} for {} still running; killing it",
                    mountpoint.display()
                );
                // SAFETY: kill(2) by PID on a process just identified by exe and arguments.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// PIDs of processes whose executable is the mount-s3 binary under test and whose
/// arguments include `mountpoint`.
pub fn mount_s3_processes_for(mountpoint: &Path) -> Vec<libc::pid_t> {
    let binary = fs::canonicalize(mount_s3_binary()).unwrap_or_else(|_| mount_s3_binary());
    let me = std::process::id() as libc::pid_t;
    let target = mountpoint.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(exe) = fs::read_link(e.path().join("exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy();
        let exe = exe.trim_end_matches(" (deleted)");
        if Path::new(exe) != binary {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == target) {
            found.push(pid);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The mount table
// ---------------------------------------------------------------------------------------------

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: String,
    pub mount_point: String,
    /// Per-mount options, e.g. `ro,nosuid,nodev,relatime`.
    pub options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

impl MountEntry {
    /// Read-only as a mount (MS_RDONLY) or as a superblock.
    pub fn is_read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
            || self.super_options.split(',').any(|o| o == "ro")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// All mounts of this process's mount namespace.
pub fn mount_table() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            Some(MountEntry {
                mount_id: l[0].to_string(),
                mount_point: unescape_mountinfo(l[4]),
                options: l[5].to_string(),
                fs_type: unescape_mountinfo(r[0]),
                source: unescape_mountinfo(r[1]),
                super_options: r.get(2).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// The (last, i.e. topmost) mount at `path`, if any.
pub fn mount_entry(path: &Path) -> Option<MountEntry> {
    let want = path.to_string_lossy();
    mount_table().into_iter().rfind(|m| m.mount_point == want)
}

// ---------------------------------------------------------------------------------------------
// Helpers for the checks
// ---------------------------------------------------------------------------------------------

/// Names in a directory, sorted; panics on an error or on a name listed twice.
pub fn list_dir(path: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for e in fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display())) {
        let e = e.unwrap_or_else(|e| panic!("read_dir {} entry: {e}", path.display()));
        names.push(
            e.file_name()
                .into_string()
                .unwrap_or_else(|n| panic!("non-UTF-8 name {n:?} in {}", path.display())),
        );
    }
    names.sort();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "{} lists a name more than once: {names:?}",
        path.display()
    );
    names
}

/// Entries of a directory with the type readdir gave them: 'd' directory, 'f' regular
/// file, '?' anything else. Sorted by name.
pub fn list_dir_typed(path: &Path) -> Vec<(String, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display())) {
        let e = e.unwrap_or_else(|e| panic!("read_dir {} entry: {e}", path.display()));
        let t = e
            .file_type()
            .unwrap_or_else(|err| panic!("file type of {:?}: {err}", e.path()));
        let c = if t.is_dir() {
            'd'
        } else if t.is_file() {
            'f'
        } else {
            '?'
        };
        out.push((e.file_name().to_string_lossy().into_owned(), c));
    }
    out.sort();
    out
}

/// Asserts that `path` lists exactly `expected` (name, 'd' or 'f'), and that stat agrees
/// with the type readdir gave.
pub fn assert_typed_listing(path: &Path, expected: &[(&str, char)]) {
    let mut want: Vec<(String, char)> = expected.iter().map(|(n, t)| (n.to_string(), *t)).collect();
    want.sort();
    let got = list_dir_typed(path);
    assert_eq!(got, want, "typed listing of {}", path.display());
    list_dir(path); // each name once
    for (name, t) in &want {
        let p = path.join(name);
        let md = fs::metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        match t {
            'd' => assert!(md.is_dir(), "{} should be a directory", p.display()),
            'f' => assert!(md.is_file(), "{} should be a regular file", p.display()),
            _ => {}
        }
    }
}

/// Asserts that `path` lists exactly `expected` (in any order), each name once.
pub fn assert_listing(path: &Path, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    let got = list_dir(path);
    assert_eq!(got, want, "listing of {}", path.display());
}

/// Reads up to `len` bytes at `offset` with as many `pread`s as it takes; stops early only
/// at end of file.
pub fn pread_full(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file
            .read_at(&mut buf[done..], offset + done as u64)
            .unwrap_or_else(|e| {
                panic!("pread at {} len {}: {e}", offset + done as u64, len - done)
            });
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// Seeks to `offset` and reads to end of file.
pub fn read_from(file: &mut File, offset: u64) -> Vec<u8> {
    file.seek(SeekFrom::Start(offset)).expect("seek");
    let mut out = Vec::new();
    file.read_to_end(&mut out).expect("read_to_end");
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), so that misplaced ranges show up.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small deterministic generator for offsets and lengths.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Asserts two byte strings are equal without printing megabytes: reports the length and
/// the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: bytes differ: got {} bytes, want {} bytes, first difference at offset {first}",
        got.len(),
        want.len()
    );
}

/// The raw OS error of an I/O result that must have failed.
#[track_caller]
pub fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Writes `data`, fsyncs and closes `file`, and reports the first error of the three: a
/// file system may refuse a write only at close (FUSE flush), which `File`'s drop ignores.
pub fn write_and_close(mut file: File, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let written = file.write_all(data).and_then(|_| file.sync_all());
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` and is closed exactly once.
    let closed = unsafe { libc::close(fd) };
    written?;
    if closed != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The mounting user's uid and gid.
pub fn my_uid_gid() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}
