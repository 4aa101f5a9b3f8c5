//! Exec and attach over WebSocket against a fake backend.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use berth_stream::{AttachRequest, Config, Error, PortForwardRequest};
use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn status(got: &std::collections::BTreeMap<u8, Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(got.get(&3).expect("no status on the error channel")).unwrap()
}

#[tokio::test]
async fn v4_exec_reports_output_and_exit_code() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["out-err", "7"], false, true, true, false))
        .unwrap();
    assert!(url.starts_with(&format!("http://{}/exec/", server.local_addr())));
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    let got = collect(&mut ws).await;
    assert_eq!(got[&1], b"out\n");
    assert_eq!(got[&2], b"err\n");
    let st = status(&got);
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "7");
}

#[tokio::test]
async fn v4_exec_success_status() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["out-err", "0"], false, true, true, false))
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    let got = collect(&mut ws).await;
    assert_eq!(
        status(&got),
        serde_json::json!({"metadata": {}, "status": "Success"})
    );
}

#[tokio::test]
async fn v5_stdin_close_reaches_the_backend() {
    let (server, seen) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["echo"], true, true, false, false))
        .unwrap();
    let mut ws = connect(&url, "v5.channel.k8s.io").await;
    send(&mut ws, 0, b"hello ").await;
    send(&mut ws, 0, b"world").await;
    // Close stdin: the echo only ends (and the session with it) on stdin EOF.
    send(&mut ws, 255, &[0]).await;
    let got = collect(&mut ws).await;
    assert_eq!(got[&1], b"hello world");
    assert_eq!(status(&got)["status"], "Success");
    assert_eq!(seen.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn base64_exec() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["out-err", "3"], false, true, true, false))
        .unwrap();
    let mut ws = connect(&url, "v4.base64.channel.k8s.io").await;
    let mut got: std::collections::BTreeMap<char, Vec<u8>> = Default::default();
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            Message::Text(t) => {
                let mut chars = t.chars();
                let ch = chars.next().unwrap();
                let data = base64::engine::general_purpose::STANDARD
                    .decode(chars.as_str())
                    .unwrap();
                got.entry(ch).or_default().extend(data);
            }
            Message::Close(_) => break,
            Message::Binary(_) => panic!("binary message in base64 mode"),
            _ => {}
        }
    }
    assert_eq!(got[&'1'], b"out\n");
    assert_eq!(got[&'2'], b"err\n");
    let st: serde_json::Value = serde_json::from_slice(&got[&'3']).unwrap();
    assert_eq!(st["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn base64_stdin_in_text_frames() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["sizes", "1"], true, true, false, true))
        .unwrap();
    let mut ws = connect(&url, "base64.channel.k8s.io").await;
    let resize = base64::engine::general_purpose::STANDARD.encode(br#"{"Width":33,"Height":9}"#);
    ws.send(Message::Text(format!("4{resize}").into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            Message::Text(t) if t.starts_with('1') => out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&t.as_bytes()[1..])
                    .unwrap(),
            ),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(out, b"33x9\n");
}

#[tokio::test]
async fn resize_messages_reach_the_backend() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["sizes", "2"], true, true, false, true))
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    send(&mut ws, 4, br#"{"Width":80,"Height":24}"#).await;
    send(&mut ws, 4, br#"{"Width":100,"Height":50}"#).await;
    let got = collect(&mut ws).await;
    assert_eq!(got[&1], b"80x24\n100x50\n");
}

#[tokio::test]
async fn attach_over_v1_channel_protocol() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .attach_url(AttachRequest {
            container_id: "c1".into(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let mut ws = connect(&url, "channel.k8s.io").await;
    let got = collect(&mut ws).await;
    assert_eq!(got[&1], b"attached\n");
    // channel.k8s.io reports nothing on the error channel when all went well.
    assert!(!got.contains_key(&3));
}

#[tokio::test]
async fn backend_failure_is_reported_in_the_status() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["no-such"], false, true, false, false))
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    let got = collect(&mut ws).await;
    let st = status(&got);
    assert_eq!(st["status"], "Failure");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("command no-such not found"),
        "{st}"
    );
}

async fn http_status(url: &str) -> (u16, String) {
    match try_connect(url, "v4.channel.k8s.io").await {
        Ok(_) => panic!("{url} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error for {url}: {e}"),
    }
}

#[tokio::test]
async fn tokens_are_single_use() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["out-err", "0"], false, true, true, false))
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    collect(&mut ws).await;
    let (code, body) = http_status(&url).await;
    assert_eq!(code, 404);
    assert!(body.contains("already used"), "{body}");
}

#[tokio::test]
async fn tokens_expire() {
    let cfg = Config {
        token_ttl: Duration::from_millis(100),
        ..Config::default()
    };
    let (server, seen) = start(cfg).await;
    let url = server
        .exec_url(exec(&["out-err", "0"], false, true, false, false))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = http_status(&url).await;
    assert_eq!(code, 404);
    assert!(body.contains("expired"), "{body}");
    assert_eq!(seen.started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn tokens_only_open_their_own_endpoint() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["out-err", "0"], false, true, false, false))
        .unwrap();
    let (code, _) = http_status(&url.replace("/exec/", "/attach/")).await;
    assert_eq!(code, 404);
    let (code, _) = http_status(&format!("http://{}/exec/made-up", server.local_addr())).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn invalid_requests_are_refused() {
    let (server, _) = start(Config::default()).await;
    let no_streams = server.exec_url(exec(&["x"], false, false, false, false));
    assert!(matches!(no_streams, Err(Error::InvalidRequest { .. })));
    let tty_stderr = server.exec_url(exec(&["x"], false, true, true, true));
    let msg = tty_stderr.unwrap_err().to_string();
    assert!(msg.contains("tty and stderr"), "{msg}");
    assert!(server
        .exec_url(exec(&[], false, true, false, false))
        .is_err());
    let attach = server.attach_url(AttachRequest {
        container_id: "c".into(),
        tty: false,
        stdin: false,
        stdout: false,
        stderr: false,
    });
    assert!(attach.is_err());
    let pf = server.port_forward_url(PortForwardRequest {
        pod_sandbox_id: String::new(),
        ports: vec![],
    });
    assert!(pf.is_err());
}

#[tokio::test]
async fn unsupported_subprotocol_is_refused() {
    let (server, _) = start(Config::default()).await;
    let url = server
        .exec_url(exec(&["out-err", "0"], false, true, false, false))
        .unwrap();
    let err = try_connect(&url, "v9.nothing").await;
    match err {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400)
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}
