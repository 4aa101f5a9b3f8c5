//! The client core: configuration, per-host HTTP clients (TLS settings), credentials, and
//! `send`, which adds host headers and authorization, answers 401 challenges, retries transient
//! failures and bounds the wait for response headers by the stall timeout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, Response, StatusCode};

use crate::auth::{parse_challenge, Challenge, Credentials, Token, TokenResponse};
use crate::error::{Error, HostError, Result};
use crate::hosts::{hosts_for, Capability, RegistryHost};

/// Default stall timeout: containerd gives up on a blob after this long without a byte.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Attempts per host for requests that can be replayed (5xx, connection reset).
const ATTEMPTS: u32 = 3;
/// Bound on an error body read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Directory holding `<host>/hosts.toml` files; `None`: defaults only.
    pub config_path: Option<PathBuf>,
    /// Longest wait for response headers or for the next body bytes.
    pub stall_timeout: Duration,
    /// Credentials by registry host (`docker.io`, `127.0.0.1:5000`, a mirror's host).
    pub credentials: HashMap<String, Credentials>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            credentials: HashMap::new(),
        }
    }
}

/// What a request needs access to: the token scopes asked for.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub repo: String,
    pub push: bool,
    pub mount_from: Option<String>,
}

impl Access {
    pub fn pull(repo: &str) -> Access {
        Access {
            repo: repo.to_string(),
            push: false,
            mount_from: None,
        }
    }

    pub fn push(repo: &str, mount_from: Option<&str>) -> Access {
        Access {
            repo: repo.to_string(),
            push: true,
            mount_from: mount_from.map(str::to_string),
        }
    }

    fn scopes(&self) -> Vec<String> {
        let actions = if self.push { "pull,push" } else { "pull" };
        let mut s = vec![format!("repository:{}:{actions}", self.repo)];
        if let Some(from) = &self.mount_from {
            s.push(format!("repository:{from}:pull"));
        }
        s
    }
}

enum Auth {
    None,
    Basic(Credentials),
    Bearer(String),
}

/// (authority, scopes, identity): the identity is a hash of the credentials, so a client with
/// other (or wrong) credentials never gets a token fetched with someone else's.
type TokenKey = (String, String, String);

fn identity(creds: Option<&Credentials>) -> String {
    use sha2::Digest as _;
    creds.map_or_else(String::new, |c| {
        let mut h = sha2::Sha256::new();
        h.update(c.username.as_bytes());
        h.update([0]);
        h.update(c.password.as_bytes());
        hex::encode(h.finalize())
    })
}

pub(crate) struct Inner {
    config_path: Option<PathBuf>,
    stall: Duration,
    /// reqwest clients by TLS settings: hosts sharing settings share connection pools.
    http: Mutex<HashMap<String, reqwest::Client>>,
    /// Last challenge seen per host authority: later requests authorize up front.
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<TokenKey, Token>>,
    /// One token fetch at a time per key: concurrent blob fetches share the first one's token.
    token_locks: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
    /// (host, digest) pairs whose body did not match the digest: later fetches of that blob try
    /// the other hosts (a bad mirror must not win every retry).
    pub(crate) bad_blobs: Arc<Mutex<std::collections::HashSet<(String, String)>>>,
}

/// A registry client. Cheap to clone; clones share connections and cached tokens.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    credentials: Arc<HashMap<String, Credentials>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these maps cannot leave them inconsistent (single inserts).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    pub fn new(cfg: RegistryConfig) -> Result<Client> {
        if cfg.stall_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "stall timeout must be positive".into(),
            ));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                config_path: cfg.config_path,
                stall: cfg.stall_timeout,
                http: Mutex::new(HashMap::new()),
                challenges: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                token_locks: Mutex::new(HashMap::new()),
                bad_blobs: Arc::new(Mutex::new(std::collections::HashSet::new())),
            }),
            credentials: Arc::new(cfg.credentials),
        })
    }

    /// A client using `c` for `host` (per-request credentials, e.g. CRI's AuthConfig); it shares
    /// connections and the token cache (tokens are cached per user, so none leak across).
    pub fn with_credentials(&self, host: &str, c: Credentials) -> Client {
        let mut creds = (*self.credentials).clone();
        creds.insert(host.to_string(), c);
        Client {
            inner: self.inner.clone(),
            credentials: Arc::new(creds),
        }
    }

    pub fn stall_timeout(&self) -> Duration {
        self.inner.stall
    }

    /// The hosts to try for `domain` with capability `cap`, in order.
    pub async fn hosts(&self, domain: &str, cap: Capability) -> Result<Vec<RegistryHost>> {
        // hosts.toml is read on every operation (edits apply without a restart), off the
        // runtime's threads.
        let (dir, d) = (self.inner.config_path.clone(), domain.to_string());
        let all = tokio::task::spawn_blocking(move || hosts_for(dir.as_deref(), &d))
            .await
            .map_err(|e| Error::Internal(format!("reading hosts.toml: {e}")))??;
        let hosts: Vec<_> = all.into_iter().filter(|h| h.can(cap)).collect();
        if hosts.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "no configured host for {domain} may {cap:?}"
            )));
        }
        Ok(hosts)
    }

    fn credentials_for(&self, authority: &str) -> Option<Credentials> {
        self.credentials.get(authority).cloned().or_else(|| {
            // Docker Hub's credentials are keyed by its name, its API host differs.
            (authority == "registry-1.docker.io")
                .then(|| self.credentials.get("docker.io").cloned())
                .flatten()
        })
    }

    async fn http_for(&self, host: &RegistryHost) -> Result<reqwest::Client> {
        let key = format!("{:?}|{:?}|{}", host.ca, host.client, host.skip_verify);
        if let Some(c) = lock(&self.inner.http).get(&key) {
            return Ok(c.clone());
        }
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            Error::InvalidArgument(format!("registry host {}: {what}: {e}", host.origin))
        };
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        for ca in &host.ca {
            let pem = tokio::fs::read(ca)
                .await
                .map_err(|e| bad(&format!("reading CA {}", ca.display()), &e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(&format!("CA {}", ca.display()), &e))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some((cert, key)) = host.client.first() {
            let mut pem = tokio::fs::read(cert)
                .await
                .map_err(|e| bad(&format!("reading client cert {}", cert.display()), &e))?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(
                    tokio::fs::read(key)
                        .await
                        .map_err(|e| bad(&format!("reading client key {}", key.display()), &e))?,
                );
            }
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| bad(&format!("client cert {}", cert.display()), &e))?;
            b = b.identity(id);
        }
        if host.skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let c = b
            .build()
            .map_err(|e| Error::Internal(format!("building HTTP client: {e}")))?;
        lock(&self.inner.http).insert(key, c.clone());
        Ok(c)
    }

    /// Authorization for a request to `host`, from the challenge it gave before (if any).
    async fn authorization(&self, host: &RegistryHost, access: &Access) -> Result<Auth> {
        let challenge = lock(&self.inner.challenges).get(&host.authority).cloned();
        let creds = self.credentials_for(&host.authority);
        match challenge {
            None => Ok(Auth::None),
            Some(Challenge::Basic) => Ok(creds.map_or(Auth::None, Auth::Basic)),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = access.scopes();
                let key: TokenKey = (
                    host.authority.clone(),
                    scopes.join(" "),
                    identity(creds.as_ref()),
                );
                if let Some(t) = self.cached_token(&key) {
                    return Ok(Auth::Bearer(t));
                }
                let flight = lock(&self.inner.token_locks)
                    .entry(key.clone())
                    .or_default()
                    .clone();
                let _one_at_a_time = flight.lock().await;
                if let Some(t) = self.cached_token(&key) {
                    return Ok(Auth::Bearer(t));
                }
                if let Some(s) = scope {
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                let token = self
                    .fetch_token(host, &realm, service.as_deref(), &scopes, creds.as_ref())
                    .await?;
                lock(&self.inner.tokens).insert(key, token.clone());
                Ok(Auth::Bearer(token.value))
            }
        }
    }

    fn cached_token(&self, key: &TokenKey) -> Option<String> {
        lock(&self.inner.tokens)
            .get(key)
            .filter(|t| t.valid())
            .map(|t| t.value.clone())
    }

    async fn fetch_token(
        &self,
        host: &RegistryHost,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> Result<Token> {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(Error::Unauthenticated {
                registry: host.authority.clone(),
                reason: format!("token realm {realm:?} is not an http(s) URL"),
            });
        }
        let http = self.http_for(host).await?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scopes {
            query.push(("scope", s));
        }
        let mut rb = http.get(realm).query(&query);
        if let Some(c) = creds {
            rb = rb.basic_auth(&c.username, Some(&c.password));
        }
        let what = format!("token from {realm}");
        let resp = match tokio::time::timeout(self.inner.stall, rb.send()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    what,
                    secs: self.inner.stall.as_secs(),
                })
            }
            Ok(Err(e)) => {
                return Err(Error::Transport {
                    host: host.authority.clone(),
                    message: format!("{what}: {}", error_chain(&e)),
                })
            }
            Ok(Ok(r)) => r,
        };
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED => {
                return Err(self.unauthenticated(host, creds.is_some(), "token server refused"))
            }
            StatusCode::FORBIDDEN => {
                return Err(Error::PermissionDenied {
                    registry: host.authority.clone(),
                    what: scopes.join(" "),
                })
            }
            _ => return Err(status_error(host, &what, resp).await),
        }
        let body = read_limited(resp, MAX_ERROR_BODY, &what, self.inner.stall).await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| Error::Unauthenticated {
                registry: host.authority.clone(),
                reason: format!("bad token response from {realm}: {e}"),
            })?;
        Token::new(parsed).ok_or_else(|| Error::Unauthenticated {
            registry: host.authority.clone(),
            reason: format!("token response from {realm} has no token"),
        })
    }

    fn unauthenticated(&self, host: &RegistryHost, had_creds: bool, what: &str) -> Error {
        let reason = if had_creds {
            format!("{what}: credentials for {} were rejected", host.authority)
        } else {
            format!(
                "{what}: authentication required and no credentials are configured for {}",
                host.authority
            )
        };
        Error::Unauthenticated {
            registry: host.authority.clone(),
            reason,
        }
    }

    /// Sends a request built by `build` to `host`. `streamed`: `None` for a request without a
    /// streamed body, which may be retried on 5xx / connection reset and must get its response
    /// headers within the stall timeout; `Some(progress)` for a streamed upload, sent once and
    /// timed out only when its body stops moving. Any status is returned except a 401 that
    /// authorization could not satisfy.
    pub(crate) async fn send(
        &self,
        host: &RegistryHost,
        access: &Access,
        what: &str,
        streamed: Option<&Progress>,
        build: &mut (dyn FnMut(&reqwest::Client) -> RequestBuilder + Send),
    ) -> Result<Response> {
        let replayable = streamed.is_none();
        let http = self.http_for(host).await?;
        let mut answered_challenge = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb = build(&http);
            for (k, v) in &host.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            let auth = self.authorization(host, access).await?;
            let sent_auth = !matches!(auth, Auth::None);
            let sent_token = match &auth {
                Auth::Bearer(t) => Some(t.clone()),
                _ => None,
            };
            rb = match auth {
                Auth::None => rb,
                Auth::Basic(c) => rb.basic_auth(c.username, Some(c.password)),
                Auth::Bearer(t) => rb.bearer_auth(t),
            };
            let res = match streamed {
                None => tokio::time::timeout(self.inner.stall, rb.send()).await,
                Some(p) => p.watch(self.inner.stall, rb.send()).await,
            };
            let resp = match res {
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("{what} from {}", host.authority),
                        secs: self.inner.stall.as_secs(),
                    })
                }
                Ok(Err(e)) => {
                    // A refused connection will be refused again: only broken ones are retried.
                    if replayable && attempt < ATTEMPTS && !e.is_connect() && !e.is_builder() {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(Error::Transport {
                        host: host.authority.clone(),
                        message: format!("{what}: {}", error_chain(&e)),
                    });
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let had_creds = self.credentials_for(&host.authority).is_some();
                if answered_challenge || (sent_auth && !replayable) {
                    return Err(self.unauthenticated(host, had_creds, what));
                }
                let challenge = resp
                    .headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(parse_challenge);
                match challenge {
                    None => return Err(self.unauthenticated(host, had_creds, what)),
                    Some(Challenge::Basic) if !had_creds => {
                        return Err(self.unauthenticated(host, false, what))
                    }
                    Some(c) => {
                        if !replayable {
                            // The body is gone: remember the challenge so the caller's next
                            // request authorizes up front, and report.
                            lock(&self.inner.challenges).insert(host.authority.clone(), c);
                            return Err(self.unauthenticated(host, had_creds, what));
                        }
                        lock(&self.inner.challenges).insert(host.authority.clone(), c);
                        // The token the registry refused is stale: drop it (only it, so a
                        // concurrent request's fresh token survives).
                        if let Some(t) = &sent_token {
                            lock(&self.inner.tokens).retain(|_, v| v.value != *t);
                        }
                        answered_challenge = true;
                        attempt -= 1;
                        continue;
                    }
                }
            }
            if replayable && attempt < ATTEMPTS && status.is_server_error() {
                backoff(attempt).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Runs `op` against each host in turn until one succeeds; combines the failures.
    pub(crate) fn combine(what: &str, errors: Vec<(String, Error)>) -> Error {
        combine_errors(what, errors)
    }
}

fn combine_errors(what: &str, mut errors: Vec<(String, Error)>) -> Error {
    // A definite answer (404, 401, digest mismatch, ...) beats unreachable hosts: report the
    // last one. If every host failed to answer, list them all.
    if let Some(i) = errors.iter().rposition(|(_, e)| !e.is_host_failure()) {
        return errors.swap_remove(i).1;
    }
    if errors.len() == 1 {
        if let Some((_, e)) = errors.pop() {
            return e;
        }
    }
    Error::Unavailable {
        what: what.to_string(),
        errors: errors
            .into_iter()
            .map(|(host, e)| HostError {
                host,
                message: e.to_string(),
            })
            .collect(),
    }
}

/// Progress of a streamed request body: when its last bytes were taken. Lets an upload run as
/// long as it moves, and fail after the stall timeout once it stops.
pub(crate) struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub fn tick(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Runs `fut` until it finishes or the body has been idle for `stall`.
    async fn watch<F: std::future::Future>(
        &self,
        stall: Duration,
        fut: F,
    ) -> std::result::Result<F::Output, tokio::time::error::Elapsed> {
        let mut fut = std::pin::pin!(fut);
        let check = (stall / 4).max(Duration::from_millis(50));
        loop {
            match tokio::time::timeout(check, fut.as_mut()).await {
                Ok(v) => return Ok(v),
                Err(elapsed) if self.idle() >= stall => return Err(elapsed),
                Err(_) => {}
            }
        }
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(5))).await;
}

/// `e` with its sources: reqwest's top-level message alone hides the cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Error for an unexpected status, with the registry's error message if it sent one.
pub(crate) async fn status_error(host: &RegistryHost, what: &str, resp: Response) -> Error {
    let status = resp.status();
    let body = read_limited(resp, MAX_ERROR_BODY, what, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    let message = registry_message(&body);
    match status {
        StatusCode::NOT_FOUND => Error::NotFound(what.to_string()),
        StatusCode::UNAUTHORIZED => Error::Unauthenticated {
            registry: host.authority.clone(),
            reason: format!("{what}: {message}"),
        },
        StatusCode::FORBIDDEN => Error::PermissionDenied {
            registry: host.authority.clone(),
            what: format!("{what}: {message}"),
        },
        s if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS => {
            Error::InvalidArgument(format!(
                "{what}: {} answered {}: {message}",
                host.authority,
                s.as_u16()
            ))
        }
        s => Error::Status {
            host: host.authority.clone(),
            what: what.to_string(),
            status: s.as_u16(),
            message,
        },
    }
}

/// The `{"errors":[{"code","message"}]}` body of the distribution spec, or the raw text.
pub(crate) fn registry_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        errors: Vec<E>,
    }
    if let Ok(es) = serde_json::from_slice::<Es>(body) {
        return es
            .errors
            .iter()
            .map(|e| format!("{} {}", e.code, e.message).trim().to_string())
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    text.chars()
        .take(512)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Reads a whole body of at most `limit` bytes; a longer one is refused up front when its
/// Content-Length says so, else as soon as it passes the limit. Each read waits `stall` at most.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: usize,
    what: &str,
    stall: Duration,
) -> Result<bytes::Bytes> {
    if let Some(len) = content_length(&resp) {
        if len > limit as u64 {
            return Err(Error::TooLarge {
                what: what.to_string(),
                size: len,
                limit: limit as u64,
            });
        }
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(stall, resp.chunk()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    secs: stall.as_secs(),
                })
            }
            Ok(Err(e)) => {
                return Err(Error::Transport {
                    host: resp.url().authority().to_string(),
                    message: format!("{what}: {}", error_chain(&e)),
                })
            }
            Ok(Ok(None)) => return Ok(buf.freeze()),
            Ok(Ok(Some(c))) => c,
        };
        if buf.len() + chunk.len() > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                size: (buf.len() + chunk.len()) as u64,
                limit: limit as u64,
            });
        }
        buf.extend_from_slice(&chunk);
    }
}

/// The Content-Length header (reqwest's `content_length()` is 0 for HEAD responses).
pub(crate) fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
