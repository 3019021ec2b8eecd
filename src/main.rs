//! `mount-s3 [OPTIONS] <BUCKET> <DIRECTORY>`: parse, detach, check the bucket, mount, wait.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use mount_s3::cache::DiskCache;
use mount_s3::cli::Args;
use mount_s3::cli::unstable::Tuning;
use mount_s3::daemon::{self, StartupReport};
use mount_s3::fs::S3Filesystem;
use mount_s3::fs::staged::dir::StagingDir;
use mount_s3::fuse::FuseAdapter;
use mount_s3::fuse::session::LiveMount;
use mount_s3::logging::{self, LogSink};
use mount_s3::s3::deadline::WithDeadline;
use mount_s3::s3::health::WithHealth;
use mount_s3::s3::sdk::SdkStore;
use mount_s3::s3::{BlockStore, ObjectStore, S3Error};
use mount_s3::shared_cache::SharedCache;

/// Where Mountpoint writes the serving process's pid, for attaching tools (read as it is).
const PID_FILE_VARIABLE: &str = mount_s3::cli::PID_FILE_VARIABLE;

/// How often `--log-metrics` logs the counters (as Mountpoint).
const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// How often the mount's counters are copied into the exporters.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How long start-up waits for the bucket check before calling the endpoint unreachable.
const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    keep_large_buffers_in_heap();
    // Two other ways in: `mount-s3 completions SHELL`, and mount(8)'s helper
    // `mount.mount-s3 SOURCE DIRECTORY -o OPTIONS` (an fstab line), translated by fstab.rs.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if mount_s3::completions::requested(&argv) {
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        return ExitCode::from(mount_s3::completions::run(argv.get(2), &mut out, &mut err));
    }
    let argv = match mount_s3::fstab::dispatch(argv, &mut std::io::stderr()) {
        mount_s3::fstab::Dispatch::Run(argv) => argv,
        mount_s3::fstab::Dispatch::Exit(code) => return ExitCode::from(code),
    };
    // Mountpoint's own fstab form: `mount-s3 BUCKET DIRECTORY -o OPTIONS`.
    let argv = match mount_s3::cli::options_form::translate(&argv) {
        None => argv,
        Some(Ok(translated)) => translated,
        Some(Err(message)) => {
            eprintln!("mount-s3: {}", logging::one_line(&message));
            return ExitCode::from(2);
        }
    };
    let mut args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!(
                "mount-s3: {} (see mount-s3 --help)",
                logging::one_line(&first_paragraph(&err.render().to_string()))
            );
            return ExitCode::from(2);
        }
    };
    if let Err(message) = args.validate() {
        eprintln!("mount-s3: {}", logging::one_line(&message));
        return ExitCode::FAILURE;
    }
    // Mountpoint's UNSTABLE_MOUNTPOINT_* tuning, read (or refused) before detaching.
    let tuning = match mount_s3::cli::unstable::read(environment()) {
        Ok(tuning) => tuning,
        Err(message) => {
            eprintln!("mount-s3: {}", logging::one_line(&message));
            return ExitCode::FAILURE;
        }
    };
    let mounted = mounted_line(&args);
    // Mountpoint's `UNSTABLE_MOUNTPOINT_PID_FILE`, made absolute before the background
    // process changes directory.
    let pid_file = std::env::var_os(PID_FILE_VARIABLE).map(|p| {
        let path = std::path::PathBuf::from(p);
        std::path::absolute(&path).unwrap_or(path)
    });
    let report = if args.foreground {
        None
    } else {
        match daemon::fork_background(&mounted) {
            Ok(report) => Some(report),
            Err(e) => {
                eprintln!("mount-s3: cannot start in the background: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match run(&args, &tuning, report, &mounted, pid_file.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(()) => ExitCode::FAILURE,
    }
}

/// Everything after the fork. Start-up errors go to the parent (or stderr in the foreground)
/// as one line; later errors go to the log.
fn run(
    args: &Args,
    tuning: &Tuning,
    report: Option<StartupReport>,
    mounted: &str,
    pid_file: Option<&std::path::Path>,
) -> Result<(), ()> {
    // As Mountpoint: a file in --log-directory, else syslog; in the foreground stdout too.
    let sink = LogSink {
        directory: args.log_directory.as_deref(),
        stdout: args.foreground,
    };
    // A start-up error is one line for the user (stderr, or the parent's), and goes to the log.
    let fail = |report: Option<StartupReport>, message: String| {
        error!("{message}");
        match report {
            Some(report) => report.failed(&message),
            None => eprintln!("mount-s3: {}", logging::one_line(&message)),
        }
    };
    let log_options = args.log_options();
    let log_metrics = log_options.metrics;
    let log_control = match logging::init(sink, log_options) {
        Ok((_, control)) => control,
        Err(e) => {
            fail(report, format!("cannot open a log file: {e}"));
            return Err(());
        }
    };
    if let Some(path) = pid_file {
        if let Err(e) = std::fs::write(path, std::process::id().to_string()) {
            let shown = path.display();
            fail(report, format!("{PID_FILE_VARIABLE} {shown}: {e}"));
            return Err(());
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mount-s3-io")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            fail(report, format!("cannot start the I/O runtime: {e}"));
            return Err(());
        }
    };
    let otlp = match &args.otlp_endpoint {
        None => None,
        Some(url) => {
            let every = Duration::from_secs(args.otlp_export_interval.unwrap_or(60));
            match mount_s3::metrics::otlp::parse_endpoint(url, every) {
                Ok(target) => Some(target),
                Err(message) => {
                    fail(report, message);
                    return Err(());
                }
            }
        }
    };
    let sampling = args.metrics_address.is_some() || otlp.is_some() || log_metrics;
    let metrics = match sampling {
        false => None,
        true => {
            let _in_runtime = runtime.enter();
            match mount_s3::metrics::install(args.metrics_address, otlp) {
                Ok(handle) => Some(handle),
                Err(message) => {
                    fail(report, message);
                    return Err(());
                }
            }
        }
    };
    if let Some(address) = args.metrics_address {
        info!("metrics served at http://{address}/metrics");
    }
    if args.dispatch_threads() as u64 != args.max_threads {
        warn!(
            "--max-threads {} is served by {} dispatch threads (the most mount-s3 starts)",
            args.max_threads,
            args.dispatch_threads()
        );
    }
    for warning in &tuning.warnings {
        warn!("{warning}");
    }
    let mut fs_config = args.fs_config();
    fs_config.max_prefetch_window = tuning.max_prefetch_window;
    mount_s3::memory::pool::limit_idle(fs_config.memory_limit);
    if let Some(window) = tuning.max_prefetch_window {
        info!(
            "prefetch window at most {window} bytes (UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE)"
        );
    }
    let store = match runtime.block_on(connect(args, &fs_config.prefix)) {
        Ok(store) => store,
        Err(message) => {
            fail(report, message);
            return Err(());
        }
    };
    // The shared cache bucket: the same client (region, endpoint, credentials, headers),
    // another bucket; its blocks are checked on read, so it needs no deadline or health of
    // the source's (it has its own, shorter ones).
    let shared = args.shared_cache_config().map(|config| {
        let blocks: Arc<dyn BlockStore> = Arc::new(store.with_bucket(&config.bucket));
        info!(
            bucket = %config.bucket,
            max_object_size = config.max_object_size,
            block_size = config.block_size,
            "shared cache"
        );
        SharedCache::new(blocks, &config)
    });
    if let Some(shared) = &shared {
        shared.probe(runtime.handle());
    }
    let store = WithDeadline::new(store, Duration::from_secs(args.request_deadline));
    let store = WithHealth::new(store);
    // Handlers go in before the mount, so a signal during start-up still unmounts cleanly.
    // SIGTERM, SIGINT and SIGHUP unmount; SIGUSR2 cycles the log verbosity; SIGUSR1 logs a
    // status line (handles, inodes, memory, commits, tasks). (SIGPIPE is
    // ignored by the Rust runtime: a closed socket is an error, not a death.)
    let signals = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::user_defined2())?,
            signal(SignalKind::user_defined1())?,
        ))
    });
    let Ok((mut sigterm, mut sigint, mut sighup, mut sigusr2, mut sigusr1)) = signals else {
        fail(report, "cannot install signal handlers".to_string());
        return Err(());
    };
    let cache = match args.cache_config().map(DiskCache::open) {
        None => None,
        Some(Ok(cache)) => Some(Arc::new(cache)),
        Some(Err(e)) => {
            fail(report, e.to_string());
            return Err(());
        }
    };
    let staging = match args.staging_config().map(|c| StagingDir::open(&c)) {
        None => None,
        Some(Ok(area)) => {
            info!(dir = %area.shown(), max_bytes = area.max_bytes(), "staging area for writes");
            Some(Arc::new(area))
        }
        Some(Err(message)) => {
            fail(report, message);
            return Err(());
        }
    };
    let fs = Arc::new(
        S3Filesystem::with_cache(Arc::new(store), fs_config, cache)
            .with_shared_cache(shared)
            .with_staging(staging),
    );
    let metadata_disabled = std::env::var("AWS_EC2_METADATA_DISABLED").ok();
    mount_s3::throughput::apply_target(
        fs.get_slots().clone(),
        args.maximum_throughput_gbps,
        mount_s3::throughput::instance::metadata_disabled(metadata_disabled.as_deref()),
        runtime.handle(),
    );
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone())
        .with_queue(tuning.max_background, tuning.congestion_threshold);
    let mut mount = match LiveMount::start(adapter, &args.mount_point, &args.mount_config()) {
        Ok(mount) => mount,
        Err(e) => {
            let shown = args.mount_point.display();
            fail(report, format!("cannot mount at {shown}: {e}"));
            return Err(());
        }
    };
    info!(bucket = %args.bucket, mount_point = %args.mount_point.display(), "mounted");
    match report {
        Some(report) => report.ready(),
        None => println!("{mounted}"),
    }
    let signalled = runtime.block_on(async {
        // --log-metrics: the counters every 5 s (the first tick is at once: skipped).
        let mut metrics_tick = tokio::time::interval(METRICS_INTERVAL);
        metrics_tick.tick().await;
        // --metrics-address, --otlp-endpoint: the mount's own counters copied in.
        let mut sample_tick = tokio::time::interval(SAMPLE_INTERVAL);
        loop {
            tokio::select! {
                _ = sigterm.recv() => break Some("SIGTERM"),
                _ = sigint.recv() => break Some("SIGINT"),
                _ = sighup.recv() => break Some("SIGHUP"),
                _ = sigusr2.recv() => {
                    let level = log_control.cycle();
                    info!("SIGUSR2 received: log verbosity is now {level}");
                }
                _ = sigusr1.recv() => info!(
                    alive_tasks = runtime.metrics().num_alive_tasks(),
                    "status: {}",
                    fs.status()
                ),
                _ = metrics_tick.tick(), if log_metrics => {
                    info!(
                        alive_tasks = runtime.metrics().num_alive_tasks(),
                        "status: {}",
                        fs.status()
                    );
                    if let Some(handle) = &metrics {
                        handle.run_upkeep();
                        for line in mount_s3::metrics::log_lines(&handle.render()) {
                            info!("metrics: {line}");
                        }
                    }
                }
                _ = sample_tick.tick(), if sampling => mount_s3::metrics::sample(&fs),
                _ = &mut mount.ended => break None,
            }
        }
    });
    if let Some(name) = signalled {
        info!("{name} received, unmounting");
        if let Err(e) = mount.unmount() {
            error!("unmount failed: {e}");
        }
    }
    let result = match mount.join() {
        // After our own unmount the kernel closes the connection; a reader can see that as
        // ECONNABORTED rather than ENODEV (seen once in CI on 6.18 under a full test run).
        Err(e) if signalled.is_some() && e.raw_os_error() == Some(libc::ECONNABORTED) => {
            info!("FUSE connection closed after the unmount ({e})");
            Ok(())
        }
        other => other,
    };
    // Commits that were running when the kernel let go finish (each request within its
    // deadline); uploads of files still open are aborted; what did not land is named.
    let wait = Duration::from_secs(args.request_deadline).saturating_mul(2);
    let writes = runtime.block_on(fs.shutdown(wait));
    if let Some(cache) = fs.cache() {
        // A copy being written finishes (it is bounded by one object's size); one cut short
        // would be thrown away at the next mount.
        let pending = cache.pending_copies();
        if pending > 0 {
            info!(pending, "finishing whole-object copies before exit");
        }
        let unfinished = cache.wait_for_copies(Duration::from_secs(300));
        if unfinished > 0 {
            warn!(
                unfinished,
                "whole-object copies still being written are dropped"
            );
        }
        info!(
            "cache summary: {} bytes={}",
            cache.counters.snapshot(),
            cache.used()
        );
    }
    if let Some(shared) = fs.shared_cache() {
        info!("shared cache summary: {}", shared.counters().snapshot());
    }
    info!(
        open_handles = fs.open_handles(),
        alive_tasks = runtime.metrics().num_alive_tasks(),
        peak_prefetch_bytes = fs.budget().peak(),
        "unmounted; read summary: {}",
        fs.counters()
    );
    if !writes.is_clean() {
        error!(
            not_landed = writes.not_landed.len(),
            uploads_left_behind = writes.left_behind.len(),
            commits_unfinished = writes.unfinished,
            "the mount ended with written files that did not land (each named above)"
        );
        return Err(());
    }
    result.map_err(|e| error!("FUSE session ended with an error: {e}"))
}

/// Prefetch parts (up to 64 MiB) are allocated and freed all the time. glibc serves buffers
/// that large with a fresh mmap each, so every part paid page faults and zeroing for all its
/// pages: measured about 1 s of mount-s3 CPU per 2 GiB read sequentially (3.4 s → 2.3 s, on
/// the 2-core bench machine). Served from the heap, freed parts are reused; the memory
/// budget bounds how much is live. One arena: the runtime's threads otherwise get arenas of
/// their own, whose heaps are mmap'd 64 MiB at a time and given back as parts come and go,
/// so the faults came back (A/B with `MALLOC_ARENA_MAX=1`, 2-core bench machine: minor faults
/// per 2 GiB read 145k → 47k, mount-s3 CPU 2.27 → 1.82 s, one reader 420 → 500 MiB/s, four
/// readers 360/477 → 433/515 MiB/s). Small allocations stay in per-thread caches (tcache).
/// Other allocators ignore all this.
fn keep_large_buffers_in_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// What a successful mount prints on stdout, as Mountpoint does.
fn mounted_line(args: &Args) -> String {
    let prefix = match args.prefix.as_deref() {
        Some(p) if !p.is_empty() => format!(" with prefix {p}"),
        _ => String::new(),
    };
    logging::one_line(&format!(
        "bucket {}{prefix} is mounted at {}",
        args.bucket,
        args.mount_point.display()
    ))
}

/// Builds the S3 client and proves it with one listing. As Mountpoint does, a bucket that
/// answers from another region than an inferred one (no `--region`, no `AWS_REGION`) is
/// followed there, with a warning; a region the user gave is not second-guessed.
async fn connect(args: &Args, prefix: &str) -> Result<SdkStore, String> {
    let mut config = args.s3_config();
    let store = SdkStore::new(&config).await?;
    let region = match check_bucket(&store, args, prefix).await {
        Ok(()) => return Ok(store),
        Err(Err(message)) => return Err(message),
        Err(Ok(region)) if Some(region.as_str()) == store.region() => {
            return Err(format!(
                "bucket '{}' answers that it is in region {region}, the region its requests are signed for; check --endpoint-url and the credentials",
                args.bucket
            ));
        }
        Err(Ok(region)) if region_given(args) => {
            return Err(format!(
                "bucket '{}' is in region {region}, not in the one given (--region, AWS_REGION)",
                args.bucket
            ));
        }
        Err(Ok(region)) => region,
    };
    warn!(
        "bucket {} is in region {region}, not {}; following it there",
        args.bucket,
        store.region().unwrap_or("the default region")
    );
    config.region = Some(region.clone());
    let store = SdkStore::new(&config).await?;
    match check_bucket(&store, args, prefix).await {
        Ok(()) => Ok(store),
        Err(Err(message)) => Err(message),
        Err(Ok(again)) => Err(format!(
            "bucket '{}' redirected from region {region} to {again}; check --endpoint-url",
            args.bucket
        )),
    }
}

/// Whether the user chose the region (`--region`, or the SDK's region variables).
fn region_given(args: &Args) -> bool {
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    args.region.is_some() || set("AWS_REGION") || set("AWS_DEFAULT_REGION")
}

/// One cheap listing proves the endpoint, the credentials and the bucket before mounting.
/// `Err(Ok(region))`: the bucket answered from that other region; `Err(Err(message))`: any
/// other failure, as one line for the user.
async fn check_bucket(
    store: &impl ObjectStore,
    args: &Args,
    prefix: &str,
) -> Result<(), Result<String, String>> {
    let bucket = &args.bucket;
    let listed =
        tokio::time::timeout(STARTUP_CHECK_TIMEOUT, store.list(prefix, true, None, 1)).await;
    let where_ = args.endpoint_url.as_deref().unwrap_or("S3");
    let failed = match listed {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(S3Error::WrongRegion(region))) => return Err(Ok(region)),
        Err(_) => Err(format!(
            "no answer from {where_} within {}s; check --endpoint-url, --region and the network",
            STARTUP_CHECK_TIMEOUT.as_secs()
        )),
        Ok(Err(S3Error::NoSuchBucket | S3Error::NotFound)) => {
            Err(format!("bucket '{bucket}' does not exist at {where_}"))
        }
        Ok(Err(S3Error::AccessDenied(code))) => Err(format!(
            "access to bucket '{bucket}' denied ({code}); check the credentials and their permissions"
        )),
        Ok(Err(S3Error::Network(detail))) => Err(format!(
            "cannot list bucket '{bucket}' at {where_}: {}",
            detail.replace('\n', " ")
        )),
        Ok(Err(other)) => Err(format!("cannot list bucket '{bucket}': {other}")),
    };
    failed.map_err(Err)
}

/// The environment as text (`vars_os`: `vars` panics on a variable that is not UTF-8).
fn environment() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().map(|(name, value)| {
        (
            name.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )
    })
}

/// clap's error as one line: its first line, with the indented lines that continue it (the
/// arguments "the following required arguments were not provided:" names), without `error: `.
fn first_paragraph(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let mut text = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    for more in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
        text.push(' ');
        text.push_str(more.trim());
    }
    text
}
