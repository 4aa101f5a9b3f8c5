//! The CRI streaming server over SPDY/3.1, as kubectl uses it: exec with stdin piped and exit
//! codes in the v4 status, a TTY exec resized through the resize stream, attach with several
//! attachers, port forward to a busybox httpd (two connections at once, a closed port), and
//! single-use tokens. The client is `berth_tests::spdy_client` on berth-spdy's client side.

use std::time::Duration;

use berth_spdy::Stream;
use berth_tests::cri::{http_get_eventually, CriEnv, HTTPD_PAGE};
use berth_tests::spdy_client::{
    read_to_end, ClientError, Ended, PortForward, RemoteCommand, Wanted,
};
use k8s_cri::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait on the server is bounded: a hang fails the test instead of stalling the run.
const STEP: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?}: {what}"))
}

fn exec_url(env: &CriEnv, id: &str, cmd: &[&str], tty: bool, w: Wanted) -> String {
    let mut rt = env.cri.runtime.clone();
    env.block_on(rt.exec(ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: w.stdin,
        stdout: w.stdout,
        stderr: w.stderr,
    }))
    .unwrap_or_else(|e| panic!("Exec {cmd:?}: {e}"))
    .into_inner()
    .url
}

fn attach_url(env: &CriEnv, id: &str, w: Wanted) -> String {
    let mut rt = env.cri.runtime.clone();
    env.block_on(rt.attach(AttachRequest {
        container_id: id.to_string(),
        stdin: w.stdin,
        tty: false,
        stdout: w.stdout,
        stderr: w.stderr,
    }))
    .unwrap_or_else(|e| panic!("Attach: {e}"))
    .into_inner()
    .url
}

fn port_forward_url(env: &CriEnv, pod_id: &str, ports: &[i32]) -> String {
    let mut rt = env.cri.runtime.clone();
    env.block_on(rt.port_forward(PortForwardRequest {
        pod_sandbox_id: pod_id.to_string(),
        port: ports.to_vec(),
    }))
    .unwrap_or_else(|e| panic!("PortForward: {e}"))
    .into_inner()
    .url
}

/// A pod with one busybox container sleeping, for execs.
fn sleeping_pod(env: &CriEnv, name: &str) -> (String, String) {
    let pod = env.pod_config(name);
    let pod_id = env.run_pod(&pod);
    let id = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "c", "busybox", &["sleep", "1000"]),
    );
    (pod_id, id)
}

fn teardown(env: &CriEnv, pod_id: &str) {
    env.stop_pod(pod_id);
    env.remove_pod(pod_id);
    env.assert_no_footprint("after removing the pod");
}

/// Reads `s` until what arrived contains `needle`; everything read so far is returned.
async fn read_until(s: &mut Stream, seen: &mut String, needle: &str) {
    let mut buf = vec![0u8; 4096];
    while !seen.contains(needle) {
        let n = bounded(&format!("{needle:?} (so far {seen:?})"), s.read(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("reading while waiting for {needle:?}: {e}"));
        assert!(n > 0, "EOF before {needle:?}; got {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

fn some(s: &mut Option<Stream>, kind: &str) -> Stream {
    s.take()
        .unwrap_or_else(|| panic!("no {kind} stream was opened"))
}

#[test]
fn spdy_exec_pipes_stdin_and_reports_exit_codes() {
    let env = CriEnv::start();
    let (pod_id, id) = sleeping_pod(&env, "spdy-exec");

    // stdin piped to cat: big enough (1 MiB) that it only gets through if both directions and
    // their flow control keep moving while the other one is busy.
    let all = Wanted {
        stdin: true,
        stdout: true,
        stderr: true,
        resize: false,
    };
    // A few bytes and FIN at once, as `echo hi | kubectl exec -i ... -- cat` sends them: they
    // can reach the server before the process has even started.
    let url = exec_url(&env, &id, &["cat"], false, all);
    env.block_on(async {
        let mut rc = bounded("exec upgrade", RemoteCommand::start(&url, all))
            .await
            .expect("SPDY exec upgrade");
        assert_eq!(rc.protocol.as_deref(), Some("v4.channel.k8s.io"));
        let mut stdin = some(&mut rc.stdin, "stdin");
        stdin.write_all(b"hello spdy\n").await.expect("write stdin");
        stdin.shutdown().await.expect("close stdin");
        let mut stdout = some(&mut rc.stdout, "stdout");
        let out = bounded(
            "cat to echo a short stdin and exit after its FIN",
            read_to_end(&mut stdout, "stdout"),
        )
        .await
        .expect("stdout");
        assert_eq!(out, "hello spdy\n");
        assert_eq!(
            bounded("status", rc.ended()).await.expect("status"),
            Ended::Exited(0)
        );
    });

    let url = exec_url(&env, &id, &["cat"], false, all);
    let mut payload = b"hello spdy\n".to_vec();
    for i in 0..(1 << 20) / 32 {
        payload.extend_from_slice(format!("line {i:>10} of the payload..\n").as_bytes());
    }
    env.block_on(async {
        let mut rc = bounded("exec upgrade", RemoteCommand::start(&url, all))
            .await
            .expect("SPDY exec upgrade");
        let mut stdin = some(&mut rc.stdin, "stdin");
        let mut stdout = some(&mut rc.stdout, "stdout");
        let mut stderr = some(&mut rc.stderr, "stderr");
        let write = async {
            stdin.write_all(&payload).await.expect("write stdin");
            // FIN on stdin: cat sees EOF.
            stdin.shutdown().await.expect("close stdin");
        };
        let (_, out, err) = bounded("cat to echo its stdin and exit", async {
            tokio::join!(
                write,
                read_to_end(&mut stdout, "stdout"),
                read_to_end(&mut stderr, "stderr")
            )
        })
        .await;
        let out = out.expect("stdout");
        assert_eq!(out.len(), payload.len(), "bytes echoed by cat");
        assert!(out.as_bytes() == payload, "cat echoed other bytes");
        assert_eq!(err.expect("stderr"), "");
        assert_eq!(
            bounded("status", rc.ended()).await.expect("status"),
            Ended::Exited(0)
        );
    });

    let out_err = Wanted {
        stdout: true,
        stderr: true,
        ..Wanted::default()
    };
    let url = exec_url(
        &env,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        false,
        out_err,
    );
    env.block_on(async {
        let mut rc = bounded("exec upgrade", RemoteCommand::start(&url, out_err))
            .await
            .expect("SPDY exec upgrade");
        let mut stdout = some(&mut rc.stdout, "stdout");
        let mut stderr = some(&mut rc.stderr, "stderr");
        let (out, err) = bounded("sh to exit", async {
            tokio::join!(
                read_to_end(&mut stdout, "stdout"),
                read_to_end(&mut stderr, "stderr")
            )
        })
        .await;
        assert_eq!(out.expect("stdout"), "out\n");
        assert_eq!(err.expect("stderr"), "err\n");
        assert_eq!(
            bounded("status", rc.ended()).await.expect("status"),
            Ended::Exited(7)
        );
    });
    teardown(&env, &pod_id);
}

#[test]
fn spdy_tty_exec_takes_the_size_from_the_resize_stream() {
    let env = CriEnv::start();
    let (pod_id, id) = sleeping_pod(&env, "spdy-tty");
    let w = Wanted {
        stdout: true,
        resize: true,
        ..Wanted::default()
    };
    // The sleep leaves time for the size to reach the terminal before stty reads it.
    let url = exec_url(&env, &id, &["sh", "-c", "sleep 1; stty size"], true, w);
    env.block_on(async {
        let mut rc = bounded("exec upgrade", RemoteCommand::start(&url, w))
            .await
            .expect("SPDY exec upgrade");
        assert_eq!(rc.protocol.as_deref(), Some("v4.channel.k8s.io"));
        rc.resize(100, 40).await.expect("send the terminal size");
        let mut stdout = some(&mut rc.stdout, "stdout");
        let out = bounded("stty size", read_to_end(&mut stdout, "stdout"))
            .await
            .expect("stdout");
        assert_eq!(out.trim(), "40 100", "stty size on the TTY: {out:?}");
        assert_eq!(
            bounded("status", rc.ended()).await.expect("status"),
            Ended::Exited(0)
        );
    });
    teardown(&env, &pod_id);
}

#[test]
fn spdy_attach_with_two_attachers() {
    let env = CriEnv::start();
    let pod = env.pod_config("spdy-attach");
    let pod_id = env.run_pod(&pod);
    let config = ContainerConfig {
        stdin: true,
        stdin_once: false,
        ..env.container_config(&pod, "cat", "busybox", &["cat"])
    };
    let id = env.run_container(&pod_id, &pod, &config);

    let watcher_w = Wanted {
        stdout: true,
        ..Wanted::default()
    };
    let writer_w = Wanted {
        stdin: true,
        stdout: true,
        ..Wanted::default()
    };
    let watcher_url = attach_url(&env, &id, watcher_w);
    let writer_url = attach_url(&env, &id, writer_w);
    env.block_on(async {
        let mut watcher = bounded(
            "attach upgrade",
            RemoteCommand::start(&watcher_url, watcher_w),
        )
        .await
        .expect("SPDY attach upgrade (watcher)");
        let mut writer = bounded(
            "attach upgrade",
            RemoteCommand::start(&writer_url, writer_w),
        )
        .await
        .expect("SPDY attach upgrade (writer)");
        assert_eq!(writer.protocol.as_deref(), Some("v4.channel.k8s.io"));
        let mut stdin = some(&mut writer.stdin, "stdin");
        let mut w_out = some(&mut writer.stdout, "stdout");
        let mut v_out = some(&mut watcher.stdout, "stdout");
        let (mut w_seen, mut v_seen) = (String::new(), String::new());

        // Nothing tells a client when the server has hooked it to the container's output: poke
        // until the watcher sees the container's echo, then it is surely hooked.
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + STEP;
        while !v_seen.contains("ready\n") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watching attacher saw nothing of the container's output: {v_seen:?}"
            );
            stdin.write_all(b"ready\n").await.expect("write stdin");
            stdin.flush().await.expect("flush stdin");
            if let Ok(n) =
                tokio::time::timeout(Duration::from_millis(300), v_out.read(&mut buf)).await
            {
                let n = n.expect("watcher stdout");
                assert!(n > 0, "watcher's stdout ended: {v_seen:?}");
                v_seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        stdin.write_all(b"hello\n").await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
        read_until(&mut w_out, &mut w_seen, "hello\n").await;
        read_until(&mut v_out, &mut v_seen, "hello\n").await;
        for (who, seen) in [("writer", &w_seen), ("watcher", &v_seen)] {
            let lines: Vec<&str> = seen.lines().collect();
            assert!(
                lines.last() == Some(&"hello") && lines.iter().rev().skip(1).all(|l| *l == "ready"),
                "{who} saw: {seen:?}"
            );
        }

        // Closing this attacher's stdin must not close the container's (stdin_once is false).
        stdin.shutdown().await.expect("close stdin");
        drop(stdin);
        drop(writer);
        drop(w_out);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A fresh attacher still reaches cat.
        let again_url = {
            let mut rt = env.cri.runtime.clone();
            rt.attach(AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: false,
            })
            .await
            .expect("Attach again")
            .into_inner()
            .url
        };
        let mut again = bounded("attach upgrade", RemoteCommand::start(&again_url, writer_w))
            .await
            .expect("SPDY attach upgrade (again)");
        let mut stdin = some(&mut again.stdin, "stdin");
        stdin.write_all(b"again\n").await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
        read_until(&mut v_out, &mut v_seen, "again\n").await;
        drop(stdin);
        drop(again);
        drop(v_out);
        drop(watcher);
    });
    assert_eq!(
        env.container_status(&id).state,
        ContainerState::ContainerRunning as i32,
        "cat must still run after its attachers left"
    );
    teardown(&env, &pod_id);
}

const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";

fn assert_page(answer: &[u8], what: &str) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{what}: {text:?}"
    );
    assert_eq!(body, HTTPD_PAGE, "{what}");
}

#[test]
fn spdy_port_forward_to_httpd() {
    let env = CriEnv::start();
    let pod = env.pod_config("spdy-pf");
    let pod_id = env.run_pod(&pod);
    env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "httpd", "httpd", &[]),
    );
    // httpd listens before anything is forwarded to it.
    let (code, _) = http_get_eventually(&env.pod_ip(&pod_id), 8080);
    assert_eq!(code, 200);

    let url = port_forward_url(&env, &pod_id, &[8080, 9999]);
    env.block_on(async {
        let pf = bounded("port-forward upgrade", PortForward::connect(&url))
            .await
            .expect("SPDY port-forward upgrade");
        assert_eq!(pf.protocol.as_deref(), Some("portforward.k8s.io"));

        // Two connections open at once before either sends a byte.
        let a = bounded("pair 0", pf.forward(8080, 0))
            .await
            .expect("pair 0");
        let b = bounded("pair 1", pf.forward(8080, 1))
            .await
            .expect("pair 1");
        let (ra, rb) = bounded("two forwarded GETs", async {
            tokio::join!(a.exchange(HTTP_GET), b.exchange(HTTP_GET))
        })
        .await;
        for (i, r) in [ra, rb].into_iter().enumerate() {
            let (answer, error) = r.unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(error, "", "connection {i}: error stream");
            assert_page(&answer, &format!("connection {i}"));
        }

        // Nothing listens on 9999: the error stream says so and data carries nothing.
        let c = bounded("pair 2", pf.forward(9999, 2))
            .await
            .expect("pair 2");
        let (answer, error) = bounded("closed port", c.exchange(HTTP_GET))
            .await
            .expect("closed port exchange");
        assert!(answer.is_empty(), "data from a closed port: {answer:?}");
        assert!(
            error.contains("9999"),
            "error stream for port 9999: {error:?}"
        );

        // A port the PortForward request did not name is refused the same way.
        let d = bounded("pair 3", pf.forward(8081, 3))
            .await
            .expect("pair 3");
        let (answer, error) = bounded("unrequested port", d.exchange(HTTP_GET))
            .await
            .expect("unrequested port exchange");
        assert!(answer.is_empty(), "data from port 8081: {answer:?}");
        assert!(
            error.contains("8081"),
            "error stream for port 8081: {error:?}"
        );

        // The session survives its failed connections.
        let e = bounded("pair 4", pf.forward(8080, 4))
            .await
            .expect("pair 4");
        let (answer, error) = bounded("GET after failures", e.exchange(HTTP_GET))
            .await
            .expect("exchange after failures");
        assert_eq!(error, "");
        assert_page(&answer, "connection 4");
        drop(pf);
    });
    teardown(&env, &pod_id);
}

#[test]
fn spdy_used_token_is_refused() {
    let env = CriEnv::start();
    let (pod_id, id) = sleeping_pod(&env, "spdy-token");
    let w = Wanted {
        stdout: true,
        ..Wanted::default()
    };
    let url = exec_url(&env, &id, &["echo", "once"], false, w);
    env.block_on(async {
        let mut rc = bounded("exec upgrade", RemoteCommand::start(&url, w))
            .await
            .expect("SPDY exec upgrade");
        let mut stdout = some(&mut rc.stdout, "stdout");
        let out = bounded("echo", read_to_end(&mut stdout, "stdout"))
            .await
            .expect("stdout");
        assert_eq!(out, "once\n");
        assert_eq!(
            bounded("status", rc.ended()).await.expect("status"),
            Ended::Exited(0)
        );

        match bounded("reused token", RemoteCommand::start(&url, w)).await {
            Err(ClientError::Refused { status, .. }) => {
                assert_eq!(status, 404, "a used token: {status}")
            }
            Err(e) => panic!("a used token: expected a refusal, got {e}"),
            Ok(_) => panic!("a used exec token was accepted again"),
        }
    });
    // A port-forward token is single-use too.
    let pf_url = port_forward_url(&env, &pod_id, &[8080]);
    env.block_on(async {
        let first = bounded("port-forward upgrade", PortForward::connect(&pf_url))
            .await
            .expect("SPDY port-forward upgrade");
        match bounded("reused token", PortForward::connect(&pf_url)).await {
            Err(ClientError::Refused { status, .. }) => assert_eq!(status, 404),
            Err(e) => panic!("a used port-forward token: expected a refusal, got {e}"),
            Ok(_) => panic!("a used port-forward token was accepted again"),
        }
        drop(first);
    });
    teardown(&env, &pod_id);
}
