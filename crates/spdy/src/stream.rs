use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::status_name;
use crate::frame::{status, Frame, Headers};
use crate::state::{HandleGuard, MAX_DATA_CHUNK, MAX_QUEUED_DATA};

/// One SPDY stream: reads DATA from the peer (EOF on the peer's FIN), writes DATA (shutdown
/// sends an empty DATA frame with FIN).
///
/// Dropping a stream that is still open either way resets it with CANCEL. Reads after the
/// session died without the peer's FIN fail with `UnexpectedEof`; a reset stream fails reads
/// and writes with `ConnectionReset`.
pub struct Stream {
    id: u32,
    headers: Headers,
    guard: Arc<HandleGuard>,
}

fn reset_error(id: u32, status: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("spdy stream {id} reset ({})", status_name(status)),
    )
}

impl Stream {
    pub(crate) fn new(id: u32, headers: Headers, guard: Arc<HandleGuard>) -> Self {
        Stream { id, headers, guard }
    }

    pub(crate) fn set_headers(&mut self, headers: Headers) {
        self.headers = headers;
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// What the peer sent: the SYN_STREAM headers of an accepted stream, the SYN_REPLY
    /// headers of an opened one. Names are lowercase; a multi-valued header appears once per value.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// First value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Aborts the stream both ways with RST_STREAM `status` (see SPDY/3.1 section 2.6.3).
    pub fn reset(&self, status: u32) {
        let shared = &self.guard.shared;
        let mut st = shared.lock();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        if s.reset.is_some() {
            return;
        }
        s.reset = Some(status);
        s.wake();
        shared.send(
            &mut st,
            Frame::RstStream {
                stream_id: self.id,
                status,
            },
        );
        shared.wake_driver.notify_one();
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let shared = &self.guard.shared;
        let mut st = shared.lock();
        let Some(s) = st.streams.remove(&self.id) else {
            return;
        };
        if !s.finished() {
            shared.send(
                &mut st,
                Frame::RstStream {
                    stream_id: self.id,
                    status: status::CANCEL,
                },
            );
        }
        // Unread bytes still occupy the session window: give them back.
        shared.credit(&mut st, None, s.recv_len);
        drop(st);
        shared.space.notify_waiters();
        shared.wake_driver.notify_one();
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let id = self.id;
        let shared = &self.guard.shared;
        let mut st = shared.lock();
        let closed = st.closed;
        let Some(s) = st.streams.get_mut(&id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "spdy stream is gone",
            )));
        };
        if let Some(chunk) = s.recv.front_mut() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk.split_to(n));
            if chunk.is_empty() {
                s.recv.pop_front();
            }
            s.recv_len -= n;
            shared.credit(&mut st, Some(id), n);
            drop(st);
            shared.space.notify_waiters();
            return Poll::Ready(Ok(()));
        }
        if s.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(code) = s.reset {
            return Poll::Ready(Err(reset_error(id, code)));
        }
        if closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("spdy session closed before stream {id} ended"),
            )));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let id = self.id;
        let shared = &self.guard.shared;
        let mut st = shared.lock();
        if st.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "spdy session closed",
            )));
        }
        if st.queued_data >= MAX_QUEUED_DATA {
            st.queue_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        let enforce = st.peer_flow_control;
        let session_window = st.send_window;
        let Some(s) = st.streams.get_mut(&id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "spdy stream is gone",
            )));
        };
        if let Some(code) = s.reset {
            return Poll::Ready(Err(reset_error(id, code)));
        }
        if s.local_fin {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("spdy stream {id} already half-closed by us"),
            )));
        }
        let mut n = buf.len().min(MAX_DATA_CHUNK);
        if enforce {
            n = n.min(s.send_window.min(session_window).max(0) as usize);
            if n == 0 {
                s.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        s.send_window -= n as i64;
        st.send_window -= n as i64;
        let data = Bytes::copy_from_slice(&buf[..n]);
        shared.send(
            &mut st,
            Frame::Data {
                stream_id: id,
                fin: false,
                data,
            },
        );
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        let shared = &self.guard.shared;
        let mut st = shared.lock();
        let Some(s) = st.streams.get_mut(&id) else {
            return Poll::Ready(Ok(()));
        };
        if s.local_fin || s.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        s.local_fin = true;
        shared.send(
            &mut st,
            Frame::Data {
                stream_id: id,
                fin: true,
                data: Bytes::new(),
            },
        );
        drop(st);
        shared.wake_driver.notify_one();
        Poll::Ready(Ok(()))
    }
}
