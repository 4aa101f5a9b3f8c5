//! Scenario `stream-pod`: the one pod the streaming benchmarks use. Container `c0` sleeps (exec
//! target); container `c1` writes a file of `bytes` zero bytes and then serves it with busybox
//! httpd on `port` (port-forward target). Returns once the server accepts connections on the
//! pod's IP, so no timed step waits for the file to be written.

use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::error::Error;
use crate::run_error::RunError;
use crate::spec::Plan;

/// Where the server container keeps the file; `/big` is its URL path.
pub const SERVED_PATH: &str = "/big";

pub struct StreamPod {
    pub pod: String,
    pub sleeper: String,
    pub server: String,
    pub ip: String,
}

/// The server container's command: the file first, then httpd in the foreground, so
/// accepting connections means the whole file is there.
pub fn server_command(bytes: u64, port: u16) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /srv && head -c {bytes} /dev/zero >/srv{SERVED_PATH} \
             && exec httpd -f -p {port} -h /srv"
        ),
    ]
}

/// Starts pod 0 of `plan` (its `command` is the sleeper's) plus the server container.
pub async fn start(
    mut client: RuntimeServiceClient<Channel>,
    plan: &Plan,
    bytes: u64,
    port: u16,
    patience: Duration,
) -> Result<StreamPod, RunError> {
    let dir = plan.pod_log_dir(0);
    std::fs::create_dir_all(&dir).map_err(|source| Error::LogDir { path: dir, source })?;
    let config = plan.pod_config(0);
    let name = plan.pod_name(0);
    let pod = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: plan.runtime_handler.clone(),
        })
        .await
        .map_err(Error::rpc("RunPodSandbox", format!("pod {name}")))?
        .into_inner()
        .pod_sandbox_id;
    let sleeper = plan.container_config(0);
    let mut server = plan.container_config(1);
    server.command = server_command(bytes, port);
    let mut ids = Vec::new();
    for c in [sleeper, server] {
        let cname = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(c),
                sandbox_config: Some(config.clone()),
            })
            .await
            .map_err(Error::rpc(
                "CreateContainer",
                format!("container {cname} of pod {name} ({pod})"),
            ))?
            .into_inner()
            .container_id;
        client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(Error::rpc(
                "StartContainer",
                format!("container {cname} ({id}) of pod {name}"),
            ))?;
        ids.push(id);
    }
    let ip = pod_ip(&mut client, &pod).await?;
    wait_listening(&format!("{ip}:{port}"), &pod, patience).await?;
    let server = ids.pop().unwrap_or_default();
    let sleeper = ids.pop().unwrap_or_default();
    Ok(StreamPod {
        pod,
        sleeper,
        server,
        ip,
    })
}

async fn pod_ip(client: &mut RuntimeServiceClient<Channel>, pod: &str) -> Result<String, Error> {
    client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: false,
        })
        .await
        .map_err(Error::rpc("PodSandboxStatus", format!("pod {pod}")))?
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| Error::Probe {
            pod: pod.to_string(),
            why: "PodSandboxStatus reports no IP".into(),
        })
}

async fn wait_listening(addr: &str, pod: &str, patience: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + patience;
    loop {
        let why = match TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(Error::Probe {
                pod: pod.to_string(),
                why: format!("server on {addr} not listening after {patience:?}: {why}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_writes_the_file_before_it_listens() {
        let c = server_command(1000, 8080);
        assert_eq!(c[..2], ["sh", "-c"]);
        let s = &c[2];
        let (file, serve) = (
            s.find("head -c 1000").unwrap_or(usize::MAX),
            s.find("httpd").unwrap_or(0),
        );
        assert!(file < serve, "{s}");
        assert!(s.contains(">/srv/big &&"), "{s}");
        assert!(s.contains("-p 8080 -h /srv"), "{s}");
    }
}
