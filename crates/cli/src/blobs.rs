//! The content service as a synchronous [`BlobSink`] / [`BlobSource`], so berth-image's
//! streaming importer and exporter can drive it from a blocking thread
//! (`spawn_blocking` + `Handle::block_on`). Data flows through small bounded channels: a blob
//! is never held whole in memory.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_image::digest::DigestReader;
use berth_image::labels::Labels;
use berth_image::{BlobSink, BlobSource, Descriptor, Digest, Error as ImageError, ErrorKind};
use containerd_client::services::v1::{
    content_client::ContentClient, Info, InfoRequest, ReadContentRequest, UpdateRequest,
    WriteAction, WriteContentRequest, WriteContentResponse,
};
use containerd_client::tonic::{Code, Status};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::conn::Svc;

const CHUNK: usize = 1 << 20;

pub struct GrpcContent {
    rt: Handle,
    client: ContentClient<Svc>,
    seq: u64,
}

impl GrpcContent {
    pub fn new(rt: Handle, client: ContentClient<Svc>) -> Self {
        GrpcContent { rt, client, seq: 0 }
    }
}

/// Maps a gRPC status to the image crate's error kinds (so NotFound stays NotFound).
pub fn status_err(s: Status) -> ImageError {
    let kind = match s.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::FailedPrecondition | Code::AlreadyExists => ErrorKind::FailedPrecondition,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        _ => ErrorKind::Internal,
    };
    ImageError::Backend {
        kind,
        message: s.message().to_string(),
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn write_req(reference: &str, action: WriteAction) -> WriteContentRequest {
    WriteContentRequest {
        action: action as i32,
        r#ref: reference.to_string(),
        ..Default::default()
    }
}

impl GrpcContent {
    /// Streams `r` through one `Content.Write` call: Stat (to resume), Writes, Commit.
    fn write(
        &mut self,
        reference: &str,
        expected: Option<&Descriptor>,
        size_hint: Option<u64>,
        r: &mut dyn Read,
    ) -> Result<Outcome, ImageError> {
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let (first_tx, first_rx) = oneshot::channel::<WriteContentResponse>();
        let mut client = self.client.clone();
        // The call runs on the runtime; it hands the first (Stat) response back and keeps
        // draining the rest so flow control never stalls, returning the last (Commit) one.
        let call = self.rt.spawn(async move {
            let mut stream = client.write(ReceiverStream::new(rx)).await?.into_inner();
            let mut first = Some(first_tx);
            let mut last = None;
            while let Some(m) = stream.message().await? {
                if let Some(f) = first.take() {
                    let _ = f.send(m.clone());
                }
                last = Some(m);
            }
            Ok::<_, Status>(last)
        });
        let total = size_hint.map_or(0, |s| s as i64);
        let expected_digest = expected.map(|e| e.digest.to_string()).unwrap_or_default();
        let mut stat = write_req(reference, WriteAction::Stat);
        stat.total = total;
        stat.expected = expected_digest.clone();
        if tx.blocking_send(stat).is_err() {
            return finish(&self.rt, call);
        }
        let Ok(status) = first_rx.blocking_recv() else {
            return finish(&self.rt, call);
        };
        let mut hashed = DigestReader::new(r);
        // Resume: the server already has `offset` bytes of this ingest; skip them locally.
        let mut offset = status.offset.max(0) as u64;
        if offset > 0 {
            let skipped = io::copy(&mut (&mut hashed).take(offset), &mut io::sink())?;
            if skipped != offset {
                offset = 0;
            }
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut hashed, &mut buf)?;
            if n == 0 {
                break;
            }
            let mut w = write_req(reference, WriteAction::Write);
            w.offset = offset as i64;
            w.total = total;
            w.data = buf[..n].to_vec();
            offset += n as u64;
            if tx.blocking_send(w).is_err() {
                return finish(&self.rt, call);
            }
        }
        let digest = hashed.digest();
        let mut commit = write_req(reference, WriteAction::Commit);
        commit.offset = offset as i64;
        commit.total = offset as i64;
        commit.expected = if expected_digest.is_empty() {
            digest.to_string()
        } else {
            expected_digest
        };
        if tx.blocking_send(commit).is_err() {
            return finish(&self.rt, call);
        }
        drop(tx);
        let written = Descriptor::new("", digest, hashed.count());
        match finish(&self.rt, call) {
            Ok(_) => Ok(Outcome::Written(Box::new(written))),
            Err(ImageError::Backend { message, .. }) if message == ENDED => {
                Ok(Outcome::Written(Box::new(written)))
            }
            Err(e) => Err(e),
        }
    }
}

const ENDED: &str = "content write stream ended before commit";

enum Outcome {
    Written(Box<Descriptor>),
    /// The store already holds the blob (AlreadyExists): a success for an import.
    Exists,
}

/// Waits for the write call and turns its end into an outcome. Reaching the end without an
/// error before the commit was sent is reported as [`ENDED`].
fn finish(
    rt: &Handle,
    call: tokio::task::JoinHandle<Result<Option<WriteContentResponse>, Status>>,
) -> Result<Outcome, ImageError> {
    match rt.block_on(call) {
        Ok(Err(s)) if s.code() == Code::AlreadyExists => Ok(Outcome::Exists),
        Ok(Err(s)) => Err(status_err(s)),
        Ok(Ok(_)) => Err(ImageError::Backend {
            kind: ErrorKind::Internal,
            message: ENDED.into(),
        }),
        Err(e) => Err(ImageError::Backend {
            kind: ErrorKind::Internal,
            message: format!("content write task: {e}"),
        }),
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl BlobSink for GrpcContent {
    fn put(
        &mut self,
        expected: Option<&Descriptor>,
        _media_type: &str,
        size_hint: Option<u64>,
        r: &mut dyn Read,
    ) -> Result<Descriptor, ImageError> {
        if let Some(e) = expected {
            if BlobSink::exists(self, &e.digest)? {
                return Ok(e.clone());
            }
        }
        self.seq += 1;
        // A known digest names the ingest so an interrupted import resumes; otherwise the
        // ref must be unique to never mix two files' bytes.
        let reference = match expected {
            Some(e) => format!("import-{}", e.digest),
            None => format!("import-{}-{}", nanos(), self.seq),
        };
        match self.write(&reference, expected, size_hint, r)? {
            Outcome::Written(d) => Ok(*d),
            Outcome::Exists => expected.cloned().ok_or_else(|| ImageError::Backend {
                kind: ErrorKind::Internal,
                message: "content store reported an unnamed blob as existing".into(),
            }),
        }
    }

    fn set_labels(&mut self, digest: &Digest, labels: &Labels) -> Result<(), ImageError> {
        let mut client = self.client.clone();
        let info = Info {
            digest: digest.to_string(),
            labels: labels.clone().into_iter().collect::<HashMap<_, _>>(),
            ..Default::default()
        };
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let req = UpdateRequest {
            info: Some(info),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        self.rt
            .block_on(client.update(req))
            .map(|_| ())
            .map_err(status_err)
    }

    fn exists(&mut self, digest: &Digest) -> Result<bool, ImageError> {
        let mut client = self.client.clone();
        let req = InfoRequest {
            digest: digest.to_string(),
        };
        match self.rt.block_on(client.info(req)) {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(status_err(s)),
        }
    }
}

/// Reads a `Content.Read` stream chunk by chunk from a blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Vec<u8>, Status>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(s)) => return Err(io::Error::other(s.message().to_string())),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl BlobSource for GrpcContent {
    fn open(&mut self, desc: &Descriptor) -> Result<Option<Box<dyn Read + '_>>, ImageError> {
        if !BlobSink::exists(self, &desc.digest)? {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel(4);
        let mut client = self.client.clone();
        let req = ReadContentRequest {
            digest: desc.digest.to_string(),
            offset: 0,
            size: 0,
        };
        self.rt.spawn(async move {
            let mut stream = match client.read(req).await {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        if tx.send(Ok(m.data)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                }
            }
        });
        Ok(Some(Box::new(ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        })))
    }

    fn exists(&mut self, digest: &Digest) -> Result<bool, ImageError> {
        BlobSink::exists(self, digest)
    }
}
