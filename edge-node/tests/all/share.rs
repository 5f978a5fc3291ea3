//! The node's instance slots are shared fairly between tenants: one that
//! fills them with sleeping requests cannot lock the others out.

use std::time::Duration;

use crate::support::{TestNode, app};
use outpost_runtime::{Limits, PoolConfig};
use outpost_test_fixtures as fixtures;

const GREEDY: &str = "greedy.example.com";
const OTHER: &str = "other.example.com";

#[tokio::test]
async fn a_tenant_holding_its_share_of_slots_does_not_stop_another_tenants_requests() {
    // Eight slots: each tenant's share is four; a tenant alone may borrow
    // all but one (the reserve).
    let pool = PoolConfig {
        max_instances: 8,
        tenant_share_percent: 50,
        ..PoolConfig::default()
    };
    let node = TestNode::start_with(
        pool,
        vec![
            (
                &[OTHER],
                app(
                    "other",
                    "hello",
                    fixtures::hello("served\n"),
                    Limits::default(),
                ),
            ),
            (
                &[GREEDY],
                app("greedy", "sleeper", fixtures::slow(4000), Limits::default()),
            ),
        ],
    )
    .await;
    let in_flight = r#"outpost_runtime_instances_in_flight{app="sleeper",tenant="greedy"}"#;
    let refused =
        r#"outpost_runtime_limit_kills_total{app="sleeper",reason="tenant_share",tenant="greedy"}"#;

    // Twelve sleeping requests, far more than the greedy tenant's share
    // and more than the node has slots.
    let sleepers = futures::future::join_all((0..12).map(|_| node.get(GREEDY, "/")));
    let (sleepers, others) = tokio::join!(sleepers, async {
        for _ in 0..200 {
            if node.metric(in_flight).await + node.metric(refused).await == 12.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let held = node.metric(in_flight).await;
        // Every slot but the reserve is held by sleepers; the other
        // tenant is served at once, again and again.
        let mut others = Vec::new();
        for _ in 0..5 {
            others.push(node.get(OTHER, "/").await);
        }
        (held, others)
    });
    let (held, others) = others;
    for r in &others {
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "served\n"));
    }
    assert_eq!(held, 7.0, "its share plus what it may borrow");
    let mut statuses: Vec<_> = sleepers
        .iter()
        .map(|r| (r.status.as_u16(), r.outpost_error().map(str::to_string)))
        .collect();
    statuses.sort();
    let mut want = vec![(200, None); 7];
    want.extend(vec![(503, Some("tenant_share".to_string())); 5]);
    assert_eq!(statuses, want);
    assert!(
        sleepers
            .iter()
            .filter(|r| r.status == 503)
            .all(|r| r.headers["retry-after"] == "1")
    );
    assert_eq!(node.metric(refused).await, 5.0);
}
