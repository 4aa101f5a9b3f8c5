//! Event publishing to containerd (`TTRPC_ADDRESS`, events service `Forward`).
//! One thread sends in order, so request handlers never block on containerd
//! and `/tasks/start` always precedes that process's `/tasks/exit`.

use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use containerd_shim_protos::protobuf::MessageDyn;

type Event = (&'static str, Box<dyn MessageDyn>);

pub struct Events {
    tx: Mutex<Option<Sender<Event>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Events {
    /// Starts the sender; without an address events are logged and dropped.
    pub fn start(address: Option<String>, namespace: String) -> Events {
        let (tx, rx) = channel::<Event>();
        let thread = std::thread::spawn(move || {
            let publisher = address.and_then(|a| match RemotePublisher::new(&a) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::error!("connect to containerd events at {a}: {e}");
                    None
                }
            });
            for (topic, event) in rx {
                let Some(p) = &publisher else { continue };
                if let Err(e) = p.publish(Context::default(), topic, &namespace, event) {
                    log::warn!("publish {topic}: {e}");
                }
            }
        });
        Events {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    pub fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if let Ok(g) = self.tx.lock() {
            if let Some(tx) = g.as_ref() {
                let _ = tx.send((topic, event));
            }
        }
    }

    /// Sends what is queued, then stops (before the shim exits).
    pub fn flush(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
