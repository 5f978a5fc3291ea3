//! Golden JSON: the exact bytes each wire type serializes to. A change here
//! is a change to the v1 contract and must be deliberate (regenerate with
//! `OUTPOST_BLESS=1 cargo test -p outpost-proto --test golden`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use outpost_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: T) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let mut json = serde_json::to_string_pretty(&value).unwrap();
    json.push('\n');
    if std::env::var_os("OUTPOST_BLESS").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with OUTPOST_BLESS=1 to create)",
            path.display()
        )
    });
    assert_eq!(
        json, golden,
        "{name} no longer serializes to its golden JSON"
    );
    let back: T = serde_json::from_str(&golden).unwrap();
    assert_eq!(back, value, "{name} does not round-trip");
}

fn spec() -> AppSpec {
    AppSpec {
        tenant: "acme".into(),
        name: "web".into(),
        routes: vec!["acme.example.com".into(), "api.example.com/v2".into()],
        version: 3,
        digest: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        limits: Limits {
            memory_mib: Some(64),
            timeout_ms: Some(5000),
            ..Limits::default()
        },
        allow_outbound: vec!["api.payments.example".into()],
        disabled: false,
    }
}

#[test]
fn api_bodies() {
    check(
        "error",
        ErrorBody::new("route_taken", "api.example.com is owned by another tenant"),
    );
    check(
        "create_tenant",
        CreateTenant {
            name: "acme".into(),
            domains: vec![],
        },
    );
    check(
        "create_tenant_with_domains",
        CreateTenant {
            name: "acme".into(),
            domains: vec!["acme.example".into()],
        },
    );
    check(
        "set_domains",
        SetDomains {
            domains: vec!["acme.example".into(), "acme-shop.example".into()],
        },
    );
    check(
        "tenant_quotas",
        TenantQuotas {
            apps: Some(500),
            stored_mib: Some(4096),
            ..TenantQuotas::default()
        },
    );
    check("create_token", CreateToken { name: "ci".into() });
    check(
        "token_created",
        TokenCreated {
            name: "ci".into(),
            token: "opt_3q2-example-token".into(),
        },
    );
    check(
        "token_info",
        TokenInfo {
            name: "ci".into(),
            created_at: 1_795_000_000,
        },
    );
    check(
        "app_spec_disabled",
        AppSpec {
            disabled: true,
            ..spec()
        },
    );
    check(
        "tenant_created",
        TenantCreated {
            name: "acme".into(),
            token: "opt_3q2-example-token".into(),
        },
    );
    check(
        "tenant",
        Tenant {
            name: "acme".into(),
            limits: Limits {
                fuel: Some(500_000_000),
                memory_mib: Some(64),
                timeout_ms: Some(10_000),
                max_concurrency: Some(16),
            },
            apps: 2,
            domains: vec!["acme.example".into()],
            disabled: true,
            quotas: TenantQuotas {
                apps: Some(500),
                ..TenantQuotas::default()
            },
            usage: TenantUsage {
                hosts: 3,
                certificates: 1,
                stored_bytes: 48_178,
            },
        },
    );
    check(
        "create_app",
        CreateApp {
            name: "web".into(),
            routes: vec!["acme.example.com".into()],
            allow_outbound: vec!["api.payments.example".into()],
        },
    );
    check(
        "app",
        App {
            name: "web".into(),
            routes: vec!["acme.example.com".into()],
            active_version: Some(2),
            env_keys: vec!["GREETING".into()],
            versions: 2,
            allow_outbound: vec!["api.payments.example".into()],
        },
    );
    check(
        "set_routes",
        SetRoutes {
            routes: vec!["acme.example.com".into(), "www.acme.example.com".into()],
        },
    );
    check(
        "deployment",
        Deployment {
            version: 2,
            digest: spec().digest,
            size: 24089,
            created_at: 1_795_000_000,
        },
    );
    check("rollback", Rollback { version: 1 });
    check(
        "node_report",
        NodeReport {
            applied_revision: 42,
            unavailable: BTreeMap::new(),
        },
    );
    check(
        "node_status",
        NodeStatus {
            id: "edge-1".into(),
            applied_revision: 42,
            last_contact: 1_795_000_000,
            unavailable: BTreeMap::new(),
            identity: None,
            control_plane: None,
        },
    );
    check(
        "node_status_identity",
        NodeStatus {
            id: "edge-1".into(),
            applied_revision: 42,
            last_contact: 1_795_000_000,
            unavailable: BTreeMap::new(),
            identity: Some("edge-1".into()),
            control_plane: Some("cp-0.outpost:7070".into()),
        },
    );
    check(
        "create_node_identity",
        CreateNodeIdentity {
            name: "edge-1".into(),
        },
    );
    check(
        "node_identity_created",
        NodeIdentityCreated {
            name: "edge-1".into(),
            token: "opn_edge-1_3q2-example-token".into(),
            created_at: 1_795_000_000,
        },
    );
    check(
        "node_identity",
        NodeIdentity {
            name: "edge-1".into(),
            created_at: 1_795_000_000,
        },
    );
}

#[test]
fn certificates_and_rollout() {
    check(
        "cert_upload",
        CertUpload {
            cert_chain_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"
                .into(),
        },
    );
    check(
        "cert_info",
        CertInfo {
            hostname: "*.acme.example.com".into(),
            names: vec!["*.acme.example.com".into(), "acme.example.com".into()],
            not_before: 1_790_000_000,
            not_after: 1_797_776_000,
            created_at: 1_795_000_000,
        },
    );
    check(
        "whoami_admin",
        Whoami {
            kind: CallerKind::Admin,
            tenant: None,
            limits: None,
        },
    );
    check(
        "whoami_tenant",
        Whoami {
            kind: CallerKind::Tenant,
            tenant: Some(Tenant {
                name: "acme".into(),
                limits: Limits {
                    memory_mib: Some(256),
                    ..Limits::default()
                },
                apps: 2,
                domains: vec!["acme.example".into()],
                disabled: false,
                quotas: TenantQuotas::default(),
                usage: TenantUsage::default(),
            }),
            limits: Some(Limits {
                fuel: Some(1_000_000_000),
                memory_mib: Some(256),
                timeout_ms: Some(30_000),
                max_concurrency: Some(64),
            }),
        },
    );
    check(
        "rollout",
        Rollout {
            revision: 12,
            nodes: 3,
            applied: 2,
            unavailable: vec![],
            lagging: vec!["edge-3".into()],
        },
    );
    check(
        "node_report_unavailable",
        NodeReport {
            applied_revision: 43,
            unavailable: BTreeMap::from([(
                app_key("acme", "web"),
                "app \"web\": not a valid worker: instantiation failed".into(),
            )]),
        },
    );
    check(
        "rollout_unavailable",
        Rollout {
            revision: 13,
            nodes: 2,
            applied: 2,
            unavailable: vec![Unavailable {
                app: app_key("acme", "web"),
                node: "edge-1".into(),
                reason: "app \"web\": not a valid worker: instantiation failed".into(),
            }],
            lagging: vec![],
        },
    );
}

/// What optional and empty fields look like on the wire: left out where
/// the type says so, `null` or `[]`/`{}` where it does not.
#[test]
fn empty_and_absent_shapes() {
    check(
        "app_never_deployed",
        App {
            name: "web".into(),
            routes: vec![],
            active_version: None,
            env_keys: vec![],
            versions: 0,
            allow_outbound: vec![],
        },
    );
    check(
        "tenant_default_limits",
        Tenant {
            name: "acme".into(),
            limits: Limits::default(),
            apps: 0,
            domains: vec![],
            disabled: false,
            quotas: TenantQuotas::default(),
            usage: TenantUsage::default(),
        },
    );
    check(
        "create_app_minimal",
        CreateApp {
            name: "web".into(),
            routes: vec!["acme.example.com".into()],
            allow_outbound: vec![],
        },
    );
    check(
        "app_spec_minimal",
        AppSpec {
            env: BTreeMap::new(),
            limits: Limits::default(),
            allow_outbound: vec![],
            ..spec()
        },
    );
    check(
        "watch_snapshot_empty",
        WatchEvent::Snapshot {
            snapshot: Snapshot {
                purges: Default::default(),
                revision: 0,
                apps: BTreeMap::new(),
                certificates: BTreeMap::new(),
            },
        },
    );
    check(
        "watch_delta_empty",
        WatchEvent::Delta {
            delta: Delta {
                purges: Default::default(),
                base: 9,
                revision: 10,
                upsert: BTreeMap::new(),
                remove: vec![],
                certificates: BTreeMap::new(),
                removed_certificates: vec![],
            },
        },
    );
}

fn purges() -> Vec<PurgeRecord> {
    vec![
        PurgeRecord {
            revision: 10,
            tenant: "acme".into(),
            purge: CachePurge::Url {
                url: "https://origin.acme.example/a?b=1".into(),
            },
        },
        PurgeRecord {
            revision: 11,
            tenant: "acme".into(),
            purge: CachePurge::SurrogateKey {
                key: "product-1".into(),
            },
        },
        PurgeRecord {
            revision: 12,
            tenant: "rival".into(),
            purge: CachePurge::All {},
        },
    ]
}

#[test]
fn cache_purges() {
    check(
        "cache_purge_url",
        CachePurge::Url {
            url: "https://origin.acme.example/a".into(),
        },
    );
    check("cache_purge_all", CachePurge::All {});
    check(
        "watch_delta_purges",
        WatchEvent::Delta {
            delta: Delta {
                base: 9,
                revision: 12,
                upsert: BTreeMap::new(),
                remove: vec![],
                certificates: BTreeMap::new(),
                removed_certificates: vec![],
                purges: purges(),
            },
        },
    );
    check(
        "watch_snapshot_begin_purges",
        WatchEvent::SnapshotBegin {
            revision: 12,
            purges: RecentPurges {
                since: 9,
                list: purges(),
            },
        },
    );
}

/// A node at `have` learns the purges it missed from a snapshot's recent
/// list, unless the list no longer reaches back that far; a delta carries
/// exactly the purges made since its base.
#[test]
fn purges_travel_in_deltas_and_snapshots_know_how_far_back_they_reach() {
    let recent = RecentPurges {
        since: 9,
        list: purges(),
    };
    let missed: Vec<u64> = recent.after(10).unwrap().map(|p| p.revision).collect();
    assert_eq!(missed, [11, 12]);
    assert_eq!(recent.after(9).unwrap().count(), 3);
    assert!(recent.after(8).is_none(), "purges up to 9 may be gone");

    let old = Snapshot {
        revision: 9,
        apps: BTreeMap::new(),
        certificates: BTreeMap::new(),
        purges: RecentPurges::default(),
    };
    let new = Snapshot {
        revision: 12,
        purges: recent.clone(),
        ..old.clone()
    };
    let delta = old.delta_to(&new);
    assert_eq!(delta.purges, purges());
    let mut applied = old.clone();
    applied.apply(&delta).unwrap();
    assert_eq!(applied.purges.list, purges());

    // The list keeps the most recent ones, and says where it starts.
    let mut long = RecentPurges::default();
    let many: Vec<PurgeRecord> = (1..=RECENT_PURGES as u64 + 5)
        .map(|revision| PurgeRecord {
            revision,
            tenant: "acme".into(),
            purge: CachePurge::All {},
        })
        .collect();
    long.extend(&many);
    assert_eq!(long.list.len(), RECENT_PURGES);
    assert_eq!(long.since, 5);
    assert_eq!(long.list[0].revision, 6);
    assert!(long.after(4).is_none());
    assert_eq!(long.after(5).unwrap().count(), RECENT_PURGES);
}

#[test]
fn watch_events() {
    check(
        "watch_snapshot",
        WatchEvent::Snapshot {
            snapshot: Snapshot {
                purges: Default::default(),
                revision: 7,
                apps: BTreeMap::from([(app_key("acme", "web"), spec())]),
                certificates: BTreeMap::from([("acme.example.com".into(), cert())]),
            },
        },
    );
    check(
        "watch_delta",
        WatchEvent::Delta {
            delta: Delta {
                purges: Default::default(),
                base: 7,
                revision: 9,
                upsert: BTreeMap::from([(app_key("acme", "web"), spec())]),
                remove: vec![app_key("acme", "old")],
                certificates: BTreeMap::from([("acme.example.com".into(), cert())]),
                removed_certificates: vec!["old.example.com".into()],
            },
        },
    );
    check("watch_heartbeat", WatchEvent::Heartbeat { revision: 9 });
    check(
        "guest_log_line",
        GuestLogLine {
            tenant: "acme".into(),
            app: "web".into(),
            node: "edge-1".into(),
            request_id: 42,
            stream: "stderr".into(),
            text: "warning: cache miss".into(),
            time_ms: 1_795_000_000_123,
        },
    );
    check(
        "set_outbound",
        SetOutbound {
            hosts: vec!["api.payments.example".into(), "127.0.0.1:8080".into()],
        },
    );
}

#[test]
fn a_delta_turns_one_snapshot_into_the_next() {
    let web = spec();
    let mut api = spec();
    api.name = "api".into();
    let old = Snapshot {
        purges: Default::default(),
        revision: 3,
        apps: BTreeMap::from([
            (app_key("acme", "web"), web.clone()),
            (app_key("acme", "api"), api.clone()),
        ]),
        certificates: BTreeMap::from([
            ("a.example.com".into(), cert()),
            ("b.example.com".into(), cert()),
        ]),
    };
    let mut web2 = web.clone();
    web2.version = 2;
    let mut new = old.clone();
    new.revision = 5;
    new.apps.remove(&app_key("acme", "api"));
    new.apps.insert(app_key("acme", "web"), web2.clone());
    new.apps.insert(app_key("beta", "site"), web.clone());
    new.certificates.remove("b.example.com");
    let mut rotated = cert();
    rotated.cert_chain_pem.push_str("rotated");
    new.certificates.insert("a.example.com".into(), rotated);

    let delta = old.delta_to(&new);
    assert_eq!((delta.base, delta.revision), (3, 5));
    assert_eq!(
        delta.upsert.keys().collect::<Vec<_>>(),
        ["acme/web", "beta/site"]
    );
    assert_eq!(delta.remove, ["acme/api"]);
    assert_eq!(
        delta.certificates.keys().collect::<Vec<_>>(),
        ["a.example.com"]
    );
    assert_eq!(delta.removed_certificates, ["b.example.com"]);
    let mut applied = old.clone();
    applied.apply(&delta).unwrap();
    assert_eq!(applied, new);

    // Unchanged state still advances the revision, with nothing in it.
    let same = Snapshot {
        revision: 6,
        ..new.clone()
    };
    let empty = new.delta_to(&same);
    assert!(empty.upsert.is_empty() && empty.remove.is_empty());
    assert!(empty.certificates.is_empty() && empty.removed_certificates.is_empty());

    // A delta for another base is refused and changes nothing.
    let mut stale = old.clone();
    let err = stale.apply(&empty).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a delta from revision 5 cannot apply to revision 3"
    );
    assert_eq!(stale, old);
}

fn cert() -> CertSpec {
    CertSpec {
        tenant: "acme".into(),
        cert_chain_pem: "-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----\n".into(),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\n…\n-----END PRIVATE KEY-----\n".into(),
    }
}

#[test]
fn cert_specs_keep_keys_out_of_debug_output() {
    let text = format!("{:?}", cert());
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[test]
fn a_snapshot_in_parts_is_the_snapshot_again() {
    let mut snapshot = Snapshot {
        purges: Default::default(),
        revision: 9,
        apps: BTreeMap::new(),
        certificates: BTreeMap::from([("acme.example.com".into(), cert())]),
    };
    for i in 0..1000 {
        let mut app = spec();
        app.name = format!("app{i}");
        app.env.insert("BIG".into(), "x".repeat(10_000));
        snapshot.apps.insert(app_key("acme", &app.name), app);
    }
    let part_bytes = 256 * 1024;
    let events = snapshot.in_parts(part_bytes);
    assert!(matches!(
        events[0],
        WatchEvent::SnapshotBegin { revision: 9, .. }
    ));
    assert!(matches!(
        events.last(),
        Some(WatchEvent::SnapshotEnd { revision: 9 })
    ));
    // Every line stays near the part size, whatever the snapshot's.
    let whole = serde_json::to_vec(&WatchEvent::Snapshot {
        snapshot: snapshot.clone(),
    })
    .unwrap()
    .len();
    assert!(whole > 10_000_000, "the snapshot is {whole} bytes");
    for event in &events {
        let line = serde_json::to_vec(event).unwrap().len();
        assert!(line <= part_bytes + 20_000, "a {line}-byte line");
    }
    let mut assembly = SnapshotAssembly::default();
    let mut done = None;
    for event in events {
        // Every line survives the wire.
        let wire = serde_json::to_string(&event).unwrap();
        if let Some(s) = assembly.take(serde_json::from_str(&wire).unwrap()).unwrap() {
            done = Some(s);
        }
    }
    assert_eq!(done, Some(snapshot));
    assert!(!assembly.in_progress());
}

#[test]
fn snapshot_parts_out_of_order_are_refused() {
    let mut assembly = SnapshotAssembly::default();
    let part = WatchEvent::SnapshotPart {
        apps: BTreeMap::new(),
        certificates: BTreeMap::new(),
    };
    assert!(assembly.take(part.clone()).is_err());
    assert!(
        assembly
            .take(WatchEvent::SnapshotEnd { revision: 1 })
            .is_err()
    );
    assembly
        .take(WatchEvent::SnapshotBegin {
            purges: Default::default(),
            revision: 2,
        })
        .unwrap();
    assert!(
        assembly
            .take(WatchEvent::SnapshotEnd { revision: 3 })
            .is_err()
    );
    assert!(
        assembly
            .take(WatchEvent::Heartbeat { revision: 2 })
            .is_err()
    );
}

#[test]
fn snapshot_part_events() {
    check(
        "watch_snapshot_begin",
        WatchEvent::SnapshotBegin {
            purges: Default::default(),
            revision: 7,
        },
    );
    check(
        "watch_snapshot_part",
        WatchEvent::SnapshotPart {
            apps: BTreeMap::from([(app_key("acme", "web"), spec())]),
            certificates: BTreeMap::from([("acme.example.com".into(), cert())]),
        },
    );
    check(
        "watch_snapshot_end",
        WatchEvent::SnapshotEnd { revision: 7 },
    );
}
