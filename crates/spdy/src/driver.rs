//! The task that owns the connection: reads and dispatches frames, writes queued frames.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::frame::{
    goaway, status, Frame, FrameReader, FrameWriter, Setting, SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
};
use crate::state::{
    HandleGuard, Out, Shared, StreamState, DEFAULT_WINDOW, MAX_QUEUED_CONTROL, MAX_WINDOW,
};
use crate::{Error, Stream};

/// How long a closing session may spend flushing its last frames (GOAWAY, RST) to a peer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run<IO>(
    io: IO,
    shared: Arc<Shared>,
    handles: Weak<HandleGuard>,
    incoming: mpsc::Sender<Stream>,
    out_rx: mpsc::UnboundedReceiver<Out>,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    {
        let mut st = shared.lock();
        let entries = vec![
            Setting {
                flags: 0,
                id: SETTINGS_MAX_CONCURRENT_STREAMS,
                value: shared.cfg.max_streams.min(u32::MAX as usize) as u32,
            },
            Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: shared.cfg.initial_window,
            },
        ];
        shared.send(
            &mut st,
            Frame::Settings {
                clear: false,
                entries,
            },
        );
        // The session window starts at 64 KiB; widen it so that it never binds before the
        // per-stream windows do (one unread stream must not stall the others).
        let extra = st.session_window - DEFAULT_WINDOW;
        if extra > 0 {
            shared.send(
                &mut st,
                Frame::WindowUpdate {
                    stream_id: 0,
                    delta: extra as u32,
                },
            );
        }
    }
    let (rd, wr) = tokio::io::split(io);
    // The block owns both halves of the connection: leaving it closes the connection.
    let error = {
        let reader = read_loop(rd, &shared, &handles, &incoming);
        let writer = write_loop(wr, out_rx, &shared);
        tokio::pin!(reader, writer);
        tokio::select! {
            r = &mut reader => match r {
                Ok(()) => None,
                Err(e) => {
                    {
                        let mut st = shared.lock();
                        let last_good = st.last_peer_id;
                        shared.send(&mut st, Frame::GoAway { last_good, status: goaway::PROTOCOL_ERROR });
                    }
                    let _ = shared.out.send(Out::Shutdown);
                    let _ = tokio::time::timeout(FLUSH_TIMEOUT, &mut writer).await;
                    Some(e.to_string())
                }
            },
            w = &mut writer => w.err().map(|e| e.to_string()),
            () = wait_for_close(&shared) => {
                let _ = shared.out.send(Out::Shutdown);
                tokio::time::timeout(FLUSH_TIMEOUT, &mut writer).await.ok().and_then(|r| r.err()).map(|e| e.to_string())
            }
        }
    };
    if let Some(e) = &error {
        tracing::debug!(error = %e, "spdy session ended");
    }
    finish(&shared, error);
    drop(incoming);
    shared.closed_tx.send_replace(true);
}

async fn wait_for_close(shared: &Shared) {
    loop {
        let notified = shared.wake_driver.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if Shared::should_close(&shared.lock()) {
            return;
        }
        notified.await;
    }
}

/// Marks the session closed and fails everything that waits on it.
fn finish(shared: &Shared, error: Option<String>) {
    let mut st = shared.lock();
    st.closed = true;
    if st.error.is_none() {
        st.error = error;
    }
    st.pings.clear();
    for s in st.streams.values_mut() {
        if let Some(tx) = s.reply.take() {
            let _ = tx.send(Err(Error::Closed));
        }
        s.wake();
    }
    for w in st.queue_waiters.drain(..) {
        w.wake();
    }
    drop(st);
    shared.space.notify_waiters();
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    shared: &Shared,
) -> Result<(), Error> {
    let mut codec = FrameWriter::new()?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        let mut next = Some(first);
        let (mut data, mut control, mut shutdown) = (0usize, 0usize, false);
        // Batch what is already queued into one write.
        while let Some(out) = next.take() {
            match out {
                Out::Frame(f) => {
                    match &f {
                        Frame::Data { data: d, .. } => data += d.len(),
                        _ => control += 1,
                    }
                    codec.encode(&f, &mut buf)?;
                }
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        let res = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        }
        .await;
        buf.clear();
        {
            let mut st = shared.lock();
            st.queued_data -= data.min(st.queued_data);
            st.queued_control -= control.min(st.queued_control);
            for w in st.queue_waiters.drain(..) {
                w.wake();
            }
        }
        res?;
        if shutdown {
            let _ = wr.shutdown().await;
            return Ok(());
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    shared: &Arc<Shared>,
    handles: &Weak<HandleGuard>,
    incoming: &mpsc::Sender<Stream>,
) -> Result<(), Error> {
    let mut codec = FrameReader::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = codec.decode(&mut buf)? {
            handle(frame, shared, handles, incoming).await?;
            if shared.lock().queued_control > MAX_QUEUED_CONTROL {
                return Err(Error::Protocol(format!(
                    "peer does not read: more than {MAX_QUEUED_CONTROL} control frames queued"
                )));
            }
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(&mut buf).await? == 0 {
            if buf.is_empty() {
                return Ok(());
            }
            return Err(Error::Protocol(format!(
                "connection closed inside a frame ({} bytes pending)",
                buf.len()
            )));
        }
    }
}

fn rst(shared: &Shared, stream_id: u32, status: u32) {
    let mut st = shared.lock();
    shared.send(&mut st, Frame::RstStream { stream_id, status });
}

async fn handle(
    frame: Frame,
    shared: &Arc<Shared>,
    handles: &Weak<HandleGuard>,
    incoming: &mpsc::Sender<Stream>,
) -> Result<(), Error> {
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => on_data(shared, stream_id, fin, data).await,
        Frame::SynStream {
            stream_id,
            fin,
            unidirectional,
            headers,
            ..
        } => {
            on_syn_stream(
                shared,
                handles,
                incoming,
                stream_id,
                fin,
                unidirectional,
                headers,
            );
            Ok(())
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        } => {
            let mut st = shared.lock();
            let Some(s) = st.streams.get_mut(&stream_id) else {
                return Ok(());
            };
            let Some(tx) = s.reply.take() else {
                drop(st);
                rst(shared, stream_id, status::STREAM_IN_USE);
                return Ok(());
            };
            s.remote_fin |= fin;
            // The opener is still waiting unless its future was dropped; then the stream
            // handle it owned has already cancelled the stream.
            let _ = tx.send(Ok(headers));
            Ok(())
        }
        Frame::Headers { stream_id, fin, .. } => {
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&stream_id) {
                if fin {
                    s.remote_fin = true;
                    s.wake();
                    drop(st);
                    shared.wake_driver.notify_one();
                }
            }
            Ok(())
        }
        Frame::RstStream {
            stream_id,
            status: code,
        } => {
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&stream_id) {
                if s.reset.is_none() {
                    s.reset = Some(code);
                    s.reset_by_peer = true;
                }
                if let Some(tx) = s.reply.take() {
                    let _ = tx.send(Err(Error::Reset {
                        id: stream_id,
                        status: code,
                    }));
                }
                s.wake();
            }
            drop(st);
            shared.space.notify_waiters();
            shared.wake_driver.notify_one();
            Ok(())
        }
        Frame::Settings { entries, .. } => {
            let mut st = shared.lock();
            st.peer_flow_control = true;
            for e in entries {
                if e.id == SETTINGS_INITIAL_WINDOW_SIZE {
                    let value = e.value as i64;
                    if value > MAX_WINDOW {
                        return Err(Error::Protocol(format!(
                            "SETTINGS_INITIAL_WINDOW_SIZE {value} exceeds 2^31-1"
                        )));
                    }
                    // The change applies to the windows of streams already open (section 2.6.4).
                    let delta = value - st.peer_initial_window;
                    st.peer_initial_window = value;
                    for s in st.streams.values_mut() {
                        s.send_window += delta;
                        s.wake();
                    }
                }
            }
            Ok(())
        }
        Frame::Ping { id } => {
            let mut st = shared.lock();
            if (id % 2 == 1) == shared.is_client {
                if let Some((sent, tx)) = st.pings.remove(&id) {
                    let _ = tx.send(sent.elapsed());
                }
            } else {
                shared.send(&mut st, Frame::Ping { id });
            }
            Ok(())
        }
        Frame::GoAway { last_good, .. } => {
            let mut st = shared.lock();
            st.going_away = true;
            // Streams we opened past last_good were never seen by the peer.
            for (id, s) in st.streams.iter_mut() {
                if !s.peer_initiated && *id > last_good && s.reset.is_none() {
                    s.reset = Some(status::REFUSED_STREAM);
                    s.reset_by_peer = true;
                    if let Some(tx) = s.reply.take() {
                        let _ = tx.send(Err(Error::GoingAway));
                    }
                    s.wake();
                }
            }
            drop(st);
            shared.wake_driver.notify_one();
            Ok(())
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut st = shared.lock();
            st.peer_flow_control = true;
            if delta == 0 {
                return Err(Error::Protocol(format!(
                    "WINDOW_UPDATE of 0 on stream {stream_id}"
                )));
            }
            if stream_id == 0 {
                st.send_window += delta as i64;
                if st.send_window > MAX_WINDOW {
                    return Err(Error::Protocol("session send window above 2^31-1".into()));
                }
                for s in st.streams.values_mut() {
                    if let Some(w) = s.write_waker.take() {
                        w.wake();
                    }
                }
            } else if let Some(s) = st.streams.get_mut(&stream_id) {
                s.send_window += delta as i64;
                if s.send_window > MAX_WINDOW {
                    s.reset = Some(status::FLOW_CONTROL_ERROR);
                    s.wake();
                    shared.send(
                        &mut st,
                        Frame::RstStream {
                            stream_id,
                            status: status::FLOW_CONTROL_ERROR,
                        },
                    );
                } else if let Some(w) = s.write_waker.take() {
                    w.wake();
                }
            }
            Ok(())
        }
        Frame::Unknown { kind } => {
            tracing::debug!(kind, "ignoring unknown spdy control frame");
            Ok(())
        }
    }
}

fn on_syn_stream(
    shared: &Arc<Shared>,
    handles: &Weak<HandleGuard>,
    incoming: &mpsc::Sender<Stream>,
    id: u32,
    fin: bool,
    unidirectional: bool,
    headers: Vec<(String, String)>,
) {
    let mut st = shared.lock();
    if id == 0 || !shared.is_peer_id(id) || id <= st.last_peer_id {
        let code = if st.streams.contains_key(&id) {
            status::STREAM_IN_USE
        } else {
            status::PROTOCOL_ERROR
        };
        shared.send(
            &mut st,
            Frame::RstStream {
                stream_id: id,
                status: code,
            },
        );
        return;
    }
    st.last_peer_id = id;
    let refuse = st.going_away
        || st.closed
        || incoming.is_closed()
        || Shared::open_streams(&st, true) >= shared.cfg.max_streams;
    let guard = match (refuse, handles.upgrade()) {
        (false, Some(g)) => g,
        _ => {
            shared.send(
                &mut st,
                Frame::RstStream {
                    stream_id: id,
                    status: status::REFUSED_STREAM,
                },
            );
            return;
        }
    };
    let mut s = StreamState::new(
        true,
        shared.cfg.initial_window as i64,
        st.peer_initial_window,
    );
    s.remote_fin = fin;
    s.local_fin = unidirectional;
    st.streams.insert(id, s);
    if !unidirectional {
        shared.send(
            &mut st,
            Frame::SynReply {
                stream_id: id,
                fin: false,
                headers: Vec::new(),
            },
        );
    }
    drop(st);
    let stream = Stream::new(id, headers, guard);
    if let Err(e) = incoming.try_send(stream) {
        // Only a fully closed stream can overflow the queue; mark it dead so dropping it
        // sends nothing more, and refuse it.
        let stream = match e {
            mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => s,
        };
        let mut st = shared.lock();
        if let Some(s) = st.streams.get_mut(&id) {
            s.reset = Some(status::REFUSED_STREAM);
        }
        shared.send(
            &mut st,
            Frame::RstStream {
                stream_id: id,
                status: status::REFUSED_STREAM,
            },
        );
        drop(st);
        drop(stream);
    }
}

async fn on_data(
    shared: &Arc<Shared>,
    id: u32,
    fin: bool,
    data: bytes::Bytes,
) -> Result<(), Error> {
    let len = data.len();
    let cap = shared.cfg.initial_window as usize;
    loop {
        // Registered before the check so a read in between is not missed.
        let space = shared.space.notified();
        tokio::pin!(space);
        space.as_mut().enable();
        let full = {
            let st = shared.lock();
            !st.peer_flow_control
                && len > 0
                && matches!(st.streams.get(&id),
                    Some(s) if s.reset.is_none() && !s.remote_fin && s.recv_len > 0 && s.recv_len + len > cap)
        };
        if !full {
            break;
        }
        // A peer without flow control overran the window: stop reading the connection until
        // the application drains this stream (bounded memory, TCP pushes back on the peer).
        space.await;
    }
    wait_space_done(shared, id, fin, data)
}

fn wait_space_done(
    shared: &Arc<Shared>,
    id: u32,
    fin: bool,
    data: bytes::Bytes,
) -> Result<(), Error> {
    let len = data.len();
    let mut st = shared.lock();
    let aware = st.peer_flow_control;
    st.recv_window -= len as i64;
    if aware && st.recv_window < 0 {
        return Err(Error::Protocol(format!(
            "peer overran the session window by {} bytes",
            -st.recv_window
        )));
    }
    let Some(s) = st.streams.get_mut(&id) else {
        // Stream already gone (we reset it or dropped it): discard, but give the window back.
        shared.credit(&mut st, None, len);
        return Ok(());
    };
    if s.reply.is_some() {
        drop(st);
        rst(shared, id, status::PROTOCOL_ERROR);
        return Ok(());
    }
    if s.reset.is_some() {
        shared.credit(&mut st, None, len);
        return Ok(());
    }
    if s.remote_fin {
        shared.credit(&mut st, None, len);
        shared.send(
            &mut st,
            Frame::RstStream {
                stream_id: id,
                status: status::STREAM_ALREADY_CLOSED,
            },
        );
        return Ok(());
    }
    s.recv_window -= len as i64;
    if aware && s.recv_window < 0 {
        s.reset = Some(status::FLOW_CONTROL_ERROR);
        s.wake();
        shared.credit(&mut st, None, len);
        shared.send(
            &mut st,
            Frame::RstStream {
                stream_id: id,
                status: status::FLOW_CONTROL_ERROR,
            },
        );
        return Ok(());
    }
    if len > 0 {
        s.recv_len += len;
        s.recv.push_back(data);
    }
    if fin {
        s.remote_fin = true;
    }
    if let Some(w) = s.read_waker.take() {
        w.wake();
    }
    drop(st);
    if fin {
        shared.wake_driver.notify_one();
    }
    Ok(())
}
