//! One set of metrics, named after Mountpoint's (its METRICS.md, so dashboards carry over;
//! Prometheus writes `.` as `_`), ours where Mountpoint has none. They are recorded through
//! the `metrics` facade, which costs nothing until a recorder is installed: FUSE requests at
//! dispatch (`fuse`), S3 requests by an SDK interceptor (every attempt, retries included),
//! and the counters the mount already keeps (reads, cache, memory, handles) copied in once a
//! second by [`sample`], so nothing is counted twice. [`install`] sets up the exporters:
//! Prometheus at `--metrics-address`, OTLP/HTTP at `--otlp-endpoint` ([`otlp`]), or both.

pub mod otlp;
mod sample;

pub use metrics_exporter_prometheus::PrometheusHandle;

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing::error;

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
/// S3 attempts after the first of a request (the SDK's retries), by `s3_request`.
pub const S3_REQUEST_RETRIES: &str = "s3.request_retries";
/// S3 calls cut off by `--request-deadline`, by `s3_request` (our call names).
pub const S3_DEADLINE_EXPIRIES: &str = "s3.deadline_expiries";
/// Reservations of the memory budget that had to wait for memory to be given back.
pub const MEMORY_BUDGET_WAITS: &str = "memory.budget_waits";
/// Object GETs that waited for a slot under the throughput target's cap.
pub const S3_GET_SLOT_WAITS: &str = "s3.get_slot_waits";
/// Upload parts being sent now, all files together.
pub const UPLOAD_PARTS_IN_FLIGHT: &str = "upload.parts_in_flight";
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

/// Installs the recorder, serves the text exposition format at `http://ADDRESS/metrics`
/// with `prometheus` (any path answers it), and exports to `otlp` at its interval. Must run
/// inside the tokio runtime, which runs the listener and the export. The handle renders
/// the figures (`--log-metrics`).
pub fn install(
    prometheus: Option<SocketAddr>,
    otlp: Option<otlp::Target>,
) -> Result<PrometheusHandle, String> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("latency".into()), LATENCY_BUCKETS_US)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("io_size".into()), SIZE_BUCKETS))
        .map_err(|e| format!("metrics: {e}"))?;
    let recorder = match prometheus {
        Some(address) => {
            let shown = |e: &dyn std::fmt::Display| format!("--metrics-address {address}: {e}");
            let (recorder, listener) = builder
                .with_http_listener(address)
                .build()
                .map_err(|e| shown(&e))?;
            tokio::spawn(async move {
                if let Err(e) = listener.await {
                    error!("the metrics listener stopped: {e:?}");
                }
            });
            recorder
        }
        // OTLP alone: the export loop runs the upkeep.
        None => builder.build_recorder(),
    };
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("metrics: {e}"))?;
    // Series that only events create start at zero, so dashboards and alerts have them.
    for name in [
        S3_REQUEST_RETRIES,
        S3_DEADLINE_EXPIRIES,
        MEMORY_BUDGET_WAITS,
        S3_GET_SLOT_WAITS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!(UPLOAD_PARTS_IN_FLIGHT).set(0.0);
    if let Some(target) = otlp {
        tokio::spawn(otlp::export_loop(handle.clone(), target));
    }
    Ok(handle)
}

/// `--log-metrics`: the figures as log lines, one per series in the text format (histogram
/// buckets left out: their `_count` and `_sum` stay), as Mountpoint logs its metrics.
pub fn log_lines(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| {
            !l.split(['{', ' '])
                .next()
                .unwrap_or("")
                .ends_with("_bucket")
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_drop_only_comments_and_buckets() {
        let text = "# TYPE a counter
a{x=\"1\"} 3
# TYPE h histogram
h_bucket{le=\"1\"} 1
h_sum 0.5
h_count 1

";
        assert_eq!(
            super::log_lines(text),
            ["a{x=\"1\"} 3", "h_sum 0.5", "h_count 1"]
        );
    }
}
