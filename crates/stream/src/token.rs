//! Single-use, expiring tokens that stand for a validated request until its client connects.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::error::Error;
use crate::types::{AttachRequest, ExecRequest, PortForwardRequest};

/// The kubelet bounds its request cache the same way: a client that asks for URLs and never
/// uses them must not grow the daemon without bound.
pub(crate) const MAX_PENDING: usize = 1000;

/// 144 random bits, more than the 128 needed to make guessing hopeless.
const TOKEN_BYTES: usize = 18;

#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Pending {
    pub(crate) fn path_kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

pub(crate) struct Tokens {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl Tokens {
    pub(crate) fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, req: Pending) -> Result<String, Error> {
        let mut raw = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut raw).map_err(|e| Error::Random(e.to_string()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, expires)| *expires > now);
        if entries.len() >= MAX_PENDING {
            return Err(Error::TooManyPending(entries.len()));
        }
        entries.insert(token.clone(), (req, now + self.ttl));
        Ok(token)
    }

    /// Removes the token whatever happens next, so that it can never serve twice.
    pub(crate) fn take(&self, token: &str) -> Option<Pending> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (req, expires) = entries.remove(token)?;
        (expires > Instant::now()).then_some(req)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![],
        })
    }

    #[test]
    fn single_use_and_unique() {
        let t = Tokens::new(Duration::from_secs(60));
        let a = t.insert(pf()).unwrap();
        let b = t.insert(pf()).unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 22, "token {a} too short for 128 bits");
        assert!(t.take(&a).is_some());
        assert!(t.take(&a).is_none());
        assert!(t.take("nope").is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = Tokens::new(Duration::from_millis(1));
        let a = t.insert(pf()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.take(&a).is_none());
    }

    #[test]
    fn pending_requests_are_bounded() {
        let t = Tokens::new(Duration::from_secs(60));
        for _ in 0..MAX_PENDING {
            t.insert(pf()).unwrap();
        }
        assert!(matches!(t.insert(pf()), Err(Error::TooManyPending(_))));
    }
}
