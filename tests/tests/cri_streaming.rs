//! The CRI streaming server end to end: Exec URLs served to a client berth did not write (the
//! Python `kubernetes` package's WebSocket client), single-use tokens, refusals for stopped
//! containers, and a client that vanishes mid-exec leaving no process, exec or fd behind.

use std::process::Command;
use std::time::Duration;

use berth_tests::cri::{wait_for, CriEnv};
use k8s_cri::v1::*;
use serde_json::Value;

fn python_exec(url: &str) -> Value {
    let script = berth_tests::repo_root().join("tests/scripts/k8s_ws_exec.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(url)
        .output()
        .expect("python3 (and `pip install kubernetes`, see scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "k8s_ws_exec.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from k8s_ws_exec.py")
}

fn exec_url(env: &CriEnv, id: &str, cmd: &[&str]) -> Result<String, tonic::Status> {
    let mut rt = env.cri.runtime.clone();
    env.block_on(rt.exec(ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    }))
    .map(|r| r.into_inner().url)
}

fn http_status(url: &str) -> u16 {
    // A plain GET of a used token: no upgrade, just the answer's status line.
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    use std::io::{Read, Write};
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn websocket_exec_through_the_python_kubernetes_client() {
    let env = CriEnv::start();
    let pod = env.pod_config("ws");
    let pod_id = env.run_pod(&pod);
    let id = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "c", "busybox", &["sleep", "1000"]),
    );
    let url = exec_url(&env, &id, &["sh", "-c", "echo out; echo err >&2; exit 7"]).expect("Exec");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let seen = python_exec(&url);
    assert_eq!(seen["stdout"], "out\n", "{seen}");
    assert_eq!(seen["stderr"], "err\n", "{seen}");
    assert_eq!(seen["exit_code"], 7, "{seen}");

    // The token was single-use.
    assert_eq!(http_status(&url), 404, "a used token must be refused");
    let ok = exec_url(&env, &id, &["true"]).expect("Exec");
    assert_eq!(python_exec(&ok)["exit_code"], 0);

    // Requests that cannot work are refused by the RPC itself.
    let mut rt = env.cri.runtime.clone();
    let both = env.block_on(rt.exec(ExecRequest {
        container_id: id.clone(),
        cmd: vec!["true".into()],
        tty: true,
        stdin: false,
        stdout: true,
        stderr: true,
    }));
    assert!(both.is_err(), "tty and stderr together");
    let none = env.block_on(rt.exec(ExecRequest {
        container_id: id.clone(),
        cmd: vec!["true".into()],
        ..Default::default()
    }));
    assert!(none.is_err(), "no stream at all");

    let mut stop = env.cri.runtime.clone();
    env.block_on(stop.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    }))
    .expect("StopContainer");
    let refused = exec_url(&env, &id, &["true"]).expect_err("stopped container");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let gone = exec_url(&env, "no-such-container", &["true"]).expect_err("unknown container");
    assert_eq!(gone.code(), tonic::Code::NotFound);

    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn client_vanishing_mid_exec_leaves_nothing() {
    let env = CriEnv::start();
    let pod = env.pod_config("vanish");
    let pod_id = env.run_pod(&pod);
    let id = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "c", "busybox", &["sleep", "1000"]),
    );
    // Warm up one full exec so lazily opened fds are already there when counting.
    let warm = exec_url(&env, &id, &["true"]).expect("Exec");
    assert_eq!(python_exec(&warm)["exit_code"], 0);
    let berthd = env.daemon().pid();
    let fds_before = fd_count(berthd);

    let url = exec_url(&env, &id, &["sleep", "777"]).expect("Exec");
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().expect("header"),
    );
    let (ws, _) = env
        .block_on(tokio_tungstenite::connect_async(req))
        .expect("WebSocket connect");
    let sleeping = || {
        let out = env.exec_sync(&id, &["ps", "-o", "args"]);
        String::from_utf8_lossy(&out.stdout).contains("sleep 777")
    };
    wait_for("the exec to run", Duration::from_secs(10), &sleeping);
    drop(ws);
    wait_for(
        "the exec process to be killed after its client left",
        Duration::from_secs(15),
        || !sleeping(),
    );
    wait_for(
        "berthd's fds to return to their count",
        Duration::from_secs(10),
        || fd_count(berthd) <= fds_before,
    );
    let exec_dirs = std::fs::read_dir(env.daemon().state().join("cri/exec"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(exec_dirs, 0, "exec FIFO dirs left behind");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}
