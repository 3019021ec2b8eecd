//! Where log lines go, as Mountpoint sends them: a file in `--log-directory` ([`file`]) or
//! else the system log ([`syslog`]), and in the foreground stdout as well. `--debug` adds one
//! line per S3 request; `MOUNTPOINT_LOG` replaces the default filter; SIGUSR2 cycles the
//! verbosity while the mount runs ([`LogControl::cycle`]). The SDK's own logs stay at `info`
//! unless `--debug-crt` or `MOUNTPOINT_LOG` asks for more, and whatever either asks,
//! [`secrets::may_carry_secrets`] drops the signer's debug lines and every HTTP-stack `trace`
//! line, so request headers (and their signatures and tokens) never reach a log. `--no-log`
//! turns everything off. Every event is one line with its control characters escaped
//! ([`escape`]): a hostile key cannot forge a line.

mod escape;
mod file;
mod secrets;
mod syslog;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use escape::Escaping;
pub use escape::one_line;
use syslog::SyslogWriter;

/// The variable whose filter replaces the default one, as Mountpoint's.
pub const FILTER_VARIABLE: &str = "MOUNTPOINT_LOG";

/// Where to send logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSink<'a> {
    /// A new file in this directory (`--log-directory`); the system log when `None`.
    pub directory: Option<&'a Path>,
    /// Every line on stdout too (the foreground).
    pub stdout: bool,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Nothing at all (`--no-log`); SIGUSR2 changes nothing.
    pub off: bool,
    /// Start at the debug verbosity (`--debug`).
    pub debug: bool,
    /// Add the SDK's debug lines (`--debug-crt`).
    pub sdk_debug: bool,
    /// Log the counters every 5 s (`--log-metrics`); `main` runs the timer.
    pub metrics: bool,
    /// `MOUNTPOINT_LOG`'s value, which replaces the starting verbosity's filter (`--debug`'s
    /// too, as in Mountpoint).
    pub env_filter: Option<String>,
}

/// The filter of verbosity `level`, and a warning when `MOUNTPOINT_LOG` could not be used.
fn filter(level: usize, options: &LogOptions) -> (EnvFilter, Option<String>) {
    if options.off {
        return (EnvFilter::new("off"), None);
    }
    let level = level % LEVELS.len();
    let mut warning = None;
    let starting = level == usize::from(options.debug);
    if let (true, Some(directives)) = (starting, &options.env_filter) {
        match EnvFilter::builder().parse(directives) {
            Ok(filter) => return (filter, None),
            Err(e) => {
                warning = Some(format!(
                    "{FILTER_VARIABLE} is not a valid filter ({e}); using the default"
                ))
            }
        }
    }
    let mut directives = LEVELS[level].1.to_string();
    if options.sdk_debug {
        directives.push_str(SDK_DEBUG);
    }
    (EnvFilter::new(directives), warning)
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
        if let Err(e) = self.handle.reload(filter(next, &self.options).0) {
            tracing::warn!("cannot change the log verbosity: {e}");
        }
        LEVELS[next].0
    }
}

/// Installs the global subscriber. Returns the log file's path when one was created, and the
/// control of its verbosity.
pub fn init(sink: LogSink<'_>, options: LogOptions) -> io::Result<(Option<PathBuf>, LogControl)> {
    let level = usize::from(options.debug);
    let (first, warning) = filter(level, &options);
    let (filter, handle) = reload::Layer::new(first);
    let registry =
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::filter::filter_fn(|meta| {
                !secrets::may_carry_secrets(meta)
            }));
    let file = match sink.directory {
        Some(dir) => Some(file::create_log_file(dir, std::time::SystemTime::now())?),
        None => None,
    };
    let path = file.as_ref().map(|(path, _)| path.clone());
    let syslog = (sink.directory.is_none() && !options.off).then(SyslogWriter::open);
    registry
        .with(file.map(|(_, log)| {
            fmt::layer()
                .with_ansi(false)
                .with_writer(Escaping::new(Mutex::new(log)))
        }))
        .with(syslog.map(|writer| {
            fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(Escaping::new(writer))
        }))
        .with(sink.stdout.then(|| {
            fmt::layer()
                .with_ansi(false)
                .with_writer(Escaping::new(io::stdout))
        }))
        .try_init()
        .map_err(io::Error::other)?;
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    Ok((
        path,
        LogControl {
            handle,
            level: AtomicUsize::new(level),
            options,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoint_log_replaces_only_the_starting_verbosity() {
        let options = LogOptions {
            env_filter: Some("mount_s3=trace".into()),
            ..LogOptions::default()
        };
        let (normal, warning) = filter(0, &options);
        assert_eq!(normal.to_string(), "mount_s3=trace");
        assert_eq!(warning, None);
        let (debug, _) = filter(1, &options);
        assert_eq!(debug.to_string(), EnvFilter::new(LEVELS[1].1).to_string());
    }

    #[test]
    fn an_invalid_mountpoint_log_falls_back_with_a_warning() {
        let options = LogOptions {
            env_filter: Some("mount_s3=loud".into()),
            ..LogOptions::default()
        };
        let (normal, warning) = filter(0, &options);
        assert_eq!(normal.to_string(), EnvFilter::new(LEVELS[0].1).to_string());
        assert!(warning.unwrap().contains(FILTER_VARIABLE));
    }

    #[test]
    fn no_log_wins_over_mountpoint_log() {
        let options = LogOptions {
            off: true,
            env_filter: Some("trace".into()),
            ..LogOptions::default()
        };
        assert_eq!(filter(0, &options).0.to_string(), "off");
    }
}
