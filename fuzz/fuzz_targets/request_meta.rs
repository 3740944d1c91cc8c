//! A request's scheduling metadata (`tikal_codec::request_meta`): the
//! `x-aaws-*` header values a client sends and the kvproto `Context` hints,
//! all client-controlled.
//!
//! The input is split (with `arbitrary`) into the four header values, each
//! present or not, the two `Context` fields `RequestMeta::parse` reads, and
//! the server clock. Checks:
//! * `RequestMeta::parse` never panics, and succeeds exactly when every
//!   header present is well formed, judged by a reference written here;
//!   otherwise its error names the first malformed header (in the order
//!   priority, arrival, deadline, request id) and carries its value;
//! * on success, a header's number is taken as given (surrounding
//!   whitespace aside); without headers, arrival is the server clock, the
//!   priority comes from `Context.priority` and the deadline is arrival +
//!   `max_execution_duration_ms` (saturating, never before arrival); the
//!   request id is the trimmed header, non-empty and free of commas,
//!   quotes and newlines, or a synthesized `srv-<n>` with `n` growing;
//! * only the four `x-aaws-*` headers are looked up;
//! * `Priority::parse` ignores ASCII case and surrounding whitespace, and
//!   reads back every priority's name.

#![no_main]

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tikal_codec::request_meta::{
    Priority, RequestMeta, ARRIVAL_HEADER, DEADLINE_HEADER, PRIORITY_HEADER, REQUEST_ID_HEADER,
};
use tikal_proto::kvrpcpb::{CommandPri, Context};

#[derive(Arbitrary, Debug)]
struct Input {
    priority: Option<String>,
    arrival: Option<String>,
    deadline: Option<String>,
    request_id: Option<String>,
    ctx_priority: i32,
    max_execution_duration_ms: u64,
    now_ms: u64,
}

/// The last synthesized request id seen in this process.
static LAST_SYNTHESIZED: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|input: Input| {
    let asked = RefCell::new(vec![]);
    let header = |name: &str| -> Option<&str> {
        asked.borrow_mut().push(name.to_string());
        match name {
            PRIORITY_HEADER => input.priority.as_deref(),
            ARRIVAL_HEADER => input.arrival.as_deref(),
            DEADLINE_HEADER => input.deadline.as_deref(),
            REQUEST_ID_HEADER => input.request_id.as_deref(),
            _ => None,
        }
    };
    let ctx = Context {
        priority: input.ctx_priority,
        max_execution_duration_ms: input.max_execution_duration_ms,
        ..Default::default()
    };
    let got = RequestMeta::parse(header, &ctx, input.now_ms);
    for name in asked.borrow().iter() {
        assert!(
            [
                PRIORITY_HEADER,
                ARRIVAL_HEADER,
                DEADLINE_HEADER,
                REQUEST_ID_HEADER
            ]
            .contains(&name.as_str()),
            "looked up {name:?}"
        );
    }

    match (got, first_malformed(&input)) {
        (Ok(meta), None) => check_meta(&input, &meta),
        (Err(e), Some((header, value))) => {
            assert_eq!((e.header, e.value.as_str()), (header, value));
            assert!(e.to_string().contains(header));
        }
        (got, want) => panic!("parse gave {got:?}, the reference expects {want:?}"),
    }

    for s in [&input.priority, &input.request_id].into_iter().flatten() {
        priority_parse(s);
    }
});

fn check_meta(input: &Input, meta: &RequestMeta) {
    let arrival = match &input.arrival {
        Some(h) => ref_ms(h).unwrap(),
        None => input.now_ms,
    };
    assert_eq!(meta.arrival_ms, arrival);

    let priority = match &input.priority {
        Some(h) => ref_priority(h).unwrap(),
        None if input.ctx_priority == CommandPri::High as i32 => Priority::High,
        None if input.ctx_priority == CommandPri::Low as i32 => Priority::Low,
        None => Priority::Medium,
    };
    assert_eq!(meta.priority, priority);

    let deadline = match &input.deadline {
        Some(h) => Some(ref_ms(h).unwrap()),
        None if input.max_execution_duration_ms == 0 => None,
        None => {
            let d = u128::from(arrival) + u128::from(input.max_execution_duration_ms);
            Some(u64::try_from(d).unwrap_or(u64::MAX))
        }
    };
    assert_eq!(meta.deadline_ms, deadline);
    if input.deadline.is_none() {
        assert!(meta.deadline_ms.is_none_or(|d| d >= meta.arrival_ms));
    }

    let id = &meta.request_id;
    assert!(!id.is_empty());
    assert!(!id.contains([',', '"', '\n', '\r']), "request id {id:?}");
    match &input.request_id {
        Some(h) => assert_eq!(id, h.trim()),
        None => {
            let n: u64 = id
                .strip_prefix("srv-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("synthesized id {id:?}"));
            let last = LAST_SYNTHESIZED.swap(n, Ordering::Relaxed);
            assert!(n > last, "synthesized id {n} after {last}");
        }
    }
}

/// A header's name, its value if sent, and whether a value is well formed.
type Header<'a> = (&'static str, Option<&'a str>, fn(&str) -> bool);

/// The header that should make the parse fail, with its value.
fn first_malformed(input: &Input) -> Option<(&'static str, &str)> {
    let headers: [Header; 4] = [
        (PRIORITY_HEADER, input.priority.as_deref(), |v| {
            ref_priority(v).is_some()
        }),
        (ARRIVAL_HEADER, input.arrival.as_deref(), |v| {
            ref_ms(v).is_some()
        }),
        (DEADLINE_HEADER, input.deadline.as_deref(), |v| {
            ref_ms(v).is_some()
        }),
        (
            REQUEST_ID_HEADER,
            input.request_id.as_deref(),
            ref_request_id_ok,
        ),
    ];
    headers
        .into_iter()
        .find_map(|(name, value, ok)| value.filter(|v| !ok(v)).map(|v| (name, v)))
}

/// Decimal Unix milliseconds, optionally `+`-signed, within `u64`.
fn ref_ms(v: &str) -> Option<u64> {
    let digits = v.trim();
    let digits = digits.strip_prefix('+').unwrap_or(digits);
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |n, b| {
        let d = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(d)
    })
}

fn ref_priority(v: &str) -> Option<Priority> {
    let v = v.trim();
    let is = |words: &[&str]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    if is(&["h", "high"]) {
        Some(Priority::High)
    } else if is(&["m", "medium", "normal"]) {
        Some(Priority::Medium)
    } else if is(&["l", "low"]) {
        Some(Priority::Low)
    } else {
        None
    }
}

fn ref_request_id_ok(v: &str) -> bool {
    !v.trim().is_empty() && !v.contains([',', '"', '\n', '\r'])
}

fn priority_parse(s: &str) {
    let p = Priority::parse(s);
    assert_eq!(p, ref_priority(s));
    assert_eq!(
        Priority::parse(&format!(" {}\t", s.to_ascii_uppercase())),
        p
    );
    assert_eq!(Priority::parse(&s.to_ascii_lowercase()), p);
    for p in Priority::ALL {
        assert_eq!(Priority::parse(p.name()), Some(p));
    }
}
