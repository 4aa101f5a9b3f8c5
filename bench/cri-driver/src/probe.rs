//! After the timed part: proof that the pods are real, reachable on their CNI address. Asks
//! PodSandboxStatus for each pod's IP and expects an HTTP answer on `port` (busybox httpd).

use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::PodSandboxStatusRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::error::Error;

/// A server that has just been started may not listen yet: retry this long.
const PATIENCE: Duration = Duration::from_secs(10);

async fn pod_ip(client: &mut RuntimeServiceClient<Channel>, id: &str) -> Result<String, Error> {
    let status = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(Error::rpc("PodSandboxStatus", format!("pod {id}")))?
        .into_inner()
        .status;
    status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| Error::Probe {
            pod: id.to_string(),
            why: "PodSandboxStatus reports no IP".into(),
        })
}

/// One HTTP/1.0 GET of `/`; the status line on success.
async fn get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Every pod answers `GET /` on `<pod IP>:port` with 200.
pub async fn http_all(
    mut client: RuntimeServiceClient<Channel>,
    pod_ids: &[String],
    port: u16,
) -> Result<usize, Error> {
    for id in pod_ids {
        let addr = format!("{}:{port}", pod_ip(&mut client, id).await?);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = match get(&addr).await {
                Ok(line) if line.contains(" 200") => break,
                Ok(line) => format!("answered {line:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(Error::Probe {
                    pod: id.clone(),
                    why: format!("GET http://{addr}/ for {PATIENCE:?}: {last}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(pod_ids.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn serve_once(answer: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 64];
            let n = s.read(&mut req).await.unwrap();
            assert!(req[..n].starts_with(b"GET / HTTP/1.0"));
            s.write_all(answer).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn get_returns_the_status_line() {
        let addr = serve_once(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi").await;
        assert_eq!(get(&addr).await.unwrap(), "HTTP/1.0 200 OK");
        let addr = serve_once(b"HTTP/1.0 404 Not Found\r\n\r\n").await;
        assert_eq!(get(&addr).await.unwrap(), "HTTP/1.0 404 Not Found");
    }

    #[tokio::test]
    async fn get_fails_when_nothing_listens() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(get(&format!("127.0.0.1:{port}")).await.is_err());
    }
}
