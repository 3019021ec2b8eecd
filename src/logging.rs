//! Where log lines go: stderr in the foreground, syslog in the background, or a file in
//! `--log-directory`. `--debug` adds one line per S3 request. The SDK's own logs stay at
//! `info` even then, so request headers (and their signatures) never reach a log.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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

/// The filter for the given verbosity.
fn filter(debug: bool) -> EnvFilter {
    let spec = if debug {
        "info,mount_s3=debug,fuser=info"
    } else {
        "warn,mount_s3=info"
    };
    EnvFilter::new(spec)
}

/// Installs the global subscriber. Returns the log file's path when one was created.
pub fn init(target: LogTarget<'_>, debug: bool) -> io::Result<Option<std::path::PathBuf>> {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(debug));
    match target {
        LogTarget::Stderr => {
            builder
                .with_ansi(io::stderr().is_terminal())
                .with_writer(io::stderr)
                .init();
            Ok(None)
        }
        LogTarget::Syslog => {
            builder
                .with_ansi(false)
                .without_time()
                .with_writer(SyslogWriter::open())
                .init();
            Ok(None)
        }
        LogTarget::Directory(dir) => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let path = dir.join(format!("mount-s3-{stamp}-{}.log", std::process::id()));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .init();
            Ok(Some(path))
        }
    }
}

/// Sends each formatted event to syslog(3) as one message.
#[derive(Debug, Clone, Copy)]
struct SyslogWriter;

impl SyslogWriter {
    fn open() -> Self {
        static IDENT: &std::ffi::CStr = c"mount-s3";
        // SAFETY: IDENT is a static NUL-terminated string that outlives every syslog call.
        unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        SyslogWriter
    }
}

/// One event's text, sent to syslog when the formatter drops it.
#[derive(Debug, Default)]
struct SyslogLine(Vec<u8>);

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text: Vec<u8> = self.0.iter().copied().filter(|&b| b != 0).collect();
        let text = String::from_utf8_lossy(&text);
        let Ok(line) = std::ffi::CString::new(text.trim_end()) else {
            return;
        };
        // SAFETY: both strings are NUL-terminated and live across the call; "%s" takes one.
        unsafe { libc::syslog(libc::LOG_INFO, c"%s".as_ptr(), line.as_ptr()) };
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine::default()
    }
}
