//! `berth image pull|push`: the work runs in the daemon (containerd's Transfer service); this side
//! opens a progress stream to draw per-layer bars, and an auth stream to answer credential requests.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use containerd_client::services::v1::streaming_client::StreamingClient;
use containerd_client::services::v1::transfer_client::TransferClient;
use containerd_client::services::v1::{StreamInit, TransferOptions, TransferRequest};
use containerd_client::tonic::Streaming;
use containerd_client::types::transfer::{
    AuthRequest, AuthResponse, ImageStore, OciRegistry, Progress, RegistryResolver,
    UnpackConfiguration,
};
use containerd_client::types::Platform;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use prost::Message;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::conn::Conn;

pub struct PullArgs {
    pub reference: String,
    pub platform: Option<String>,
    pub all_platforms: bool,
    pub user: Option<String>,
    pub snapshotter: String,
}

/// A stream opened on the daemon under a fresh id: what it sends us, and a way to answer.
struct ClientStream {
    id: String,
    from_daemon: Streaming<Any>,
    to_daemon: mpsc::Sender<Any>,
}

async fn open_stream(conn: &Conn, purpose: &str) -> Result<ClientStream> {
    let id = format!("berth-{purpose}-{}-{}", std::process::id(), nanos());
    let (tx, rx) = mpsc::channel(8);
    tx.send(containerd_client::to_any(&StreamInit { id: id.clone() }))
        .await?;
    let mut from_daemon = StreamingClient::new(conn.svc_pub())
        .stream(ReceiverStream::new(rx))
        .await
        .context("open a stream on the daemon")?
        .into_inner();
    // The daemon acknowledges the init before anything else.
    from_daemon
        .message()
        .await
        .context("stream acknowledgement")?;
    Ok(ClientStream {
        id,
        from_daemon,
        to_daemon: tx,
    })
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            ..Default::default()
        }),
        [os, arch, variant] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
            ..Default::default()
        }),
        _ => bail!("platform {s:?} is not os/arch[/variant]"),
    }
}

/// Answers the daemon's credential requests with `user:password`.
fn serve_auth(mut stream: ClientStream, user: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (username, secret) = user
            .split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .unwrap_or((user, String::new()));
        while let Ok(Some(msg)) = stream.from_daemon.message().await {
            if AuthRequest::decode(msg.value.as_slice()).is_err() {
                continue;
            }
            let answer = AuthResponse {
                auth_type: 1, // CREDENTIALS
                secret: secret.clone(),
                username: username.clone(),
                expire_at: None,
            };
            if stream
                .to_daemon
                .send(containerd_client::to_any(&answer))
                .await
                .is_err()
            {
                break;
            }
        }
    })
}

/// Draws what the daemon reports: one bar per layer and a line per step on a terminal; nothing
/// otherwise (scripts get only the result on stdout).
async fn show_progress(mut stream: ClientStream) {
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .ok();
    while let Ok(Some(msg)) = stream.from_daemon.message().await {
        let Ok(p) = Progress::decode(msg.value.as_slice()) else {
            continue;
        };
        let short: String = p
            .name
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        match p.event.as_str() {
            "downloading" if tty => {
                let bar = bars.entry(p.name.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(p.total.max(0) as u64));
                    if let Some(s) = &style {
                        b.set_style(s.clone());
                    }
                    b.set_prefix(short.clone());
                    b
                });
                bar.set_position(p.progress.max(0) as u64);
            }
            "complete" => {
                if let Some(b) = bars.remove(&p.name) {
                    b.finish();
                }
            }
            "downloading" => {}
            other if tty => {
                let _ = multi.println(format!("{other}: {}", p.name));
            }
            _ => {}
        }
    }
}

pub async fn pull(conn: &Conn, args: PullArgs) -> Result<()> {
    let progress = open_stream(conn, "progress").await?;
    let progress_id = progress.id.clone();
    let mut resolver = RegistryResolver::default();
    let auth_task = match args.user {
        Some(user) => {
            let auth = open_stream(conn, "auth").await?;
            resolver.auth_stream = auth.id.clone();
            Some(serve_auth(auth, user))
        }
        None => None,
    };
    let platform = args.platform.as_deref().map(parse_platform).transpose()?;
    let source = OciRegistry {
        reference: args.reference.clone(),
        resolver: Some(resolver),
    };
    let dest = ImageStore {
        platforms: platform.clone().into_iter().collect(),
        all_metadata: args.all_platforms,
        unpacks: vec![UnpackConfiguration {
            platform,
            snapshotter: args.snapshotter,
        }],
        ..Default::default()
    };
    let shown = tokio::spawn(show_progress(progress));
    let result = TransferClient::new(conn.svc_pub())
        .transfer(TransferRequest {
            source: Some(containerd_client::to_any(&source)),
            destination: Some(containerd_client::to_any(&dest)),
            options: Some(TransferOptions {
                progress_stream: progress_id,
            }),
        })
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), shown).await;
    if let Some(t) = auth_task {
        t.abort();
    }
    result?;
    // The image is stored under its normalised name: print it with its digest.
    crate::image::print_image(conn, &args.reference).await
}

pub async fn push(
    conn: &Conn,
    name: &str,
    target: Option<&str>,
    user: Option<String>,
) -> Result<()> {
    let mut resolver = RegistryResolver::default();
    let auth_task = match user {
        Some(user) => {
            let auth = open_stream(conn, "auth").await?;
            resolver.auth_stream = auth.id.clone();
            Some(serve_auth(auth, user))
        }
        None => None,
    };
    let source = ImageStore {
        name: name.to_string(),
        ..Default::default()
    };
    let dest = OciRegistry {
        reference: target.unwrap_or(name).to_string(),
        resolver: Some(resolver),
    };
    let result = TransferClient::new(conn.svc_pub())
        .transfer(TransferRequest {
            source: Some(containerd_client::to_any(&source)),
            destination: Some(containerd_client::to_any(&dest)),
            options: None,
        })
        .await;
    if let Some(t) = auth_task {
        t.abort();
    }
    result?;
    println!("pushed {}", target.unwrap_or(name));
    Ok(())
}
