//! The server scheduling trace, `replay_trace_server.csv`.
//!
//! One row per scheduling event, in the seed's column order. Rows are
//! formatted into an in-memory buffer (constant cost per event) that a
//! background thread appends to the file 10 ms after its first row; with
//! nothing to write (a store that takes no client writes, as a follower
//! of every region), that thread sleeps until a row comes. The file is never
//! rewritten: memory holds at most one flush interval of rows (and a full
//! buffer is written at once), however many requests are traced. Only
//! complete lines are ever written, so a reader sees a prefix of the
//! trace; while a flush is in progress, its last line may still be growing,
//! so readers take only newline-terminated lines.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Decision, Priority};

pub const TRACE_HEADER: &str = "request_id,priority,arrival_time_ms,deadline_ms,delay_budget_ms,\
scheduled_time_ms,scheduling_delay_ms,available_threads_at_schedule,required_threads,decision";

const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// A buffer this large is written at once instead of waiting for the flusher.
const MAX_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRow {
    pub request_id: String,
    pub priority: Priority,
    pub arrival_ms: u64,
    pub deadline_ms: Option<u64>,
    pub scheduled_ms: u64,
    pub available: u32,
    pub required: u32,
    pub decision: Decision,
}

impl TraceRow {
    /// The CSV line, newline included. Without a deadline, `deadline_ms`
    /// and `delay_budget_ms` are empty.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        // Arrival and deadline are the client's numbers: anything in u64.
        // The signed differences of two u64s always fit an i128.
        let since_arrival = |t: u64| i128::from(t) - i128::from(self.arrival_ms);
        let (deadline, budget) = match self.deadline_ms {
            Some(d) => (d.to_string(), since_arrival(d).to_string()),
            None => (String::new(), String::new()),
        };
        let delay = since_arrival(self.scheduled_ms);
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            self.request_id,
            self.priority.name(),
            self.arrival_ms,
            deadline,
            budget,
            self.scheduled_ms,
            delay,
            self.available,
            self.required,
            self.decision.name()
        );
    }
}

struct Inner {
    path: PathBuf,
    buffer: Mutex<Buffer>,
    /// Told when the buffer gets its first row, or the writer goes.
    wake: Condvar,
    file: Mutex<File>,
}

#[derive(Default)]
struct Buffer {
    rows: Vec<u8>,
    closed: bool,
}

impl Inner {
    /// Writes what the buffer holds. The file is held from the take to the
    /// write, so chunks reach it in the order they were taken, and a flush
    /// returns only once every row taken before it is written.
    fn flush(&self) {
        let mut file = self.file.lock();
        let data = std::mem::take(&mut self.buffer.lock().rows);
        if data.is_empty() {
            return;
        }
        if let Err(e) = file.write_all(&data) {
            tracing::warn!(path = %self.path.display(), error = %e, "trace write failed");
        }
    }
}

/// Appends trace rows to a CSV file; see the module docs.
pub struct TraceWriter {
    inner: Arc<Inner>,
}

impl TraceWriter {
    /// Creates (truncates) the file, writes the header, starts the flusher.
    pub fn create(path: &Path) -> std::io::Result<TraceWriter> {
        let mut file = File::create(path)?;
        file.write_all(format!("{TRACE_HEADER}\n").as_bytes())?;
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            buffer: Mutex::new(Buffer {
                rows: Vec::with_capacity(64 << 10),
                closed: false,
            }),
            wake: Condvar::new(),
            file: Mutex::new(file),
        });
        let flusher = inner.clone();
        std::thread::Builder::new()
            .name("trace-flush".into())
            .spawn(move || flusher.flush_loop())?;
        Ok(TraceWriter { inner })
    }

    pub fn record(&self, row: &TraceRow) {
        let (first, full) = {
            let mut buf = self.inner.buffer.lock();
            let first = buf.rows.is_empty();
            row.write_csv(&mut buf.rows);
            (first, buf.rows.len() >= MAX_BUFFER)
        };
        if full {
            self.inner.flush();
        } else if first {
            self.inner.wake.notify_one();
        }
    }

    /// Writes out everything recorded so far.
    pub fn flush(&self) {
        self.inner.flush();
    }
}

impl Inner {
    /// The flusher: waits for a first row, gives the others `FLUSH_EVERY`
    /// to join it, writes them; ends once the writer is dropped.
    fn flush_loop(&self) {
        loop {
            {
                let mut buf = self.buffer.lock();
                while buf.rows.is_empty() && !buf.closed {
                    self.wake.wait(&mut buf);
                }
                if buf.closed {
                    return;
                }
            }
            std::thread::sleep(FLUSH_EVERY);
            self.flush();
        }
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        self.inner.flush();
        self.inner.buffer.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, decision: Decision) -> TraceRow {
        TraceRow {
            request_id: id.into(),
            priority: Priority::Low,
            arrival_ms: 1000,
            deadline_ms: Some(1050),
            scheduled_ms: 1012,
            available: 2,
            required: 4,
            decision,
        }
    }

    #[test]
    fn rows_are_appended_under_the_exact_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay_trace_server.csv");
        let w = TraceWriter::create(&path).unwrap();
        w.record(&row("a", Decision::CheckDelay));
        w.record(&row("a", Decision::Scheduled));
        w.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], TRACE_HEADER);
        assert_eq!(lines[1], "a,LOW,1000,1050,50,1012,12,2,4,check-delay");
        assert_eq!(lines[2], "a,LOW,1000,1050,50,1012,12,2,4,scheduled");
        assert_eq!(lines.len(), 3);
    }

    /// Polls `done` for up to 10 s.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_flusher_writes_each_burst_on_its_own_and_ends_with_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay_trace_server.csv");
        let w = TraceWriter::create(&path).unwrap();
        let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        w.record(&row("a", Decision::Scheduled));
        eventually("the first row is written", || lines() == 2);
        // The flusher slept on an empty buffer; a new row wakes it.
        w.record(&row("b", Decision::Scheduled));
        eventually("the second row is written", || lines() == 3);
        let inner = Arc::downgrade(&w.inner);
        drop(w);
        eventually("the flusher ends", || inner.upgrade().is_none());
    }

    #[test]
    fn rows_of_extreme_client_times_format_without_overflow() {
        let mut out = vec![];
        let mut r = row("x", Decision::Scheduled);
        r.deadline_ms = Some(u64::MAX);
        r.arrival_ms = 0;
        r.write_csv(&mut out);
        r.deadline_ms = Some(1 << 63);
        r.arrival_ms = u64::MAX;
        r.write_csv(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "x,LOW,0,18446744073709551615,18446744073709551615,1012,1012,2,4,scheduled"
        );
        assert_eq!(
            lines[1],
            "x,LOW,18446744073709551615,9223372036854775808,-9223372036854775807,\
             1012,-18446744073709550603,2,4,scheduled"
        );
    }

    #[test]
    fn memory_stays_bounded_for_many_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let w = TraceWriter::create(&path).unwrap();
        for i in 0..100_000 {
            w.record(&row(&format!("r{i}"), Decision::Scheduled));
            assert!(w.inner.buffer.lock().rows.len() < MAX_BUFFER + 256);
        }
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100_001);
    }
}
