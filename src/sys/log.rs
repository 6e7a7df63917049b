//! Structured logs: one `key=value` line per event on stderr.
//!
//! Values that come from clients go through [`Quoted`], which escapes every
//! byte outside printable ASCII, so no request can split or forge a line.

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something an operator should look at.
    Warn = 1,
    /// Lifecycle and operator-worthy events.
    Info = 2,
    /// Per-connection detail.
    Debug = 3,
}

impl Level {
    /// Parses `error`, `warn`, `info` or `debug`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most verbose level that is written.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether `level` is written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line: `ts=… level=… event=… k=v …`, in a single write.
pub fn emit(level: Level, event: &str, fields: &[(&str, &dyn Display)]) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(128);
    let _ = write!(
        line,
        "ts={} level={} event={}",
        Timestamp(SystemTime::now()),
        level.name(),
        event
    );
    for (key, value) in fields {
        let _ = write!(line, " {key}=");
        let start = line.len();
        let _ = write!(line, "{value}");
        // Values we format ourselves are plain; quote any that are not.
        if line[start..].is_empty() || line[start..].bytes().any(|b| !is_plain(b)) {
            let raw = line.split_off(start);
            let _ = write!(line, "{}", Quoted(raw.as_bytes()));
        }
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'='
}

/// Client-supplied bytes, shown quoted with `\"`, `\\` and `\xNN` escapes.
pub struct Quoted<'a>(pub &'a [u8]);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for &b in self.0.iter().take(256) {
            match b {
                b'"' => f.write_str("\\\"")?,
                b'\\' => f.write_str("\\\\")?,
                0x20..=0x7e => f.write_char(b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        if self.0.len() > 256 {
            f.write_str("...")?;
        }
        f.write_char('"')
    }
}

/// RFC 3339 UTC with milliseconds.
struct Timestamp(SystemTime);

impl Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86400, secs % 86400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            d.subsec_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quoting_cannot_split_a_line() {
        let q = Quoted(b"1.2.3.4\r\nts=forged level=error \"x\" \\ \xff").to_string();
        assert_eq!(q, r#""1.2.3.4\x0d\x0ats=forged level=error \"x\" \\ \xff""#);
        assert!(!q.contains('\n'));
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(Timestamp(t).to_string(), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            Timestamp(UNIX_EPOCH).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
