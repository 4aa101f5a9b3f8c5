//! Scenario `exec-sync`: round trip of ExecSync running `true` (the kubelet's exec probes), or
//! of a shell workload.

use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::ExecSyncRequest;
use tonic::transport::Channel;

use crate::error::Error;
use crate::run_error::RunError;

/// `calls` timed ExecSync calls: of `true` after one untimed warm-up, each exiting 0 with no
/// output; or of `sh -c <script>`, each exiting 0.
pub async fn measure(
    mut client: RuntimeServiceClient<Channel>,
    container: &str,
    calls: usize,
    script: Option<&str>,
) -> Result<Vec<Duration>, RunError> {
    if script.is_none() {
        once(&mut client, container, None).await?;
    }
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        out.push(once(&mut client, container, script).await?);
    }
    Ok(out)
}

async fn once(
    client: &mut RuntimeServiceClient<Channel>,
    container: &str,
    script: Option<&str>,
) -> Result<Duration, RunError> {
    let cmd = match script {
        Some(s) => vec!["sh".into(), "-c".into(), s.to_string()],
        None => vec!["true".into()],
    };
    let t0 = Instant::now();
    let r = client
        .exec_sync(ExecSyncRequest {
            container_id: container.to_string(),
            cmd: cmd.clone(),
            timeout: if script.is_some() { 600 } else { 30 },
        })
        .await
        .map_err(Error::rpc(
            "ExecSync",
            format!("{cmd:?} in container {container}"),
        ))?
        .into_inner();
    let took = t0.elapsed();
    let quiet = script.is_some() || (r.stdout.is_empty() && r.stderr.is_empty());
    if r.exit_code != 0 || !quiet {
        return Err(RunError::Outcome {
            scenario: "ExecSync",
            target: format!("container {container}"),
            why: format!(
                "exit code {}, stdout {:?}, stderr {:?}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            ),
        });
    }
    Ok(took)
}
