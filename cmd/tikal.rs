//! `tikal`: the operator's tool — playground cluster and benchmarks.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tikal", version, about = "Tikal tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a local cluster (PD + N stores) until Ctrl-C.
    Playground(tikal_tools::playground::PlaygroundArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Raw KV put/get throughput and latency through the official client.
    Raw(tikal_tools::bench::RawBenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match cli.command {
            Command::Playground(args) => tikal_tools::playground::run(args).await,
            Command::Bench(BenchCommand::Raw(args)) => tikal_tools::bench::run_raw(args).await,
        }
    })
}
