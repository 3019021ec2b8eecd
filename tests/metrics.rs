//! Metrics while a mount runs: `--metrics-address` serves Prometheus's text format, the
//! figures match what the workload did, an injected S3 error shows, and a real Prometheus
//! (Debian's package, where installed) scrapes and stores our series.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fault, FaultPlan, FaultProxy, S3Server, pseudo_random_bytes, summary_fields};

const MIB: usize = 1024 * 1024;

/// A loopback address with a port free a moment ago.
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The body of `GET http://address/path` (HTTP/1.0: no chunking), or the error.
fn http_get(address: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// Every sample of an exposition, `name{labels}` → value (labels as written).
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn value(all: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    all.iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn scraped_figures_match_the_workload() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("metrics-workload");
    let object = pseudo_random_bytes(31, 3 * MIB + 5);
    s3.put(&bucket, "known.bin", object.clone());
    s3.put(&bucket, "unread.bin", b"opened, never read".to_vec());
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let address = free_address();
    let cache = tempfile::tempdir().unwrap();
    let mount = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .args(["--metrics-address", address.as_str()])
        .args(["--cache".as_ref(), cache.path().as_os_str()])
        .mount();
    assert!(std::fs::metadata(mount.join("absent.txt")).is_err());
    // One 500 on the first GET: retried by the SDK, counted as an error.
    proxy.script_matching(&format!("GET /{bucket}/known.bin"), Fault::Status500);
    assert_eq!(std::fs::read(mount.join("known.bin")).unwrap(), object);
    let small = b"one PUT".to_vec();
    std::fs::write(mount.join("small.txt"), &small).unwrap();
    let large = pseudo_random_bytes(32, 9 * MIB);
    std::fs::write(mount.join("large.bin"), &large).unwrap();
    assert!(proxy.targeted_done(), "the 500 was injected");
    // Held open across the scrape: one file reading, one writing. (Not known.bin: once the
    // cache holds it whole, its opens are the kernel's passthrough, not a reading handle.)
    let reading = std::fs::File::open(mount.join("unread.bin")).unwrap();
    let writing = std::fs::File::create(mount.join("pending.txt")).unwrap();

    // The mount's own counters reach the exporter within a second or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let body = http_get(&address, "/metrics").unwrap_or_else(|e| panic!("scrape: {e}"));
        let all = samples(&body);
        let ready = value(&all, "fs_bytes_read", &[]) >= object.len() as f64
            && value(&all, "fs_open_write_handles", &[]) >= 1.0
            && value(&all, "fs_open_handles", &[]) >= 2.0;
        if ready || Instant::now() > deadline {
            eprintln!("{body}");
            break all;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let count = |op: &str| value(&all, "s3_request_count", &[&format!("s3_request=\"{op}\"")]);
    assert_eq!(
        value(&all, "fs_bytes_read", &[]),
        object.len() as f64,
        "bytes read"
    );
    assert_eq!(count("PutObject"), 1.0, "one PUT for the small file");
    assert_eq!(count("CreateMultipartUpload"), 1.0);
    assert_eq!(count("UploadPart"), 2.0, "9 MiB in 8 MiB parts");
    assert_eq!(count("CompleteMultipartUpload"), 1.0);
    let errors_500 = value(
        &all,
        "s3_request_errors",
        &["http_status=\"500\"", "GetObject"],
    );
    assert_eq!(errors_500, 1.0, "the injected 500");
    let reads = value(
        &all,
        "fuse_request_latency_count",
        &["fuse_request=\"read\""],
    );
    let read_sizes = value(&all, "fuse_io_size_sum", &["fuse_request=\"read\""]);
    assert!(reads >= 3.0, "3 MiB in at most 1 MiB reads: {reads}");
    assert_eq!(read_sizes, object.len() as f64, "bytes of FUSE reads");
    let enoent = value(
        &all,
        "fuse_request_errors",
        &["fuse_request=\"lookup\"", "errno=\"2\""],
    );
    assert!(enoent >= 1.0, "the lookup of absent.txt: {enoent}");
    assert!(
        value(&all, "cache_block_misses", &[]) >= 1.0,
        "a first read misses the cache"
    );
    let used = value(&all, "cache_total_size", &[]);
    let bound = value(&all, "cache_size_limit", &[]);
    assert!(
        bound > 0.0 && used <= bound,
        "cache bytes {used} within the bound {bound}"
    );
    assert_dashboard_names_exist(&all);
    let retries = value(&all, "s3_request_retries", &["s3_request=\"GetObject\""]);
    assert_eq!(retries, 1.0, "the SDK's retry of the 500");
    assert_eq!(
        value(&all, "upload_parts_in_flight", &[]),
        0.0,
        "every part sent"
    );
    assert_eq!(
        value(&all, "fs_open_read_handles", &[]),
        1.0,
        "one file reading"
    );
    assert_eq!(
        value(&all, "fs_open_write_handles", &[]),
        1.0,
        "one file writing"
    );
    drop((reading, writing));
    let gets = count("GetObject");
    let fetched = value(&all, "s3_bytes_fetched", &[]);

    // The same figures as the mount's own summary at unmount: one count, two views.
    let log = mount.unmount_for_log(Duration::from_secs(30));
    let summary = summary_fields(&log, "read summary:");
    assert_eq!(
        gets,
        (summary["get_requests"] + 1) as f64,
        "GETs, the 500 included"
    );
    assert_eq!(fetched, summary["bytes_fetched"] as f64);
}

/// Every metric the Grafana dashboard in packaging/ queries is one the mount exports.
fn assert_dashboard_names_exist(all: &BTreeMap<String, f64>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/mount-s3.json"
    );
    let dashboard = std::fs::read_to_string(path).unwrap();
    let exported: Vec<&str> = all
        .keys()
        .map(|series| series.split('{').next().unwrap_or(series))
        .collect();
    let mut queried = Vec::new();
    for line in dashboard.lines().filter(|l| l.contains("\"expr\"")) {
        // A metric name is an identifier directly followed by `{` in PromQL.
        for piece in line.split('{').map(|p| p.trim_end()) {
            let name: String = piece
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.contains('_') && !name.starts_with('_') {
                queried.push(name);
            }
        }
    }
    assert!(
        queried.len() >= 10,
        "the dashboard queries too little: {queried:?}"
    );
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !exported.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries unknown metrics: {missing:?}"
    );
}

#[test]
fn a_taken_metrics_address_is_refused_in_one_line() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("metrics-taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let line = s3
        .mount_args(&bucket)
        .args(["--metrics-address", address.as_str()])
        .run(dir.path(), true, Duration::from_secs(60))
        .assert_refused("a --metrics-address in use");
    assert!(line.contains("--metrics-address"), "{line}");
}

/// Debian's `prometheus` scrapes the mount every second; its query API must then return our
/// series with the value the workload fixed: the exposition is accepted by the real scraper.
#[test]
fn a_real_prometheus_scrapes_the_mount() {
    let Some(prometheus) = ["/usr/bin/prometheus", "/usr/sbin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: Debian's prometheus package is not installed");
        return;
    };
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("metrics-prometheus");
    let object = pseudo_random_bytes(33, MIB + 17);
    s3.put(&bucket, "scraped.bin", object.clone());
    let target = free_address();
    let mount = s3
        .mount_args(&bucket)
        .args(["--metrics-address", target.as_str()])
        .mount();
    assert_eq!(std::fs::read(mount.join("scraped.bin")).unwrap(), object);

    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mount-s3\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = free_address();
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let found = loop {
        let query = "/api/v1/query?query=fs_bytes_read%7Bjob%3D%22mount-s3%22%7D";
        if let Ok(body) = http_get(&web, query) {
            let wanted = format!("\"{}\"]", object.len());
            if body.contains(&wanted) {
                break true;
            }
            last = body;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(work.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        found,
        "Prometheus never stored fs_bytes_read = {}: {last}\n{log}",
        object.len()
    );
    drop(mount);
}

/// Requests an OTLP/HTTP collector received: request line and body, in order.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A minimal OTLP/HTTP receiver on a free loopback port: answers 200 to every POST and
/// keeps what it got. Runs until the test process ends.
fn otlp_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let received = Received::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(&stream);
            let mut head = String::new();
            let mut line = String::new();
            let mut length = 0;
            use std::io::BufRead;
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                line.clear();
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let first = head.lines().next().unwrap_or_default().to_string();
            keep.lock()
                .unwrap()
                .push((first, String::from_utf8_lossy(&body).into_owned()));
            let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (address, received)
}

/// `--otlp-endpoint` (Mountpoint's flag): exports reach a collector at `/v1/metrics` as OTLP
/// JSON, with Mountpoint's names and the figures the workload fixed.
#[test]
fn otlp_exports_reach_a_collector() {
    let (collector, received) = otlp_receiver();
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("metrics-otlp");
    let object = pseudo_random_bytes(34, MIB + 3);
    s3.put(&bucket, "exported.bin", object.clone());
    let endpoint = format!("http://{collector}");
    let mount = s3
        .mount_args(&bucket)
        .args([
            "--otlp-endpoint",
            endpoint.as_str(),
            "--otlp-export-interval",
            "1",
        ])
        .mount();
    assert_eq!(std::fs::read(mount.join("exported.bin")).unwrap(), object);
    let wanted = format!("\"asDouble\":{}}}", object.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let got = received.lock().unwrap().clone();
        let hit = got.iter().find(|(_, body)| {
            body.contains("\"name\":\"fs_bytes_read\"")
                && body
                    .split("\"name\":\"fs_bytes_read\"")
                    .nth(1)
                    .is_some_and(|rest| {
                        rest.split("\"name\"")
                            .next()
                            .unwrap_or("")
                            .contains(&wanted)
                    })
        });
        if let Some(hit) = hit {
            break hit.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no export with fs_bytes_read = {}: {got:?}",
            object.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (line, body) = found;
    assert!(line.starts_with("POST /v1/metrics "), "{line}");
    for name in [
        "s3_request_count",
        "fuse_request_latency",
        "process_memory_usage",
    ] {
        assert!(
            body.contains(&format!("\"name\":\"{name}\"")),
            "{name} missing: {body}"
        );
    }
    assert!(
        body.contains("\"histogram\":{\"aggregationTemporality\":2"),
        "{body}"
    );
    drop(mount);
}

/// `--log-metrics`: every 5 s the log gets the status line and one line per metric series
/// (the same figures the exporters hold).
#[test]
fn log_metrics_writes_the_figures_to_the_log() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("metrics-log");
    let object = pseudo_random_bytes(35, 70_000);
    s3.put(&bucket, "logged.bin", object.clone());
    let mount = s3.mount_args(&bucket).args(["--log-metrics"]).mount();
    assert_eq!(std::fs::read(mount.join("logged.bin")).unwrap(), object);
    let wanted = format!("metrics: fs_bytes_read {}", object.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mount.log().contains(&wanted) {
        assert!(
            Instant::now() < deadline,
            "no {wanted:?} in the log:\n{}",
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = mount.log();
    assert!(
        log.contains("metrics: s3_request_count{s3_request=\"GetObject\"}"),
        "{log}"
    );
    assert!(
        log.contains("metrics: fuse_request_latency_count{fuse_request=\"read\"}"),
        "{log}"
    );
    assert!(
        !log.contains("_bucket{"),
        "histogram buckets stay out of the log"
    );
    assert!(log.contains("status: open_handles="), "{log}");
}

/// Extended attributes are refused once: the first xattr call of each kind is told ENOSYS, so
/// the kernel answers every later one itself (EOPNOTSUPP, as programs always saw). Before,
/// each `write(2)` cost a round trip asking for `security.capability`.
#[test]
fn xattr_calls_reach_the_mount_once_not_per_write() {
    use std::io::Write as _;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("metrics-xattr");
    let address = free_address();
    let mount = s3
        .mount_args(&bucket)
        .args(["--metrics-address", address.as_str()])
        .mount();
    let mut file = std::fs::File::create(mount.join("small-writes.bin")).unwrap();
    for i in 0..200u32 {
        file.write_all(&[i as u8; 4096]).unwrap();
    }
    drop(file);
    for _ in 0..3 {
        let getxattr = xattr::get(&mount.join("small-writes.bin"));
        assert_eq!(
            getxattr.raw_os_error(),
            Some(libc::EOPNOTSUPP),
            "{getxattr}"
        );
    }
    assert_eq!(
        s3.get(&bucket, "small-writes.bin"),
        (0..200u32)
            .flat_map(|i| [i as u8; 4096])
            .collect::<Vec<u8>>()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let (writes, getxattrs) = loop {
        let body = http_get(&address, "/metrics").unwrap_or_else(|e| panic!("scrape: {e}"));
        let all = samples(&body);
        let writes = value(
            &all,
            "fuse_request_latency_count",
            &["fuse_request=\"write\""],
        );
        let getxattrs = value(&all, "fuse_request_errors", &["fuse_request=\"getxattr\""]);
        if writes >= 200.0 || Instant::now() > deadline {
            break (writes, getxattrs);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(writes >= 200.0, "{writes} writes counted");
    assert!(
        getxattrs <= 1.0,
        "{getxattrs} getxattr requests for {writes} writes"
    );
}

/// `getxattr(2)` of `user.mount-s3-test`: the error it gives (the mount stores no xattrs).
mod xattr {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    pub fn get(path: &Path) -> std::io::Error {
        let path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        // SAFETY: NUL-terminated strings and a buffer with its length, alive for the call.
        let r = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"user.mount-s3-test".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert!(r < 0, "an attribute came back");
        std::io::Error::last_os_error()
    }
}
