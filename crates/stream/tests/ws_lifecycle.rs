//! Port forwarding over WebSocket, and sessions whose client vanishes or idles.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_stream::{Config, PortForwardRequest};
use common::*;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A TCP server answering every read with "echo:" + the bytes read.
async fn echo_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut reply = b"echo:".to_vec();
                            reply.extend_from_slice(&buf[..n]);
                            if s.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, task)
}

async fn next_binary(ws: &mut Client) -> Vec<u8> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message within 5 s")
            .expect("connection ended")
            .unwrap();
        if let Message::Binary(b) = msg {
            return b.to_vec();
        }
    }
}

#[tokio::test]
async fn port_forward_over_websocket() {
    let (server, _) = start(Config::default()).await;
    let (open_port, listener) = echo_listener().await;
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let url = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![],
        })
        .unwrap();
    let url = format!("{url}?ports={open_port},{closed_port}");
    let mut ws = connect(&url, "v4.channel.k8s.io").await;

    // Every channel opens with its port number, little-endian.
    let mut prefixes = Vec::new();
    for _ in 0..4 {
        prefixes.push(next_binary(&mut ws).await);
    }
    let open = open_port.to_le_bytes();
    let closed = closed_port.to_le_bytes();
    for (ch, port) in [(0u8, open), (1, open), (2, closed), (3, closed)] {
        assert!(
            prefixes.contains(&vec![ch, port[0], port[1]]),
            "no port prefix on channel {ch}: {prefixes:?}"
        );
    }
    send(&mut ws, 0, b"ping").await;
    let mut data = Vec::new();
    let mut errors = Vec::new();
    while data != b"echo:ping" || errors.is_empty() {
        let m = next_binary(&mut ws).await;
        match m[0] {
            0 => data.extend_from_slice(&m[1..]),
            3 => errors.extend_from_slice(&m[1..]),
            other => panic!("unexpected message on channel {other}: {m:?}"),
        }
    }
    let errors = String::from_utf8(errors).unwrap();
    assert!(
        errors.contains(&format!("port {closed_port}")),
        "error text: {errors}"
    );
    drop(ws);
    eventually("the session ends", || server.active_sessions() == 0).await;
    listener.abort();
}

#[tokio::test]
async fn port_forward_refuses_ports_not_requested() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![80],
        })
        .unwrap();
    match try_connect(&format!("{url}?ports=81"), "v4.channel.k8s.io").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[tokio::test]
async fn client_vanishing_mid_exec_closes_stdin() {
    let (server, seen) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["hang"], true, true, false, false))
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    send(&mut ws, 0, b"some input").await;
    eventually("the exec starts", || {
        seen.started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(server.active_sessions(), 1);
    // No close handshake: the TCP connection just goes away.
    drop(ws);
    eventually("the backend sees its stdin close", || {
        seen.io_closed.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the exec ends", || {
        seen.finished.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("no session task is left", || server.active_sessions() == 0).await;
}

#[tokio::test]
async fn client_vanishing_mid_exec_fails_stdout_writes() {
    let (server, seen) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["spam"], false, true, false, false))
        .unwrap();
    let mut ws = connect(&url, "v5.channel.k8s.io").await;
    let first = next_binary(&mut ws).await;
    assert_eq!(first, b"\x01tick\n");
    drop(ws);
    eventually("the backend sees stdout fail", || {
        seen.io_closed.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("no session task is left", || server.active_sessions() == 0).await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let cfg = Config {
        idle_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let (server, seen) = start(cfg).await;
    let url = server
        .exec_url(exec(&["hang"], true, true, false, false))
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    eventually("the exec starts", || {
        seen.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the idle connection was not closed");
    eventually("the backend sees its stdin close", || {
        seen.io_closed.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("no session task is left", || server.active_sessions() == 0).await;
}

#[tokio::test]
async fn activity_keeps_a_connection_open() {
    let cfg = Config {
        idle_timeout: Duration::from_millis(400),
        ..Config::default()
    };
    let (server, seen) = start(cfg).await;
    let url = server
        .exec_url(exec(&["echo"], true, true, false, false))
        .unwrap();
    let mut ws = connect(&url, "v5.channel.k8s.io").await;
    for _ in 0..8 {
        send(&mut ws, 0, b"x").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send(&mut ws, 255, &[0]).await;
    let got = collect(&mut ws).await;
    assert_eq!(got[&1], b"xxxxxxxx");
    assert_eq!(seen.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropping_the_server_ends_sessions() {
    let (server, seen) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["hang"], true, true, false, false))
        .unwrap();
    let _ws = connect(&url, "v4.channel.k8s.io").await;
    eventually("the exec starts", || {
        seen.started.load(Ordering::SeqCst) == 1
    })
    .await;
    server.shutdown();
    eventually("the exec ends", || {
        seen.finished.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("no session task is left", || server.active_sessions() == 0).await;
}
