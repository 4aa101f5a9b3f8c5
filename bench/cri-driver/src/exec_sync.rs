//! Scenario `exec-sync`: round trip of ExecSync running `true` (the kubelet's exec probes).

use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::ExecSyncRequest;
use tonic::transport::Channel;

use crate::error::Error;
use crate::run_error::RunError;

/// `calls` timed ExecSync calls after one untimed warm-up; each must exit 0 with no output.
pub async fn measure(
    mut client: RuntimeServiceClient<Channel>,
    container: &str,
    calls: usize,
) -> Result<Vec<Duration>, RunError> {
    once(&mut client, container).await?;
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        out.push(once(&mut client, container).await?);
    }
    Ok(out)
}

async fn once(
    client: &mut RuntimeServiceClient<Channel>,
    container: &str,
) -> Result<Duration, RunError> {
    let t0 = Instant::now();
    let r = client
        .exec_sync(ExecSyncRequest {
            container_id: container.to_string(),
            cmd: vec!["true".into()],
            timeout: 30,
        })
        .await
        .map_err(Error::rpc(
            "ExecSync",
            format!("`true` in container {container}"),
        ))?
        .into_inner();
    let took = t0.elapsed();
    if r.exit_code != 0 || !r.stdout.is_empty() || !r.stderr.is_empty() {
        return Err(RunError::Outcome {
            scenario: "ExecSync of `true`",
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
