//! A small `log` backend shared by gvproxy and gvforwarder: one line per record in
//! logrus's text shape (`time="..." level=info msg="..."`), to stderr or to a file,
//! never to stdout (stdout carries frames in stdio mode).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

enum Sink {
    Stderr,
    File(Mutex<File>),
}

struct Logger {
    sink: Sink,
    level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let line = format!(
            "time=\"{}\" level={} msg={:?}\n",
            timestamp(),
            level,
            record.args().to_string()
        );
        // A log line that cannot be written is dropped: logging must never stop the data path.
        match &self.sink {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. `file`: create/truncate that file and log there instead of stderr.
pub fn init(debug: bool, file: Option<&Path>) -> std::io::Result<()> {
    let sink = match file {
        Some(p) => Sink::File(Mutex::new(File::create(p)?)),
        None => Sink::Stderr,
    };
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    // A second init (tests) keeps the first logger.
    let logger: &'static Logger = Box::leak(Box::new(Logger { sink, level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    Ok(())
}

/// UTC time as RFC 3339 with seconds, without pulling in a date crate.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_485), (2026, 2, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
