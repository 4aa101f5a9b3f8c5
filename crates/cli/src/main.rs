//! `berth`: the operator's CLI, a gRPC client of berthd (or any containerd 1.6+).

mod attach;
mod blobs;
mod conn;
mod container;
mod events;
mod image;
mod metrics;
mod misc;
mod output;
mod progress;
mod rootfs;
mod run;
mod stdio;
mod task;
mod transfer;
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
    /// Run a container from an image: create it, start its task and (unless -d) wait for it.
    Run(RunOpts),
    /// Manage tasks (a container's running processes).
    #[command(alias = "tasks", alias = "t", subcommand)]
    Task(TaskCmd),
    /// Manage containers.
    #[command(alias = "containers", alias = "c", subcommand)]
    Container(ContainerCmd),
    /// Print events as they happen.
    Events {
        /// Event filters (containerd syntax, e.g. `topic~="/tasks/"`).
        filters: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunOpts {
    /// Delete the task, container and snapshot once it exits.
    #[arg(long)]
    rm: bool,
    /// Start and return at once, without stdio.
    #[arg(short, long)]
    detach: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Environment entry KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Mount, e.g. type=bind,src=/a,dst=/b,options=rbind:ro (repeatable).
    #[arg(long = "mount")]
    mounts: Vec<String>,
    /// User: uid[:gid].
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<String>,
    /// CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory limit: bytes, or with a k/m/g suffix.
    #[arg(long)]
    memory: Option<String>,
    #[arg(long, default_value = "io.containerd.runc.v2")]
    runtime: String,
    #[arg(long, default_value = "overlayfs")]
    snapshotter: String,
    image: String,
    id: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum TaskCmd {
    #[command(alias = "list")]
    Ls,
    /// Send a signal to a task.
    Kill {
        #[arg(short, long, default_value = "SIGTERM")]
        signal: String,
        /// Signal every process in the container.
        #[arg(short, long)]
        all: bool,
        /// Signal this exec process instead of the init.
        #[arg(long, default_value = "")]
        exec_id: String,
        id: String,
    },
    /// Run another process in a running task.
    Exec {
        #[arg(long)]
        exec_id: Option<String>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Processes of a task.
    Ps {
        id: String,
    },
    /// Cgroup metrics of a task.
    Metrics {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Delete a stopped task (-f: kill it first).
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
}

#[derive(Subcommand)]
enum ContainerCmd {
    #[command(alias = "list")]
    Ls { filters: Vec<String> },
    /// The container record as JSON.
    Info { id: String },
    /// Delete containers and their snapshots (their tasks must be stopped).
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
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
    /// Pull an image in the daemon (containerd's Transfer service), with progress.
    Pull {
        reference: String,
        /// Platform to pull and unpack (os/arch[/variant]); the host's by default.
        #[arg(long)]
        platform: Option<String>,
        /// Fetch every platform's manifest and blobs (unpack only the host's).
        #[arg(long)]
        all_platforms: bool,
        /// Registry credentials `user:password` (answered when the daemon asks).
        #[arg(long, short = 'u')]
        user: Option<String>,
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
    },
    /// Push an image to its registry (or to TARGET).
    Push {
        name: String,
        target: Option<String>,
        #[arg(long, short = 'u')]
        user: Option<String>,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
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

/// Runs the command; the exit code is the container's for `run` and `task exec`.
async fn run(cli: Cli) -> Result<u8> {
    let conn = Conn::connect(&cli.address, &cli.namespace).await?;
    let f = cli.format;
    let done = match cli.cmd {
        Cmd::Run(o) => {
            let args = run::RunArgs {
                rm: o.rm,
                detach: o.detach,
                tty: o.tty,
                env: o.env,
                mounts: o.mounts,
                user: o.user,
                cwd: o.cwd,
                cpus: o.cpus,
                memory: o.memory,
                runtime: o.runtime,
                snapshotter: o.snapshotter,
                image: o.image,
                id: o.id,
                args: o.args,
            };
            return run::run(&conn, &cli.namespace, args).await;
        }
        Cmd::Task(TaskCmd::Exec {
            exec_id,
            tty,
            detach,
            cwd,
            env,
            id,
            args,
        }) => {
            let a = task::ExecArgs {
                id,
                exec_id,
                tty,
                detach,
                cwd,
                env,
                args,
            };
            return task::exec(&conn, a).await;
        }
        Cmd::Task(TaskCmd::Ls) => task::ls(&conn, f).await,
        Cmd::Task(TaskCmd::Kill {
            signal,
            all,
            exec_id,
            id,
        }) => task::kill(&conn, id, &signal, all, exec_id).await,
        Cmd::Task(TaskCmd::Ps { id }) => task::ps(&conn, id, f).await,
        Cmd::Task(TaskCmd::Metrics { id }) => task::metrics(&conn, id, f).await,
        Cmd::Task(TaskCmd::Pause { id }) => task::pause(&conn, id).await,
        Cmd::Task(TaskCmd::Resume { id }) => task::resume(&conn, id).await,
        Cmd::Task(TaskCmd::Rm { force, id }) => task::rm(&conn, id, force).await,
        Cmd::Container(ContainerCmd::Ls { filters }) => container::ls(&conn, filters, f).await,
        Cmd::Container(ContainerCmd::Info { id }) => container::info(&conn, id).await,
        Cmd::Container(ContainerCmd::Rm { ids }) => container::rm(&conn, ids).await,
        Cmd::Events { filters } => events::events(&conn, filters, f).await,
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
        Cmd::Image(ImageCmd::Pull {
            reference,
            platform,
            all_platforms,
            user,
            snapshotter,
        }) => {
            let args = transfer::PullArgs {
                reference,
                platform,
                all_platforms,
                user,
                snapshotter,
            };
            transfer::pull(&conn, args).await
        }
        Cmd::Image(ImageCmd::Push { name, target, user }) => {
            transfer::push(&conn, &name, target.as_deref(), user).await
        }
        Cmd::Image(ImageCmd::Tag { source, target }) => image::tag(&conn, &source, &target).await,
        Cmd::Content(ContentCmd::Ls { filters }) => misc::content_ls(&conn, filters, f).await,
        Cmd::Snapshot(SnapshotCmd::Ls { snapshotter }) => {
            misc::snapshot_ls(&conn, snapshotter, f).await
        }
        Cmd::Lease(LeaseCmd::Ls { filters }) => misc::lease_ls(&conn, filters, f).await,
    };
    done.map(|()| 0)
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
    let res = rt.block_on(run(cli));
    // Copy threads may still block on FIFOs or our stdin: do not wait for them.
    rt.shutdown_background();
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
