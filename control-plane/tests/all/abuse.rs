//! A hostile tenant (or a stranger) against the real control plane over
//! real HTTP: token guessing, oversize and lying uploads, small modules
//! that declare enormous resources, and malformed JSON on every JSON
//! endpoint. Each case checks the answer *and* that stored state did not
//! move. Refused component kinds (core module, no handler, unknown import)
//! and the plain oversize body are covered in `api.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_control_plane::api::limiter::MAX_FAILURES;
use outpost_control_plane::store::{SledStore, Store};
use outpost_test_fixtures as fixtures;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ADMIN, ControlPlane, NODE};

/// Small, so oversize uploads are cheap to send in a debug build.
const MAX_MODULE: u64 = 1024 * 1024;

/// A control plane on 127.0.0.1:0 over sled in a temp dir, with its store
/// at hand to check that refused requests changed nothing.
struct Cp {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _server: ControlPlane,
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
    raw: String,
}

impl Cp {
    async fn start() -> Cp {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let server =
            ControlPlane::start_with(store.clone(), "127.0.0.1:0".parse().unwrap(), MAX_MODULE)
                .await;
        Cp {
            addr: server.addr,
            store,
            _dir: dir,
            _server: server,
        }
    }

    /// One request from `from` (a loopback address the client binds).
    async fn call_from(
        &self,
        from: IpAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        ctype: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(from));
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        // The socket address, not the bound one: 127.0.0.2 reaches it too.
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        let resp = client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            raw: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        ctype: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        self.call_from(LOCAL, method, path, token, ctype, body)
            .await
    }

    async fn json(&self, method: &str, path: &str, token: &str, body: Value) -> Reply {
        let body = body.to_string().into_bytes();
        self.call(method, path, Some(token), Some("application/json"), body)
            .await
    }

    async fn deploy(&self, token: &str, wasm: Vec<u8>) -> Reply {
        self.call(
            "POST",
            "/v1/apps/web/deployments",
            Some(token),
            Some("application/wasm"),
            wasm,
        )
        .await
    }

    /// Tenant `acme` with app `web`; returns acme's token.
    async fn acme(&self) -> String {
        let r = self
            .json(
                "POST",
                "/v1/tenants",
                ADMIN,
                json!({"name": "acme", "domains": crate::support::TEST_DOMAINS}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.raw);
        let token = r.body["token"].as_str().unwrap().to_string();
        let r = self
            .json(
                "POST",
                "/v1/apps",
                &token,
                json!({"name": "web", "routes": ["web.example.com"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.raw);
        token
    }

    /// What a refused request must leave alone: the revision, the
    /// tenants, acme's apps and web's deployments.
    fn state(&self) -> String {
        let s = &self.store;
        format!(
            "revision {} tenants {:?} apps {:?} deployments {:?}",
            s.revision().unwrap(),
            s.tenants()
                .unwrap()
                .iter()
                .map(|t| &t.name)
                .collect::<Vec<_>>(),
            s.apps("acme").unwrap(),
            s.deployments("acme", "web").unwrap(),
        )
    }
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(r.body["error"]["code"], code, "{}", r.raw);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.raw
    );
}

/// Resident memory of this process (which runs the control plane), bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

#[tokio::test]
async fn guessing_tokens_locks_out_only_the_guessing_address_and_changes_nothing() {
    let cp = Cp::start().await;
    let acme = cp.acme().await;
    let before = cp.state();

    // No token at all is a mistake, not a guess: it never locks anyone out.
    for _ in 0..2 * MAX_FAILURES {
        let r = cp.call("GET", "/v1/apps", None, None, Vec::new()).await;
        assert_error(&r, 401, "unauthorized");
    }
    // Guesses, on reads and on writes (the write would create a tenant).
    for i in 0..MAX_FAILURES {
        let guess = format!("opt_{i:064x}");
        let r = if i % 2 == 0 {
            cp.call("GET", "/v1/apps", Some(&guess), None, Vec::new())
                .await
        } else {
            cp.json(
                "POST",
                "/v1/tenants",
                &guess,
                json!({"name": format!("evil{i}")}),
            )
            .await
        };
        assert_error(&r, 401, "unauthorized");
    }
    // Past the limit, every further guess from that address is 429 with
    // Retry-After, and a write with one is refused the same way.
    for guess in ["opt_one-more-guess", "opt_and-another"] {
        let r = cp
            .call("GET", "/v1/apps", Some(guess), None, Vec::new())
            .await;
        assert_error(&r, 429, "too_many_attempts");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    let r = cp
        .json("POST", "/v1/tenants", "opt_late", json!({"name": "late"}))
        .await;
    assert_error(&r, 429, "too_many_attempts");
    assert_eq!(cp.state(), before, "a refused request changed the store");
    // A client that holds a valid token is never locked out by the
    // guesser it shares an address (a proxy, a NAT) with.
    let r = cp
        .call("GET", "/v1/apps", Some(&acme), None, Vec::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = cp
        .json("POST", "/v1/tenants", ADMIN, json!({"name": "late"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    // Unauthenticated endpoints still answer that address.
    let r = cp.call("GET", "/healthz", None, None, Vec::new()).await;
    assert_eq!(r.status, 200);
    // Another address is not punished for this one's guesses.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let r = cp
        .call_from(other, "GET", "/v1/apps", Some(&acme), None, Vec::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body[0]["name"], "web");
}

/// Sends a request head, then up to `total` body bytes (chunked when
/// `content_length` is None) until the server answers; returns the status
/// line, the answer, and how many body bytes were written before it came.
async fn upload_raw(
    addr: SocketAddr,
    token: &str,
    content_length: Option<u64>,
    total: u64,
) -> (String, String, u64) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let framing = match content_length {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".to_string(),
    };
    let head = format!(
        "POST /v1/apps/web/deployments HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {token}\r\n\
         content-type: application/wasm\r\n{framing}\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            let chunk = vec![0u8; 64 * 1024];
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                let ok = match content_length {
                    Some(_) => wr.write_all(&chunk[..n]).await,
                    None => {
                        let mut framed = format!("{n:x}\r\n").into_bytes();
                        framed.extend_from_slice(&chunk[..n]);
                        framed.extend_from_slice(b"\r\n");
                        wr.write_all(&framed).await
                    }
                };
                // The server answered and closed: stop, as a client would.
                if ok.is_err() {
                    return;
                }
                sent.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                left -= n as u64;
            }
            if content_length.is_none() {
                let _ = wr.write_all(b"0\r\n\r\n").await;
            }
            // Keep the write half open: closing it would end the request.
            std::future::pending::<()>().await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = rd.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .is_some_and(|n| body.len() >= n)
            {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 30 s");
    let written = sent.load(std::sync::atomic::Ordering::SeqCst);
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
        written,
    )
}

#[tokio::test]
async fn oversize_uploads_are_cut_off_at_the_limit_and_store_nothing() {
    let cp = Cp::start().await;
    let acme = cp.acme().await;
    let before = cp.state();
    let rss_before = rss();

    // A chunked body with no length, far over the limit: the answer comes
    // while the client is still sending, after about the limit (plus what
    // socket buffers hold), not after the whole body.
    let total = 64 * MAX_MODULE;
    let (status, body, written) = upload_raw(cp.addr, &acme, None, total).await;
    assert!(status.contains(" 413 "), "{status} {body}");
    assert!(body.contains("module_too_large"), "{body}");
    assert!(
        written < total / 2,
        "the client got to send {written} of {total} bytes before the 413: the server read on"
    );

    // Twice the limit without a length, sent in full: still 413.
    let (status, body, _) = upload_raw(cp.addr, &acme, None, 2 * MAX_MODULE).await;
    assert!(status.contains(" 413 "), "{status} {body}");

    // A Content-Length over the limit is refused before any body byte is
    // read: the client sends only 1 KiB of it and still gets its answer.
    let (status, body, written) = upload_raw(cp.addr, &acme, Some(2 * MAX_MODULE), 1024).await;
    assert!(status.contains(" 413 "), "{status} {body}");
    assert!(written <= 1024, "{written}");

    // A Content-Length under the limit with more bytes behind it: the
    // server reads what was declared (not a component: 400), and the
    // extra bytes are not taken as part of the upload.
    let (status, body, _) = upload_raw(cp.addr, &acme, Some(1000), 2 * MAX_MODULE).await;
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(body.contains("bad_wasm"), "{body}");

    assert_eq!(cp.state(), before, "a refused upload changed the store");
    let grown = rss().saturating_sub(rss_before);
    assert!(grown < 512 << 20, "RSS grew by {} MiB", grown >> 20);
}

#[tokio::test]
async fn small_modules_declaring_huge_resources_are_refused_or_fit() {
    let cp = Cp::start().await;
    let acme = cp.acme().await;
    let rss_before = rss();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "4 GiB initial memory",
            fixtures::huge_memory(65536),
            "linear memory starts at 4096 MiB",
        ),
        (
            "256 MiB initial memory",
            fixtures::huge_memory(4096),
            "more than the 128 MiB",
        ),
        // Refused by the pool the control plane validates in, shaped like
        // the nodes' (100 000 elements a table), before any check of ours.
        (
            "10M-slot table",
            fixtures::huge_table(10_000_000),
            "minimum element size of 10000000 which exceeds the limit of 100000",
        ),
        (
            "5000 unknown imports",
            fixtures::many_imports(5000),
            "count exceeds limit",
        ),
        (
            "5000 exports, no handler",
            fixtures::many_exports(5000),
            "incoming-handler",
        ),
        (
            "types nested 5000 deep",
            fixtures::nested_types(5000),
            "nest",
        ),
    ];
    for (what, wasm, needle) in cases {
        assert!(
            wasm.len() < MAX_MODULE as usize,
            "{what}: {} bytes",
            wasm.len()
        );
        let before = cp.state();
        let started = Instant::now();
        let r = cp.deploy(&acme, wasm).await;
        // Liveness, not a benchmark: a refusal must not take minutes.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} took {:?}",
            started.elapsed()
        );
        assert_eq!(r.status, 400, "{what}: {}", r.raw);
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        eprintln!("{what}: {} after {:?}: {msg}", r.status, started.elapsed());
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
        assert_eq!(
            cp.state(),
            before,
            "{what}: a refused upload changed the store"
        );
    }

    // The tenant's own limit is the bound: with 512 MiB, a worker
    // starting at 256 MiB fits and is accepted.
    let r = cp
        .json(
            "PUT",
            "/v1/tenants/acme/limits",
            ADMIN,
            json!({"memory_mib": 512}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = cp.deploy(&acme, fixtures::huge_memory(4096)).await;
    assert_eq!(r.status, 201, "{}", r.raw);

    // A data segment far past its memory compiles; only instantiating it
    // fails. The control plane instantiates every upload once, as nodes
    // do before serving, so it is refused here, cheaply.
    let r = cp
        .deploy(&acme, fixtures::far_data_segment(0xFFFF_0000))
        .await;
    assert_error(&r, 400, "invalid_module");

    let grown = rss().saturating_sub(rss_before);
    assert!(grown < 512 << 20, "RSS grew by {} MiB", grown >> 20);
}

#[tokio::test]
async fn malformed_json_is_a_400_with_the_error_body_on_every_json_endpoint() {
    let cp = Cp::start().await;
    let acme = cp.acme().await;
    let before = cp.state();
    let endpoints = [
        ("POST", "/v1/tenants", ADMIN),
        ("PUT", "/v1/tenants/acme/limits", ADMIN),
        ("POST", "/v1/apps", &acme),
        ("PUT", "/v1/apps/web/routes", &acme),
        ("PUT", "/v1/apps/web/outbound", &acme),
        ("PUT", "/v1/apps/web/env", &acme),
        ("PATCH", "/v1/apps/web/env", &acme),
        ("POST", "/v1/apps/web/rollback", &acme),
        ("PUT", "/v1/certificates/web.example.com", &acme),
        ("PUT", "/v1/nodes/edge-1/status", NODE),
        ("POST", "/v1/nodes/edge-1/logs", NODE),
    ];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<(Option<&str>, Vec<u8>)> = vec![
        (Some("application/json"), b"".to_vec()),
        (Some("application/json"), b"{".to_vec()),
        (Some("application/json"), b"null".to_vec()),
        (
            Some("application/json"),
            b"{\"name\": 1, \"routes\": {}}".to_vec(),
        ),
        (Some("application/json"), b"{\"version\": 1e999}".to_vec()),
        (Some("application/json"), b"\xff\xfe\x00{}".to_vec()),
        (Some("application/json"), deep.into_bytes()),
        (
            Some("application/json"),
            br#"{"unexpected": true, "zzz": [1, 2, 3]}"#.to_vec(),
        ),
        // Serde alone would fill a struct from an array of its fields.
        (
            Some("application/json"),
            b"[null, null, null, null]".to_vec(),
        ),
        (
            Some("application/json"),
            b"[[\"acme\", \"web\", \"n\", 1, \"stdout\", \"x\", 0]]".to_vec(),
        ),
        (Some("text/plain"), b"{}".to_vec()),
        (None, b"{}".to_vec()),
    ];
    for (method, path, token) in endpoints {
        for (ctype, body) in &bodies {
            let r = cp
                .call(method, path, Some(token), *ctype, body.clone())
                .await;
            let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
            assert_eq!(
                r.status, 400,
                "{method} {path} {ctype:?} {shown:?}: {}",
                r.raw
            );
            assert!(
                r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(),
                "{method} {path} {shown:?}: not the JSON error body: {}",
                r.raw
            );
        }
        // Over axum's 2 MiB for JSON bodies: 413, with the same body shape.
        let big = format!("{{\"name\": \"{}\"}}", "a".repeat(3 << 20));
        let r = cp
            .call(
                method,
                path,
                Some(token),
                Some("application/json"),
                big.into_bytes(),
            )
            .await;
        assert_error(&r, 413, "body_too_large");
    }
    // A method a path does not serve: 405 with Allow, in the same shape.
    let r = cp
        .call("DELETE", "/v1/tenants", Some(ADMIN), None, Vec::new())
        .await;
    assert_error(&r, 405, "method_not_allowed");
    assert!(r.headers.contains_key("allow"), "{:?}", r.headers);
    // A query that does not parse: 400 in the same shape.
    let r = cp
        .call(
            "GET",
            "/v1/rollout?revision=-1",
            Some(&acme),
            None,
            Vec::new(),
        )
        .await;
    assert_error(&r, 400, "bad_query");
    let r = cp
        .call(
            "GET",
            "/v1/nodes/watch?revision=x",
            Some(NODE),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert!(r.body["error"]["message"].is_string(), "{}", r.raw);
    // The deployment upload wants its own type, and something in it.
    let r = cp
        .call(
            "POST",
            "/v1/apps/web/deployments",
            Some(&acme),
            Some("application/json"),
            fixtures::hello("x"),
        )
        .await;
    assert_error(&r, 415, "bad_content_type");
    let r = cp.deploy(&acme, Vec::new()).await;
    assert_error(&r, 400, "bad_wasm");
    assert_eq!(cp.state(), before, "a refused request changed the store");
}
