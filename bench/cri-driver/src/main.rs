//! berth-cri-bench: runs one CRI benchmark scenario against any CRI v1 socket (berthd's or
//! containerd's) and prints its timings as one JSON object on stdout. Used by bench/cri.sh,
//! which starts the daemons and reads memory between steps, and by bench/stream.sh (exec and
//! port forward through the daemon's streaming server); no crictl or kubectl needed.

mod connect;
mod error;
mod exec_stream;
mod exec_sync;
mod images;
mod list;
mod pods;
mod port_forward;
mod probe;
mod run_error;
mod spec;
mod stream_pod;
mod summary;
mod teardown;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Value};

use run_error::RunError;
use summary::{latency_json, ms};

#[derive(Parser)]
#[command(about = "One CRI benchmark scenario against a CRI socket; JSON timings on stdout")]
struct Cli {
    /// The daemon's CRI gRPC socket.
    #[arg(long, global = true, default_value = "/run/berth/berth.sock")]
    socket: PathBuf,
    /// Any single RPC taking longer than this fails the run.
    #[arg(long, global = true, default_value_t = 120)]
    rpc_timeout_secs: u64,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// PullImage each image (untimed set-up for the other scenarios; times printed anyway).
    Pull { images: Vec<String> },
    /// Start --count pods, --parallel at a time; per-pod latency p50/p99 and total; then tear
    /// them down (timed) unless --keep.
    Pods(PodsArgs),
    /// StopPodSandbox + RemovePodSandbox for every pod of --tag; total time.
    Teardown {
        #[arg(long, default_value = "bench")]
        tag: String,
        #[arg(long, default_value_t = 1)]
        parallel: usize,
    },
    /// Median latency of ListContainers and ListContainerStats with what is running now.
    List {
        #[arg(long, default_value_t = 50)]
        calls: usize,
        /// Fail unless at least this many containers are running.
        #[arg(long, default_value_t = 0)]
        expect: usize,
    },
    /// Start the streaming benchmarks' pod: container c0 sleeps, c1 serves a file of --bytes
    /// zero bytes at /big with busybox httpd on --port; returns once the server listens.
    StreamPod(StreamPodArgs),
    /// Median/p99 round trip of ExecSync running `true` in --container (or `sh -c <--sh>`: a
    /// workload, which must exit 0; its output is ignored and there is no warm-up call).
    ExecSync {
        #[arg(long)]
        container: String,
        #[arg(long, default_value_t = 100)]
        calls: usize,
        #[arg(long)]
        sh: Option<String>,
    },
    /// Median/p99 round trip of Exec + a SPDY v4.channel.k8s.io session running `true`
    /// (stdout and stderr, no tty) until its status arrives.
    ExecStream {
        #[arg(long)]
        container: String,
        #[arg(long, default_value_t = 100)]
        calls: usize,
    },
    /// PortForward + a SPDY portforward.k8s.io session downloading /big (--bytes long) from
    /// the HTTP server on --port in --pod; MB/s (10^6 bytes) of each of --transfers downloads.
    PortForward(PortForwardArgs),
}

#[derive(Args)]
struct StreamPodArgs {
    /// A busybox image (sleep, sh, head, httpd).
    #[arg(long)]
    image: String,
    #[arg(long)]
    pause_image: Option<String>,
    #[arg(long)]
    pause_already_pulled: bool,
    #[arg(long, default_value = "stream")]
    tag: String,
    #[arg(long)]
    log_dir: PathBuf,
    #[arg(long, default_value = "")]
    cgroup_parent: String,
    #[arg(long, default_value = "")]
    runtime_handler: String,
    #[arg(long, default_value_t = 100_000_000)]
    bytes: u64,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// How long the server may take to write the file and listen.
    #[arg(long, default_value_t = 120)]
    ready_timeout_secs: u64,
}

#[derive(Args)]
struct PortForwardArgs {
    #[arg(long)]
    pod: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Size of /big on the server; a response of another length fails the run.
    #[arg(long, default_value_t = 100_000_000)]
    bytes: u64,
    #[arg(long, default_value_t = 1)]
    transfers: usize,
    /// SPDY receive window per stream announced to the server, in KiB. kubectl's SPDY library
    /// announces none and ignores windows, so a large one keeps flow control out of the way.
    #[arg(long, default_value_t = 16 * 1024)]
    window_kib: u32,
    #[arg(long, default_value_t = 300)]
    transfer_timeout_secs: u64,
}

#[derive(Args)]
struct PodsArgs {
    #[arg(long, default_value_t = 30)]
    count: usize,
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Image of every container.
    #[arg(long)]
    image: String,
    /// Command of every container, split on spaces; empty runs the image's own (httpd's server).
    #[arg(long, default_value = "")]
    command: String,
    #[arg(long, default_value_t = 1)]
    containers_per_pod: usize,
    /// The daemon's sandbox image; checked (or pulled) before timing.
    #[arg(long)]
    pause_image: Option<String>,
    /// The images were pulled already: fail rather than pull if one is missing.
    #[arg(long)]
    pause_already_pulled: bool,
    /// Pods are labelled berth-bench=<tag>; `teardown --tag` finds them by it.
    #[arg(long, default_value = "bench")]
    tag: String,
    /// Pod log directories are made under it.
    #[arg(long)]
    log_dir: PathBuf,
    /// cgroupfs parent for the pods (each gets <parent>/<pod name>); empty: the daemon's default.
    #[arg(long, default_value = "")]
    cgroup_parent: String,
    #[arg(long, default_value = "")]
    runtime_handler: String,
    /// Leave the pods running (for memory readings and `list`); `teardown` removes them later.
    #[arg(long)]
    keep: bool,
    /// After timing, GET / on every pod's IP at this port (the httpd image listens on 8080).
    #[arg(long)]
    check_http: Option<u16>,
}

async fn run(cli: Cli) -> Result<Value, RunError> {
    let channel = connect::channel(&cli.socket, Duration::from_secs(cli.rpc_timeout_secs)).await?;
    let runtime = RuntimeServiceClient::new(channel.clone());
    let mut image = ImageServiceClient::new(channel);
    match cli.scenario {
        Scenario::Pull { images: refs } => {
            let mut out = Vec::new();
            for r in &refs {
                let (took, image_ref) = images::pull(&mut image, r).await?;
                out.push(json!({"image": r, "image_ref": image_ref, "ms": ms(took)}));
            }
            Ok(json!({"scenario": "pull", "images": out}))
        }
        Scenario::Pods(a) => {
            let mut wanted = vec![a.image.as_str()];
            wanted.extend(a.pause_image.as_deref());
            images::ensure(&mut image, &wanted, a.pause_already_pulled).await?;
            let plan = spec::Plan {
                tag: a.tag.clone(),
                image: a.image.clone(),
                command: a.command.split_whitespace().map(String::from).collect(),
                containers_per_pod: a.containers_per_pod,
                log_dir: a.log_dir,
                cgroup_parent: a.cgroup_parent,
                runtime_handler: a.runtime_handler,
            };
            let started = pods::start_all(runtime.clone(), plan, a.count, a.parallel).await?;
            let mut out = json!({
                "scenario": "pods",
                "count": a.count,
                "parallel": a.parallel,
                "containers_per_pod": a.containers_per_pod,
                "start": latency_json(&started.latencies),
                "start_total_s": started.total.as_secs_f64(),
            });
            if let Some(port) = a.check_http {
                let n = probe::http_all(runtime.clone(), &started.pod_ids, port).await?;
                out["http_ok"] = json!(n);
            }
            if !a.keep {
                let t = teardown::teardown(runtime, &a.tag, a.parallel).await?;
                out["teardown"] = json!({"pods": t.pods, "total_s": t.total.as_secs_f64()});
            }
            Ok(out)
        }
        Scenario::Teardown { tag, parallel } => {
            let t = teardown::teardown(runtime, &tag, parallel).await?;
            Ok(
                json!({"scenario": "teardown", "pods": t.pods, "parallel": parallel, "total_s": t.total.as_secs_f64()}),
            )
        }
        Scenario::List { calls, expect } => {
            let l = list::measure(runtime, calls, expect).await?;
            Ok(json!({
                "scenario": "list",
                "running": l.running,
                "stats_entries": l.with_stats,
                "list_containers": latency_json(&l.list_containers),
                "list_container_stats": latency_json(&l.list_container_stats),
            }))
        }
        Scenario::StreamPod(a) => {
            let mut wanted = vec![a.image.as_str()];
            wanted.extend(a.pause_image.as_deref());
            images::ensure(&mut image, &wanted, a.pause_already_pulled).await?;
            let plan = spec::Plan {
                tag: a.tag,
                image: a.image,
                command: vec!["sleep".into(), "3600".into()],
                containers_per_pod: 2,
                log_dir: a.log_dir,
                cgroup_parent: a.cgroup_parent,
                runtime_handler: a.runtime_handler,
            };
            let patience = Duration::from_secs(a.ready_timeout_secs);
            let p = stream_pod::start(runtime, &plan, a.bytes, a.port, patience).await?;
            Ok(json!({
                "scenario": "stream-pod",
                "pod": p.pod,
                "sleeper": p.sleeper,
                "server": p.server,
                "ip": p.ip,
                "port": a.port,
                "path": stream_pod::SERVED_PATH,
                "bytes": a.bytes,
            }))
        }
        Scenario::ExecSync {
            container,
            calls,
            sh,
        } => {
            let d = exec_sync::measure(runtime, &container, calls, sh.as_deref()).await?;
            Ok(json!({
                "scenario": "exec-sync",
                "container": container,
                "sh": sh,
                "round_trip": latency_json(&d),
            }))
        }
        Scenario::ExecStream { container, calls } => {
            let d = exec_stream::measure(runtime, &container, calls).await?;
            Ok(json!({
                "scenario": "exec-stream",
                "protocol": exec_stream::PROTOCOL,
                "container": container,
                "round_trip": latency_json(&d),
            }))
        }
        Scenario::PortForward(a) => {
            let plan = port_forward::Plan {
                pod: a.pod,
                port: a.port,
                path: stream_pod::SERVED_PATH.into(),
                bytes: a.bytes,
                window: a.window_kib.saturating_mul(1024),
                timeout: Duration::from_secs(a.transfer_timeout_secs),
            };
            let t = port_forward::measure(runtime, &plan, a.transfers).await?;
            let rate = |d| port_forward::Transfer::mb_per_s(plan.bytes, d);
            let total: Vec<f64> = t.iter().map(|x| rate(x.total)).collect();
            let body: Vec<f64> = t.iter().map(|x| rate(x.body)).collect();
            Ok(json!({
                "scenario": "port-forward",
                "protocol": port_forward::PROTOCOL,
                "pod": plan.pod,
                "port": plan.port,
                "bytes": plan.bytes,
                "window_kib": a.window_kib,
                "mb_per_s": total,
                "median_mb_per_s": port_forward::median(&total),
                "body_mb_per_s": body,
                "median_body_mb_per_s": port_forward::median(&body),
            }))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-cri-bench: start tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-cri-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
