//! The system log, as Mountpoint writes to it: ident `mount-s3` with the pid, facility
//! `user`, and each event's level as its severity. Each formatted event becomes one syslog(3)
//! message.

use std::io::{self, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Sends each formatted event to syslog(3) as one message.
#[derive(Debug, Clone, Copy)]
pub struct SyslogWriter;

impl SyslogWriter {
    pub(super) fn open() -> Self {
        static IDENT: &std::ffi::CStr = c"mount-s3";
        // SAFETY: IDENT is a static NUL-terminated string that outlives every syslog call.
        unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_USER) };
        SyslogWriter
    }
}

/// The syslog severity of an event's level (TRACE has none of its own: debug, as Mountpoint).
pub fn severity(level: &Level) -> libc::c_int {
    match *level {
        Level::ERROR => libc::LOG_ERR,
        Level::WARN => libc::LOG_WARNING,
        Level::INFO => libc::LOG_INFO,
        _ => libc::LOG_DEBUG,
    }
}

/// One event's text, sent to syslog with its severity when the formatter drops it.
#[derive(Debug)]
pub struct SyslogLine {
    text: Vec<u8>,
    severity: libc::c_int,
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text: Vec<u8> = self.text.iter().copied().filter(|&b| b != 0).collect();
        let text = String::from_utf8_lossy(&text);
        let Ok(line) = std::ffi::CString::new(text.trim_end()) else {
            return;
        };
        // SAFETY: both strings are NUL-terminated and live across the call; "%s" takes one.
        unsafe { libc::syslog(self.severity, c"%s".as_ptr(), line.as_ptr()) };
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            text: Vec::new(),
            severity: libc::LOG_INFO,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SyslogLine {
            text: Vec::new(),
            severity: severity(meta.level()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_mountpoints_severities() {
        let map = [
            (Level::ERROR, libc::LOG_ERR),
            (Level::WARN, libc::LOG_WARNING),
            (Level::INFO, libc::LOG_INFO),
            (Level::DEBUG, libc::LOG_DEBUG),
            (Level::TRACE, libc::LOG_DEBUG),
        ];
        for (level, expected) in map {
            assert_eq!(severity(&level), expected, "{level}");
        }
    }
}
