//! Scenario `teardown`: StopPodSandbox + RemovePodSandbox for every pod of a run (found by its
//! label), `parallel` at a time; then checks none is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::error::Error;
use crate::spec::TAG_LABEL;

pub struct TornDown {
    pub pods: usize,
    pub total: Duration,
}

async fn pods_of(
    client: &mut RuntimeServiceClient<Channel>,
    tag: &str,
) -> Result<Vec<String>, Error> {
    let items = client
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [(TAG_LABEL.to_string(), tag.to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .map_err(Error::rpc(
            "ListPodSandbox",
            format!("label {TAG_LABEL}={tag}"),
        ))?
        .into_inner()
        .items;
    Ok(items.into_iter().map(|p| p.id).collect())
}

async fn stop_remove(mut client: RuntimeServiceClient<Channel>, id: String) -> Result<(), Error> {
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .map_err(Error::rpc("StopPodSandbox", format!("pod {id}")))?;
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .map_err(Error::rpc("RemovePodSandbox", format!("pod {id}")))?;
    Ok(())
}

/// Stops and removes every pod labelled with `tag`. Keeps going past a failing pod so one bad pod
/// does not leave the others running, then returns the first failure.
pub async fn teardown(
    mut client: RuntimeServiceClient<Channel>,
    tag: &str,
    parallel: usize,
) -> Result<TornDown, Error> {
    let ids = pods_of(&mut client, tag).await?;
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.iter().cloned() {
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            // Never closed, so acquire only waits.
            let _permit = permits.acquire_owned().await;
            stop_remove(client, id).await
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined? {
            first_error.get_or_insert(e);
        }
    }
    let total = t0.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let left = pods_of(&mut client, tag).await?.len();
    if left > 0 {
        return Err(Error::PodsLeft {
            tag: tag.to_string(),
            left,
        });
    }
    Ok(TornDown {
        pods: ids.len(),
        total,
    })
}
