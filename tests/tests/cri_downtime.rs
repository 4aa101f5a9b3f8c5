//! What happens to CRI containers while berthd is down: an exit in the downtime is recorded
//! with its code once berthd is back, and a running container's output written during the
//! downtime still reaches its log file (the FIFO holds it until berthd reopens it).

use std::time::Duration;

use berth_tests::cri::{parse_log, stream_text, wait_for, CriEnv};
use k8s_cri::v1::ContainerState;

#[test]
fn exits_and_output_during_downtime_are_kept() {
    let mut env = CriEnv::start();
    let pod = env.pod_config("downtime");
    let pod_id = env.run_pod(&pod);
    let quitter =
        env.container_config(&pod, "quitter", "busybox", &["sh", "-c", "sleep 2; exit 4"]);
    let quitter_id = env.run_container(&pod_id, &pod, &quitter);
    let talker = env.container_config(
        &pod,
        "talker",
        "busybox",
        &[
            "sh",
            "-c",
            "echo before; sleep 2; echo during; sleep 3; echo after; sleep 1000",
        ],
    );
    let talker_id = env.run_container(&pod_id, &pod, &talker);
    let log = env.log_file(&pod, &talker);
    wait_for("the first line", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("before"))
    });

    env.daemon_mut().kill9();
    // Long enough for the quitter to exit and the talker to print "during" with nobody reading.
    std::thread::sleep(Duration::from_secs(3));
    env.daemon_mut().spawn();
    env.reconnect();

    let st = env.wait_exited(&quitter_id);
    assert_eq!(st.exit_code, 4, "{st:?}");
    assert_eq!(st.reason, "Error");
    assert!(
        st.finished_at >= st.started_at && st.finished_at > 0,
        "{st:?}"
    );
    let talker_st = env.container_status(&talker_id);
    assert_eq!(talker_st.state, ContainerState::ContainerRunning as i32);

    wait_for("the last line", Duration::from_secs(15), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("after"))
    });
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        stream_text(&parse_log(&text), "stdout"),
        "before\nduring\nafter\n",
        "{text}"
    );
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}
