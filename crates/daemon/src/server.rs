//! Start-up, serving and shutdown.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_api::server as srv;
use berth_snapshot::Snapshotter;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::events::Exchange;
use crate::gc::Gc;
use crate::services::Service;

/// containerd accepts messages up to 16 MiB.
const MAX_MESSAGE: usize = 16 << 20;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    for dir in [&cfg.root, &cfg.state] {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::set_permissions(&cfg.root, fs::Permissions::from_mode(0o711))?;
    let _lock = lock_root(&cfg.root)?;
    crate::sandbox::write_config(&cfg)?;

    let root = cfg.root.clone();
    let (store, snapshotters) = tokio::task::spawn_blocking(move || open_backends(&root)).await??;
    let events = Exchange::default();
    let tasks = berth_runtime::TaskManager::new(runtime_config(&cfg)?, Arc::new(events.clone()))
        .await
        .context("start the task manager")?;
    let daemon = Arc::new(Daemon {
        store,
        snapshotters,
        default_snapshotter: cfg.snapshotter.clone(),
        events,
        tasks,
        gc: Gc::new(Duration::from_millis(cfg.gc_delay_ms)),
        streams: Default::default(),
        registry: registry_client(&cfg)?,
        max_concurrent_downloads: cfg.registry.max_concurrent_downloads.max(1),
        uuid: server_uuid(&cfg.root)?,
        root: cfg.root.clone(),
        cri: crate::cri::Cri::new(
            cfg.cri.clone(),
            &cfg.state,
            &cfg.sandbox.kernel,
            crate::sandbox::pool_config(&cfg),
        ),
    });
    if !daemon.snapshotters.contains_key(&cfg.snapshotter) {
        bail!(
            "default snapshotter {:?} is not one of {:?}",
            cfg.snapshotter,
            daemon.snapshotters.keys()
        );
    }
    // Tasks outlive the daemon: find them before serving anyone.
    let recovered = daemon.tasks.recover().await.context("recover tasks")?;
    tracing::info!(
        reconnected = recovered.reconnected.len(),
        stopped = recovered.stopped.len(),
        cleaned = recovered.cleaned.len(),
        "tasks recovered"
    );
    for e in &recovered.errors {
        tracing::warn!(error = %e, "task recovery");
    }
    let svc = Service(daemon.clone());
    // CRI records come back after the tasks they describe.
    svc.cri_recover().await;
    if cfg.cri.enabled {
        start_stream_server(&cfg, &daemon).await?;
    }
    if daemon.cri.warm.enabled() {
        let d = daemon.clone();
        tokio::spawn(async move {
            // A previous berthd's unused warm guests first.
            d.cri.warm.drain(&d.cri.cni).await;
            d.cri.warm.fill(&d.cri.cni).await;
        });
    }
    crate::gc::spawn_collector(daemon.clone());
    // Whatever a crash left unreferenced goes now.
    daemon.gc.schedule();

    let listener = bind(&cfg.address)?;
    tracing::info!(address = %cfg.address.display(), root = %cfg.root.display(), "berthd serving");
    let result = tonic::transport::Server::builder()
        .trace_fn(request_span)
        .add_service(srv::version::version_server::VersionServer::new(
            svc.clone(),
        ))
        .add_service(srv::namespaces::namespaces_server::NamespacesServer::new(
            svc.clone(),
        ))
        .add_service(
            srv::introspection::introspection_server::IntrospectionServer::new(svc.clone()),
        )
        .add_service(
            srv::events::events_server::EventsServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(srv::leases::leases_server::LeasesServer::new(svc.clone()))
        .add_service(
            srv::images::images_server::ImagesServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            srv::content::content_server::ContentServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(srv::snapshots::snapshots_server::SnapshotsServer::new(
            svc.clone(),
        ))
        .add_service(srv::diff::diff_server::DiffServer::new(svc.clone()))
        .add_service(
            srv::containers::containers_server::ContainersServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(srv::tasks::tasks_server::TasksServer::new(svc.clone()))
        .add_service(srv::streaming::streaming_server::StreamingServer::new(
            svc.clone(),
        ))
        .add_service(srv::transfer::transfer_server::TransferServer::new(
            svc.clone(),
        ))
        .add_service(
            k8s_cri::v1::runtime_service_server::RuntimeServiceServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            k8s_cri::v1::image_service_server::ImageServiceServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal())
        .await;
    daemon.cri.warm.drain(&daemon.cri.cni).await;
    let _ = fs::remove_file(&cfg.address);
    let _ = fs::remove_file(&daemon.tasks.config().ttrpc_address);
    tracing::info!("berthd stopped");
    result.context("serve gRPC")
}

/// The CRI streaming server (exec/attach/port-forward URLs), on
/// `[cri] stream_server_address:stream_server_port` (port 0: any free port).
async fn start_stream_server(cfg: &Config, daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let address: std::net::IpAddr = cfg.cri.stream_server_address.parse().with_context(|| {
        format!(
            "[cri] stream_server_address {:?} is not an IP address",
            cfg.cri.stream_server_address
        )
    })?;
    let c = &cfg.cri;
    let tls = match (
        c.enable_tls_streaming,
        c.tls_cert_file.as_os_str().is_empty(),
        c.tls_key_file.as_os_str().is_empty(),
    ) {
        (false, _, _) => None,
        (true, true, true) => Some(berth_stream::TlsConfig::SelfSigned),
        (true, false, false) => Some(berth_stream::TlsConfig::Files {
            cert: c.tls_cert_file.clone(),
            key: c.tls_key_file.clone(),
        }),
        _ => bail!("[cri] tls_cert_file and tls_key_file must be set together"),
    };
    let server = berth_stream::Server::start(
        berth_stream::Config {
            address,
            port: cfg.cri.stream_server_port,
            idle_timeout: Duration::from_secs(cfg.cri.stream_idle_timeout_secs.max(1)),
            tls,
            advertise: address.is_unspecified().then(node_address),
            ..Default::default()
        },
        Arc::new(crate::cri::streaming::StreamBackend(Arc::downgrade(daemon))),
    )
    .await
    .context("start the CRI streaming server")?;
    tracing::info!(address = %server.local_addr(), "CRI streaming server listening");
    let _ = daemon.cri.stream.set(server);
    Ok(())
}

/// The address clients reach this node on when the streaming server binds every address: the
/// source address of the default route (a UDP connect sends no packet), else loopback.
fn node_address() -> std::net::IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// One span per request, named by its method and namespace, so every log line says whose it is.
fn request_span(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let ns = req
        .headers()
        .get(crate::context::NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("rpc", method = %req.uri().path(), ns = %ns)
}

/// Where tasks live: bundles under the state dir, shims found beside berthd first, then on PATH.
fn runtime_config(cfg: &Config) -> anyhow::Result<berth_runtime::RuntimeConfig> {
    let exe = std::env::current_exe().context("locate berthd")?;
    let mut ttrpc = cfg.address.clone().into_os_string();
    ttrpc.push(".ttrpc");
    Ok(berth_runtime::RuntimeConfig {
        state_dir: cfg.state.join("runtime"),
        root_dir: cfg.root.join("runtime"),
        address: cfg.address.clone(),
        ttrpc_address: ttrpc.into(),
        shim_dirs: exe
            .parent()
            .map(|d| vec![d.to_path_buf()])
            .unwrap_or_default(),
        shim_env: vec![(
            "BERTH_SANDBOX_CONFIG".into(),
            crate::sandbox::config_path(cfg).display().to_string(),
        )],
    })
}

/// The registry client every pull and push starts from (hosts.toml dir, stall timeout, credentials).
fn registry_client(cfg: &Config) -> anyhow::Result<berth_registry::Client> {
    let r = &cfg.registry;
    berth_registry::Client::new(berth_registry::RegistryConfig {
        config_path: Some(r.config_path.clone()),
        stall_timeout: Duration::from_secs(r.stall_timeout_secs.max(1)),
        credentials: r
            .credentials
            .iter()
            .map(|(host, c)| {
                (
                    host.clone(),
                    berth_registry::Credentials {
                        username: c.username.clone(),
                        password: c.password.clone(),
                    },
                )
            })
            .collect(),
    })
    .context("registry client")
}

type Backends = (
    Arc<berth_store::Store>,
    BTreeMap<String, Arc<dyn Snapshotter>>,
);

fn open_backends(root: &Path) -> anyhow::Result<Backends> {
    let store = berth_store::Store::open(root).context("open metadata and content store")?;
    let snaps = root.join("snapshots");
    let mut snapshotters: BTreeMap<String, Arc<dyn Snapshotter>> = BTreeMap::new();
    let overlay = berth_snapshot::open_overlay(&snaps.join("overlayfs"))
        .context("open overlayfs snapshotter")?;
    snapshotters.insert("overlayfs".into(), Arc::new(overlay));
    let native =
        berth_snapshot::open_native(&snaps.join("native")).context("open native snapshotter")?;
    snapshotters.insert("native".into(), Arc::new(native));
    Ok((Arc::new(store), snapshotters))
}

/// Two daemons on one root would corrupt it: the second one refuses to start.
fn lock_root(root: &Path) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    let path = root.join("berthd.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!("root {} is in use by another berthd ({e})", root.display())
    })
}

/// The server's identity survives restarts: created once, atomically, under the root.
fn server_uuid(root: &Path) -> anyhow::Result<String> {
    let path = root.join("uuid");
    if let Ok(text) = fs::read_to_string(&path) {
        let id = text.trim();
        if uuid::Uuid::parse_str(id).is_ok() {
            return Ok(id.to_string());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = root.join("uuid.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(id.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    Ok(id)
}

fn bind(address: &PathBuf) -> anyhow::Result<UnixListener> {
    if let Some(dir) = address.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if address.exists() {
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            bail!("{} is already served by another process", address.display());
        }
        fs::remove_file(address)
            .with_context(|| format!("remove stale socket {}", address.display()))?;
    }
    let listener =
        UnixListener::bind(address).with_context(|| format!("listen on {}", address.display()))?;
    fs::set_permissions(address, fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn shutdown_signal() {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
