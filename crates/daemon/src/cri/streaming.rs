//! berthd's side of the CRI streaming server (crates/stream speaks the protocols): exec
//! processes run through the task API with FIFOs for their stdio, attach taps the container's
//! own output (and stdin FIFO), port-forward dials localhost inside the pod's network namespace.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use berth_stream::{AttachRequest, Backend, BackendError, BoxStream, ExecRequest, Io};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, watch, Notify};

use super::io::{open_reader, open_writer, Fifos, UntilExit};
use super::log::Stream;
use super::meta::{ContainerState, SandboxState};
use super::NAMESPACE;
use crate::daemon::{blocking, Daemon};
use crate::services::Service;

/// The backend the streaming server calls; weak, so the daemon's state owns the server and not
/// the other way round.
pub struct StreamBackend(pub Weak<Daemon>);

impl StreamBackend {
    fn service(&self) -> Result<Service, BackendError> {
        self.0
            .upgrade()
            .map(Service)
            .ok_or_else(|| BackendError::Failed("berthd is shutting down".into()))
    }
}

fn failed(e: tonic::Status) -> BackendError {
    match e.code() {
        tonic::Code::NotFound => BackendError::NotFound(e.message().to_string()),
        _ => BackendError::Failed(e.message().to_string()),
    }
}

#[async_trait]
impl Backend for StreamBackend {
    async fn exec(&self, req: &ExecRequest, io: Io) -> Result<i32, BackendError> {
        self.service()?.stream_exec(req, io).await
    }

    async fn attach(&self, req: &AttachRequest, io: Io) -> Result<(), BackendError> {
        self.service()?.stream_attach(req, io).await
    }

    async fn port_forward(&self, pod: &str, port: u16) -> Result<BoxStream, BackendError> {
        self.service()?.stream_port_forward(pod, port).await
    }
}

/// Copies a process's output to the client until the process has exited and its pipe is
/// drained; a client that is gone (a failed write, or a failed flush while the process is quiet)
/// is reported through `broken`.
async fn pump_out<R: tokio::io::AsyncRead + Unpin>(
    mut from: UntilExit<R>,
    mut to: berth_stream::BoxWrite,
    broken: Arc<Notify>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => n,
            // A quiet process: make sure the client is still there.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if to.flush().await.is_err() {
                    broken.notify_one();
                    return;
                }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            broken.notify_one();
            return;
        }
    }
    let _ = to.shutdown().await;
}

impl Service {
    fn running_container(&self, id: &str) -> Result<super::meta::ContainerMeta, BackendError> {
        let meta = self.cri_container(id).map_err(failed)?;
        if meta.state != ContainerState::Running {
            return Err(BackendError::Failed(format!(
                "container {} is not running",
                meta.id
            )));
        }
        Ok(meta)
    }

    pub async fn stream_exec(&self, req: &ExecRequest, io: Io) -> Result<i32, BackendError> {
        let meta = self.running_container(&req.container_id)?;
        let spec = self.cri_record_spec(&meta.id).await.map_err(failed)?;
        let process = super::exec::exec_process(&spec, &req.cmd, req.tty).map_err(failed)?;
        let exec_id = format!("exec-{}", &super::meta::new_id()[..32]);
        let mut fifos = Fifos::at(
            self.cri.state_dir.join("exec").join(&exec_id),
            req.tty || io.stderr.is_none(),
        );
        if io.stdin.is_some() {
            fifos = fifos.with_stdin();
        }
        let f = fifos.clone();
        blocking(move || {
            f.create()
                .map_err(|e| tonic::Status::internal(format!("exec FIFOs: {e}")))
        })
        .await
        .map_err(failed)?;
        let r = self
            .run_stream_exec(&meta.id, &exec_id, process, &fifos, req, io)
            .await;
        let _ = self
            .tasks
            .delete_process(NAMESPACE, &meta.id, &exec_id)
            .await;
        fifos.remove();
        r
    }

    async fn run_stream_exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        fifos: &Fifos,
        req: &ExecRequest,
        mut io: Io,
    ) -> Result<i32, BackendError> {
        let gone = io.gone.clone();
        let (exited_tx, exited) = watch::channel(false);
        let broken = Arc::new(Notify::new());
        let mut pumps = Vec::new();
        let mut keepalive = Vec::new();
        if let Some(out) = io.stdout.take() {
            let (r, keep) = open_reader(&fifos.stdout)?;
            keepalive.push(keep);
            pumps.push(tokio::spawn(pump_out(
                UntilExit::new(r, exited.clone()),
                out,
                broken.clone(),
            )));
        } else {
            // Nobody reads it: drain it anyway so the process never blocks on a full pipe.
            let (r, keep) = open_reader(&fifos.stdout)?;
            keepalive.push(keep);
            pumps.push(tokio::spawn(drain(UntilExit::new(r, exited.clone()))));
        }
        if let Some(path) = &fifos.stderr {
            let (r, keep) = open_reader(path)?;
            keepalive.push(keep);
            match io.stderr.take() {
                Some(err) => pumps.push(tokio::spawn(pump_out(
                    UntilExit::new(r, exited.clone()),
                    err,
                    broken.clone(),
                ))),
                None => pumps.push(tokio::spawn(drain(UntilExit::new(r, exited.clone())))),
            }
        }
        self.tasks
            .exec(
                NAMESPACE,
                id,
                berth_runtime::ExecProcess {
                    exec_id: exec_id.to_string(),
                    spec: prost_types::Any {
                        type_url: super::exec::PROCESS_TYPE.into(),
                        value: process,
                    },
                    stdin: fifos.stdin_str(),
                    stdout: fifos.stdout_str(),
                    stderr: fifos.stderr_str(),
                    terminal: req.tty,
                },
            )
            .await
            .map_err(|e| BackendError::Failed(e.to_string()))?;
        let mut side_tasks = Vec::new();
        let started = self.tasks.start(NAMESPACE, id, exec_id).await;
        drop(keepalive);
        // Stdin, and its close, only once the process exists: a CloseIO before Start is lost.
        if let (Ok(_), Some(stdin), Some(path)) = (&started, io.stdin.take(), fifos.stdin.clone()) {
            side_tasks.push(self.pump_stdin(stdin, path, id, exec_id));
        }
        // Sizes can only be set once the process (and its terminal) exists; the ones the
        // client sent meanwhile wait in the channel.
        if let (Ok(_), Some(mut sizes)) = (&started, io.resize.take()) {
            let (s, id, exec_id) = (self.clone(), id.to_string(), exec_id.to_string());
            side_tasks.push(tokio::spawn(async move {
                while let Some(sz) = sizes.recv().await {
                    let _ = s
                        .tasks
                        .resize_pty(NAMESPACE, &id, &exec_id, sz.width.into(), sz.height.into())
                        .await;
                }
            }));
        }
        let result = match started {
            Err(e) => Err(BackendError::Failed(e.to_string())),
            Ok(_) => {
                tokio::select! {
                    r = self.tasks.wait(NAMESPACE, id, exec_id) => r
                        .map(|exit| exit.status as i32)
                        .map_err(|e| BackendError::Failed(e.to_string())),
                    _ = async { tokio::select! { _ = broken.notified() => {}, _ = gone.cancelled() => {} } } => {
                        // The client went away: the process must not outlive its session.
                        tracing::info!(id = %id, exec_id = %exec_id, "exec client gone; killing the process");
                        let _ = self.tasks.kill(NAMESPACE, id, exec_id, 9, false).await;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            self.tasks.wait(NAMESPACE, id, exec_id),
                        )
                        .await;
                        Err(BackendError::Failed("client disconnected".into()))
                    }
                }
            }
        };
        let _ = exited_tx.send(true);
        for p in pumps {
            let _ = p.await;
        }
        for t in side_tasks {
            t.abort();
        }
        result
    }

    /// Client stdin into the process's stdin FIFO; the client's end of stdin closes the process's.
    fn pump_stdin(
        &self,
        stdin: berth_stream::BoxRead,
        fifo: PathBuf,
        id: &str,
        exec_id: &str,
    ) -> tokio::task::JoinHandle<()> {
        let (s, id, exec_id) = (self.clone(), id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            copy_into_fifo(stdin, &fifo).await;
            let _ = s.tasks.close_io(NAMESPACE, &id, &exec_id, true).await;
        })
    }

    pub async fn stream_attach(&self, req: &AttachRequest, mut io: Io) -> Result<(), BackendError> {
        let meta = self.running_container(&req.container_id)?;
        let tap = self
            .cri
            .output_tap(&meta.id)
            .ok_or_else(|| BackendError::Failed(format!("container {} has no output", meta.id)))?;
        let mut rx = tap.subscribe();
        let mut exited = self.cri.exit_signal(&meta.id);
        if *exited.borrow() {
            return Ok(());
        }
        let mut side_tasks = Vec::new();
        if let Some(stdin) = io.stdin.take() {
            let path = self.cri.io_dir(&meta.id).join("stdin");
            if !meta.config.stdin || !path.exists() {
                return Err(BackendError::Failed(format!(
                    "container {} was not created with stdin",
                    meta.id
                )));
            }
            let (s, id, once) = (self.clone(), meta.id.clone(), meta.config.stdin_once);
            side_tasks.push(tokio::spawn(async move {
                copy_into_fifo(stdin, &path).await;
                if once {
                    let _ = s.tasks.close_io(NAMESPACE, &id, "", true).await;
                }
            }));
        }
        if let Some(mut sizes) = io.resize.take() {
            let (s, id) = (self.clone(), meta.id.clone());
            side_tasks.push(tokio::spawn(async move {
                while let Some(sz) = sizes.recv().await {
                    let _ = s
                        .tasks
                        .resize_pty(NAMESPACE, &id, "", sz.width.into(), sz.height.into())
                        .await;
                }
            }));
        }
        let (mut out, mut err) = (io.stdout.take(), io.stderr.take());
        // Copy the answer out at once: the watch guard must not live across an await.
        let gone = async move { exited.wait_for(|e| *e).await.is_ok() };
        tokio::pin!(gone);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Ok((stream, data)) => {
                        let to = match stream {
                            Stream::Stdout => out.as_mut(),
                            Stream::Stderr => err.as_mut().or(out.as_mut()),
                        };
                        if let Some(w) = to {
                            if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                                break;
                            }
                        }
                    }
                    // A slow client missed output: keep going with what comes next.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = &mut gone => break,
                _ = io.gone.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let gone = match out.as_mut() {
                        Some(w) => w.flush().await.is_err(),
                        None => false,
                    };
                    if gone {
                        break;
                    }
                }
            }
        }
        for t in side_tasks {
            t.abort();
        }
        for w in [out.as_mut(), err.as_mut()].into_iter().flatten() {
            let _ = w.shutdown().await;
        }
        Ok(())
    }

    pub async fn stream_port_forward(
        &self,
        pod: &str,
        port: u16,
    ) -> Result<BoxStream, BackendError> {
        let meta = self.cri_pod(pod).map_err(failed)?;
        if meta.state != SandboxState::Ready {
            return Err(BackendError::Failed(format!(
                "pod sandbox {} is not ready",
                meta.id
            )));
        }
        // A sandboxed pod's guest has taken its interface over: nothing listens in the pod's
        // namespace itself. Its server is reached at the pod IP, as the node reaches pods.
        let guest = self
            .cri
            .handlers
            .get(&meta.runtime_handler)
            .is_ok_and(|h| h.network_first);
        if let (true, Some(ip)) = (guest, meta.ips.first()) {
            let addr = format!("{ip}:{port}");
            let stream = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect(&addr),
            )
            .await
            .map_err(|_| {
                BackendError::Failed(format!("connect to {addr} in the sandbox: timed out"))
            })?
            .map_err(|e| BackendError::Failed(format!("connect to {addr} in the sandbox: {e}")))?;
            return Ok(Box::new(stream));
        }
        let netns = match &meta.netns {
            Some(p) => p.clone(),
            // A host-network pod's localhost is the host's.
            None => PathBuf::from("/proc/1/ns/net"),
        };
        let stream = connect_in_netns(&netns, port).await?;
        Ok(Box::new(stream))
    }
}

/// A client's stdin into a process's stdin FIFO, until the client ends it (or the FIFO fails).
async fn copy_into_fifo(mut stdin: berth_stream::BoxRead, fifo: &Path) {
    let Ok(mut w) = open_writer(fifo) else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn drain<R: tokio::io::AsyncRead + Unpin>(mut r: UntilExit<R>) {
    let mut buf = vec![0u8; 16 * 1024];
    while r.read(&mut buf).await > 0 {}
}

/// `localhost:port` dialed from inside the network namespace at `netns`. The socket keeps the
/// namespace it was made in, so only the connect runs on a thread that enters it; that thread
/// is a fresh one that ends right after (a pooled thread must never change namespaces).
async fn connect_in_netns(netns: &Path, port: u16) -> Result<tokio::net::TcpStream, BackendError> {
    let netns = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| -> std::io::Result<std::net::TcpStream> {
            let f = std::fs::File::open(&netns)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let s = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(10),
            )?;
            s.set_nonblocking(true)?;
            Ok(s)
        })();
        let _ = tx.send(r);
    });
    let std_stream = rx
        .await
        .map_err(|_| BackendError::Failed("port-forward dialer thread died".into()))?
        .map_err(|e| {
            BackendError::Failed(format!("connect to localhost:{port} in the pod: {e}"))
        })?;
    tokio::net::TcpStream::from_std(std_stream).map_err(BackendError::Io)
}
