//! Guest output between tenants, from a real node to the control plane:
//! one tenant's guest printing far more than the node ships never costs
//! another tenant's guest its lines in `outpost logs`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{ControlPlane, EdgeNode, client};
use outpost_test_fixtures as fixtures;

/// The lines `GET /v1/apps/web/logs` returns to `token`.
async fn logs(cp: &ControlPlane, token: &str) -> Vec<Value> {
    let req = http::Request::get(format!("http://{}/v1/apps/web/logs", cp.addr))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// acme's guest writes 128 Ki lines per request, far past what its ship
/// queue holds, while beta's guest writes one line per request in between:
/// every one of beta's lines reaches `outpost logs`, and only acme's own
/// lines are counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_stdout_never_costs_another_tenant_its_shipped_lines() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let acme = cp.tenant_with_web_app("acme").await;
    let beta = cp.tenant_with_web_app("beta").await;
    // 2048 blocks of 64 lines: 8 MiB, all of it kept by the budget below.
    cp.deploy_to("web", &acme, fixtures::stdout_flood(2048))
        .await;
    cp.deploy_to("web", &beta, fixtures::stdout("beta-line"))
        .await;
    let node = EdgeNode::start_with(cp.addr, cache.path(), "edge-1", |config| {
        config.limits.max_log_bytes_per_request = 8 * 1024 * 1024;
    })
    .await;
    node.until_serves("beta.example.com", "logged\n").await;
    let mut beta_requests = 1;
    node.until_serves("acme.example.com", "flooded\n").await;

    // Floods and beta's requests at once, round after round.
    for _ in 0..5 {
        let (flood_a, flood_b, quiet) = tokio::join!(
            node.get("acme.example.com"),
            node.get("acme.example.com"),
            async {
                let mut answers = Vec::new();
                for _ in 0..2 {
                    answers.push(node.get("beta.example.com").await);
                }
                answers
            }
        );
        assert_eq!(flood_a, (200, "flooded\n".to_string()));
        assert_eq!(flood_b, (200, "flooded\n".to_string()));
        for answer in quiet {
            assert_eq!(answer, (200, "logged\n".to_string()));
            beta_requests += 1;
        }
    }
    // The floods did overflow acme's queue: the pressure was real.
    let acme_dropped =
        node.metric(r#"outpost_runtime_guest_log_unshipped_lines_total{app="web",tenant="acme"}"#);
    assert!(acme_dropped > 0.0);

    // Every beta request's line arrives (bounded wait: lines ship in
    // batches), each once.
    let started = Instant::now();
    let beta_lines = loop {
        let lines = logs(&cp, &beta).await;
        if lines.len() >= beta_requests || started.elapsed() > Duration::from_secs(30) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ids: Vec<u64> = beta_lines
        .iter()
        .map(|l| {
            assert_eq!(l["text"], "beta-line", "{l}");
            l["request_id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (ids.len(), beta_lines.len()),
        (beta_requests, beta_requests),
        "beta's lines that reached the control plane: {beta_lines:?}"
    );
    assert_eq!(
        node.metric(r#"outpost_runtime_guest_log_unshipped_lines_total{app="web",tenant="beta"}"#),
        0.0
    );
}
