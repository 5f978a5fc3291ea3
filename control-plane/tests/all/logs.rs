//! `outpost logs` between tenants, over real HTTP against a control plane
//! on 127.0.0.1:0: one tenant's follow streams are capped without touching
//! another's, and one tenant's flood of lines never makes another tenant's
//! follower skip its own.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use outpost_control_plane::api::logs::FOLLOWERS_PER_TENANT;
use serde_json::{Value, json};

use crate::support::{ControlPlane, NODE, client};

/// Most lines the node endpoint takes in one post.
const MAX_BATCH: usize = 5000;

struct Cp {
    server: ControlPlane,
    _dir: tempfile::TempDir,
}

impl Cp {
    async fn start() -> Cp {
        let dir = tempfile::tempdir().unwrap();
        let server = ControlPlane::start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
        Cp { server, _dir: dir }
    }

    /// Tenant `name` with an app `web`; returns its token.
    async fn tenant(&self, name: &str) -> String {
        let token = self.server.tenant(name).await;
        let app = json!({"name": "web", "routes": [format!("{name}.example.com")]});
        let (status, body) = self.server.json("POST", "/v1/apps", &token, app).await;
        assert_eq!(status, 201, "{body}");
        token
    }

    /// `GET /v1/apps/web/logs?follow=true`, its body left unread.
    async fn follow(&self, token: &str) -> http::Response<Incoming> {
        let req = Request::get(format!(
            "http://{}/v1/apps/web/logs?follow=true",
            self.server.addr
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
        client().request(req).await.unwrap()
    }

    async fn post_lines(&self, lines: Vec<Value>) {
        let (status, body) = self
            .server
            .json("POST", "/v1/nodes/edge-1/logs", NODE, Value::Array(lines))
            .await;
        assert_eq!(status, 204, "{body}");
    }
}

fn line(tenant: &str, text: &str) -> Value {
    json!({"tenant": tenant, "app": "web", "request_id": 1, "stream": "stdout", "text": text, "time_ms": 1})
}

/// Reads NDJSON lines from a follow stream until one with text `until`;
/// returns the texts before it. Bounded: no line for 30 s is a failure.
async fn texts_until(body: &mut Incoming, until: &str) -> Vec<String> {
    let (mut buf, mut texts) = (Vec::new(), Vec::new());
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {until:?} within 30 s; got {texts:?}"))
            .unwrap_or_else(|| panic!("the stream ended before {until:?}; got {texts:?}"))
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&raw).unwrap();
            let text = value["text"].as_str().unwrap().to_string();
            if text == until {
                return texts;
            }
            texts.push(text);
        }
    }
}

/// The (N+1)th follow stream of a tenant is refused with 429 and
/// `Retry-After`; another tenant still gets one; a closed stream's place
/// is given back (to a new stream, within a bounded wait).
#[tokio::test]
async fn follow_streams_are_capped_per_tenant_and_given_back_when_closed() {
    let cp = Cp::start().await;
    let acme = cp.tenant("acme").await;
    let beta = cp.tenant("beta").await;

    let mut open = Vec::new();
    for _ in 0..FOLLOWERS_PER_TENANT {
        let resp = cp.follow(&acme).await;
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    let refused = cp.follow(&acme).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "too_many_followers", "{body}");

    // Another tenant is not held to acme's count, and reading without
    // following is never capped.
    let mut beta_stream = cp.follow(&beta).await;
    assert_eq!(beta_stream.status(), 200);
    let (status, _) = cp
        .server
        .call(
            "GET",
            "/v1/apps/web/logs",
            &acme,
            "application/json",
            vec![],
        )
        .await;
    assert_eq!(status, 200);

    // The streams held are live ones.
    cp.post_lines(vec![line("acme", "to acme"), line("acme", "end")])
        .await;
    assert_eq!(
        texts_until(open[0].body_mut(), "end").await,
        ["to acme"],
        "acme's follower"
    );

    // A client that goes away gives its place back: once the server has
    // seen the connection close, a new stream is accepted.
    drop(open.pop());
    let started = Instant::now();
    let reopened = loop {
        let resp = cp.follow(&acme).await;
        if resp.status() == 200 {
            break resp;
        }
        assert_eq!(resp.status(), 429);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the closed stream's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(cp.follow(&acme).await.status(), 429);
    drop(reopened);

    // A stream the server ends (its app deleted) gives its place back too.
    let (status, body) = cp
        .server
        .json("DELETE", "/v1/apps/web", &beta, Value::Null)
        .await;
    assert_eq!(status, 204, "{body}");
    let end = tokio::time::timeout(Duration::from_secs(30), beta_stream.body_mut().frame())
        .await
        .expect("the deleted app's stream ends");
    assert!(end.is_none(), "{end:?}");
}

/// Tenant A's lines, posted by a node in the same batches as tenant B's
/// (far more than a follower's buffer per post), never make B's follower
/// skip one of B's lines.
#[tokio::test]
async fn a_flood_of_one_tenants_lines_never_makes_another_tenants_follower_skip() {
    let cp = Cp::start().await;
    let _acme = cp.tenant("acme").await;
    let beta = cp.tenant("beta").await;
    let mut follower = cp.follow(&beta).await;
    assert_eq!(follower.status(), 200);

    for i in 0..10 {
        // B's line first, then a full post of A's: a feed shared with A
        // would have overwritten B's line before B's follower ran.
        let mut lines = vec![line("beta", &format!("b{i}"))];
        lines.extend((1..MAX_BATCH).map(|j| line("acme", &format!("a{i}-{j}"))));
        cp.post_lines(lines).await;
    }
    cp.post_lines(vec![line("beta", "end")]).await;

    let want: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(texts_until(follower.body_mut(), "end").await, want);
}
