//! A hand-driven peer speaking raw frames: malformed input, and a peer without flow control
//! (like moby/spdystream, which kubectl and the kubelet use).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use berth_spdy::frame::{Frame, FrameReader, FrameWriter};
use berth_spdy::{Config, Session};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

struct Raw {
    io: DuplexStream,
    w: FrameWriter,
    r: FrameReader,
    buf: BytesMut,
}

impl Raw {
    fn new(io: DuplexStream) -> Self {
        Raw {
            io,
            w: FrameWriter::new().unwrap(),
            r: FrameReader::default(),
            buf: BytesMut::new(),
        }
    }
    async fn send(&mut self, f: Frame) {
        let mut out = BytesMut::new();
        self.w.encode(&f, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }
    /// Next frame, or None at EOF.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.r.decode(&mut self.buf).unwrap() {
                return Some(f);
            }
            let n = timeout(T, self.io.read_buf(&mut self.buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }
}

#[tokio::test]
async fn malformed_frames_end_the_session_with_goaway() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1],
        vec![
            0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ],
        vec![0, 0, 0, 0, 0, 0, 0, 1, 9],
        vec![0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
        vec![0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0, 0, 0, 9],
        // A DATA frame for a stream that was never opened is not fatal, but the truncated
        // frame after it is: the peer hung up mid-frame.
        vec![
            0, 0, 0, 1, 0, 0, 0, 1, 9, 0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0,
        ],
    ];
    for case in cases {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (server, _inc) = Session::server(b, Config::default());
        let mut raw = Raw::new(a);
        raw.io.write_all(&case).await.unwrap();
        if case.len() == 18 {
            raw.io.shutdown().await.unwrap();
        }
        timeout(T, server.closed())
            .await
            .unwrap_or_else(|_| panic!("session survived {case:?}"));
        assert!(server.error().is_some());
        let mut saw_goaway = false;
        // The decoder may also fail on our garbage echoes; only well-formed frames count.
        while let Ok(Some(f)) = async {
            loop {
                match raw.r.decode(&mut raw.buf) {
                    Ok(Some(f)) => return Ok(Some(f)),
                    Ok(None) => {}
                    Err(e) => return Err(e),
                }
                let n = raw.io.read_buf(&mut raw.buf).await.unwrap_or(0);
                if n == 0 {
                    return Ok(None);
                }
            }
        }
        .await
        {
            if matches!(f, Frame::GoAway { status: 1, .. }) {
                saw_goaway = true;
            }
        }
        assert!(saw_goaway, "no GOAWAY PROTOCOL_ERROR for {case:?}");
    }
}

#[tokio::test]
async fn peer_without_flow_control_is_neither_stalled_nor_overrun() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (_server, mut inc) = Session::server(
        b,
        Config {
            initial_window: 16 * 1024,
            ..Config::default()
        },
    );
    let mut raw = Raw::new(a);
    raw.send(Frame::SynStream {
        stream_id: 1,
        associated: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: vec![("streamtype".into(), "data".into())],
    })
    .await;
    let mut s = timeout(T, inc.accept()).await.unwrap().unwrap();
    assert_eq!(s.header("streamtype"), Some("data"));

    // The server sends far more than a window to a peer that never grants any.
    const OUT: usize = 300 * 1024;
    let writer = tokio::spawn(async move {
        s.write_all(&vec![7u8; OUT]).await.unwrap();
        s.shutdown().await.unwrap();
        s
    });
    let mut got = 0;
    let mut replied = false;
    loop {
        match raw.next().await.unwrap() {
            Frame::SynReply { stream_id: 1, .. } => replied = true,
            Frame::Data {
                stream_id: 1,
                fin,
                data,
            } => {
                assert!(replied, "data before SYN_REPLY");
                got += data.len();
                if fin {
                    break;
                }
            }
            _ => {}
        }
    }
    assert_eq!(got, OUT);
    let mut s = timeout(T, writer).await.unwrap().unwrap();

    // The peer sends 20 windows' worth without waiting for grants; nothing is lost and the
    // stream's buffer stays bounded because the session stops reading until we drain it.
    const IN: usize = 320 * 1024;
    let sender = tokio::spawn(async move {
        for _ in 0..IN / 8192 {
            raw.send(Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from(vec![3u8; 8192]),
            })
            .await;
        }
        raw.send(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        raw
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !sender.is_finished(),
        "a 64 KiB pipe plus a 16 KiB window absorbed 320 KiB: no backpressure"
    );
    let mut v = Vec::new();
    timeout(T, s.read_to_end(&mut v)).await.unwrap().unwrap();
    assert_eq!(v.len(), IN);
    timeout(T, sender).await.unwrap().unwrap();
}
