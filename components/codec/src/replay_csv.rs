//! Reading a request CSV: `arrival_time, request_max_delay, priority, key,
//! value`, in any column order, one request per row.
//!
//! Rows are read one at a time, never all at once. Every problem is
//! reported with its line and column, e.g.
//! `line 7, column arrival_time: cannot parse "yesterday" as an ISO-8601 date-time`.
//!
//! A row's line is the one its first byte is on, counted as an editor
//! does: `\n`, `\r\n` and a lone `\r` each end a line. (The csv crate's
//! own record position is where the previous record ended, which is the
//! line before for a file with `\r\n` or `\r` endings or blank lines.)
//! The replay tool names requests after their line, so every row has a
//! line of its own.

use std::collections::VecDeque;
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
    reader: csv::Reader<LineIndex<R>>,
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
            .from_reader(LineIndex::new(input));
        let headers = match reader.headers() {
            Ok(headers) => headers.clone(),
            Err(e) => {
                let line = reader.get_mut().line_at(0).unwrap_or(1);
                return Err(csv_error!("line {line}: cannot read the header: {e}"));
            }
        };
        let header_line = reader.get_mut().line_at(0).unwrap_or(1);
        let mut index = [0; 5];
        for (i, name) in COLUMNS.iter().enumerate() {
            index[i] = headers
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    csv_error!(
                        "line {header_line}, column {name}: missing column (the header must name {})",
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
        let more = match self.reader.read_record(&mut self.record) {
            Ok(more) => more,
            Err(e) => {
                let line = e.position().map_or("?".into(), |p| {
                    let line = self.reader.get_mut().line_at(p.byte());
                    line.unwrap_or(p.line()).to_string()
                });
                return Err(csv_error!("line {line}: {e}"));
            }
        };
        if !more {
            return Ok(None);
        }
        let start = self.record.position().map_or(0, |p| p.byte());
        let line = self.reader.get_mut().line_at(start).unwrap_or(0);
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

/// Passes the input through, noting the line of every byte that starts
/// content (any byte but `\r` or `\n`) after a line break, so a record's
/// line can be found from the byte offset where the csv reader began it:
/// the first content at or after that offset. Only content the csv reader
/// has read ahead but not yet returned is kept.
struct LineIndex<R> {
    inner: R,
    /// Offset of the next byte read.
    offset: u64,
    /// The line that byte is on.
    line: u64,
    /// The previous byte was `\r` (a `\n` next ends the same line).
    after_cr: bool,
    /// The previous byte ended a line, or there was none.
    at_line_start: bool,
    /// (offset, line) of each content start not yet looked up past.
    starts: VecDeque<(u64, u64)>,
}

impl<R> LineIndex<R> {
    fn new(inner: R) -> Self {
        LineIndex {
            inner,
            offset: 0,
            line: 1,
            after_cr: false,
            at_line_start: true,
            starts: VecDeque::new(),
        }
    }

    /// The line of the first content at or after `offset`; None if none
    /// has been read. Offsets asked for must not decrease.
    fn line_at(&mut self, offset: u64) -> Option<u64> {
        while let Some(&(at, line)) = self.starts.front() {
            if at >= offset {
                return Some(line);
            }
            self.starts.pop_front();
        }
        None
    }
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            match b {
                b'\n' if self.after_cr => {}
                b'\r' | b'\n' => self.line += 1,
                _ if self.at_line_start => self.starts.push_back((self.offset, self.line)),
                _ => {}
            }
            self.after_cr = b == b'\r';
            self.at_line_start = matches!(b, b'\r' | b'\n');
            self.offset += 1;
        }
        Ok(n)
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

    /// Hands out its text one byte per read.
    struct ByteByByte<'a>(&'a [u8]);

    impl Read for ByteByByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    // Found by fuzz/fuzz_targets/replay_csv.rs: the csv crate positions a
    // record where the previous one ended, so after `\r\n`, a lone `\r` or
    // blank lines a row reported an earlier line than its own, and with
    // `\r` endings every row reported line 1, so the replay tool's request
    // ids (`line-<n>`) collided.
    #[test]
    fn rows_report_the_line_they_start_on() {
        let h = "arrival_time,request_max_delay,priority,key,value";
        let r = |k: &str| format!("2025-01-01T00:00:00,1,H,{k},v");
        let lines = |text: String| {
            let whole: Vec<u64> = rows_of(&text).unwrap().iter().map(|r| r.line).collect();
            let mut rows = Rows::from_reader(ByteByByte(text.as_bytes())).unwrap();
            let mut trickled = vec![];
            while let Some(row) = rows.next_row().unwrap() {
                trickled.push(row.line);
            }
            assert_eq!(whole, trickled, "{text:?}");
            whole
        };
        let (a, b) = (r("a"), r("b"));
        assert_eq!(lines(format!("{h}\n{a}\n{b}\n")), [2, 3]);
        assert_eq!(lines(format!("{h}\r\n{a}\r\n{b}\r\n")), [2, 3]);
        assert_eq!(lines(format!("{h}\r{a}\r{b}")), [2, 3]);
        assert_eq!(lines(format!("\n{h}\n\n\n{a}\r\n\r\n{b}\n")), [5, 7]);
        let multi_line = "2025-01-01T00:00:00,1,H,a,\"two\r\nlines\"";
        assert_eq!(lines(format!("{h}\n{multi_line}\n{b}\n")), [2, 4]);

        let e = rows_of(&format!("{h}\r\n\r\nnoon,1,H,k,v\r\n")).unwrap_err();
        assert!(e.0.starts_with("line 3, column arrival_time"), "{e}");
        let e = rows_of("\n\nkey\n").unwrap_err();
        assert!(
            e.0.starts_with("line 3, column arrival_time: missing"),
            "{e}"
        );
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
