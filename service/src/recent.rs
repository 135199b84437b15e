//! The last log lines of a process, kept in memory for its web console (seed 001's
//! `/view-logs`): a `tracing` layer beside the stderr one, so the console shows what the
//! log says, filtered the same way (`RUST_LOG`).
//!
//! At most [`MAX_RECENT_LINES`] lines of at most [`MAX_LINE_BYTES`] each are kept (the
//! oldest go first), so a chatty process holds a few hundred KiB at most. Every line has a
//! sequence number, so a page that polls asks only for the lines after the last it has.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

/// Most lines kept.
pub const MAX_RECENT_LINES: usize = 1000;
/// Longest line kept, in bytes (longer ones are cut, and end with `…`).
pub const MAX_LINE_BYTES: usize = 2048;
/// Most lines one [`lines_after`] returns.
pub const MAX_LINES_PER_ASK: usize = 500;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Increases by one per line, from 1.
    pub seq: u64,
    /// Wall clock, Unix milliseconds.
    pub unix_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    /// The message, then its fields as `name=value`.
    pub text: String,
}

#[derive(Debug, Default)]
struct Recent {
    lines: VecDeque<LogLine>,
    next_seq: u64,
}

fn recent() -> &'static Mutex<Recent> {
    static RECENT: OnceLock<Mutex<Recent>> = OnceLock::new();
    RECENT.get_or_init(|| {
        Mutex::new(Recent {
            lines: VecDeque::with_capacity(MAX_RECENT_LINES),
            next_seq: 1,
        })
    })
}

/// The kept lines whose `seq` is above `after`, oldest first, at most
/// [`MAX_LINES_PER_ASK`] (the newest of them).
pub fn lines_after(after: u64) -> Vec<LogLine> {
    let Ok(recent) = recent().lock() else {
        return Vec::new();
    };
    let newer = recent.lines.iter().filter(|l| l.seq > after);
    let count = newer.clone().count();
    newer
        .skip(count.saturating_sub(MAX_LINES_PER_ASK))
        .cloned()
        .collect()
}

/// The `seq` the next line will get: a reader that has seen a higher one is reading a
/// process that restarted since.
pub fn next_seq() -> u64 {
    recent().lock().map_or(1, |recent| recent.next_seq)
}

/// Keeps a line (the layer calls it; tests too).
pub fn keep(level: &'static str, target: &str, text: String) {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let Ok(mut recent) = recent().lock() else {
        return;
    };
    let seq = recent.next_seq;
    recent.next_seq += 1;
    if recent.lines.len() >= MAX_RECENT_LINES {
        recent.lines.pop_front();
    }
    recent.lines.push_back(LogLine {
        seq,
        unix_ms,
        level,
        target: target.to_owned(),
        text: cut(text),
    });
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The `tracing` layer that keeps lines ([`crate::init_logging`] installs it).
#[derive(Debug, Default, Clone, Copy)]
pub struct RecentLines;

impl<S: Subscriber> tracing_subscriber::Layer<S> for RecentLines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        let mut line = text.message;
        if !text.fields.is_empty() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&text.fields);
        }
        let metadata = event.metadata();
        keep(metadata.level().as_str(), metadata.target(), line);
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

impl Text {
    fn field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        // Stop collecting long before a runaway field costs much: the line is cut anyway.
        if self.fields.len() > MAX_LINE_BYTES {
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_bounded_and_cut() {
        let before = lines_after(0).last().map_or(0, |l| l.seq);
        for i in 0..MAX_RECENT_LINES + 5 {
            keep("INFO", "t", format!("line {i}"));
        }
        keep("WARN", "t", "é".repeat(MAX_LINE_BYTES));
        let all = lines_after(before);
        assert_eq!(all.len(), MAX_LINES_PER_ASK);
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let last = all.last().unwrap();
        assert_eq!(last.level, "WARN");
        assert!(last.text.len() <= MAX_LINE_BYTES && last.text.ends_with('…'));
        assert!(lines_after(last.seq).is_empty());
        assert_eq!(next_seq(), last.seq + 1);
        assert_eq!(lines_after(last.seq - 1).len(), 1);
    }
}
