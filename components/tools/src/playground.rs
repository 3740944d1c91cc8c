//! `tikal playground`: PD plus N stores on this machine, until Ctrl-C.
//!
//! Data persists in the data directory between runs, so a second run
//! restarts the same cluster. Remove the directory for a clean one.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::local_cluster::{ClusterSpec, LocalCluster};

#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Number of stores (tikv-server processes).
    #[arg(long, default_value_t = 3)]
    pub stores: usize,
    /// Where PD and stores keep data and logs.
    #[arg(long = "data-dir", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Address to bind and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// PD client port (the peer port is the next one).
    #[arg(long = "pd-port", default_value_t = 2379)]
    pub pd_port: u16,
    /// First store's gRPC port; further stores count up.
    #[arg(long = "store-port", default_value_t = 20160)]
    pub store_port: u16,
    /// First store's status port; further stores count up.
    #[arg(long = "status-port", default_value_t = 20180)]
    pub status_port: u16,
    /// TOML config file given to every store (tikv-server --config).
    #[arg(long = "store-config")]
    pub store_config: Option<PathBuf>,
}

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".tikal")
        .join("playground")
}

pub async fn run(args: PlaygroundArgs) -> anyhow::Result<()> {
    if args.stores == 0 {
        anyhow::bail!("--stores must be at least 1");
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("cannot locate the binaries"))?;
    let spec = ClusterSpec {
        bin_dir,
        data_dir: args.data_dir.clone(),
        host: args.host.clone(),
        pd_port: args.pd_port,
        stores: args.stores,
        store_port: args.store_port,
        status_port: args.status_port,
        store_config: match &args.store_config {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
            None => String::new(),
        },
        pd_config: String::new(),
    };
    println!(
        "Starting PD and {} store(s); data and logs in {}",
        args.stores,
        args.data_dir.display()
    );
    let mut cluster = LocalCluster::start(spec, Duration::from_secs(120)).await?;
    println!("Cluster is ready.");
    println!("PD address: {}", cluster.pd_addr);
    for (addr, status) in cluster.store_addrs.iter().zip(&cluster.status_addrs) {
        println!("Store: {addr} (status http://{status})");
    }
    println!("PD HTTP API: {}/pd/api/v1/stores", cluster.pd_url());
    println!("Press Ctrl-C to stop.");
    tikal_util::shutdown_signal().await;
    println!("Stopping...");
    cluster.stop().await;
    println!("Stopped.");
    Ok(())
}
