//! One set of metrics, named after Mountpoint's (its METRICS.md, so dashboards carry over;
//! Prometheus writes `.` as `_`), ours where Mountpoint has none. They are recorded through
//! the `metrics` facade, which costs nothing until a recorder is installed: FUSE requests at
//! dispatch (`fuse`), S3 requests by an SDK interceptor (every attempt, retries included),
//! and the counters the mount already keeps (reads, cache, memory, handles) copied in once a
//! second by [`sample`], so nothing is counted twice. `--metrics-address` installs the
//! Prometheus exporter ([`serve_prometheus`]).

mod sample;

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

pub use sample::sample;

/// FUSE request latency, µs, by `fuse_request`.
pub const FUSE_REQUEST_LATENCY: &str = "fuse.request_latency";
/// FUSE requests answered with an error, by `fuse_request` and `errno`.
pub const FUSE_REQUEST_ERRORS: &str = "fuse.request_errors";
/// Bytes per FUSE read or write, by `fuse_request`.
pub const FUSE_IO_SIZE: &str = "fuse.io_size";
/// S3 requests sent (each attempt), by `s3_request`.
pub const S3_REQUEST_COUNT: &str = "s3.request_count";
/// S3 requests that failed, by `s3_request` and `http_status` (`0`: no answer).
pub const S3_REQUEST_ERRORS: &str = "s3.request_errors";
/// From sending an S3 request to its response's headers, µs, by `s3_request`.
pub const S3_REQUEST_FIRST_BYTE_LATENCY: &str = "s3.request_first_byte_latency";
/// From sending an S3 request to the end of its attempt, µs, by `s3_request`.
pub const S3_REQUEST_TOTAL_LATENCY: &str = "s3.request_total_latency";
/// Resident memory of the process, bytes.
pub const PROCESS_MEMORY_USAGE: &str = "process.memory_usage";

/// The label of FUSE metrics, as Mountpoint's.
pub const ATTR_FUSE_REQUEST: &str = "fuse_request";
/// The label of S3 metrics, as Mountpoint's.
pub const ATTR_S3_REQUEST: &str = "s3_request";
/// The HTTP status label of S3 errors, as Mountpoint's.
pub const ATTR_HTTP_STATUS: &str = "http_status";

/// Latency buckets, µs: 50 µs to 30 s.
const LATENCY_BUCKETS_US: &[f64] = &[
    50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6,
    1e7, 3e7,
];

/// Size buckets, bytes: 4 KiB to 16 MiB.
const SIZE_BUCKETS: &[f64] = &[
    4096.0, 16384.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Installs the Prometheus recorder and serves the text exposition format at
/// `http://ADDRESS/metrics` (any path answers it). Must run inside the tokio runtime, which
/// runs the listener.
pub fn serve_prometheus(address: SocketAddr) -> Result<(), String> {
    let shown = |e: &dyn std::fmt::Display| format!("--metrics-address {address}: {e}");
    PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets_for_metric(Matcher::Suffix("latency".into()), LATENCY_BUCKETS_US)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("io_size".into()), SIZE_BUCKETS))
        .map_err(|e| shown(&e))?
        .install()
        .map_err(|e| shown(&e))
}
