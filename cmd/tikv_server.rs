//! `tikv-server`: a Tikal store, with upstream TiKV's flags.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "tikv-server",
    version,
    about = "Tikal store server (TiKV-compatible)"
)]
struct Args {
    /// Address to listen on for gRPC.
    #[arg(long, short = 'A')]
    addr: Option<String>,
    /// Address advertised to PD and clients (default: --addr).
    #[arg(long = "advertise-addr")]
    advertise_addr: Option<String>,
    /// Address of the status server (metrics, status, config).
    #[arg(long = "status-addr")]
    status_addr: Option<String>,
    /// Status address advertised to PD (default: --status-addr).
    #[arg(long = "advertise-status-addr")]
    advertise_status_addr: Option<String>,
    /// Path to the data directory.
    #[arg(long = "data-dir", short = 's')]
    data_dir: Option<String>,
    /// PD endpoints, comma-separated.
    #[arg(long = "pd", alias = "pd-endpoints")]
    pd: Option<String>,
    /// Log file path (default: stderr).
    #[arg(long = "log-file", short = 'f')]
    log_file: Option<String>,
    /// TOML config file; flags override it.
    #[arg(long, short = 'C')]
    config: Option<std::path::PathBuf>,
    /// Store labels, `key=value` pairs separated by commas (e.g.
    /// `zone=z1,host=h1`); replaces `[server] labels`.
    #[arg(long, alias = "label")]
    labels: Option<String>,
    /// The store's capacity as reported to PD (e.g. `100GB`; 0: the
    /// disk's); replaces `[raftstore] capacity`.
    #[arg(long)]
    capacity: Option<String>,
    /// Log level: trace, debug, info, warn, error (`RUST_LOG` wins).
    #[arg(long = "log-level", short = 'L')]
    log_level: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut cfg, unknown) = match &args.config {
        Some(path) => tikal_server::config::TikvConfig::from_file(path)?,
        None => Default::default(),
    };
    let set = |dst: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            *dst = v.clone();
        }
    };
    set(&mut cfg.server.addr, &args.addr);
    set(&mut cfg.server.advertise_addr, &args.advertise_addr);
    set(&mut cfg.server.status_addr, &args.status_addr);
    set(
        &mut cfg.server.advertise_status_addr,
        &args.advertise_status_addr,
    );
    set(&mut cfg.storage.data_dir, &args.data_dir);
    set(&mut cfg.log_file, &args.log_file);
    set(&mut cfg.raftstore.capacity, &args.capacity);
    if let Some(labels) = &args.labels {
        cfg.server.labels = tikal_server::config::parse_labels(labels)?;
    }
    if let Some(pd) = &args.pd {
        cfg.pd.endpoints = pd
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    let log_file = cfg.log_file.clone();
    let workers = cfg.server.grpc_concurrency;
    let level = args.log_level.as_deref();
    tikal_util::run_server(&log_file, level, unknown, workers, |stop| {
        tikal_server::run(cfg, stop)
    })
}
