use std::pin::Pin;

use berth_api::server::events::events_server::Events;
use berth_api::services::v1::*;
use berth_api::types::Envelope;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;
use crate::events::{validate_topic, EnvelopeFields};

#[tonic::async_trait]
impl Events for Service {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        validate_topic(&req.topic)?;
        self.events.publish_any(&ns, &req.topic, req.event);
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope is required"))?;
        validate_topic(&env.topic)?;
        berth_store::identifiers::validate(&env.namespace).map_err(crate::status::from_store)?;
        self.events.forward(env);
        Ok(Response::new(()))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = berth_store::filters::parse(&req.into_inner().filters)
            .map_err(crate::status::from_store)?;
        let mut rx = self.events.subscribe();
        let stream = async_stream::stream! {
            loop {
                match rx.recv().await {
                    Ok(env) => {
                        if filter.matches(&EnvelopeFields(&env)) {
                            yield Ok(env);
                        }
                    }
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "event subscriber too slow"),
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
