//! The replay tool's request CSV (`tikal_codec::replay_csv`): a file the
//! user hands `tikal replay`, read row by row.
//!
//! The input is the whole file: a header, then up to `MAX_ROWS` rows are
//! read. Checks:
//! * reading never panics, and every error names its line (`line ...`);
//! * each row has a non-empty key, a priority that reads back from its
//!   name, and a line of its own: after the header's, later than the row
//!   before, and within the file (`\n`, `\r\n` and `\r` end a line);
//! * the rows and the error do not depend on how the file arrives: read
//!   through a reader that hands out a few bytes at a time (the chunk size
//!   taken from the input) they are the same as read in one piece.

#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use tikal_codec::replay_csv::{CsvError, Row, Rows};
use tikal_codec::request_meta::Priority;

const MAX_ROWS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let whole = read(data);
    if let Err(e) = &whole.1 {
        assert!(e.0.starts_with("line "), "error without a line: {e}");
    }
    let mut last_line = 1;
    let lines = 1 + line_breaks(data);
    for row in &whole.0 {
        assert!(!row.key.is_empty());
        assert_eq!(Priority::parse(row.priority.name()), Some(row.priority));
        assert!(
            row.line > last_line,
            "row at line {} after {last_line}",
            row.line
        );
        last_line = row.line;
        assert!(row.line <= lines, "row at line {} of {lines}", row.line);
    }

    let chunk = data.first().map_or(1, |&b| usize::from(b % 7) + 1);
    let trickled = read(Trickle { data, chunk });
    assert_eq!(whole, trickled, "read in chunks of {chunk}");
});

fn line_breaks(data: &[u8]) -> u64 {
    let crlf = data.windows(2).filter(|w| w == b"\r\n").count();
    let ends = data.iter().filter(|b| matches!(b, b'\r' | b'\n')).count();
    (ends - crlf) as u64
}

/// The rows read (at most `MAX_ROWS`), then how reading ended.
fn read(input: impl Read) -> (Vec<Row>, Result<(), CsvError>) {
    let mut rows = match Rows::from_reader(input) {
        Ok(rows) => rows,
        Err(e) => return (vec![], Err(e)),
    };
    let mut out = vec![];
    while out.len() < MAX_ROWS {
        match rows.next_row() {
            Ok(Some(row)) => out.push(row),
            Ok(None) => break,
            Err(e) => return (out, Err(e)),
        }
    }
    (out, Ok(()))
}

/// Hands out the input `chunk` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
