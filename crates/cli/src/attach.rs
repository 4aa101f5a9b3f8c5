//! Running a started process to its end: wait for its exit (the Wait call is made before Start
//! so no exit can be missed), forward SIGINT/SIGTERM to it (or, with a terminal, keep the pty
//! size in step with ours), and drain its output.

use std::time::Duration;

use anyhow::{anyhow, Result};
use containerd_client::services::v1::{KillRequest, ResizePtyRequest, StartRequest, WaitRequest};
use tokio::signal::unix::{signal, SignalKind};

use crate::conn::Conn;
use crate::stdio::{self, Attached};

/// How long output may keep flowing after the exit before we stop waiting for it.
const DRAIN: Duration = Duration::from_secs(5);

/// Starts `exec_id` (empty: the task's init) and, unless `io` is `None` (detached), waits for
/// it; returns its exit status (`None` when detached).
pub async fn start_and_wait(
    conn: &Conn,
    container_id: &str,
    exec_id: &str,
    io: Option<&mut Attached>,
) -> Result<Option<u32>> {
    let Some(io) = io else {
        conn.tasks()
            .start(StartRequest {
                container_id: container_id.into(),
                exec_id: exec_id.into(),
            })
            .await?;
        return Ok(None);
    };
    let mut tasks = conn.tasks();
    let req = WaitRequest {
        container_id: container_id.into(),
        exec_id: exec_id.into(),
    };
    let waiter = tokio::spawn(async move { tasks.wait(req).await });
    // Give the Wait call a moment to reach the server before the process can exit.
    tokio::task::yield_now().await;
    if io.paths.terminal {
        // The pty exists since create: size it before the process first looks at it.
        resize(conn, container_id, exec_id).await;
    }
    if let Err(e) = conn
        .tasks()
        .start(StartRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
        })
        .await
    {
        waiter.abort();
        return Err(e.into());
    }
    let helper = if io.paths.terminal {
        tokio::spawn(follow_winch(
            conn.clone(),
            container_id.into(),
            exec_id.into(),
        ))
    } else {
        tokio::spawn(forward_signals(
            conn.clone(),
            container_id.into(),
            exec_id.into(),
        ))
    };
    let status = waiter.await.map_err(|e| anyhow!("wait: {e}"));
    helper.abort();
    let status = status??.into_inner();
    io.drain(DRAIN);
    Ok(Some(status.exit_status))
}

async fn resize(conn: &Conn, container_id: &str, exec_id: &str) {
    if let Some((width, height)) = stdio::terminal_size() {
        let _ = conn
            .tasks()
            .resize_pty(ResizePtyRequest {
                container_id: container_id.into(),
                exec_id: exec_id.into(),
                width,
                height,
            })
            .await;
    }
}

async fn follow_winch(conn: Conn, container_id: String, exec_id: String) {
    resize(&conn, &container_id, &exec_id).await;
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        resize(&conn, &container_id, &exec_id).await;
    }
}

async fn forward_signals(conn: Conn, container_id: String, exec_id: String) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let sig = tokio::select! {
            Some(()) = int.recv() => libc_signal::SIGINT,
            Some(()) = term.recv() => libc_signal::SIGTERM,
            else => return,
        };
        let _ = conn
            .tasks()
            .kill(KillRequest {
                container_id: container_id.clone(),
                exec_id: exec_id.clone(),
                signal: sig,
                all: false,
            })
            .await;
    }
}

/// Linux signal numbers (stable ABI) for the few signals forwarded.
mod libc_signal {
    pub const SIGINT: u32 = 2;
    pub const SIGTERM: u32 = 15;
}
