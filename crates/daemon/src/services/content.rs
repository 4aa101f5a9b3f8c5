use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;

use berth_api::events as ev;
use berth_api::server::content::content_server::Content;
use berth_api::services::v1::*;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Service;
use crate::context;
use crate::convert::{content_from_pb, content_to_pb, ingest_to_pb, paths, ts};
use crate::daemon::blocking;
use crate::status::IntoStatus;

/// containerd streams content in 1 MiB messages.
const CHUNK: usize = 1 << 20;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for Service {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = context::namespace(&req)?;
        let digest = req.into_inner().digest;
        let s = self.clone();
        let info = blocking(move || s.store.content_info(&ns, &digest).status()).await?;
        Ok(Response::new(InfoResponse {
            info: Some(content_to_pb(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("info is required"))?;
        let fields = paths(req.update_mask);
        let s = self.clone();
        let _hold = self.gc.hold().await;
        let info = blocking(move || {
            s.store
                .content_update(&ns, content_from_pb(info), &fields)
                .status()
        })
        .await?;
        // Dropped gc.ref labels may have made children garbage.
        self.gc.schedule();
        Ok(Response::new(UpdateResponse {
            info: Some(content_to_pb(info)),
        }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = context::namespace(&req)?;
        let filter = berth_store::filters::parse(&req.into_inner().filters).status()?;
        let s = self.clone();
        let infos = blocking(move || s.store.content_list(&ns, &filter).status()).await?;
        let batches: Vec<Result<ListContentResponse, Status>> = infos
            .chunks(100)
            .map(|c| {
                Ok(ListContentResponse {
                    info: c.iter().cloned().map(content_to_pb).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let digest = req.into_inner().digest;
        berth_store::digest::Digest::parse(&digest).status()?;
        let s = self.clone();
        let (ns2, d2) = (ns.clone(), digest.clone());
        blocking(move || s.store.content_delete(&ns2, &d2).status()).await?;
        self.events
            .publish(&ns, "/content/delete", &ev::ContentDelete { digest });
        self.gc.schedule();
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        if req.offset < 0 || req.size < 0 {
            return Err(Status::invalid_argument(
                "offset and size must not be negative",
            ));
        }
        let s = self.clone();
        let digest = req.digest.clone();
        let (mut file, size) =
            blocking(move || s.store.content_open(&ns, &digest).status()).await?;
        if req.offset > size {
            return Err(Status::out_of_range(format!(
                "offset {} is past the end ({size})",
                req.offset
            )));
        }
        let end = if req.size == 0 {
            size
        } else {
            size.min(req.offset + req.size)
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut offset = req.offset;
            if let Err(e) = file.seek(SeekFrom::Start(offset as u64)) {
                let _ = tx.blocking_send(Err(Status::internal(format!("seek: {e}"))));
                return;
            }
            while offset < end {
                let n = CHUNK.min((end - offset) as usize);
                let mut data = vec![0u8; n];
                if let Err(e) = file.read_exact(&mut data) {
                    let _ = tx.blocking_send(Err(Status::internal(format!("read: {e}"))));
                    return;
                }
                if tx
                    .blocking_send(Ok(ReadContentResponse { offset, data }))
                    .is_err()
                {
                    return; // the client went away
                }
                offset += n as i64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let ns = context::namespace(&req)?;
        let r = req.into_inner().r#ref;
        let s = self.clone();
        let st = blocking(move || s.store.ingest_status(&ns, &r).status()).await?;
        Ok(Response::new(StatusResponse {
            status: Some(ingest_to_pb(st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let ns = context::namespace(&req)?;
        let filter = berth_store::filters::parse(&req.into_inner().filters).status()?;
        let s = self.clone();
        let list = blocking(move || s.store.ingest_list(&ns, &filter).status()).await?;
        Ok(Response::new(ListStatusesResponse {
            statuses: list.into_iter().map(ingest_to_pb).collect(),
        }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = context::namespace(&req)?;
        let lease = context::lease(&req)?;
        let mut input = req.into_inner();
        let first = match input.next().await {
            Some(m) => m?,
            None => {
                return Err(Status::invalid_argument(
                    "write stream closed before its first message",
                ))
            }
        };
        if first.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message of a write must carry a ref",
            ));
        }
        let hold = self.0.clone();
        let s = self.clone();
        let (reference, total, expected) =
            (first.r#ref.clone(), first.total, first.expected.clone());
        let writer = blocking(move || {
            let expected = (!expected.is_empty()).then_some(expected);
            s.store
                .content_writer(
                    &ns,
                    &reference,
                    total,
                    expected.as_deref(),
                    lease.as_deref(),
                )
                .status()
        })
        .await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            // A commit must not race a collection.
            let _hold = hold.gc.hold().await;
            let mut writer = Some(writer);
            let mut next = Some(first);
            let mut total = 0i64;
            let mut expected = String::new();
            while let Some(msg) = next.take() {
                if msg.total > 0 {
                    total = msg.total;
                }
                if !msg.expected.is_empty() {
                    expected = msg.expected.clone();
                }
                let w = writer
                    .take()
                    .expect("writer is returned after every message");
                let expected = expected.clone();
                let step = tokio::task::spawn_blocking(move || {
                    let mut w = w;
                    let r = write_step(&mut w, msg, total, &expected);
                    (w, r)
                })
                .await;
                let (w, result) = match step {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(crate::status::from_join(e))).await;
                        return;
                    }
                };
                writer = Some(w);
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    return;
                }
                next = match input.next().await {
                    Some(Ok(m)) => Some(m),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "content write stream broke");
                        None
                    }
                    None => None,
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let r = req.into_inner().r#ref;
        let s = self.clone();
        blocking(move || s.store.ingest_abort(&ns, &r).status()).await?;
        Ok(Response::new(()))
    }
}

/// One message of containerd's write protocol: stat, write at the current offset, or commit.
fn write_step(
    w: &mut berth_store::Writer,
    msg: WriteContentRequest,
    total: i64,
    expected: &str,
) -> Result<WriteContentResponse, Status> {
    let action = WriteAction::try_from(msg.action)
        .map_err(|_| Status::invalid_argument(format!("unknown write action {}", msg.action)))?;
    let st = w.status().status()?;
    let mut resp = WriteContentResponse {
        action: msg.action,
        started_at: ts(st.started_at),
        updated_at: ts(st.updated_at),
        offset: st.offset,
        total: if total > 0 { total } else { st.total },
        digest: String::new(),
    };
    match action {
        WriteAction::Stat => {
            resp.digest = w.digest();
        }
        WriteAction::Write | WriteAction::Commit => {
            if msg.offset > 0 && msg.offset != st.offset {
                return Err(Status::out_of_range(format!(
                    "write @{} must occur at current offset {}",
                    msg.offset, st.offset
                )));
            }
            // Offset 0 on a started ingest restarts it, as containerd does.
            let at = if msg.offset == 0 { 0 } else { st.offset };
            if at != st.offset || !msg.data.is_empty() {
                w.write(at, &msg.data).status()?;
            }
            resp.offset = at + msg.data.len() as i64;
            if action == WriteAction::Commit {
                let exp = (!expected.is_empty()).then_some(expected);
                resp.digest = w.commit(total, exp, msg.labels).status()?;
            }
        }
    }
    Ok(resp)
}
