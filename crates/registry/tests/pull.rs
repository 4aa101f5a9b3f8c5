//! Pulls from a real docker-registry: plain, htpasswd, bearer (token server + front), mirrors,
//! resume after a cut, and the error cases.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_registry::{Client, Credentials, Digest, ErrorKind, RegistryConfig};
use common::*;

/// Resolves, fetches the manifest and every blob, and checks each against its digest.
async fn pull_all(c: &Client, reference: &str) -> usize {
    let (name, desc) = c.resolve(reference).await.unwrap();
    assert_eq!(name, reference);
    assert_eq!(
        desc.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    let body = c.fetch_manifest(reference, &desc).await.unwrap();
    assert_eq!(Digest::of(&body), desc.digest);
    let (config, layers) = manifest_parts(&body);
    // Small documents other than manifests (the config) come through fetch_manifest too.
    let cfg = c.fetch_manifest(reference, &config).await.unwrap();
    assert_eq!(Digest::of(&cfg), config.digest);
    let mut n = 0;
    for d in std::iter::once(config).chain(layers) {
        let (bytes, err) = collect(c.fetch_blob(reference, &d, 0).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(Digest::of(&bytes), d.digest);
        assert_eq!(bytes.len() as u64, d.size);
        n += 1;
    }
    n
}

#[tokio::test]
async fn resolve_and_fetch_busybox() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let c = client();
    let reference = format!("{}/busybox:latest", reg.host());
    assert_eq!(pull_all(&c, &reference).await, 2);

    // By digest, and a resumed read from an offset (registry honours Range).
    let (_, desc) = c.resolve(&reference).await.unwrap();
    let by_digest = format!("{}/busybox@{}", reg.host(), desc.digest);
    let (name, d2) = c.resolve(&by_digest).await.unwrap();
    assert_eq!(name, by_digest);
    assert_eq!(d2, desc);
    let (_, layers) = manifest_parts(&c.fetch_manifest(&reference, &desc).await.unwrap());
    let layer = &layers[0];
    let whole = oci_blob(&layer.digest);
    let (tail, err) = collect(c.fetch_blob(&reference, layer, 1000).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(tail, whole[1000..]);
}

#[tokio::test]
async fn not_found_names_the_reference() {
    let reg = Registry::start(None);
    let c = client();
    let reference = format!("{}/nope:latest", reg.host());
    let e = c.resolve(&reference).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&reference), "{e}");

    reg.push_test_image("busybox", "busybox:latest", None);
    let missing =
        berth_registry::Descriptor::new("application/octet-stream", Digest::of(b"not there"), 9);
    let r = format!("{}/busybox:latest", reg.host());
    let e = c.fetch_blob(&r, &missing, 0).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&missing.digest.to_string()), "{e}");

    let e = c.resolve("Bad Ref").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn htpasswd_needs_credentials() {
    let reg = Registry::start(Some(("alice", "s3cret")));
    reg.push_test_image("busybox", "busybox:latest", Some(("alice", "s3cret")));
    let reference = format!("{}/busybox:latest", reg.host());

    let c = client();
    let e = c.resolve(&reference).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(e.to_string().contains(&reg.host()), "{e}");

    let bad = c.with_credentials(
        &reg.host(),
        Credentials {
            username: "alice".into(),
            password: "wrong".into(),
        },
    );
    let e = bad.resolve(&reference).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");

    let good = c.with_credentials(
        &reg.host(),
        Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        },
    );
    assert_eq!(pull_all(&good, &reference).await, 2);

    // Credentials from the configuration work the same.
    let mut cfg = RegistryConfig::default();
    cfg.credentials.insert(
        reg.host(),
        Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        },
    );
    let c2 = Client::new(cfg).unwrap();
    assert_eq!(pull_all(&c2, &reference).await, 2);
}

/// A token server plus a front that demands its token and forwards to the real registry.
#[tokio::test]
async fn bearer_token_fetched_once_and_reused() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let upstream = reg.host();

    let token_calls = Arc::new(AtomicUsize::new(0));
    let token_queries = Arc::new(Mutex::new(Vec::<(String, Option<String>)>::new()));
    let (tc, tq) = (token_calls.clone(), token_queries.clone());
    let token_server = Server::start(Arc::new(move |req: Req, s| {
        tc.fetch_add(1, Ordering::SeqCst);
        tq.lock().unwrap().push((
            req.target.clone(),
            req.header("authorization").map(str::to_string),
        ));
        Box::pin(async move {
            // OAuth2 spelling: the client must accept `access_token` too.
            respond(
                s,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                br#"{"access_token":"tok-1","expires_in":300}"#,
            )
            .await
        })
    }))
    .await;

    let realm = format!("http://{}/token", token_server.host());
    let front_seen = Arc::new(AtomicUsize::new(0));
    let fs = front_seen.clone();
    let front = Server::start(Arc::new(move |req: Req, s| {
        let realm = realm.clone();
        let upstream = upstream.clone();
        fs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if req.header("authorization") != Some("Bearer tok-1") {
                let ch = format!(
                    "Bearer realm=\"{realm}\",service=\"test-registry\",scope=\"repository:busybox:pull\""
                );
                respond(s, "401 Unauthorized", &[("WWW-Authenticate", ch)], b"{}").await;
                return;
            }
            let (st, h, b) = forward(&upstream, &req).await;
            relay(s, st, h, b).await;
        })
    }))
    .await;

    let c = client().with_credentials(
        &front.host(),
        Credentials {
            username: "bob".into(),
            password: "pw".into(),
        },
    );
    let reference = format!("{}/busybox:latest", front.host());
    assert_eq!(pull_all(&c, &reference).await, 2);
    // Once more with the same client: still the cached token.
    assert_eq!(pull_all(&c, &reference).await, 2);
    assert_eq!(token_calls.load(Ordering::SeqCst), 1);
    let q = token_queries.lock().unwrap().clone();
    assert!(q[0].0.contains("service=test-registry"), "{q:?}");
    assert!(
        q[0].0.contains("scope=repository%3Abusybox%3Apull"),
        "{q:?}"
    );
    assert!(
        q[0].1.as_deref().unwrap_or("").starts_with("Basic "),
        "{q:?}"
    );
    // One 401 then authorized requests only.
    assert!(front_seen.load(Ordering::SeqCst) >= 9);

    // A fresh client whose first requests are concurrent blob fetches: each gets a 401, and
    // they share one token fetch.
    let (_, desc) = c.resolve(&reference).await.unwrap();
    let (config, layers) = manifest_parts(&c.fetch_manifest(&reference, &desc).await.unwrap());
    let fresh = client().with_credentials(
        &front.host(),
        Credentials {
            username: "bob".into(),
            password: "pw".into(),
        },
    );
    let descs: Vec<_> = std::iter::once(config).chain(layers).collect();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        for d in descs.clone() {
            let (f, r) = (fresh.clone(), reference.clone());
            tasks.push(tokio::spawn(async move {
                let (bytes, err) = collect(f.fetch_blob(&r, &d, 0).await.unwrap()).await;
                assert!(err.is_none(), "{err:?}");
                assert_eq!(Digest::of(&bytes), d.digest);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(token_calls.load(Ordering::SeqCst), 2);
}

/// Blob GETs redirected to another origin (as registries do to their CDN) are followed, and the
/// registry's Authorization does not follow them there.
#[tokio::test]
async fn blob_redirect_is_followed_without_credentials() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let cdn_auth = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let (ca, up) = (cdn_auth.clone(), reg.host());
    let cdn = Server::start(Arc::new(move |req: Req, s| {
        ca.lock()
            .unwrap()
            .push(req.header("authorization").map(str::to_string));
        let up = up.clone();
        Box::pin(async move {
            let (st, h, b) = forward(&up, &req).await;
            relay(s, st, h, b).await;
        })
    }))
    .await;
    let (up, cdn_host) = (reg.host(), cdn.host());
    let front = Server::start(Arc::new(move |req: Req, s| {
        let (up, cdn_host) = (up.clone(), cdn_host.clone());
        Box::pin(async move {
            if req.header("authorization") != Some("Basic dTpw") {
                let ch = "Basic realm=\"r\"".to_string();
                respond(s, "401 Unauthorized", &[("WWW-Authenticate", ch)], b"").await;
                return;
            }
            if req.method == "GET" && req.path().contains("/blobs/") {
                let loc = format!("http://{cdn_host}{}", req.target);
                respond(s, "307 Temporary Redirect", &[("Location", loc)], b"").await;
                return;
            }
            let (st, h, b) = forward(&up, &req).await;
            relay(s, st, h, b).await;
        })
    }))
    .await;
    let c = client().with_credentials(
        &front.host(),
        Credentials {
            username: "u".into(),
            password: "p".into(),
        },
    );
    let reference = format!("{}/busybox:latest", front.host());
    assert_eq!(pull_all(&c, &reference).await, 2);
    let seen = cdn_auth.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "config twice, layer once: {seen:?}");
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
}

#[tokio::test]
async fn bearer_refused_without_credentials_is_unauthenticated() {
    let token_server = Server::start(Arc::new(|_req: Req, s| {
        Box::pin(async move { respond(s, "401 Unauthorized", &[], b"no").await })
    }))
    .await;
    let realm = format!("http://{}/token", token_server.host());
    let front = Server::start(Arc::new(move |_req: Req, s| {
        let ch = format!("Bearer realm=\"{realm}\",service=\"x\"");
        Box::pin(
            async move { respond(s, "401 Unauthorized", &[("WWW-Authenticate", ch)], b"").await },
        )
    }))
    .await;
    let e = client()
        .resolve(&format!("{}/private/img:1", front.host()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(e.to_string().contains(&front.host()), "{e}");
    assert!(e.to_string().contains("no credentials"), "{e}");
}

#[tokio::test]
async fn dead_mirror_then_live_registry() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let dead = free_port();
    let toml = format!(
        "server = \"http://{}\"\n\n[host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        reg.host()
    );
    let (_d, path) = config_dir_with(&[(&reg.host(), toml)]);
    let c = Client::new(RegistryConfig {
        config_path: Some(path),
        ..RegistryConfig::default()
    })
    .unwrap();
    assert_eq!(
        pull_all(&c, &format!("{}/busybox:latest", reg.host())).await,
        2
    );
}

#[tokio::test]
async fn live_mirror_is_tried_first_with_ns() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (sn, up) = (seen.clone(), reg.host());
    let mirror = Server::start(Arc::new(move |req: Req, s| {
        sn.lock().unwrap().push(req.target.clone());
        let up = up.clone();
        Box::pin(async move {
            let (st, h, b) = forward(&up, &req).await;
            relay(s, st, h, b).await;
        })
    }))
    .await;
    // The server entry is dead: everything must come through the mirror. The registry name
    // need not exist: `example.invalid` is never contacted.
    let dead = free_port();
    let toml = format!(
        "server = \"http://127.0.0.1:{dead}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        mirror.host()
    );
    let (_d, path) = config_dir_with(&[("example.invalid", toml)]);
    let c = Client::new(RegistryConfig {
        config_path: Some(path),
        ..RegistryConfig::default()
    })
    .unwrap();
    assert_eq!(pull_all(&c, "example.invalid/busybox:latest").await, 2);
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|t| t.ends_with("?ns=example.invalid")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn all_hosts_down_is_unavailable_listing_each() {
    let (a, b) = (free_port(), free_port());
    let toml = format!("server = \"http://127.0.0.1:{b}\"\n[host.\"http://127.0.0.1:{a}\"]\n");
    let (_d, path) = config_dir_with(&[("_default", toml)]);
    let c = Client::new(RegistryConfig {
        config_path: Some(path),
        ..RegistryConfig::default()
    })
    .unwrap();
    let e = c.resolve("registry.example/x:1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{a}")) && msg.contains(&format!("127.0.0.1:{b}")),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_hosts_file_is_invalid_argument_naming_it() {
    let (_d, path) = config_dir_with(&[("_default", "server = [1]".to_string())]);
    let c = Client::new(RegistryConfig {
        config_path: Some(path.clone()),
        ..RegistryConfig::default()
    })
    .unwrap();
    let e = c.resolve("registry.example/x:1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.to_string()
            .contains(&path.join("_default/hosts.toml").display().to_string()),
        "{e}"
    );
}

/// Proxy that cuts every un-ranged blob body in half; the caller resumes at the offset it got to.
#[tokio::test]
async fn cut_blob_resumes_with_range() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let ranges = Arc::new(Mutex::new(Vec::<String>::new()));
    let (rg, up) = (ranges.clone(), reg.host());
    let proxy = Server::start(Arc::new(move |req: Req, s| {
        let (rg, up) = (rg.clone(), up.clone());
        Box::pin(async move {
            let is_blob = req.path().contains("/blobs/");
            if is_blob {
                if let Some(r) = req.header("range") {
                    rg.lock().unwrap().push(r.to_string());
                }
            }
            let (st, h, b) = forward(&up, &req).await;
            if is_blob && req.method == "GET" && req.header("range").is_none() && b.len() > 1000 {
                // Promise everything, send half, hang up.
                let half = b.len() / 2;
                let mut h: Vec<(String, String)> = h;
                h.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
                h.push(("Content-Length".into(), b.len().to_string()));
                let hv: Vec<(&str, String)> =
                    h.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                let mut head = format!("HTTP/1.1 {}\r\n", status_line(st));
                for (k, v) in hv {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                use tokio::io::AsyncWriteExt;
                let mut s = s;
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&b[..half]).await;
                let _ = s.flush().await;
                drop(s);
                return;
            }
            relay(s, st, h, b).await;
        })
    }))
    .await;
    let c = client();
    let reference = format!("{}/busybox:latest", proxy.host());
    let (_, desc) = c.resolve(&reference).await.unwrap();
    let (_, layers) = manifest_parts(&c.fetch_manifest(&reference, &desc).await.unwrap());
    let layer = &layers[0];
    let (first, err) = collect(c.fetch_blob(&reference, layer, 0).await.unwrap()).await;
    let err = err.expect("the cut must surface as an error");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!first.is_empty() && (first.len() as u64) < layer.size);
    let (rest, err) = collect(
        c.fetch_blob(&reference, layer, first.len() as u64)
            .await
            .unwrap(),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    let mut all = first.clone();
    all.extend(rest);
    assert_eq!(Digest::of(&all), layer.digest);
    assert_eq!(
        ranges.lock().unwrap().clone(),
        vec![format!("bytes={}-", first.len())]
    );
}

/// A server that ignores Range and sends the whole blob: the prefix is skipped.
#[tokio::test]
async fn range_ignored_prefix_skipped() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&data);
    let d2 = data.clone();
    let srv = Server::start(Arc::new(move |_req: Req, s| {
        let d = d2.clone();
        Box::pin(async move { respond(s, "200 OK", &[], &d).await })
    }))
    .await;
    let desc =
        berth_registry::Descriptor::new("application/octet-stream", digest, data.len() as u64);
    let (got, err) = collect(
        client()
            .fetch_blob(&format!("{}/x/y:1", srv.host()), &desc, 12345)
            .await
            .unwrap(),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, data[12345..]);
}

#[tokio::test]
async fn wrong_blob_bytes_are_digest_mismatch() {
    let srv = Server::start(Arc::new(|_req: Req, s| {
        Box::pin(async move { respond(s, "200 OK", &[], b"evil bytes").await })
    }))
    .await;
    let desc =
        berth_registry::Descriptor::new("application/octet-stream", Digest::of(b"good bytes"), 10);
    let (_, err) = collect(
        client()
            .fetch_blob(&format!("{}/x/y:1", srv.host()), &desc, 0)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(err.unwrap().kind(), ErrorKind::DigestMismatch);
}

/// A manifest over 4 MiB is refused before its body is read (the server never sends it).
#[tokio::test]
async fn huge_manifest_is_too_large() {
    let srv = Server::start(Arc::new(|req: Req, s| {
        Box::pin(async move {
            let digest = format!("sha256:{}", "a".repeat(64));
            let headers = [
                (
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".to_string(),
                ),
                ("Content-Length", (5 * 1024 * 1024).to_string()),
                ("Docker-Content-Digest", digest),
            ];
            let mut s = s;
            let mut head = "HTTP/1.1 200 OK\r\n".to_string();
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(head.as_bytes()).await;
            if req.method == "GET" {
                let _ = s.write_all(b"{").await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
    }))
    .await;
    let c = client();
    let reference = format!("{}/big:1", srv.host());
    let t = Instant::now();
    let e = c.resolve(&reference).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    let desc = berth_registry::Descriptor::new(
        "application/vnd.oci.image.manifest.v1+json",
        Digest::of(b"x"),
        100,
    );
    let e = c.fetch_manifest(&reference, &desc).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let big = berth_registry::Descriptor::new("x", Digest::of(b"x"), 5 * 1024 * 1024);
    let e = c.fetch_manifest(&reference, &big).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
}

/// Stalls: one server never answers, one stops mid-body. With a 1 s stall timeout both are
/// `Timeout`, in about a second.
#[tokio::test]
async fn stalled_server_times_out() {
    let silent = Server::start(Arc::new(|_req: Req, s| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        })
    }))
    .await;
    let stalling = Server::start(Arc::new(|_req: Req, s| {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = s;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst bytes")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
    }))
    .await;
    let c = Client::new(RegistryConfig {
        stall_timeout: Duration::from_secs(1),
        ..RegistryConfig::default()
    })
    .unwrap();
    let t = Instant::now();
    let e = c
        .resolve(&format!("{}/a:1", silent.host()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));

    let desc = berth_registry::Descriptor::new("x", Digest::of(b"x"), 1000);
    let t = Instant::now();
    let (got, err) = collect(
        c.fetch_blob(&format!("{}/a:1", stalling.host()), &desc, 0)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, b"first bytes");
    assert_eq!(err.unwrap().kind(), ErrorKind::Timeout);
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// 5xx is retried (3 tries in all) before giving up.
#[tokio::test]
async fn server_errors_are_retried() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, up) = (hits.clone(), reg.host());
    let flaky = Server::start(Arc::new(move |req: Req, s| {
        let n = h.fetch_add(1, Ordering::SeqCst);
        let up = up.clone();
        Box::pin(async move {
            if n % 3 != 2 {
                respond(s, "503 Service Unavailable", &[], b"busy").await;
                return;
            }
            let (st, hd, b) = forward(&up, &req).await;
            relay(s, st, hd, b).await;
        })
    }))
    .await;
    let (_, d) = client()
        .resolve(&format!("{}/busybox:latest", flaky.host()))
        .await
        .unwrap();
    assert_eq!(d.size, 349);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}
