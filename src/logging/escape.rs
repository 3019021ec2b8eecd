//! One event, one line, nothing a key can forge: every formatted event is written through
//! [`Escaping`], which turns control characters (newlines inside a message, ESC, DEL...) into
//! visible escapes, so that a hostile object key put into a log line by an error message can
//! neither start a fake log line nor drive a terminal.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// A [`MakeWriter`] whose events are escaped before they reach `inner`.
#[derive(Debug)]
pub struct Escaping<M> {
    inner: M,
}

impl<M> Escaping<M> {
    /// Escapes every event written to `inner`.
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapedEvent<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapedEvent {
            text: Vec::new(),
            out: self.inner.make_writer(),
        }
    }

    /// Forwarded, so a writer that depends on the event (syslog's severity) still sees it.
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EscapedEvent {
            text: Vec::new(),
            out: self.inner.make_writer_for(meta),
        }
    }
}

/// One event's text, escaped and written in one piece when the formatter is done with it.
#[derive(Debug)]
pub struct EscapedEvent<W: Write> {
    text: Vec<u8>,
    out: W,
}

impl<W: Write> Write for EscapedEvent<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for EscapedEvent<W> {
    fn drop(&mut self) {
        let line = escape_line(&self.text);
        let _ = self.out.write_all(&line);
        let _ = self.out.flush();
    }
}

/// `text` as one line for a terminal: every control character (a newline too) escaped.
pub fn one_line(text: &str) -> String {
    String::from_utf8_lossy(&escape_line(text.trim_end_matches('\n').as_bytes())).into_owned()
}

/// `text` with every control character but a final newline written as `\n`, `\t`, `\r` or
/// `\xNN`.
pub fn escape_line(text: &[u8]) -> Vec<u8> {
    let (body, newline) = match text.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let mut out = Vec::with_capacity(text.len() + 8);
    for &byte in body {
        match byte {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..0x20 | 0x7f => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    if newline {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines_or_drive_terminals() {
        let hostile = b"GET of evil\n2026-01-01 INFO mounted\x1b[31mred\x07\x7f ok\n";
        let line = escape_line(hostile);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "GET of evil\\n2026-01-01 INFO mounted\\x1b[31mred\\x07\\x7f ok\n"
        );
        assert_eq!(escape_line(b"plain \xc3\xbc\n"), b"plain \xc3\xbc\n");
        assert_eq!(escape_line(b"no newline\r"), b"no newline\\r");
    }
}
