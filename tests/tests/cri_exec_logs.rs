//! CRI ExecSync (output, exit code, timeout) and container log files (CRI format, partial lines,
//! ReopenContainerLog).

use std::time::{Duration, Instant};

use berth_tests::cri::*;
use k8s_cri::v1::*;
use tonic::Code;

/// Processes on the host that belong to container `id` (its cgroup path names it).
fn processes_in_container(id: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains(id) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

#[test]
fn exec_sync_output_exit_code_and_timeout() {
    let env = CriEnv::start();
    let pod = env.pod_config("exec");
    let pod_id = env.run_pod(&pod);
    let cid = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "box", "busybox", &["sleep", "3600"]),
    );

    let r = env.exec_sync(&cid, &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    assert_eq!(r.exit_code, 7);
    let r = env.exec_sync(&cid, &["true"]);
    assert_eq!((r.exit_code, r.stdout.len(), r.stderr.len()), (0, 0, 0));

    // The container's main process is there; the check below would see an exec'd sleep too.
    assert!(
        processes_in_container(&cid)
            .iter()
            .any(|(_, c)| c.starts_with("sleep 3600")),
        "cannot find the container's processes by cgroup: {:?}",
        processes_in_container(&cid)
    );
    let start = Instant::now();
    let err = env
        .block_on(env.cri.clone().exec_sync(&cid, &["sleep", "10"], 1))
        .expect_err("ExecSync sleep 10 with timeout 1 succeeded");
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(took < Duration::from_secs(5), "timeout 1 took {took:?}");
    wait_for(
        "the timed-out exec to be killed",
        Duration::from_secs(5),
        || {
            !processes_in_container(&cid)
                .iter()
                .any(|(_, c)| c.starts_with("sleep 10"))
        },
    );
    let ps = env.exec_sync(&cid, &["ps", "-o", "args"]);
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 10"),
        "{}",
        String::from_utf8_lossy(&ps.stdout)
    );

    let err = env
        .block_on(env.cri.clone().exec_sync("no-such-container", &["true"], 5))
        .expect_err("exec in a missing container");
    assert_eq!(err.code(), Code::NotFound, "{err}");

    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}

#[test]
fn log_file_is_in_cri_format_with_streams() {
    let env = CriEnv::start();
    let pod = env.pod_config("logs");
    let pod_id = env.run_pod(&pod);
    let c = env.container_config(
        &pod,
        "talker",
        "busybox",
        &["sh", "-c", "echo hello; echo oops >&2"],
    );
    let (code, lines) = env.run_to_exit(&pod_id, &pod, &c);
    assert_eq!(code, 0);
    let raw: Vec<&str> = lines.iter().map(|l| l.raw.as_str()).collect();
    assert_eq!(lines.len(), 2, "{raw:#?}");
    for l in &lines {
        assert!(!l.stream.is_empty(), "not a CRI log line: {:?}", l.raw);
        assert!(!l.partial, "{:?}", l.raw);
    }
    let find = |stream: &str| {
        lines
            .iter()
            .find(|l| l.stream == stream)
            .unwrap_or_else(|| panic!("no {stream} line in {raw:#?}"))
    };
    assert_eq!(find("stdout").content, "hello");
    assert_eq!(find("stderr").content, "oops");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}

#[test]
fn long_line_is_split_into_partial_lines() {
    let env = CriEnv::start();
    let pod = env.pod_config("long");
    let pod_id = env.run_pod(&pod);
    // 4096 numbered 10-byte cells: 40 KiB on one line, in an order the test can check.
    let c = env.container_config(
        &pod,
        "long",
        "busybox",
        &["sh", "-c", "printf '%09d,' $(seq 0 4095); echo"],
    );
    let expected: String = (0..4096).map(|i| format!("{i:09},")).collect();
    assert_eq!(expected.len(), 40 * 1024);
    let (code, lines) = env.run_to_exit(&pod_id, &pod, &c);
    assert_eq!(code, 0);
    assert!(
        lines.len() >= 3,
        "40 KiB in 16 KiB parts: {} lines",
        lines.len()
    );
    let (last, parts) = lines.split_last().expect("lines");
    for p in parts {
        assert_eq!(p.stream, "stdout", "{:?}", &p.raw[..p.raw.len().min(80)]);
        assert!(p.partial, "not P: {:?}", &p.raw[..p.raw.len().min(80)]);
        assert!(
            p.content.len() <= 16 * 1024,
            "part of {} bytes",
            p.content.len()
        );
    }
    assert!(
        !last.partial && last.stream == "stdout",
        "last line {:?}",
        &last.raw[..last.raw.len().min(80)]
    );
    let joined: String = lines.iter().map(|l| l.content.as_str()).collect();
    assert!(
        joined == expected,
        "the parts do not concatenate to the line ({} vs {} bytes)",
        joined.len(),
        expected.len()
    );
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}

#[test]
fn reopen_container_log_writes_a_new_file() {
    let env = CriEnv::start();
    let pod = env.pod_config("rotate");
    let pod_id = env.run_pod(&pod);
    let c = env.container_config(
        &pod,
        "ticker",
        "busybox",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let cid = env.run_container(&pod_id, &pod, &c);
    let log = env.log_file(&pod, &c);
    let ticks = |path: &std::path::Path| {
        parse_log(&std::fs::read_to_string(path).unwrap_or_default())
            .into_iter()
            .filter(|l| l.stream == "stdout" && l.content.starts_with("tick"))
            .count()
    };
    wait_for("ticks in the log", Duration::from_secs(10), || {
        ticks(&log) >= 3
    });

    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate the log");
    env.block_on(
        env.cri
            .clone()
            .runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: cid.clone(),
            }),
    )
    .expect("ReopenContainerLog");
    wait_for("ticks in the reopened log", Duration::from_secs(10), || {
        ticks(&log) >= 3
    });
    let before = ticks(&rotated);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ticks(&rotated), before, "the rotated file still grows");
    let new_lines = parse_log(&std::fs::read_to_string(&log).expect("new log"));
    assert!(
        new_lines.iter().all(|l| !l.stream.is_empty()),
        "reopened log is not in CRI format: {new_lines:#?}"
    );

    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}
