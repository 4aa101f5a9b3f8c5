//! Scenario `list`: latency of the kubelet's periodic calls, ListContainers and
//! ListContainerStats, with the containers already running on the daemon.

use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

use crate::error::Error;

pub struct Listed {
    pub running: usize,
    pub with_stats: usize,
    pub list_containers: Vec<Duration>,
    pub list_container_stats: Vec<Duration>,
}

async fn list_containers(
    client: &mut RuntimeServiceClient<Channel>,
) -> Result<Vec<Container>, Error> {
    Ok(client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .map_err(Error::rpc("ListContainers", "all containers"))?
        .into_inner()
        .containers)
}

async fn list_stats(
    client: &mut RuntimeServiceClient<Channel>,
) -> Result<Vec<ContainerStats>, Error> {
    Ok(client
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .map_err(Error::rpc("ListContainerStats", "all containers"))?
        .into_inner()
        .stats)
}

/// `calls` of each RPC after one untimed warm-up of each; fails when fewer than `expect` running
/// containers are listed (the numbers would not mean what the table says).
pub async fn measure(
    mut client: RuntimeServiceClient<Channel>,
    calls: usize,
    expect: usize,
) -> Result<Listed, Error> {
    let running = list_containers(&mut client)
        .await?
        .iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .count();
    if running < expect {
        return Err(Error::TooFewContainers {
            expected: expect,
            found: running,
        });
    }
    let with_stats = list_stats(&mut client).await?.len();
    let mut lc = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        list_containers(&mut client).await?;
        lc.push(t0.elapsed());
    }
    let mut ls = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        list_stats(&mut client).await?;
        ls.push(t0.elapsed());
    }
    Ok(Listed {
        running,
        with_stats,
        list_containers: lc,
        list_container_stats: ls,
    })
}
