//! Reading a request CSV: `arrival_time, request_max_delay, priority, key,
//! value`, in any column order, one request per row.
//!
//! Rows are read one at a time, never all at once. Every problem is
//! reported with its line and column, e.g.
//! `line 7, column arrival_time: cannot parse "yesterday" as an ISO-8601 date-time`.

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};

use crate::request_meta::Priority;

/// A request CSV that cannot be read, with its line and column.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CsvError(pub String);

macro_rules! csv_error {
    ($($arg:tt)*) => { CsvError(format!($($arg)*)) };
}

type Result<T> = std::result::Result<T, CsvError>;

pub const COLUMNS: [&str; 5] = [
    "arrival_time",
    "request_max_delay",
    "priority",
    "key",
    "value",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    /// Unix milliseconds (a zone-less time is taken as UTC; only offsets
    /// between rows matter).
    pub arrival_ms: i64,
    pub max_delay_ms: u64,
    pub priority: Priority,
    pub key: String,
    pub value: String,
}

pub struct Rows<R> {
    reader: csv::Reader<R>,
    index: [usize; 5],
    record: csv::StringRecord,
}

impl Rows<std::fs::File> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| csv_error!("cannot open {}: {e}", path.display()))?;
        Rows::from_reader(file)
    }
}

impl<R: Read> Rows<R> {
    /// Reads the header from `input`; rows follow with [`Rows::next_row`].
    pub fn from_reader(input: R) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| csv_error!("line 1: cannot read the header: {e}"))?
            .clone();
        let mut index = [0; 5];
        for (i, name) in COLUMNS.iter().enumerate() {
            index[i] = headers
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    csv_error!(
                        "line 1, column {name}: missing column (the header must name {})",
                        COLUMNS.join(", ")
                    )
                })?;
        }
        Ok(Rows {
            reader,
            index,
            record: csv::StringRecord::new(),
        })
    }

    /// The next row, or None at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        let more = self.reader.read_record(&mut self.record).map_err(|e| {
            csv_error!(
                "{}: {e}",
                e.position()
                    .map_or("line ?".into(), |p| format!("line {}", p.line()))
            )
        })?;
        if !more {
            return Ok(None);
        }
        let line = self.record.position().map_or(0, |p| p.line());
        let field = |i: usize| -> Result<&str> {
            self.record
                .get(self.index[i])
                .ok_or_else(|| csv_error!("line {line}, column {}: missing value", COLUMNS[i]))
        };
        let at = |i: usize, msg: String| csv_error!("line {line}, column {}: {msg}", COLUMNS[i]);
        let arrival = field(0)?;
        let arrival_ms = parse_time(arrival).ok_or_else(|| {
            at(
                0,
                format!("cannot parse {arrival:?} as an ISO-8601 date-time"),
            )
        })?;
        let delay = field(1)?;
        let secs: f64 = delay
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                at(
                    1,
                    format!("{delay:?} is not a non-negative number of seconds"),
                )
            })?;
        let prio = field(2)?;
        let priority = Priority::parse(prio).ok_or_else(|| {
            at(
                2,
                format!("{prio:?} is not H, M, L, HIGH, MEDIUM, LOW or normal"),
            )
        })?;
        let key = field(3)?.to_string();
        if key.is_empty() {
            return Err(csv_error!("line {line}, column key: empty key"));
        }
        Ok(Some(Row {
            line,
            arrival_ms,
            max_delay_ms: (secs * 1000.0).round() as u64,
            priority,
            key,
            value: field(4)?.to_string(),
        }))
    }
}

/// ISO-8601 / RFC 3339 date-times, with or without fraction or zone, with
/// `T` or a space between date and time.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp_millis());
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_with_and_without_fraction_or_zone() {
        let base = parse_time("2025-01-02T03:04:05").unwrap();
        assert_eq!(parse_time("2025-01-02 03:04:05").unwrap(), base);
        assert_eq!(parse_time("2025-01-02T03:04:05Z").unwrap(), base);
        assert_eq!(parse_time("2025-01-02T03:04:05.250").unwrap(), base + 250);
        assert_eq!(
            parse_time("2025-01-02T04:04:05.5+01:00").unwrap(),
            base + 500
        );
        assert_eq!(parse_time("2025-01-02T04:04:05+0100").unwrap(), base);
        assert_eq!(parse_time("yesterday"), None);
    }

    fn rows_of(text: &str) -> Result<Vec<Row>> {
        let mut rows = Rows::from_reader(text.as_bytes())?;
        let mut out = vec![];
        while let Some(r) = rows.next_row()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn columns_in_any_order() {
        let rows = rows_of(
            "key,priority,value,request_max_delay,arrival_time\n\
             k1,H,v1,0.25,2025-01-01T00:00:00\n\
             k2,low,v2,2,2025-01-01T00:00:01.5\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, "k1");
        assert_eq!(rows[0].max_delay_ms, 250);
        assert_eq!(rows[1].priority, Priority::Low);
        assert_eq!(rows[1].arrival_ms - rows[0].arrival_ms, 1500);
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = rows_of("arrival_time,priority,key,value\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1, column request_max_delay"), "{e}");
        let e = rows_of(
            "arrival_time,request_max_delay,priority,key,value\n\
             2025-01-01T00:00:00,1,H,k,v\n\
             noon,1,H,k,v\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3, column arrival_time"), "{e}");
        let e = rows_of(
            "arrival_time,request_max_delay,priority,key,value\n2025-01-01T00:00:00,-1,H,k,v\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2, column request_max_delay"), "{e}");
    }
}
