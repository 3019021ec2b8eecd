//! The system log: each formatted event becomes one syslog(3) message.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Sends each formatted event to syslog(3) as one message.
#[derive(Debug, Clone, Copy)]
pub struct SyslogWriter;

impl SyslogWriter {
    pub(super) fn open() -> Self {
        static IDENT: &std::ffi::CStr = c"mount-s3";
        // SAFETY: IDENT is a static NUL-terminated string that outlives every syslog call.
        unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        SyslogWriter
    }
}

/// One event's text, sent to syslog when the formatter drops it.
#[derive(Debug, Default)]
pub struct SyslogLine(Vec<u8>);

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
