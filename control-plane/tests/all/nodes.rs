//! Per-node identities against real control planes on 127.0.0.1: the
//! admin creates, lists and revokes them; a node is only ever the node its
//! identity names; a revoked identity is refused at once and its open
//! watch stream ends — on this control plane right away, on another one
//! sharing the store by the next heartbeat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use outpost_control_plane::api::DEFAULT_MAX_MODULE_BYTES;
use outpost_control_plane::config::ServerConfig;
use outpost_control_plane::store::{SledStore, Store};
use outpost_control_plane::watch::HEARTBEAT;
use outpost_test_fixtures as fixtures;
use serde_json::{Value, json};

use crate::support::{self, ADMIN, ControlPlane, NODE, client};

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn started(dir: &tempfile::TempDir) -> ControlPlane {
    ControlPlane::start(dir.path(), any_port()).await
}

/// Creates identity `name` as the admin; returns its token.
async fn identity(cp: &ControlPlane, name: &str) -> String {
    let (status, body) = cp
        .json("POST", "/v1/nodes/identities", ADMIN, json!({"name": name}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], name);
    assert!(body["created_at"].as_u64().is_some(), "{body}");
    body["token"].as_str().unwrap().to_string()
}

async fn revoke(cp: &ControlPlane, name: &str) {
    let (status, body) = cp
        .call(
            "DELETE",
            &format!("/v1/nodes/identities/{name}"),
            ADMIN,
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(status, 204, "{body}");
}

/// `PUT /v1/nodes/{node}/status` with `token`.
async fn report(cp: &ControlPlane, node: &str, token: &str) -> (u16, Value) {
    cp.json(
        "PUT",
        &format!("/v1/nodes/{node}/status"),
        token,
        json!({"applied_revision": 0}),
    )
    .await
}

fn assert_code(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
}

/// An open watch stream, read line by line.
struct Stream {
    body: Incoming,
    buf: Vec<u8>,
}

impl Stream {
    /// `GET /v1/nodes/watch?revision=0{query}` with `token`: the status,
    /// and the stream if it opened.
    async fn open(cp: &ControlPlane, token: &str, query: &str) -> (u16, Option<Stream>) {
        let req = Request::get(format!(
            "http://{}/v1/nodes/watch?revision=0{query}",
            cp.addr
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
        let resp = client().request(req).await.unwrap();
        let status = resp.status().as_u16();
        let stream = (status == 200).then(|| Stream {
            body: resp.into_body(),
            buf: Vec::new(),
        });
        (status, stream)
    }

    /// The next line, or `None` once the body has ended (bounded wait).
    async fn line(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .expect("a line or the end of the stream in time");
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Reads up to the end of the first snapshot.
    async fn first_snapshot(&mut self) {
        loop {
            let event = self
                .line(Duration::from_secs(10))
                .await
                .expect("a snapshot before the stream ends");
            if event["type"] == "snapshot_end" || event["type"] == "snapshot" {
                return;
            }
        }
    }

    /// Waits for the body to end, failing if a line comes first or it
    /// takes longer than `within`; returns how long it took.
    async fn ends_within(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        if let Some(event) = self.line(within).await {
            panic!("the stream went on after the revocation: {event}");
        }
        started.elapsed()
    }
}

#[tokio::test]
async fn the_admin_creates_lists_and_revokes_node_identities() {
    let dir = tempfile::tempdir().unwrap();
    let cp = started(&dir).await;
    let one = identity(&cp, "edge-1").await;
    assert!(one.starts_with("opn_edge-1_") && one.len() == "opn_edge-1_".len() + 64);
    identity(&cp, "edge-2").await;
    let (status, body) = cp
        .json(
            "POST",
            "/v1/nodes/identities",
            ADMIN,
            json!({"name": "edge-1"}),
        )
        .await;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("exists")));

    let (status, list) = cp
        .call("GET", "/v1/nodes/identities", ADMIN, "", Vec::new())
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["edge-1", "edge-2"]);
    for item in list.as_array().unwrap() {
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["created_at", "name"], "{item}");
    }
    assert!(!list.to_string().contains(&one[11..]));

    revoke(&cp, "edge-2").await;
    let (status, body) = cp
        .call(
            "DELETE",
            "/v1/nodes/identities/edge-2",
            ADMIN,
            "",
            Vec::new(),
        )
        .await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (_, list) = cp
        .call("GET", "/v1/nodes/identities", ADMIN, "", Vec::new())
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    cp.stop().await;
}

#[tokio::test]
async fn bad_names_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = started(&dir).await;
    let long = "a".repeat(64);
    for (name, code) in [
        ("", "bad_name"),
        ("Edge-1", "bad_name"),
        ("-edge", "bad_name"),
        ("edge_1", "bad_name"),
        ("edge.1", "bad_name"),
        (long.as_str(), "bad_name"),
        ("watch", "reserved_name"),
        ("identities", "reserved_name"),
    ] {
        let answer = cp
            .json("POST", "/v1/nodes/identities", ADMIN, json!({"name": name}))
            .await;
        assert_code(&answer, 400, code);
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("a-z") || message.contains("/v1/nodes/"),
            "{message}"
        );
    }
    let (_, list) = cp
        .call("GET", "/v1/nodes/identities", ADMIN, "", Vec::new())
        .await;
    assert_eq!(list, json!([]));
    cp.stop().await;
}

/// Only the admin manages identities: a tenant's token and a node's own
/// token are refused, and no one without a token gets in.
#[tokio::test]
async fn only_the_admin_manages_node_identities() {
    let dir = tempfile::tempdir().unwrap();
    let cp = started(&dir).await;
    let tenant = cp.tenant("acme").await;
    let node = identity(&cp, "edge-1").await;
    for token in [tenant.as_str(), node.as_str(), NODE] {
        let create = cp
            .json(
                "POST",
                "/v1/nodes/identities",
                token,
                json!({"name": "mine"}),
            )
            .await;
        assert_code(&create, 403, "forbidden");
        let list = cp
            .call("GET", "/v1/nodes/identities", token, "", Vec::new())
            .await;
        assert_code(&list, 403, "forbidden");
        let delete = cp
            .call(
                "DELETE",
                "/v1/nodes/identities/edge-1",
                token,
                "",
                Vec::new(),
            )
            .await;
        assert_code(&delete, 403, "forbidden");
        // Nor any other admin endpoint.
        let fleet = cp.call("GET", "/v1/nodes", token, "", Vec::new()).await;
        assert_code(&fleet, 403, "forbidden");
    }
    // The node's token is not a tenant's either.
    let apps = cp.call("GET", "/v1/apps", &node, "", Vec::new()).await;
    assert_code(&apps, 403, "forbidden");
    let (status, list) = cp
        .call("GET", "/v1/nodes/identities", ADMIN, "", Vec::new())
        .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    cp.stop().await;
}

/// With its identity a node is one node: it cannot report or watch as
/// another, the shared token cannot speak for a node that has an identity,
/// and the fleet view says who used which.
#[tokio::test]
async fn a_node_identity_is_bound_to_its_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let cp = started(&dir).await;
    let one = identity(&cp, "edge-1").await;
    let two = identity(&cp, "edge-2").await;

    assert_eq!(report(&cp, "edge-1", &one).await.0, 204);
    let answer = report(&cp, "edge-1", &two).await;
    assert_code(&answer, 403, "wrong_node");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("this credential belongs to node edge-2"),
        "{message}"
    );
    assert_code(&report(&cp, "other", &two).await, 403, "wrong_node");
    let (status, _) = Stream::open(&cp, &two, "&node=edge-1").await;
    assert_eq!(status, 403);

    // The shared token may not take an identity's name, but any other.
    assert_code(&report(&cp, "edge-2", NODE).await, 403, "node_has_identity");
    let (status, _) = Stream::open(&cp, NODE, "&node=edge-2").await;
    assert_eq!(status, 403);
    assert_eq!(report(&cp, "legacy", NODE).await.0, 204);

    // Without a node id, the identity's stream is its node's.
    let (status, stream) = Stream::open(&cp, &two, "").await;
    assert_eq!(status, 200);
    stream.unwrap().first_snapshot().await;

    let (status, fleet) = cp.call("GET", "/v1/nodes", ADMIN, "", Vec::new()).await;
    assert_eq!(status, 200);
    let by_id = |id: &str| {
        fleet
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {fleet}"))
            .clone()
    };
    assert_eq!(by_id("edge-1")["identity"], "edge-1");
    assert_eq!(by_id("edge-2")["identity"], "edge-2");
    assert!(by_id("legacy").get("identity").is_none(), "{fleet}");
    cp.stop().await;
}

/// A revoked identity is refused on the next request: modules, watch,
/// reports — 401 like any unknown token.
#[tokio::test]
async fn a_revoked_identity_fetches_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let cp = started(&dir).await;
    let tenant = cp.acme_with_web_app().await;
    let (status, deployed) = cp
        .call(
            "POST",
            "/v1/apps/web/deployments",
            &tenant,
            "application/wasm",
            fixtures::hello("hi"),
        )
        .await;
    assert_eq!(status, 201, "{deployed}");
    let module = format!("/v1/modules/{}", deployed["digest"].as_str().unwrap());
    let node = identity(&cp, "edge-1").await;

    let req = Request::get(format!("http://{}{module}", cp.addr))
        .header("authorization", format!("Bearer {node}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(Stream::open(&cp, &node, "").await.0, 200);

    revoke(&cp, "edge-1").await;
    let answer = cp.call("GET", &module, &node, "", Vec::new()).await;
    assert_code(&answer, 401, "unauthorized");
    let (status, _) = Stream::open(&cp, &node, "").await;
    assert_eq!(status, 401);
    assert_code(&report(&cp, "edge-1", &node).await, 401, "unauthorized");
    // The name is free for the shared token again.
    assert_eq!(report(&cp, "edge-1", NODE).await.0, 204);
    cp.stop().await;
}

/// Revoking an identity on the control plane a node follows ends the
/// node's stream at once, well within one heartbeat.
#[tokio::test]
async fn revoking_an_identity_ends_its_watch_stream_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cp = started(&dir).await;
    let a = identity(&cp, "edge-a").await;
    let b = identity(&cp, "edge-b").await;
    let (_, stream) = Stream::open(&cp, &a, "").await;
    let mut stream_a = stream.expect("the stream opens");
    stream_a.first_snapshot().await;
    let (_, stream) = Stream::open(&cp, &b, "").await;
    let mut stream_b = stream.expect("the stream opens");
    stream_b.first_snapshot().await;
    let (_, stream) = Stream::open(&cp, NODE, "&node=legacy").await;
    let mut shared = stream.expect("the stream opens");
    shared.first_snapshot().await;

    revoke(&cp, "edge-a").await;
    let took = stream_a.ends_within(HEARTBEAT / 3).await;
    assert!(took < HEARTBEAT / 3, "ended after {took:?}");

    // The others follow on: the next change reaches them.
    cp.acme_with_web_app().await;
    for stream in [&mut stream_b, &mut shared] {
        let event = stream
            .line(Duration::from_secs(10))
            .await
            .expect("the other streams stay open");
        assert_eq!(event["type"], "delta", "{event}");
    }
    cp.stop().await;
}

/// Revoking a name and issuing it again makes a new token: the stream on
/// the old one ends, the new one gets in, the old one does not.
#[tokio::test]
async fn revoking_and_reissuing_a_name_ends_the_old_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cp = started(&dir).await;
    let old = identity(&cp, "edge-1").await;
    let (_, stream) = Stream::open(&cp, &old, "").await;
    let mut stream = stream.expect("the stream opens");
    stream.first_snapshot().await;

    revoke(&cp, "edge-1").await;
    let new = identity(&cp, "edge-1").await;
    assert_ne!(old, new);
    stream.ends_within(HEARTBEAT / 3).await;
    assert_eq!(Stream::open(&cp, &old, "").await.0, 401);
    assert_eq!(Stream::open(&cp, &new, "").await.0, 200);
    cp.stop().await;
}

/// Two control planes over one store: revoking (and re-issuing) an
/// identity on one ends the node's stream on the other by its next
/// heartbeat, without a line more — that control plane was never told,
/// it finds out from the store.
#[tokio::test]
async fn a_revocation_on_another_control_plane_ends_the_stream_by_the_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let server = || ServerConfig {
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let followed = ControlPlane::start_with_config(
        store.clone(),
        support::config(any_port(), DEFAULT_MAX_MODULE_BYTES, server()),
    )
    .await;
    let other = ControlPlane::start_with_config(
        store,
        support::config(any_port(), DEFAULT_MAX_MODULE_BYTES, server()),
    )
    .await;
    let old = identity(&other, "edge-1").await;
    let (_, stream) = Stream::open(&followed, &old, "").await;
    let mut stream = stream.expect("the stream opens");
    stream.first_snapshot().await;

    revoke(&other, "edge-1").await;
    identity(&other, "edge-1").await;
    stream.ends_within(HEARTBEAT + Duration::from_secs(5)).await;
    assert_eq!(Stream::open(&followed, &old, "").await.0, 401);
    followed.stop().await;
    other.stop().await;
}

/// The end of the migration: a control plane without a shared node token
/// lets in nodes with their own identity and refuses the old token.
#[tokio::test]
async fn without_a_shared_token_only_identities_let_nodes_in() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let mut config = support::config(
        any_port(),
        DEFAULT_MAX_MODULE_BYTES,
        ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..ServerConfig::default()
        },
    );
    config.node_token = None;
    let cp = ControlPlane::start_with_config(store, config).await;
    let node = identity(&cp, "edge-1").await;
    assert_eq!(report(&cp, "edge-1", &node).await.0, 204);
    let (status, stream) = Stream::open(&cp, &node, "").await;
    assert_eq!(status, 200);
    stream.unwrap().first_snapshot().await;

    assert_code(&report(&cp, "legacy", NODE).await, 401, "unauthorized");
    assert_eq!(Stream::open(&cp, NODE, "&node=legacy").await.0, 401);
    let modules = cp
        .call("GET", "/v1/modules/sha256:00", NODE, "", Vec::new())
        .await;
    assert_code(&modules, 401, "unauthorized");
    cp.stop().await;
}
