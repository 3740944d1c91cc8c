//! `tikal`: the operator's tool — playground cluster, replay, benchmarks.

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
    /// Replay a request CSV with scheduling headers (the seed's csv-ycsb).
    Replay(tikal_tools::replay::ReplayArgs),
    /// Generate a synthetic request CSV for replay.
    GenRequests(tikal_tools::gen::GenArgs),
    /// Summarize server traces: miss rates and delays per priority.
    TraceReport(tikal_tools::trace_report::ReportArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Raw KV put/get throughput and latency through the official client.
    Raw(tikal_tools::bench::BenchArgs),
    /// Transactional put/get throughput and latency through the official
    /// client (a put is a whole transaction).
    Txn(tikal_tools::bench::TxnBenchArgs),
}

fn main() -> anyhow::Result<()> {
    // The seed's replay tool spells long flags with one dash (-csv).
    let cli = Cli::parse_from(tikal_tools::replay::normalize_args(std::env::args()));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match cli.command {
            Command::Playground(args) => tikal_tools::playground::run(args).await,
            Command::Bench(BenchCommand::Raw(args)) => tikal_tools::bench::run_raw(args).await,
            Command::Bench(BenchCommand::Txn(args)) => tikal_tools::bench::run_txn(args).await,
            Command::GenRequests(args) => tikal_tools::gen::run(&args).map(|_| ()),
            Command::TraceReport(args) => {
                print!("{}", tikal_tools::trace_report::run(&args)?);
                Ok(())
            }
            Command::Replay(args) => {
                let outcome = tikal_tools::replay::run(args).await?;
                println!("{}", outcome.summary);
                Ok(())
            }
        }
    })
}
