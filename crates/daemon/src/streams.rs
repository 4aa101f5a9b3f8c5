//! Client-opened streams (containerd's Streaming service): a client opens a stream under an id, and a
//! later request names that id to talk with the client on it — a Transfer's progress goes out on one,
//! registry credentials come back on another.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost_types::Any;
use tokio::sync::mpsc;
use tonic::Status;

/// A stream nobody claimed is dropped after this long (the client gave up or never sent its request).
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

/// Both directions of one client stream.
pub struct ClientStream {
    pub to_client: mpsc::Sender<Result<Any, Status>>,
    pub from_client: mpsc::Receiver<Any>,
}

#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<(String, String), (ClientStream, Instant)>>,
}

impl Streams {
    pub fn register(&self, ns: &str, id: &str, stream: ClientStream) -> Result<(), Status> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| Status::internal("stream registry poisoned"))?;
        open.retain(|_, (s, at)| !s.to_client.is_closed() && at.elapsed() < UNCLAIMED_TTL);
        let key = (ns.to_string(), id.to_string());
        if open.contains_key(&key) {
            return Err(Status::already_exists(format!(
                "stream {id:?} is already open"
            )));
        }
        open.insert(key, (stream, Instant::now()));
        Ok(())
    }

    /// Hands the stream to its user; the client sees it end when the user drops it.
    pub fn take(&self, ns: &str, id: &str) -> Result<ClientStream, Status> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| Status::internal("stream registry poisoned"))?;
        open.remove(&(ns.to_string(), id.to_string()))
            .map(|(s, _)| s)
            .ok_or_else(|| Status::not_found(format!("stream {id:?} is not open")))
    }
}
