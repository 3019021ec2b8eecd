//! Where log lines go: stderr in the foreground, syslog in the background, or a file in
//! `--log-directory` ([`file`]). `--debug` adds one line per S3 request; SIGUSR2 cycles the
//! verbosity while the mount runs ([`LogControl::cycle`]). The SDK's own logs stay at `info`
//! at every verbosity, so request headers (and their signatures) never reach a log. Every
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

fn filter(level: usize) -> EnvFilter {
    EnvFilter::new(LEVELS[level % LEVELS.len()].1)
}

/// Changes the verbosity of the running mount.
#[derive(Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    level: AtomicUsize,
}

impl LogControl {
    /// Moves to the next verbosity (normal → debug → trace → normal) and returns its name.
    pub fn cycle(&self) -> &'static str {
        let next = (self.level.load(Ordering::Relaxed) + 1) % LEVELS.len();
        self.level.store(next, Ordering::Relaxed);
        if let Err(e) = self.handle.reload(filter(next)) {
            tracing::warn!("cannot change the log verbosity: {e}");
        }
        LEVELS[next].0
    }
}

/// Installs the global subscriber. Returns the log file's path when one was created, and the
/// control of its verbosity.
pub fn init(
    target: LogTarget<'_>,
    debug: bool,
) -> io::Result<(Option<std::path::PathBuf>, LogControl)> {
    let level = usize::from(debug);
    let (filter, handle) = reload::Layer::new(filter(level));
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
        },
    ))
}
