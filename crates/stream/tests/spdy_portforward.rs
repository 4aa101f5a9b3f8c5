//! Port forward over SPDY against a local TCP server that answers and closes, as busybox httpd
//! does: the answer reaches the client in full, followed by a clean end of stream (no reset).

mod common;

use berth_spdy::Session;
use berth_stream::{Config, PortForwardRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn upgrade(url: &str) -> tokio::net::TcpStream {
    let rest = url.strip_prefix("http://").expect("http");
    let (host, path) = rest.split_once('/').expect("path");
    let mut tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut b).await.expect("answer");
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    tcp
}

#[tokio::test]
async fn answer_then_close_reaches_the_client_cleanly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let page = vec![b'x'; 200_000];
    let served = page.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = served.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 64];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(&body).await;
                // Closes without waiting for the client: the answer ends the connection.
            });
        }
    });
    let (server, _seen) = common::start(Config::default()).await;
    let url = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            ports: vec![port],
        })
        .expect("url");
    let tcp = upgrade(&url).await;
    let (session, _incoming) = Session::client(tcp, berth_spdy::Config::default());
    for id in 0..3 {
        let rid = id.to_string();
        let headers = |kind: &str| {
            vec![
                ("streamtype".to_string(), kind.to_string()),
                ("port".to_string(), port.to_string()),
                ("requestid".to_string(), rid.clone()),
            ]
        };
        let mut error = session
            .open(headers("error"), false)
            .await
            .expect("error stream");
        let mut data = session
            .open(headers("data"), false)
            .await
            .expect("data stream");
        data.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("request");
        let mut got = Vec::new();
        data.read_to_end(&mut got)
            .await
            .expect("the answer, then EOF");
        assert_eq!(got.len(), page.len(), "connection {id}");
        let _ = data.shutdown().await;
        let mut err = String::new();
        error
            .read_to_string(&mut err)
            .await
            .expect("error stream EOF");
        assert_eq!(err, "", "connection {id}");
    }
}
