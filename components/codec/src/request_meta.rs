//! Scheduling metadata of one request.
//!
//! Sources, first match wins per field:
//!
//! | field      | gRPC header (lower case)  | kvproto `Context`                 |
//! |------------|---------------------------|-----------------------------------|
//! | priority   | `x-aaws-priority`         | `priority` (High/Normal/Low)      |
//! | arrival    | `x-aaws-arrival-ms`       | time the server received it       |
//! | deadline   | `x-aaws-deadline-ms` (abs)| arrival + `max_execution_duration_ms` |
//! | request id | `x-aaws-request-id`       | synthesized (`srv-<n>`)           |
//!
//! Without metadata a request is Medium with no deadline. A header that is
//! present but malformed is an error naming the header.

use std::sync::atomic::{AtomicU64, Ordering};

use tikal_proto::kvrpcpb;

/// How urgent a request is, as the seed's `x-aaws-priority` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    High = 0,
    Medium = 1,
    Low = 2,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Medium, Priority::Low];

    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Medium => "MEDIUM",
            Priority::Low => "LOW",
        }
    }

    /// `H`/`M`/`L`, `HIGH`/`MEDIUM`/`LOW`, `normal` (= medium), any case.
    pub fn parse(s: &str) -> Option<Priority> {
        match s.trim().to_ascii_lowercase().as_str() {
            "h" | "high" => Some(Priority::High),
            "m" | "medium" | "normal" => Some(Priority::Medium),
            "l" | "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

pub const PRIORITY_HEADER: &str = "x-aaws-priority";
pub const ARRIVAL_HEADER: &str = "x-aaws-arrival-ms";
pub const DEADLINE_HEADER: &str = "x-aaws-deadline-ms";
pub const REQUEST_ID_HEADER: &str = "x-aaws-request-id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    pub request_id: String,
    pub priority: Priority,
    pub arrival_ms: u64,
    /// Absolute Unix ms; None = no deadline.
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {header} header {value:?}: {expected}")]
pub struct MetaError {
    pub header: &'static str,
    pub value: String,
    pub expected: &'static str,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl RequestMeta {
    /// Reads the metadata of a request received at `now_ms`. `header`
    /// looks up a gRPC header value by lower-case name.
    pub fn parse<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        ctx: &kvrpcpb::Context,
        now_ms: u64,
    ) -> Result<RequestMeta, MetaError> {
        let bad = |header: &'static str, value: &str, expected: &'static str| MetaError {
            header,
            value: value.to_string(),
            expected,
        };
        let priority = match header(PRIORITY_HEADER) {
            Some(v) => Priority::parse(v).ok_or_else(|| {
                bad(
                    PRIORITY_HEADER,
                    v,
                    "expected H, M, L, HIGH, MEDIUM, LOW or normal",
                )
            })?,
            None => match kvrpcpb::CommandPri::try_from(ctx.priority) {
                Ok(kvrpcpb::CommandPri::High) => Priority::High,
                Ok(kvrpcpb::CommandPri::Low) => Priority::Low,
                _ => Priority::Medium,
            },
        };
        let ms = |name: &'static str| -> Result<Option<u64>, MetaError> {
            match header(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| bad(name, v, "expected Unix milliseconds")),
            }
        };
        let arrival_ms = ms(ARRIVAL_HEADER)?.unwrap_or(now_ms);
        let deadline_ms = match ms(DEADLINE_HEADER)? {
            Some(d) => Some(d),
            None if ctx.max_execution_duration_ms > 0 => {
                Some(arrival_ms.saturating_add(ctx.max_execution_duration_ms))
            }
            None => None,
        };
        let request_id = match header(REQUEST_ID_HEADER) {
            Some(v) if v.trim().is_empty() || v.contains([',', '\n', '\r', '"']) => {
                return Err(bad(
                    REQUEST_ID_HEADER,
                    v,
                    "expected a non-empty id without commas, quotes or newlines",
                ))
            }
            Some(v) => v.trim().to_string(),
            None => format!("srv-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        };
        Ok(RequestMeta {
            request_id,
            priority,
            arrival_ms,
            deadline_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(headers: &[(&str, &str)], ctx: kvrpcpb::Context) -> Result<RequestMeta, MetaError> {
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RequestMeta::parse(
            |name| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()),
            &ctx,
            1_000,
        )
    }

    #[test]
    fn headers_set_priority_arrival_deadline_and_id() {
        let m = parse(
            &[
                ("x-aaws-priority", "h"),
                ("x-aaws-arrival-ms", "900"),
                ("x-aaws-deadline-ms", "1500"),
                ("x-aaws-request-id", "r-1"),
            ],
            Default::default(),
        )
        .unwrap();
        assert_eq!(m.priority, Priority::High);
        assert_eq!(m.arrival_ms, 900);
        assert_eq!(m.deadline_ms, Some(1500));
        assert_eq!(m.request_id, "r-1");
        for (v, p) in [
            ("LOW", Priority::Low),
            ("Medium", Priority::Medium),
            ("normal", Priority::Medium),
        ] {
            assert_eq!(
                parse(&[("x-aaws-priority", v)], Default::default())
                    .unwrap()
                    .priority,
                p
            );
        }
    }

    #[test]
    fn context_hints_apply_without_headers() {
        let ctx = kvrpcpb::Context {
            priority: kvrpcpb::CommandPri::Low as i32,
            max_execution_duration_ms: 250,
            ..Default::default()
        };
        let m = parse(&[], ctx).unwrap();
        assert_eq!(m.priority, Priority::Low);
        assert_eq!(m.arrival_ms, 1_000);
        assert_eq!(m.deadline_ms, Some(1_250));
        assert!(m.request_id.starts_with("srv-"));
    }

    #[test]
    fn no_metadata_means_medium_without_deadline() {
        let m = parse(&[], Default::default()).unwrap();
        assert_eq!((m.priority, m.deadline_ms), (Priority::Medium, None));
    }

    #[test]
    fn malformed_headers_name_the_header() {
        let e = parse(&[("x-aaws-priority", "urgent")], Default::default()).unwrap_err();
        assert_eq!(e.header, "x-aaws-priority");
        let e = parse(&[("x-aaws-deadline-ms", "soon")], Default::default()).unwrap_err();
        assert_eq!(e.header, "x-aaws-deadline-ms");
        assert!(e.to_string().contains("x-aaws-deadline-ms"));
        let e = parse(&[("x-aaws-request-id", "a,b")], Default::default()).unwrap_err();
        assert_eq!(e.header, "x-aaws-request-id");
    }
}
