//! The event exchange: services publish, `Events.Subscribe` clients listen.

use std::time::SystemTime;

use berth_api::types::Envelope;
use prost_types::Any;
use tokio::sync::broadcast;

/// Slow subscribers lose the oldest events rather than stall publishers.
const BACKLOG: usize = 1024;

#[derive(Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Envelope>,
}

impl Default for Exchange {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(BACKLOG);
        Exchange { tx }
    }
}

impl Exchange {
    pub fn publish<M: prost::Message + prost::Name>(
        &self,
        namespace: &str,
        topic: &str,
        event: &M,
    ) {
        self.forward(Envelope {
            timestamp: Some(SystemTime::now().into()),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: Some(berth_api::to_any(event)),
        });
    }

    pub fn publish_any(&self, namespace: &str, topic: &str, event: Option<Any>) {
        self.forward(Envelope {
            timestamp: Some(SystemTime::now().into()),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event,
        });
    }

    pub fn forward(&self, envelope: Envelope) {
        // No subscriber is not an error: events are fire-and-forget.
        let _ = self.tx.send(envelope);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.tx.subscribe()
    }
}

/// containerd's topic rule: absolute, slash-separated, non-empty components.
pub fn validate_topic(topic: &str) -> Result<(), tonic::Status> {
    let ok = topic.len() <= 255
        && topic.starts_with('/')
        && topic[1..].split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        });
    if ok {
        Ok(())
    } else {
        Err(tonic::Status::invalid_argument(format!(
            "invalid topic {topic:?}"
        )))
    }
}

/// Lets containerd filters (`topic==/tasks/exit`, `namespace==k8s.io`) select envelopes.
pub struct EnvelopeFields<'a>(pub &'a Envelope);

impl berth_store::filters::Adaptor for EnvelopeFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("topic") if path.len() == 1 => Some(self.0.topic.clone()),
            Some("namespace") if path.len() == 1 => Some(self.0.namespace.clone()),
            _ => None,
        }
    }
}

/// Shims publish through the task manager's events socket; their envelopes join the exchange.
impl berth_runtime::EventSink for Exchange {
    fn publish(&self, namespace: &str, topic: &str, event: Any) {
        self.publish_any(namespace, topic, Some(event));
    }
}
