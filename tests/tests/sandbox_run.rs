//! The sandbox runtime outside Kubernetes: `berth run --runtime io.containerd.berth-sandbox.v2`
//! and containerd's own `ctr` start a container inside its own guest kernel; the guest goes
//! away with the container.

use berth_tests::*;

const SANDBOX: &str = "io.containerd.berth-sandbox.v2";

fn guest_kernels_under(state: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(state.join("sandbox"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pid") || !n.contains('.'))
        .collect()
}

#[test]
fn berth_run_with_the_sandbox_runtime_sees_the_guest_kernel() {
    let d = berthd_with_busybox();
    let ns = d.unique_ns();
    let tar = test_images().join("busybox-oci.tar");
    d.berth(&ns, &["image", "import", tar.to_str().expect("path")])
        .ok();
    let run = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--runtime",
            SANDBOX,
            "docker.io/library/busybox:latest",
            "uml1",
            "sh",
            "-c",
            "uname -r; echo oops >&2; exit 4",
        ],
    );
    assert_eq!(run.code, Some(4), "{} {}", run.stdout, run.stderr);
    let release = run.stdout.trim();
    assert!(
        !release.is_empty() && release != host_kernel_release(),
        "guest kernel release {release:?} (host {})",
        host_kernel_release()
    );
    assert!(run.stderr.contains("oops"), "{}", run.stderr);

    // ctr too: a detached container, an exec, then kill and delete.
    d.ctr(
        &ns,
        &[
            "run",
            "-d",
            "--runtime",
            SANDBOX,
            "docker.io/library/busybox:latest",
            "uml2",
            "sleep",
            "1000",
        ],
    )
    .ok();
    let exec = d.ctr(
        &ns,
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "uml2",
            "cat",
            "/proc/version",
        ],
    );
    assert!(
        exec.stdout.contains(release),
        "exec in the guest: {} {}",
        exec.stdout,
        exec.stderr
    );
    // The processes inside the guest: the container's init is PID 1 of its namespace there, as
    // the agent sees it a small guest pid — nothing like a host pid.
    let ps = d.ctr(&ns, &["task", "ps", "uml2"]).ok();
    let pids: Vec<u32> = ps
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        !pids.is_empty() && pids.iter().all(|p| *p < 1000),
        "{}",
        ps.stdout
    );
    d.ctr(&ns, &["task", "kill", "-s", "SIGKILL", "uml2"]).ok();
    wait_until("uml2 to stop", || {
        d.ctr(&ns, &["task", "ls"])
            .stdout
            .lines()
            .any(|l| l.starts_with("uml2") && l.contains("STOPPED"))
    });
    d.ctr(&ns, &["task", "delete", "uml2"]).ok();
    d.ctr(&ns, &["container", "delete", "uml2"]).ok();
    wait_until("the guests to be gone", || {
        guest_kernels_under(&d.state()).is_empty()
    });
    assert!(berth_tests::daemon::mounts_under(&d.state().join("sandbox")).is_empty());
}

#[test]
fn a_missing_binary_in_the_sandbox_is_named_and_leaves_no_guest() {
    let d = berthd_with_busybox();
    let ns = d.unique_ns();
    let tar = test_images().join("busybox-oci.tar");
    d.berth(&ns, &["image", "import", tar.to_str().expect("path")])
        .ok();
    let run = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--runtime",
            SANDBOX,
            "docker.io/library/busybox:latest",
            "nope",
            "/no/such/binary",
        ],
    );
    assert_ne!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("/no/such/binary"),
        "the error names the binary: {}",
        run.stderr
    );
    wait_until("the guest to be gone", || {
        guest_kernels_under(&d.state()).is_empty()
    });
    assert!(berth_tests::daemon::mounts_under(&d.state().join("sandbox")).is_empty());
    let ls = d.berth(&ns, &["container", "ls"]).ok();
    assert!(!ls.stdout.contains("nope"), "container left: {}", ls.stdout);
}
