//! Where log lines go: stderr in the foreground, syslog in the background, or a file in
//! `--log-directory` ([`file`]). `--debug` adds one line per S3 request; SIGUSR2 cycles the
//! verbosity while the mount runs ([`LogControl::cycle`]). The SDK's own logs stay at `info`
//! at every verbosity unless `--debug-crt` asks for their debug lines, and even then the
//! signer stays at `info` and nothing reaches `trace`, so request headers (and their
//! signatures and tokens) never reach a log. `--no-log` turns everything off. Every
//! event is one line with its control characters escaped ([`escape`]): a hostile key cannot
//! forge a line.

mod escape;
mod file;
mod syslog;

use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use escape::Escaping;
pub use escape::one_line;
use syslog::SyslogWriter;

/// Where to send logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget<'a> {
    /// Standard error (foreground).
    Stderr,
    /// The system log (background without `--log-directory`).
    Syslog,
    /// A new file in this directory.
    Directory(&'a Path),
}

/// The verbosities SIGUSR2 cycles through, each a filter; the second is `--debug`'s.
const LEVELS: [(&str, &str); 3] = [
    ("normal", "warn,mount_s3=info"),
    ("debug", "info,mount_s3=debug,fuser=info"),
    ("trace", "info,mount_s3=trace,fuser=debug"),
];

/// With `--debug-crt`: the SDK's and the HTTP stack's debug lines. The signer stays at
/// `info` (its debug lines carry the canonical request, session token included), and no SDK
/// crate ever goes to `trace` (which prints whole requests).
const SDK_DEBUG: &str = ",aws_smithy_runtime=debug,aws_smithy_http_client=debug,aws_config=debug,aws_sdk_s3=debug,aws_sdk_sts=debug,hyper_util=debug,aws_sigv4=info,aws_smithy_runtime_api=info";

/// What the log shows, from `--no-log`, `--debug`, `--debug-crt` and `--log-metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Nothing at all (`--no-log`); SIGUSR2 changes nothing.
    pub off: bool,
    /// Start at the debug verbosity (`--debug`).
    pub debug: bool,
    /// Add the SDK's debug lines (`--debug-crt`).
    pub sdk_debug: bool,
    /// Log the counters every 5 s (`--log-metrics`); `main` runs the timer.
    pub metrics: bool,
}

fn filter(level: usize, options: LogOptions) -> EnvFilter {
    if options.off {
        return EnvFilter::new("off");
    }
    let mut directives = LEVELS[level % LEVELS.len()].1.to_string();
    if options.sdk_debug {
        directives.push_str(SDK_DEBUG);
    }
    EnvFilter::new(directives)
}

/// Changes the verbosity of the running mount.
#[derive(Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    level: AtomicUsize,
    options: LogOptions,
}

impl LogControl {
    /// Moves to the next verbosity (normal → debug → trace → normal) and returns its name.
    pub fn cycle(&self) -> &'static str {
        let next = (self.level.load(Ordering::Relaxed) + 1) % LEVELS.len();
        self.level.store(next, Ordering::Relaxed);
        if self.options.off {
            return "off";
        }
        if let Err(e) = self.handle.reload(filter(next, self.options)) {
            tracing::warn!("cannot change the log verbosity: {e}");
        }
        LEVELS[next].0
    }
}

/// Installs the global subscriber. Returns the log file's path when one was created, and the
/// control of its verbosity.
pub fn init(
    target: LogTarget<'_>,
    options: LogOptions,
) -> io::Result<(Option<std::path::PathBuf>, LogControl)> {
    let level = usize::from(options.debug);
    let (filter, handle) = reload::Layer::new(filter(level, options));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_ansi(false);
    let installed = match target {
        LogTarget::Stderr => {
            let path = None;
            registry
                .with(layer.with_writer(Escaping::new(io::stderr)))
                .try_init()
                .map(|()| path)
        }
        LogTarget::Syslog => registry
            .with(
                layer
                    .without_time()
                    .with_writer(Escaping::new(SyslogWriter::open())),
            )
            .try_init()
            .map(|()| None),
        LogTarget::Directory(dir) => {
            let (path, log) = file::create_log_file(dir, std::time::SystemTime::now())?;
            registry
                .with(layer.with_writer(Escaping::new(Mutex::new(log))))
                .try_init()
                .map(|()| Some(path))
        }
    };
    let path = installed.map_err(io::Error::other)?;
    Ok((
        path,
        LogControl {
            handle,
            level: AtomicUsize::new(level),
            options,
        },
    ))
}
