//! How upstream PD (a Go program) prints sizes, durations and times in its
//! HTTP API, so tools that parse its JSON read ours:
//!
//! | value               | example                  | Go source of the format        |
//! |---------------------|--------------------------|--------------------------------|
//! | byte size           | `"10GiB"`, `"117.7MiB"`  | `%.4g` + binary unit           |
//! | duration            | `"30m0s"`, `"1.5s"`      | `time.Duration.String`         |
//! | point in time (UTC) | `"2024-05-01T10:00:00Z"` | `time.Time` as RFC 3339 (nano) |

use std::time::Duration;

/// `10737418240` -> `"10GiB"`: four significant digits, powers of 1024.
pub fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", significant4(size), UNITS[unit])
}

/// `v` (0 <= v < 10000) with at most four significant digits, no trailing
/// zeros, as Go's `%.4g` prints it.
fn significant4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits_before_point = v.abs().log10().floor() as i32 + 1;
    let decimals = (4 - digits_before_point).max(0) as usize;
    trim_fraction(format!("{v:.decimals$}"))
}

fn trim_fraction(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Bytes as upstream shows keys: upper-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Hex (either case) back to bytes; `None` if it is not hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `Duration::from_secs(1800)` -> `"30m0s"`, as Go's `Duration.String`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = fraction(
        u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `"1h0m0s"`, `"1.5s"`, `"300ms"`, `"0"` -> a duration: Go's
/// `time.ParseDuration`, so what [`go_duration`] prints reads back.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    if text.contains('d') {
        // Days are TiKV's unit, not Go's.
        return Err(format!("invalid duration {text:?}"));
    }
    tikal_util::parse_duration(text).map_err(|e| e.to_string())
}

/// `n / unit` in decimal, without trailing zeros.
fn fraction(n: u128, unit: u128) -> String {
    let width = unit.ilog10() as usize;
    trim_fraction(format!("{}.{:0width$}", n / unit, n % unit))
}

/// Unix nanoseconds -> `"2024-05-01T10:00:00.5Z"` (RFC 3339, UTC).
pub fn rfc3339(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (day_secs / 3600, day_secs / 60 % 60, day_secs % 60);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z")
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_go_units() {
        assert_eq!(byte_size(0), "0B");
        assert_eq!(byte_size(512), "512B");
        assert_eq!(byte_size(10 << 30), "10GiB");
        assert_eq!(byte_size(1536 << 20), "1.5GiB");
        assert_eq!(byte_size(123_456_789), "117.7MiB");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(1800)), "30m0s");
        assert_eq!(go_duration(Duration::from_secs(3)), "3s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn durations_read_back_as_go_parses_them() {
        for d in [0, 3, 1800, 3600, 3723] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_go_duration(&go_duration(d)), Ok(d));
        }
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("10m"), Ok(Duration::from_secs(600)));
        for bad in ["", "soon", "1", "5d", "-1s", "1e400h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_714_557_600_500_000_000), "2024-05-01T10:00:00.5Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    }
}
