use std::pin::Pin;

use berth_api::server::streaming::streaming_server::Streaming;
use berth_api::services::v1::StreamInit;
use futures::{Stream, StreamExt};
use prost::Message;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Streaming for Service {
    type StreamStream = BoxStream<Any>;

    async fn stream(
        &self,
        req: Request<tonic::Streaming<Any>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ns = context::namespace(&req)?;
        let mut input = req.into_inner();
        let first = input
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("stream closed before its init message"))??;
        if !first
            .type_url
            .ends_with("containerd.services.streaming.v1.StreamInit")
        {
            return Err(Status::invalid_argument(format!(
                "first message must be a StreamInit, not {}",
                first.type_url
            )));
        }
        let init = StreamInit::decode(first.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("bad StreamInit: {e}")))?;
        if init.id.is_empty() {
            return Err(Status::invalid_argument("stream id must not be empty"));
        }
        let (tx, rx) = mpsc::channel(64);
        // containerd acknowledges the init with an Empty before anything else flows.
        tx.send(Ok(Any {
            type_url: "google.protobuf.Empty".into(),
            value: vec![],
        }))
        .await
        .map_err(|_| Status::internal("stream closed"))?;
        let (in_tx, in_rx) = mpsc::channel(8);
        self.streams.register(
            &ns,
            &init.id,
            crate::streams::ClientStream {
                to_client: tx,
                from_client: in_rx,
            },
        )?;
        tokio::spawn(async move {
            while let Some(Ok(msg)) = input.next().await {
                if in_tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
