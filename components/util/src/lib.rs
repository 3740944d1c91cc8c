//! Small helpers shared by the servers and tools: configuration parsing,
//! the store label format, and logging setup.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// Parses TOML, collecting the dotted paths of keys the target type does not
/// know so callers can report them instead of silently ignoring them.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> anyhow::Result<(T, Vec<String>)> {
    let mut unknown = vec![];
    let de = toml::Deserializer::new(text);
    let cfg = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))?;
    Ok((cfg, unknown))
}

/// Reads and parses a TOML config file; see [`parse_toml`].
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<(T, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    parse_toml(&text).with_context(|| format!("config {}", path.display()))
}

/// Whether `key` may name a store label (`[server] labels` on a store,
/// `location-labels` in PD): letters, digits and `-_./`, starting and
/// ending with a letter or digit, optionally after one leading `$` (the
/// format upstream checks).
pub fn is_label_key(key: &str) -> bool {
    let body = key.strip_prefix('$').unwrap_or(key);
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge(body.chars().next())
        && edge(body.chars().last())
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// Whether `value` may be a store label's value: letters, digits and
/// `-_./`, possibly empty.
pub fn is_label_value(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// Parses TiKV/PD-style durations: one or more number-unit pairs, as Go's
/// `time.ParseDuration` and TiKV's `ReadableDuration` read them ("100ms",
/// "1.5s", "30m", "30m0s" as PD prints it, "1h30m", "1d"; units ns, us,
/// µs, ms, s, m, h, d), or "0". A value past `Duration`'s range is an
/// error, never a panic.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let bad =
        || anyhow::anyhow!("invalid duration {text:?}: want e.g. \"100ms\", \"10s\" or \"1h30m\"");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut secs = 0f64;
    while !rest.is_empty() {
        let num_len = (rest.find(|c: char| !c.is_ascii_digit() && c != '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = (tail.find(|c: char| c.is_ascii_digit() || c == '.')).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        secs += n * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Parses TiKV-style sizes: "0", "512B", "64KB", "1.5MiB", "10MB", "1GB"
/// (units are powers of 1024, as upstream's `ReadableSize`).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        "P" | "PB" | "PIB" => 1 << 50,
        _ => bail!("invalid size {s:?}: unit must be B, KB, MB, GB, TB or PB"),
    };
    Ok((n * scale as f64) as u64)
}

/// A log level as upstream's `-L` / `--log-level` names it (`trace`,
/// `debug`, `info`, `warn` or `warning`, `error`, `critical` or `fatal`),
/// as a tracing filter.
pub fn log_level(name: &str) -> anyhow::Result<&'static str> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        _ => bail!(
            "invalid log level {name:?}: want trace, debug, info, warn, error, critical or fatal"
        ),
    })
}

/// Logs to `log_file` (appending) or, when empty, to stderr. The level comes
/// from `RUST_LOG`, else `level` (see [`log_level`]), else `info`.
pub fn init_logging(log_file: &str, level: Option<&str>) -> anyhow::Result<()> {
    let level = level.map(log_level).transpose()?.unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    if log_file.is_empty() {
        builder.with_writer(std::io::stderr).init();
    } else {
        if let Some(dir) = Path::new(log_file).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .with_context(|| format!("cannot open log file {log_file}"))?;
        builder.with_writer(std::sync::Mutex::new(file)).init();
    }
    Ok(())
}

/// Most worker threads a server's runtime may be given.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The common tail of a server binary's `main`: set up logging, report
/// unknown config keys, run `server` until SIGINT/SIGTERM on a runtime
/// with `worker_threads` workers (one per core if `None`), log a fatal
/// error.
pub fn run_server<F, Fut>(
    log_file: &str,
    log_level: Option<&str>,
    unknown_keys: Vec<String>,
    worker_threads: Option<usize>,
    server: F,
) -> anyhow::Result<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    init_logging(log_file, log_level)?;
    for key in unknown_keys {
        tracing::warn!(key, "unknown configuration key ignored");
    }
    let rt = match runtime(worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{e:#}");
            return Err(e);
        }
    };
    let result = rt.block_on(server(Box::pin(shutdown_signal())));
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}

/// A multi-threaded runtime with `worker_threads` workers (tokio's
/// default, one per core, if `None`); 0 or more than
/// [`MAX_WORKER_THREADS`] is refused.
pub fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = worker_threads {
        if n == 0 || n > MAX_WORKER_THREADS {
            anyhow::bail!(
                "server.grpc-concurrency must be between 1 and {MAX_WORKER_THREADS}, not {n}"
            );
        }
        builder.worker_threads(n);
    }
    Ok(builder.build()?)
}

/// Runs `server` on the runtime until it ends or `shutdown` resolves. Then
/// calls `begin_stop` (which should start the server's graceful stop) and
/// waits at most `grace` for it: clients holding connections open must not
/// keep a stopping server alive. Returns the server's output, or None if it
/// was cut off (or panicked).
pub async fn serve_with_grace<T: Send + 'static>(
    server: impl std::future::Future<Output = T> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()>,
    begin_stop: impl FnOnce(),
    grace: Duration,
) -> Option<T> {
    let mut task = tokio::spawn(server);
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut task => return r.ok(),
        _ = &mut shutdown => {}
    }
    tracing::info!("shutting down");
    begin_stop();
    match tokio::time::timeout(grace, &mut task).await {
        Ok(r) => r.ok(),
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values_follow_upstreams_format() {
        for good in ["a", "0", "a.1-2", "abc/def", "$abc", "$a.b-c/d_e", "zone"] {
            assert!(is_label_key(good), "{good}");
        }
        for bad in [
            "", "$", ".123", "/abc", "abc/", "-abc", "abc-", "abc$def", "123*", "a b",
        ] {
            assert!(!is_label_key(bad), "{bad}");
        }
        assert!(is_label_value("") && is_label_value("z1.rack-2/a_b"));
        assert!(!is_label_value("v2?") && !is_label_value("a,b") && !is_label_value("a=b"));
    }

    #[test]
    fn a_runtime_gets_the_workers_asked_for_within_bounds() {
        assert_eq!(runtime(Some(1)).unwrap().metrics().num_workers(), 1);
        assert_eq!(runtime(Some(3)).unwrap().metrics().num_workers(), 3);
        for refused in [0, MAX_WORKER_THREADS + 1, usize::MAX] {
            let e = runtime(Some(refused)).unwrap_err().to_string();
            assert!(e.contains("grpc-concurrency must be between 1 and"), "{e}");
        }
    }

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("64KB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1.5MiB").unwrap(), 3 << 19);
        assert_eq!(parse_size(" 2gb ").unwrap(), 2 << 30);
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("MB").is_err());
        assert_eq!(parse_size("1PB").unwrap(), 1 << 50);
    }

    #[test]
    fn log_levels_take_upstreams_names() {
        assert_eq!(log_level("warning").unwrap(), "warn");
        assert_eq!(log_level("FATAL").unwrap(), "error");
        assert_eq!(log_level("debug").unwrap(), "debug");
        assert!(log_level("loud").is_err());
    }

    #[test]
    fn durations_parse_like_tikv() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert!(parse_duration("ten").is_err());
        // As PD prints them, and TiKV's days.
        assert_eq!(parse_duration("30m0s").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        // Past Duration's range, or not a number: errors, never a panic.
        let huge = format!("{}h", "9".repeat(400));
        for bad in [
            "99999999999999999999h",
            huge.as_str(),
            "",
            "10",
            "1x",
            "-1s",
            "s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_reported() {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct C {
            a: u32,
        }
        let (c, unknown): (C, _) = parse_toml("a = 3\nb = 4\n[x]\ny = 1\n").unwrap();
        assert_eq!(c.a, 3);
        assert_eq!(unknown, vec!["b".to_string(), "x".to_string()]);
    }
}
