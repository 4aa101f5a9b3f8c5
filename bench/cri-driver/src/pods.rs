//! Scenario `pods`: start N pods (RunPodSandbox, then CreateContainer + StartContainer for each of
//! its containers), `parallel` at a time, timing each pod from its first RPC to its last.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

use crate::error::Error;
use crate::spec::Plan;

pub struct Started {
    /// One per pod, in completion order.
    pub latencies: Vec<Duration>,
    /// Sandbox ids of the pods started.
    pub pod_ids: Vec<String>,
    /// Wall time from the first RunPodSandbox to the last StartContainer.
    pub total: Duration,
}

/// Starts pods `0..count` of `plan`, `parallel` at a time. Stops handing out new pods at the
/// first failure and returns that failure; pods already started stay for `teardown`.
pub async fn start_all(
    client: RuntimeServiceClient<Channel>,
    plan: Plan,
    count: usize,
    parallel: usize,
) -> Result<Started, Error> {
    if parallel == 0 {
        return Err(Error::InvalidArgument {
            what: "--parallel",
            why: "must be at least 1".into(),
        });
    }
    for i in 0..count {
        let dir = plan.pod_log_dir(i);
        std::fs::create_dir_all(&dir).map_err(|source| Error::LogDir { path: dir, source })?;
    }
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel.min(count.max(1)) {
        let (client, plan, next, failed) =
            (client.clone(), plan.clone(), next.clone(), failed.clone());
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count || failed.load(Ordering::SeqCst) {
                    return Ok(mine);
                }
                match start_pod(client.clone(), &plan, i).await {
                    Ok(started) => mine.push(started),
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    let mut pod_ids = Vec::with_capacity(count);
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined? {
            Ok(mine) => {
                for (d, id) in mine {
                    latencies.push(d);
                    pod_ids.push(id);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let total = t0.elapsed();
    match first_error {
        Some(e) => Err(e),
        None => Ok(Started {
            latencies,
            pod_ids,
            total,
        }),
    }
}

async fn start_pod(
    mut client: RuntimeServiceClient<Channel>,
    plan: &Plan,
    i: usize,
) -> Result<(Duration, String), Error> {
    let config = plan.pod_config(i);
    let pod = plan.pod_name(i);
    let t0 = Instant::now();
    let pod_id = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: plan.runtime_handler.clone(),
        })
        .await
        .map_err(Error::rpc("RunPodSandbox", format!("pod {pod}")))?
        .into_inner()
        .pod_sandbox_id;
    for j in 0..plan.containers_per_pod {
        let container_id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(plan.container_config(j)),
                sandbox_config: Some(config.clone()),
            })
            .await
            .map_err(Error::rpc(
                "CreateContainer",
                format!("container c{j} of pod {pod} ({pod_id})"),
            ))?
            .into_inner()
            .container_id;
        client
            .start_container(StartContainerRequest {
                container_id: container_id.clone(),
            })
            .await
            .map_err(Error::rpc(
                "StartContainer",
                format!("container c{j} ({container_id}) of pod {pod}"),
            ))?;
    }
    Ok((t0.elapsed(), pod_id))
}
