//! OTLP/HTTP export (`--otlp-endpoint URL`, `--otlp-export-interval SECONDS`, Mountpoint's
//! flags): every interval, the same metrics the Prometheus exporter holds are POSTed to
//! `URL/v1/metrics` (appended as Mountpoint appends it) as OTLP JSON, which the OTLP/HTTP
//! specification defines beside protobuf. Counters go as cumulative monotonic sums, gauges
//! as gauges, histograms as explicit-bucket histograms (Mountpoint sends protobuf, delta
//! temporality and exponential histograms: a collector takes either). Plain `http://` only.
//!
//! The figures come from the exporter's own rendering ([`PrometheusHandle::render`]), so the
//! two outputs can never disagree; [`exposition_to_otlp`] turns that text into OTLP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

/// Where and how often to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to.
    pub authority: String,
    /// The request path, ending in `/v1/metrics`.
    pub path: String,
    /// Time between exports.
    pub interval: Duration,
}

/// Reads `--otlp-endpoint`: `http://host:port[/path]`; `/v1/metrics` is appended unless the
/// path already ends with it. The error is one line naming the flag.
pub fn parse_endpoint(endpoint: &str, interval: Duration) -> Result<Target, String> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        format!(
            "--otlp-endpoint {endpoint}: only http:// endpoints are supported (a local collector)"
        )
    })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err(format!("--otlp-endpoint {endpoint}: no host:port"));
    }
    let authority = match authority.contains(':') {
        true => authority.to_string(),
        false => format!("{authority}:80"),
    };
    let path = format!("/{}", path.trim_end_matches('/'));
    let path = match path.ends_with("/v1/metrics") {
        true => path,
        false => format!("{}/v1/metrics", path.trim_end_matches('/')),
    };
    Ok(Target {
        authority,
        path,
        interval,
    })
}

/// Exports every `target.interval` until the process ends; failures are logged (once per
/// change between failing and working), never fatal.
pub async fn export_loop(handle: PrometheusHandle, target: Target) {
    let start = unix_nanos();
    let mut tick = tokio::time::interval(target.interval);
    tick.tick().await;
    let mut failing = false;
    loop {
        tick.tick().await;
        handle.run_upkeep();
        let body = exposition_to_otlp(&handle.render(), start, unix_nanos());
        match post(&target, &body).await {
            Ok(status) if (200..300).contains(&status) => {
                debug!(status, bytes = body.len(), "OTLP export sent");
                failing = false;
            }
            result => {
                if !failing {
                    let why = result.map_or_else(|e| e.to_string(), |s| format!("HTTP {s}"));
                    warn!(
                        "OTLP export to {}{} failed: {why}",
                        target.authority, target.path
                    );
                }
                failing = true;
            }
        }
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One POST with `Connection: close`; returns the response's status.
async fn post(target: &Target, body: &str) -> std::io::Result<u16> {
    let connect = tokio::net::TcpStream::connect(&target.authority);
    let mut stream = tokio::time::timeout(Duration::from_secs(10), connect).await??;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut status_line = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut status_line)).await??;
    let text = String::from_utf8_lossy(&status_line);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))
}

/// A series' labels, names borrowed from the text, values unescaped.
type Labels<'a> = Vec<(&'a str, String)>;

/// One series of the text format: name, labels, value.
struct Sample<'a> {
    name: &'a str,
    labels: Labels<'a>,
    value: f64,
}

/// Parses `name{a="x",b="y"} value` (the exporter's own output: label values are escaped
/// with `\"` and `\\` only).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn parse_labels(mut text: &str) -> Option<Labels<'_>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        text = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// A histogram being put together from its `_bucket`, `_sum` and `_count` series.
#[derive(Default)]
struct Histogram {
    /// Cumulative counts by upper bound (`+Inf` last).
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// The exporter's text rendering as an OTLP `ExportMetricsServiceRequest` in JSON.
pub fn exposition_to_otlp(text: &str, start_nanos: u128, now_nanos: u128) -> String {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                kinds.insert(name, kind);
            }
        }
    }
    let mut scalars: BTreeMap<&str, Vec<Sample<'_>>> = BTreeMap::new();
    let mut histograms: BTreeMap<(&str, Labels<'_>), Histogram> = BTreeMap::new();
    for sample in text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
    {
        let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = sample.name.strip_suffix(suffix)?;
            (kinds.get(base) == Some(&"histogram")).then_some((base, *suffix))
        });
        let Some((base, suffix)) = histogram else {
            scalars.entry(sample.name).or_default().push(sample);
            continue;
        };
        let mut labels = sample.labels;
        let bound = labels
            .iter()
            .position(|(k, _)| *k == "le")
            .map(|i| labels.remove(i).1);
        let entry = histograms.entry((base, labels)).or_default();
        match (suffix, bound) {
            ("_bucket", Some(le)) => {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                entry.buckets.push((le, sample.value));
            }
            ("_sum", _) => entry.sum = sample.value,
            ("_count", _) => entry.count = sample.value,
            _ => {}
        }
    }
    let times = format!("\"startTimeUnixNano\":\"{start_nanos}\",\"timeUnixNano\":\"{now_nanos}\"");
    let mut metrics = Vec::new();
    for (name, samples) in &scalars {
        let points: Vec<String> = samples
            .iter()
            .map(|s| {
                format!(
                    "{{{},{times},\"asDouble\":{}}}",
                    attributes(&s.labels),
                    number(s.value)
                )
            })
            .collect();
        let data = match kinds.get(name) {
            Some(&"counter") => format!(
                "\"sum\":{{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[{}]}}",
                points.join(",")
            ),
            _ => format!("\"gauge\":{{\"dataPoints\":[{}]}}", points.join(",")),
        };
        metrics.push(format!("{{\"name\":{},{data}}}", json_string(name)));
    }
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((name, labels), h) in &mut histograms {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        // OTLP wants per-bucket counts, the text format cumulative ones.
        let mut previous = 0.0;
        let counts: Vec<String> = h
            .buckets
            .iter()
            .map(|(_, cumulative)| {
                let n = (cumulative - previous).max(0.0);
                previous = *cumulative;
                format!("\"{}\"", n as u64)
            })
            .collect();
        let bounds: Vec<String> = h
            .buckets
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|(le, _)| number(*le))
            .collect();
        by_name.entry(name).or_default().push(format!(
            "{{{},{times},\"count\":\"{}\",\"sum\":{},\"bucketCounts\":[{}],\"explicitBounds\":[{}]}}",
            attributes(labels),
            h.count as u64,
            number(h.sum),
            counts.join(","),
            bounds.join(",")
        ));
    }
    for (name, points) in by_name {
        metrics.push(format!(
            "{{\"name\":{},\"histogram\":{{\"aggregationTemporality\":2,\"dataPoints\":[{}]}}}}",
            json_string(name),
            points.join(",")
        ));
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"resourceMetrics\":[{{\"resource\":{{\"attributes\":[{{\"key\":\"service.name\",\"value\":{{\"stringValue\":\"mount-s3\"}}}},{{\"key\":\"service.version\",\"value\":{{\"stringValue\":{}}}}}]}},\"scopeMetrics\":[{{\"scope\":{{\"name\":\"mount-s3\"}},\"metrics\":[{}]}}]}}]}}",
        json_string(env!("CARGO_PKG_VERSION")),
        metrics.join(",")
    );
    out
}

fn attributes(labels: &[(&str, String)]) -> String {
    let items: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{{\"key\":{},\"value\":{{\"stringValue\":{}}}}}",
                json_string(k),
                json_string(v)
            )
        })
        .collect();
    format!("\"attributes\":[{}]", items.join(","))
}

/// A JSON number (NaN and infinities, which JSON lacks, as 0).
fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "0".to_string()
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE s3_request_count counter\n\
        s3_request_count{s3_request=\"GetObject\"} 4\n\
        # TYPE fs_inodes gauge\n\
        fs_inodes 7\n\
        # TYPE fuse_request_latency histogram\n\
        fuse_request_latency_bucket{fuse_request=\"read\",le=\"100\"} 2\n\
        fuse_request_latency_bucket{fuse_request=\"read\",le=\"1000\"} 5\n\
        fuse_request_latency_bucket{fuse_request=\"read\",le=\"+Inf\"} 6\n\
        fuse_request_latency_sum{fuse_request=\"read\"} 4321.5\n\
        fuse_request_latency_count{fuse_request=\"read\"} 6\n";

    #[test]
    fn counters_gauges_and_histograms_keep_their_values() {
        let json = exposition_to_otlp(TEXT, 1, 2);
        assert!(json.contains("\"name\":\"s3_request_count\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true"), "{json}");
        assert!(
            json.contains("{\"key\":\"s3_request\",\"value\":{\"stringValue\":\"GetObject\"}}"),
            "{json}"
        );
        assert!(json.contains("\"asDouble\":4}"), "{json}");
        assert!(json.contains("\"name\":\"fs_inodes\",\"gauge\""), "{json}");
        // Cumulative 2, 5, 6 become per-bucket 2, 3, 1; +Inf has no bound.
        assert!(json.contains("\"count\":\"6\",\"sum\":4321.5,\"bucketCounts\":[\"2\",\"3\",\"1\"],\"explicitBounds\":[100,1000]"), "{json}");
        assert!(!json.contains("fuse_request_latency_bucket"), "{json}");
    }

    #[test]
    fn label_values_are_unescaped_and_reescaped() {
        let sample = parse_sample("m{k=\"a\\\"b\",j=\"c\"} 1").unwrap();
        assert_eq!(
            sample.labels,
            [("k", "a\"b".to_string()), ("j", "c".to_string())]
        );
        assert_eq!(json_string("a\"b\n"), "\"a\\\"b\\u000a\"");
        assert!(parse_sample("broken{k=\"x} 1").is_none());
    }

    #[test]
    fn endpoints_get_mountpoints_path() {
        let every = Duration::from_secs(60);
        let t = parse_endpoint("http://localhost:4318", every).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("localhost:4318", "/v1/metrics")
        );
        let t = parse_endpoint("http://c:4318/v1/metrics", every).unwrap();
        assert_eq!(t.path, "/v1/metrics");
        let t = parse_endpoint("http://c/otlp/", every).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("c:80", "/otlp/v1/metrics")
        );
        for bad in ["https://c:4318", "c:4318", "http://", "http:///v1/metrics"] {
            let err = parse_endpoint(bad, every).unwrap_err();
            assert!(
                err.starts_with("--otlp-endpoint") && !err.contains('\n'),
                "{bad}: {err}"
            );
        }
    }
}
