//! ExecSync: a process in a running container, its stdout and stderr collected, its exit code
//! returned; killed when the timeout passes (DeadlineExceeded, as the kubelet's probes expect).

use std::time::Duration;

use k8s_cri::v1::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use super::io::{collect, open_reader, Fifos, UntilExit};
use super::meta::ContainerState;
use super::NAMESPACE;
use crate::daemon::blocking;
use crate::services::Service;
use crate::status::IntoStatus;

/// containerd's bound on what ExecSync returns per stream.
const MAX_OUTPUT: usize = 16 << 20;
pub const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The exec's process: the container's own (user, env, cwd, capabilities...) with new args.
pub fn exec_process(spec: &[u8], cmd: &[String], tty: bool) -> Result<Vec<u8>, Status> {
    let spec: serde_json::Value = serde_json::from_slice(spec)
        .map_err(|e| Status::internal(format!("container spec: {e}")))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| Status::failed_precondition("container spec has no process"))?;
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    serde_json::to_vec(&process).map_err(|e| Status::internal(e.to_string()))
}

impl Service {
    pub async fn cri_exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("exec command must not be empty"));
        }
        let meta = self.cri_container(&req.container_id)?;
        if meta.state != ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                meta.id
            )));
        }
        let spec = self.cri_record_spec(&meta.id).await?;
        let process = exec_process(&spec, &req.cmd, false)?;
        let exec_id = format!("exec-{}", &super::meta::new_id()[..32]);
        let fifos = Fifos::at(self.cri.state_dir.join("exec").join(&exec_id), false);
        let f = fifos.clone();
        blocking(move || {
            f.create()
                .map_err(|e| Status::internal(format!("exec FIFOs: {e}")))
        })
        .await?;
        let result = self
            .run_exec(&meta.id, &exec_id, process, &fifos, req.timeout)
            .await;
        fifos.remove();
        result
    }

    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        fifos: &Fifos,
        timeout: i64,
    ) -> Result<ExecSyncResponse, Status> {
        let open = |p: &std::path::Path| {
            open_reader(p).map_err(|e| Status::internal(format!("open {}: {e}", p.display())))
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (out_rx, out_keep) = open(&fifos.stdout)?;
        let out = tokio::spawn(collect(UntilExit::new(out_rx, rx.clone()), MAX_OUTPUT));
        let stderr = fifos
            .stderr
            .as_deref()
            .ok_or_else(|| Status::internal("exec without stderr FIFO"))?;
        let (err_rx, err_keep) = open(stderr)?;
        let err = tokio::spawn(collect(UntilExit::new(err_rx, rx), MAX_OUTPUT));
        let keepalive = (out_keep, err_keep);
        self.tasks
            .exec(
                NAMESPACE,
                id,
                berth_runtime::ExecProcess {
                    exec_id: exec_id.to_string(),
                    spec: prost_types::Any {
                        type_url: PROCESS_TYPE.into(),
                        value: process,
                    },
                    stdout: fifos.stdout_str(),
                    stderr: fifos.stderr_str(),
                    ..Default::default()
                },
            )
            .await
            .status()?;
        let started = self.tasks.start(NAMESPACE, id, exec_id).await.status();
        // The process holds its ends now (or never will): the output ends when it closes them.
        drop(keepalive);
        let exit = match started {
            Err(e) => Err(e),
            Ok(_) => {
                let wait = self.tasks.wait(NAMESPACE, id, exec_id);
                if timeout > 0 {
                    match tokio::time::timeout(Duration::from_secs(timeout as u64), wait).await {
                        Ok(r) => r.status(),
                        Err(_) => {
                            let _ = self.tasks.kill(NAMESPACE, id, exec_id, 9, false).await;
                            let _ = tokio::time::timeout(
                                Duration::from_secs(10),
                                self.tasks.wait(NAMESPACE, id, exec_id),
                            )
                            .await;
                            Err(Status::deadline_exceeded(format!(
                                "command {exec_id} in container {id} timed out after {timeout}s"
                            )))
                        }
                    }
                } else {
                    wait.await.status()
                }
            }
        };
        let _ = tx.send(true);
        let stdout = out.await.unwrap_or_default();
        let stderr = err.await.unwrap_or_default();
        let _ = self.tasks.delete_process(NAMESPACE, id, exec_id).await;
        let exit = exit?;
        Ok(ExecSyncResponse {
            stdout,
            stderr,
            exit_code: exit.status as i32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_keeps_the_container_process_but_its_args() {
        let spec = br#"{"process":{"args":["httpd"],"env":["A=1"],"cwd":"/w","terminal":true,"user":{"uid":5,"gid":6}}}"#;
        let p: serde_json::Value = serde_json::from_slice(
            &exec_process(spec, &["id".into(), "-u".into()], false).expect("ok"),
        )
        .expect("json");
        assert_eq!(p["args"], serde_json::json!(["id", "-u"]));
        assert_eq!(p["env"], serde_json::json!(["A=1"]));
        assert_eq!(p["user"]["uid"], 5);
        assert_eq!(p["terminal"], false);
        assert!(exec_process(b"{}", &["x".into()], false).is_err());
    }
}
