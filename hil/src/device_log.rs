//! The device's log: defmt frames decoded against the ELF's table, or plain text lines.

use std::fmt;

use defmt_decoder::{DecodeError, Table};
use defmt_parser::Level;

/// One decoded defmt frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The frame's level; `None` for `defmt::println!`.
    pub level: Option<Level>,
    /// The formatted message, without level, timestamp or location.
    pub message: String,
}

impl fmt::Display for LogLine {
    /// `LEVEL message`, with the message's continuation lines indented under its first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = self.level.map_or("", Level::as_str).to_ascii_uppercase();
        write!(f, "{level:<5} ")?;
        for (i, line) in self.message.split('\n').enumerate() {
            if i > 0 {
                f.write_str("\n      ")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// One message per line of a text log; a leading `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`
/// (as `probe-rs run --log-format "{L} {s}"` prints) becomes the line's level.
pub(crate) fn text_lines(bytes: &[u8]) -> Vec<LogLine> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
            let level = match first {
                "TRACE" => Some(Level::Trace),
                "DEBUG" => Some(Level::Debug),
                "INFO" => Some(Level::Info),
                "WARN" => Some(Level::Warn),
                "ERROR" => Some(Level::Error),
                _ => None,
            };
            match level {
                Some(level) => LogLine {
                    level: Some(level),
                    message: rest.trim_start().to_owned(),
                },
                None => LogLine {
                    level: line.starts_with("error:").then_some(Level::Error),
                    message: line.to_owned(),
                },
            }
        })
        .collect()
}

/// Decodes a stream of defmt frames. Returns the frames and how many were malformed; each
/// malformed frame appears in the log as an error line. An incomplete frame at the end (the
/// device was killed mid-frame) is dropped.
pub(crate) fn decode(table: &Table, bytes: &[u8]) -> (Vec<LogLine>, usize) {
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut log = Vec::new();
    let mut malformed = 0;
    loop {
        match decoder.decode() {
            Ok(frame) => log.push(LogLine {
                level: frame.level(),
                message: frame.display_message().to_string(),
            }),
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) => {
                malformed += 1;
                log.push(LogLine {
                    level: Some(Level::Error),
                    message: "<malformed defmt frame>".into(),
                });
                // Without framing (raw encoding) there is no way to find the next frame.
                if !table.encoding().can_recover() {
                    break;
                }
            }
        }
    }
    (log, malformed)
}
