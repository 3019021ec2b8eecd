//! The fleet benchmark's proxy (benches/fleet/run.sh): the tests' HTTP/1.1 proxy
//! (tests/common/faults.rs, the same code) in front of the S3 server, holding every request
//! to one bucket `DELAY_MS` before forwarding it (a source bucket in a remote region) and
//! none to the others (a cache bucket in the same zone).
//!
//!   latency_proxy UPSTREAM_URL SLOW_BUCKET DELAY_MS STATE_FILE
//!
//! STATE_FILE gets the proxy's URL on its first line, then, rewritten every 200 ms, the
//! number of requests that went to SLOW_BUCKET and the number of all requests. Runs until
//! killed.

#[path = "../../tests/common/data.rs"]
#[allow(dead_code)]
mod data;
#[path = "../../tests/common/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::time::Duration;

use faults::{Fault, FaultPlan, FaultProxy};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, upstream, bucket, delay, state] = &args[..] else {
        eprintln!("usage: latency_proxy UPSTREAM_URL SLOW_BUCKET DELAY_MS STATE_FILE");
        std::process::exit(2);
    };
    let Ok(delay) = delay.parse::<u64>() else {
        eprintln!("latency_proxy: DELAY_MS must be a number of milliseconds");
        std::process::exit(2);
    };
    let proxy = FaultProxy::start(upstream, FaultPlan::none());
    // Path-style requests to the bucket: objects (`/bucket/key`) and listings (`/bucket?`).
    for needle in [format!(" /{bucket}/"), format!(" /{bucket}?")] {
        proxy.rule_matching(&needle, Fault::Stall(delay));
    }
    loop {
        let stats = proxy.stats();
        let slow = stats.faults.get("stall").copied().unwrap_or(0);
        let text = format!("{}\n{slow} {}\n", proxy.url(), stats.requests);
        let _ = std::fs::write(format!("{state}.tmp"), text);
        let _ = std::fs::rename(format!("{state}.tmp"), state);
        std::thread::sleep(Duration::from_millis(200));
    }
}
