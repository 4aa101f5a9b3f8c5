//! `berth`: the operator's CLI, a gRPC client of berthd (or any containerd 1.6+).

mod blobs;
mod conn;
mod image;
mod misc;
mod output;
mod progress;
mod unpack;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use containerd_client::tonic::Status;

use crate::conn::Conn;
use crate::output::Format;

#[derive(Parser)]
#[command(name = "berth", version, about = "berth container runtime CLI")]
struct Cli {
    /// Daemon socket.
    #[arg(
        long,
        global = true,
        env = "BERTH_ADDRESS",
        default_value = "/run/berth/berth.sock"
    )]
    address: PathBuf,
    /// Namespace for every request.
    #[arg(
        short,
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Client and server versions.
    Version,
    /// Manage namespaces.
    #[command(alias = "namespace", subcommand)]
    Ns(NsCmd),
    /// Manage images.
    #[command(alias = "images", alias = "i", subcommand)]
    Image(ImageCmd),
    /// Inspect content.
    #[command(subcommand)]
    Content(ContentCmd),
    /// Inspect snapshots.
    #[command(alias = "snapshots", subcommand)]
    Snapshot(SnapshotCmd),
    /// Inspect leases.
    #[command(alias = "leases", subcommand)]
    Lease(LeaseCmd),
}

#[derive(Subcommand)]
enum NsCmd {
    #[command(alias = "list")]
    Ls,
    Create {
        name: String,
        /// Labels as key=value.
        labels: Vec<String>,
    },
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import an OCI-layout or docker-archive tar.
    Import {
        file: PathBuf,
        /// Only store content and images, do not unpack into snapshots.
        #[arg(long)]
        no_unpack: bool,
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        /// Require and label every platform's content.
        #[arg(long)]
        all_platforms: bool,
        /// Name prefix for OCI entries annotated only with a bare tag.
        #[arg(long, default_value = "import")]
        base_name: String,
    },
    #[command(alias = "list")]
    Ls { filters: Vec<String> },
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Wait for garbage collection to finish.
        #[arg(long)]
        sync: bool,
    },
    /// Export images as an OCI-layout tar.
    Export {
        out: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ContentCmd {
    #[command(alias = "list")]
    Ls { filters: Vec<String> },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    #[command(alias = "list")]
    Ls {
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
    },
}

#[derive(Subcommand)]
enum LeaseCmd {
    #[command(alias = "list")]
    Ls { filters: Vec<String> },
}

/// An error already printed to stderr: only the exit status is left to set.
#[derive(Debug)]
pub struct Reported(pub Status);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for Reported {}

async fn run(cli: Cli) -> Result<()> {
    let conn = Conn::connect(&cli.address, &cli.namespace).await?;
    let f = cli.format;
    match cli.cmd {
        Cmd::Version => misc::version(&conn, f).await,
        Cmd::Ns(NsCmd::Ls) => misc::ns_ls(&conn, f).await,
        Cmd::Ns(NsCmd::Create { name, labels }) => misc::ns_create(&conn, name, labels).await,
        Cmd::Ns(NsCmd::Rm { names }) => misc::ns_rm(&conn, names).await,
        Cmd::Image(ImageCmd::Import {
            file,
            no_unpack,
            snapshotter,
            all_platforms,
            base_name,
        }) => {
            let args = image::ImportArgs {
                file,
                no_unpack,
                snapshotter,
                all_platforms,
                base_name,
            };
            image::import_cmd(&conn, args).await
        }
        Cmd::Image(ImageCmd::Ls { filters }) => image::ls(&conn, filters, f).await,
        Cmd::Image(ImageCmd::Rm { names, sync }) => image::rm(&conn, names, sync).await,
        Cmd::Image(ImageCmd::Export { out, names }) => image::export_cmd(&conn, &out, names).await,
        Cmd::Content(ContentCmd::Ls { filters }) => misc::content_ls(&conn, filters, f).await,
        Cmd::Snapshot(SnapshotCmd::Ls { snapshotter }) => {
            misc::snapshot_ls(&conn, snapshotter, f).await
        }
        Cmd::Lease(LeaseCmd::Ls { filters }) => misc::lease_ls(&conn, filters, f).await,
    }
}

/// `berth: <message>`: the gRPC message when the server refused, else the error chain.
fn report(e: &anyhow::Error) {
    if e.downcast_ref::<Reported>().is_some() {
        return;
    }
    if let Some(s) = e.chain().find_map(|c| c.downcast_ref::<Status>()) {
        eprintln!("berth: {}", s.message());
        return;
    }
    eprintln!("berth: {e:#}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
