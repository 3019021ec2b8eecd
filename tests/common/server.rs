//! The S3 server the tests run against: SeaweedFS `weed server` on free loopback ports, with
//! its own temporary directory and an identity so that request signatures are really checked.
//!
//! Not here: the SDK helpers for buckets and objects (`client`), or mounting (`mount`).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use tempfile::TempDir;

use super::client::{error_text, make_client, make_probe_client, runtime, unique_token};
use super::mount::MountArgs;
use super::process::{KeptChild, at_exit, cancel_at_exit, read_text, spawn_kept, tail_lines};

/// Region used by the server's clients and passed to `mount-s3`.
pub const REGION: &str = "us-east-1";

/// How long the S3 server may take to answer after it is started.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

const SERVER_DIR_PREFIX: &str = "mount-s3-weed-";
/// In each server directory: the owning test process's PID, then the gRPC ports.
const OWNER_FILE: &str = "owner";

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
    /// S3 over TLS (no gRPC port of its own).
    https: u16,
}

impl Ports {
    fn named(&self) -> [(&'static str, u16); 4] {
        [
            ("master", self.master),
            ("volume", self.volume),
            ("filer", self.filer),
            ("s3", self.s3),
        ]
    }

    fn all_grpc(&self) -> [u16; 4] {
        self.named().map(|(_, p)| p + 10000)
    }
}

/// Picks four free loopback ports whose port + 10000 is free too, and one for TLS. The
/// listeners are held until all are chosen so that no port is picked twice.
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
    // The TLS port needs no gRPC twin; the four and their twins are still held, so the
    // kernel cannot hand out any of them here.
    let https_listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let https = https_listener.local_addr().expect("local addr").port();
    Ports {
        master: chosen[0],
        volume: chosen[1],
        filer: chosen[2],
        s3: chosen[3],
        https,
    }
}

/// `weed` creates these unix sockets in /tmp whatever TMPDIR says, and leaves them behind.
fn remove_grpc_sockets(grpc_ports: &[u16; 4]) {
    for (kind, port) in ["master", "volume", "filer", "s3"].iter().zip(grpc_ports) {
        let _ = fs::remove_file(format!("/tmp/seaweedfs-{kind}-grpc-{port}.sock"));
    }
}

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

/// The `weed` command line for a server in `root` on `ports`.
fn weed_args(root: &Path, ports: &Ports) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut arg = |s: String| args.push(s.into());
    arg(format!("-config_dir={}", root.display()));
    arg("-v=0".into());
    arg("-logtostderr".into());
    arg("server".into());
    arg(format!("-dir={}", root.join("data").display()));
    arg("-ip=127.0.0.1".into());
    arg("-ip.bind=127.0.0.1".into());
    arg("-master.telemetry=false".into());
    arg("-master.volumeSizeLimitMB=256".into());
    arg("-volume.max=0".into());
    for (name, port) in ports.named() {
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
    // S3 over TLS too, with the test certificate the unit tests use (signed by
    // `test_ca_bundle()`'s CA for 127.0.0.1, valid until 2126).
    arg(format!("-s3.port.https={}", ports.https));
    arg(format!(
        "-s3.cert.file={}",
        testdata("server.pem").display()
    ));
    arg(format!("-s3.key.file={}", testdata("server.key").display()));
    args
}

/// A file of the test certificates in `src/s3/sdk/testdata/`.
fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/s3/sdk/testdata")
        .join(name)
}

/// The CA bundle that vouches for the server's TLS port.
pub fn test_ca_bundle() -> PathBuf {
    testdata("ca.pem")
}

/// Writes the identity, the volume growth settings and the owner file into `root`.
fn write_server_files(
    root: &Path,
    access_key: &str,
    secret_key: &str,
    ports: &Ports,
) -> io::Result<()> {
    fs::create_dir(root.join("data"))?;
    let identity = format!(
        r#"{{"identities":[{{"name":"tester","credentials":[{{"accessKey":"{access_key}","secretKey":"{secret_key}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
    );
    fs::write(root.join("s3.json"), identity)?;
    // Each bucket is a SeaweedFS collection; the default grows 7 volumes for each one.
    // One is plenty for tests and keeps many buckets cheap.
    fs::write(
        root.join("master.toml"),
        "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n",
    )?;
    let grpc = ports.all_grpc().map(|p| p.to_string()).join(" ");
    fs::write(
        root.join(OWNER_FILE),
        format!("{}\n{grpc}\n", std::process::id()),
    )
}

enum StartError {
    /// The process exited by itself (for example a port was taken): worth another try.
    Exited(String),
    Fatal(String),
}

impl StartError {
    fn with_log(self, tail: &str) -> StartError {
        match self {
            StartError::Exited(m) => StartError::Exited(format!("{m}\n{tail}")),
            StartError::Fatal(m) => StartError::Fatal(format!("{m}\n{tail}")),
        }
    }
}

/// A SeaweedFS server with an S3 gateway on loopback, and an SDK client for it.
pub struct S3Server {
    endpoint: String,
    https_endpoint: String,
    access_key: String,
    secret_key: String,
    client: Client,
    ports: Ports,
    process: KeptChild,
    id: u64,
    dir: TempDir,
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
        let token = unique_token();
        let access_key = format!("MS3TEST{}", token.to_uppercase());
        let secret_key = format!("secret-{token}-{}", id * 7919);
        let ports = pick_ports();
        write_server_files(&root, &access_key, &secret_key, &ports)
            .map_err(|e| StartError::Fatal(format!("server files in {}: {e}", root.display())))?;

        let log_path = root.join("weed.log");
        let log = File::create(&log_path)
            .map_err(|e| StartError::Fatal(format!("create weed.log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| StartError::Fatal(format!("dup weed.log: {e}")))?;
        let args = weed_args(&root, &ports);
        let (weed_path, cwd) = (weed.to_path_buf(), root.clone());
        let process = spawn_kept(move || {
            let mut cmd = Command::new(weed_path);
            cmd.args(args)
                .current_dir(cwd)
                .stdin(std::process::Stdio::null())
                .stdout(log)
                .stderr(log_err);
            cmd
        })
        .map_err(|e| StartError::Fatal(format!("could not run {}: {e}", weed.display())))?;

        // The shared server is never dropped: kill it, and clean up, at exit.
        let child = process.shared();
        let grpc = ports.all_grpc();
        let hook_dir = root.clone();
        at_exit(
            id,
            Box::new(move || {
                if let Ok(mut c) = child.try_lock() {
                    if let Ok(None) = c.try_wait() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
                remove_grpc_sockets(&grpc);
                let _ = fs::remove_dir_all(&hook_dir);
            }),
        );

        let endpoint = format!("http://127.0.0.1:{}", ports.s3);
        let https_endpoint = format!("https://127.0.0.1:{}", ports.https);
        let client = make_client(&endpoint, &access_key, &secret_key);
        let mut server = S3Server {
            endpoint,
            https_endpoint,
            access_key,
            secret_key,
            client,
            ports,
            process,
            id,
            dir,
        };
        match server.wait_ready() {
            Ok(()) => Ok(server),
            Err(e) => {
                let tail = server.log_tail(40);
                server.stop();
                Err(e.with_log(&tail))
            }
        }
    }

    /// Polls until the gateway answers signed requests and a write round-trips (the volume
    /// server registers with the master a little after the S3 port opens).
    fn wait_ready(&self) -> Result<(), StartError> {
        let probe = make_probe_client(&self.endpoint, &self.access_key, &self.secret_key);
        let bucket = format!("harness-ready-{}", self.id);
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let mut last = String::from("no answer yet");
        let mut bucket_made = false;
        loop {
            if let Some(status) = self.process.has_exited() {
                return Err(StartError::Exited(format!(
                    "weed server exited early ({status})"
                )));
            }
            if Instant::now() > deadline {
                return Err(StartError::Fatal(format!(
                    "weed server did not become ready within {SERVER_START_TIMEOUT:?} \
                     (last error: {last})"
                )));
            }
            match runtime().block_on(probe_once(&probe, &bucket, bucket_made)) {
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

    /// Stops the process (SIGTERM, then SIGKILL after a second) and removes its sockets.
    fn stop(&mut self) {
        self.process.stop(Duration::from_secs(1));
        remove_grpc_sockets(&self.ports.all_grpc());
        cancel_at_exit(self.id);
    }

    /// The S3 endpoint, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The same S3 over TLS, e.g. `https://127.0.0.1:41235` (trust `test_ca_bundle()`).
    pub fn https_endpoint(&self) -> &str {
        &self.https_endpoint
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
        self.process.pid()
    }
    /// The directory holding the server's data, configuration and `weed.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let path = self.dir().join("weed.log");
        tail_lines(&path.display().to_string(), &read_text(&path), lines)
    }
    /// An async SDK client (path style, static credentials, checksums only when required).
    pub fn client(&self) -> &Client {
        &self.client
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

/// One readiness probe: ListBuckets, CreateBucket (once), then a PutObject/GetObject round trip.
async fn probe_once(probe: &Client, bucket: &str, bucket_made: bool) -> Result<(), String> {
    probe
        .list_buckets()
        .send()
        .await
        .map_err(|e| format!("ListBuckets: {}", error_text(&e)))?;
    if !bucket_made {
        if let Err(e) = probe.create_bucket().bucket(bucket).send().await {
            let text = error_text(&e);
            if !text.contains("BucketAlready") {
                return Err(format!("CreateBucket: {text}"));
            }
        }
    }
    probe
        .put_object()
        .bucket(bucket)
        .key("probe")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"ready"))
        .send()
        .await
        .map_err(|e| format!("PutObject: {}", error_text(&e)))?;
    let got = probe
        .get_object()
        .bucket(bucket)
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
    Ok(())
}
