//! berthd: containerd-compatible container runtime daemon.

mod config;
mod context;
mod convert;
mod cri;
mod daemon;
mod events;
mod fetcher;
mod gc;
mod sandbox;
mod server;
mod services;
mod status;
mod streams;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth container runtime daemon (containerd-compatible API)"
)]
struct Cli {
    /// Config file (TOML; every key optional).
    #[arg(long, short = 'c', default_value = "/etc/berth/config.toml")]
    config: PathBuf,
    /// Persistent root directory (overrides the config's `root`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Per-boot state directory (overrides the config's `state`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// gRPC unix socket (overrides the config's `address`).
    #[arg(long, short = 'a')]
    address: Option<PathBuf>,
    /// Log filter, e.g. `info`, `berthd=debug`.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the full default configuration.
    Default,
    /// Print the configuration berthd would run with (file + flags).
    Dump,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let explicit =
        std::env::args().any(|a| a == "--config" || a == "-c" || a.starts_with("--config="));
    let mut cfg = config::Config::load(&cli.config, explicit)?;
    if let Some(r) = cli.root {
        cfg.root = r;
    }
    if let Some(s) = cli.state {
        cfg.state = s;
    }
    if let Some(a) = cli.address {
        cfg.address = a;
    }
    match cli.command {
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            print!("{}", config::Config::default().to_toml()?);
            return Ok(());
        }
        Some(Command::Config {
            action: ConfigAction::Dump,
        }) => {
            print!("{}", cfg.to_toml()?);
            return Ok(());
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log_level))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .build()?
        .block_on(server::run(cfg))
}
