//! `pd-server`: the Placement Driver, with upstream PD's flags.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "pd-server", version, about = "Tikal Placement Driver")]
struct Args {
    /// Human-readable name of this member.
    #[arg(long)]
    name: Option<String>,
    /// Path to the data directory.
    #[arg(long = "data-dir")]
    data_dir: Option<String>,
    /// URLs to listen on for client traffic (gRPC and HTTP).
    #[arg(long = "client-urls")]
    client_urls: Option<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long = "peer-urls")]
    peer_urls: Option<String>,
    /// Client URLs advertised to clients (default: --client-urls).
    #[arg(long = "advertise-client-urls")]
    advertise_client_urls: Option<String>,
    /// Peer URLs advertised to other members (default: --peer-urls).
    #[arg(long = "advertise-peer-urls")]
    advertise_peer_urls: Option<String>,
    /// Initial cluster configuration, e.g. "pd=http://127.0.0.1:2380".
    #[arg(long = "initial-cluster")]
    initial_cluster: Option<String>,
    /// Log file path (default: stderr).
    #[arg(long = "log-file")]
    log_file: Option<String>,
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Log level: debug, info, warn, error, fatal (`RUST_LOG` wins).
    #[arg(long = "log-level", short = 'L')]
    log_level: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut cfg, unknown) = match &args.config {
        Some(path) => tikal_pd::PdConfig::from_file(path)?,
        None => (tikal_pd::PdConfig::default(), vec![]),
    };
    let set = |dst: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            *dst = v.clone();
        }
    };
    set(&mut cfg.name, &args.name);
    set(&mut cfg.data_dir, &args.data_dir);
    set(&mut cfg.client_urls, &args.client_urls);
    set(&mut cfg.peer_urls, &args.peer_urls);
    set(&mut cfg.advertise_client_urls, &args.advertise_client_urls);
    set(&mut cfg.advertise_peer_urls, &args.advertise_peer_urls);
    set(&mut cfg.initial_cluster, &args.initial_cluster);
    set(&mut cfg.log_file, &args.log_file);
    let log_file = cfg.log_file.clone();
    let level = args.log_level.as_deref();
    tikal_util::run_server(&log_file, level, unknown, None, |stop| {
        tikal_pd::run(cfg, stop)
    })
}
