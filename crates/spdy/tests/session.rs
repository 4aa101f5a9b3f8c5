//! Client and server sessions talking over in-memory pipes.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_spdy::{status, Config, Error, Incoming, Session, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn h(n: &str, v: &str) -> (String, String) {
    (n.to_string(), v.to_string())
}

/// Records that the driver released the connection.
struct Tracked {
    io: DuplexStream,
    dropped: Arc<AtomicBool>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct Pair {
    client: Session,
    client_in: Incoming,
    server: Session,
    server_in: Incoming,
    client_io_dropped: Arc<AtomicBool>,
    server_io_dropped: Arc<AtomicBool>,
}

fn pair_with(ccfg: Config, scfg: Config) -> Pair {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let cd = Arc::new(AtomicBool::new(false));
    let sd = Arc::new(AtomicBool::new(false));
    let (client, client_in) = Session::client(
        Tracked {
            io: a,
            dropped: cd.clone(),
        },
        ccfg,
    );
    let (server, server_in) = Session::server(
        Tracked {
            io: b,
            dropped: sd.clone(),
        },
        scfg,
    );
    Pair {
        client,
        client_in,
        server,
        server_in,
        client_io_dropped: cd,
        server_io_dropped: sd,
    }
}

fn pair() -> Pair {
    pair_with(Config::default(), Config::default())
}

async fn read_all(s: &mut Stream) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await?;
    Ok(v)
}

#[tokio::test]
async fn streams_both_ways_with_half_close() {
    let mut p = pair();
    let client = p.client.clone();
    let opener = tokio::spawn(async move {
        client
            .open(
                vec![h("StreamType", "stdin"), h("x", "1"), h("x", "2")],
                false,
            )
            .await
    });
    let mut srv = timeout(T, p.server_in.accept()).await.unwrap().unwrap();
    let mut cli = timeout(T, opener).await.unwrap().unwrap().unwrap();
    assert_eq!(cli.id(), 1);
    assert_eq!(srv.id(), 1);
    assert_eq!(srv.header("streamtype"), Some("stdin"));
    assert_eq!(srv.header("STREAMTYPE"), Some("stdin"));
    assert_eq!(srv.headers().iter().filter(|(n, _)| n == "x").count(), 2);
    assert!(cli.headers().is_empty(), "server replies with no headers");

    cli.write_all(b"hello").await.unwrap();
    cli.shutdown().await.unwrap();
    assert!(
        cli.write_all(b"late").await.is_err(),
        "write after FIN must fail"
    );
    assert_eq!(
        timeout(T, read_all(&mut srv)).await.unwrap().unwrap(),
        b"hello"
    );
    // Our half is closed, the peer's is not: it can still send.
    srv.write_all(b"world").await.unwrap();
    srv.shutdown().await.unwrap();
    assert_eq!(
        timeout(T, read_all(&mut cli)).await.unwrap().unwrap(),
        b"world"
    );

    // Server-initiated stream: even id, arrives on the client's Incoming.
    let server = p.server.clone();
    let opener = tokio::spawn(async move { server.open(vec![h("dir", "down")], true).await });
    let mut from_srv = timeout(T, p.client_in.accept()).await.unwrap().unwrap();
    let to_cli = timeout(T, opener).await.unwrap().unwrap().unwrap();
    assert_eq!(to_cli.id(), 2);
    assert_eq!(from_srv.header("dir"), Some("down"));
    // Opened with FIN: the receiver sees EOF at once.
    assert_eq!(
        timeout(T, read_all(&mut from_srv)).await.unwrap().unwrap(),
        b""
    );
}

#[tokio::test]
async fn flow_control_limits_in_flight_bytes_for_10_mb() {
    const WINDOW: u32 = 16 * 1024;
    const TOTAL: usize = 10 * 1024 * 1024;
    let cfg = Config {
        initial_window: WINDOW,
        ..Config::default()
    };
    let mut p = pair_with(cfg.clone(), cfg);
    let client = p.client.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = sent.clone();
    let writer = tokio::spawn(async move {
        let mut s = client
            .open(vec![h("streamtype", "data")], false)
            .await
            .unwrap();
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        let mut off = 0;
        while off < data.len() {
            let n = s
                .write(&data[off..(off + 4096).min(data.len())])
                .await
                .unwrap();
            off += n;
            sent2.store(off, Ordering::SeqCst);
        }
        s.shutdown().await.unwrap();
        s
    });
    let mut srv = timeout(T, p.server_in.accept()).await.unwrap().unwrap();
    // The receiver does not read: the sender must stop at the window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled = sent.load(Ordering::SeqCst);
    assert!(stalled > 0, "nothing sent at all");
    assert!(
        stalled <= WINDOW as usize,
        "sender put {stalled} bytes in flight with a {WINDOW}-byte window"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        stalled,
        "sender kept going without window"
    );

    let got = timeout(Duration::from_secs(60), read_all(&mut srv))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), TOTAL);
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "data corrupted"
    );
    let _keep = timeout(T, writer).await.unwrap().unwrap();
}

#[tokio::test]
async fn many_concurrent_streams_echo() {
    let mut p = pair();
    let echo = tokio::spawn(async move {
        let mut tasks = Vec::new();
        while let Some(mut s) = p.server_in.accept().await {
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).await.unwrap();
                }
                s.shutdown().await.unwrap();
            }));
        }
        tasks
    });
    let mut clients = Vec::new();
    for i in 0..40usize {
        let c = p.client.clone();
        clients.push(tokio::spawn(async move {
            let s = c.open(vec![h("n", &i.to_string())], false).await.unwrap();
            let (mut r, mut w) = tokio::io::split(s);
            let payload: Vec<u8> = (0..100_000).map(|j| ((i * 7 + j) % 256) as u8).collect();
            let expect = payload.clone();
            let wr = tokio::spawn(async move {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
                w
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            let _w = wr.await.unwrap();
            assert_eq!(got, expect, "stream {i}");
        }));
    }
    for c in clients {
        timeout(Duration::from_secs(60), c).await.unwrap().unwrap();
    }
    drop(echo);
}

#[tokio::test]
async fn reset_reaches_the_peer_both_ways() {
    let mut p = pair();
    let c = p.client.clone();
    let opener = tokio::spawn(async move { c.open(vec![], false).await });
    let srv = timeout(T, p.server_in.accept()).await.unwrap().unwrap();
    let mut cli = opener.await.unwrap().unwrap();
    srv.reset(status::CANCEL);
    let err = timeout(T, read_all(&mut cli)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(err.to_string().contains("CANCEL"), "{err}");
    assert!(cli.write_all(b"x").await.is_err());

    let c = p.client.clone();
    let opener = tokio::spawn(async move { c.open(vec![], false).await });
    let mut srv = timeout(T, p.server_in.accept()).await.unwrap().unwrap();
    let cli = opener.await.unwrap().unwrap();
    cli.reset(status::INTERNAL_ERROR);
    let err = timeout(T, read_all(&mut srv)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

    // Dropping an open stream cancels it for the peer.
    let c = p.client.clone();
    let opener = tokio::spawn(async move { c.open(vec![], false).await });
    let mut srv = timeout(T, p.server_in.accept()).await.unwrap().unwrap();
    drop(opener.await.unwrap().unwrap());
    let err = timeout(T, read_all(&mut srv)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("CANCEL"), "{err}");
}

#[tokio::test]
async fn ping_both_ways() {
    let p = pair();
    let d = timeout(T, p.client.ping()).await.unwrap().unwrap();
    assert!(d < T);
    timeout(T, p.server.ping()).await.unwrap().unwrap();
    timeout(T, p.client.ping()).await.unwrap().unwrap();
}

#[tokio::test]
async fn goaway_refuses_new_streams_and_closes_when_streams_end() {
    let mut p = pair();
    let c = p.client.clone();
    let opener = tokio::spawn(async move { c.open(vec![], false).await });
    let mut srv = timeout(T, p.server_in.accept()).await.unwrap().unwrap();
    let mut cli = opener.await.unwrap().unwrap();

    p.server.goaway().await;
    assert!(matches!(
        p.server.open(vec![], false).await,
        Err(Error::GoingAway)
    ));
    // The client learns of it; give the frame time to arrive.
    let mut refused = false;
    for _ in 0..100 {
        match p.client.open(vec![], false).await {
            Err(Error::GoingAway) | Err(Error::Reset { status: 3, .. }) => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused);
    // The open stream still works.
    cli.write_all(b"still").await.unwrap();
    cli.shutdown().await.unwrap();
    assert_eq!(
        timeout(T, read_all(&mut srv)).await.unwrap().unwrap(),
        b"still"
    );
    assert!(
        timeout(Duration::from_millis(200), p.server.closed())
            .await
            .is_err(),
        "closed with a stream open"
    );
    srv.shutdown().await.unwrap();
    assert_eq!(timeout(T, read_all(&mut cli)).await.unwrap().unwrap(), b"");
    timeout(T, p.server.closed()).await.unwrap();
    timeout(T, p.client.closed()).await.unwrap();
    assert!(p.server_io_dropped.load(Ordering::SeqCst));
    assert!(p.client_io_dropped.load(Ordering::SeqCst));
    assert!(timeout(T, p.client_in.accept()).await.unwrap().is_none());
}

#[tokio::test]
async fn peer_disconnect_mid_stream_ends_streams_and_driver() {
    let (a, mid1) = tokio::io::duplex(64 * 1024);
    let (mid2, b) = tokio::io::duplex(64 * 1024);
    let proxy = tokio::spawn(async move {
        let (mut x, mut y) = (mid1, mid2);
        let _ = tokio::io::copy_bidirectional(&mut x, &mut y).await;
    });
    let cd = Arc::new(AtomicBool::new(false));
    let sd = Arc::new(AtomicBool::new(false));
    let (client, _ci) = Session::client(
        Tracked {
            io: a,
            dropped: cd.clone(),
        },
        Config::default(),
    );
    let (server, mut si) = Session::server(
        Tracked {
            io: b,
            dropped: sd.clone(),
        },
        Config::default(),
    );
    let c = client.clone();
    let opener = tokio::spawn(async move { c.open(vec![], false).await });
    let mut srv = timeout(T, si.accept()).await.unwrap().unwrap();
    let mut cli = opener.await.unwrap().unwrap();
    cli.write_all(b"partial").await.unwrap();
    let mut buf = [0u8; 7];
    srv.read_exact(&mut buf).await.unwrap();

    proxy.abort();
    let err = timeout(T, read_all(&mut srv)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    let err = timeout(T, read_all(&mut cli)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    timeout(T, client.closed()).await.unwrap();
    timeout(T, server.closed()).await.unwrap();
    assert!(
        cd.load(Ordering::SeqCst) && sd.load(Ordering::SeqCst),
        "driver kept the connection"
    );
    assert!(srv.write_all(b"x").await.is_err());
    assert!(matches!(
        client.open(vec![], false).await,
        Err(Error::Closed)
    ));
    assert!(matches!(server.ping().await, Err(Error::Closed)));
    assert!(timeout(T, si.accept()).await.unwrap().is_none());
}

#[tokio::test]
async fn max_streams_refuses_with_refused_stream() {
    let scfg = Config {
        max_streams: 2,
        ..Config::default()
    };
    let mut p = pair_with(Config::default(), scfg);
    let a = p.client.open(vec![], false);
    let b = p.client.open(vec![], false);
    let (a, b) = tokio::join!(a, b);
    let (_a, _b) = (a.unwrap(), b.unwrap());
    let third = timeout(T, p.client.open(vec![], false)).await.unwrap();
    assert!(
        matches!(third, Err(Error::Reset { status: 3, .. })),
        "{third:?}"
    );
    let s1 = p.server_in.accept().await.unwrap();
    let _s2 = p.server_in.accept().await.unwrap();
    // Closing one makes room again.
    drop(s1);
    drop(_a);
    let mut ok = false;
    for _ in 0..100 {
        if timeout(T, p.client.open(vec![], false))
            .await
            .unwrap()
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "a slot freed by a closed stream was not reused");
}

#[tokio::test]
async fn dropping_every_handle_ends_the_session() {
    let p = pair();
    let server = p.server.clone();
    drop(p.client);
    drop(p.client_in);
    timeout(T, server.closed()).await.unwrap();
    assert!(p.client_io_dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn unread_streams_do_not_starve_the_others() {
    let mut p = pair();
    let mut parked = Vec::new();
    for _ in 0..3 {
        let c = p.client.clone();
        let opener = tokio::spawn(async move { c.open(vec![], false).await });
        parked.push(timeout(T, p.server_in.accept()).await.unwrap().unwrap());
        let mut s = opener.await.unwrap().unwrap();
        // Fill this stream's whole window; the server never reads it.
        timeout(T, s.write_all(&vec![1u8; 64 * 1024]))
            .await
            .unwrap()
            .unwrap();
        parked.push(s);
    }
    let c = p.client.clone();
    let opener = tokio::spawn(async move { c.open(vec![], false).await });
    let mut srv = timeout(T, p.server_in.accept()).await.unwrap().unwrap();
    let mut cli = opener.await.unwrap().unwrap();
    let writer = tokio::spawn(async move {
        cli.write_all(&vec![2u8; 1024 * 1024]).await.unwrap();
        cli.shutdown().await.unwrap();
        cli
    });
    let got = timeout(T, read_all(&mut srv)).await.unwrap().unwrap();
    assert_eq!(got.len(), 1024 * 1024);
    let _cli = writer.await.unwrap();
}

#[test]
fn handles_can_move_between_tasks() {
    fn check<T: Send + Sync + Unpin + 'static>() {}
    check::<Session>();
    check::<Incoming>();
    check::<Stream>();
    check::<Error>();
}
