//! The edge node's side of the watch stream: bytes from the network split
//! into newline-delimited events (`sync::next_event`, what the watch loop
//! runs), and each delta applied to the snapshot being served
//! (`Snapshot::apply`).
//!
//! Properties: nothing panics; the events decoded do not depend on how the
//! stream was cut into frames; a delta that applies yields exactly its
//! upserts, drops its removals and takes its revision; and `delta_to`
//! between the states before and after reproduces the same state.

#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use outpost_edge_node::sync::next_event;
use outpost_proto::{Snapshot, WatchEvent};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Frame sizes the stream arrives in (0 is read as 1).
    frames: Vec<u8>,
    stream: &'a [u8],
}

/// Decodes `stream` arriving in `frames`, as the watch loop does, up to and
/// including the first malformed event (where the loop gives up).
fn decode(stream: &[u8], frames: &[u8]) -> Vec<Result<WatchEvent, String>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = frames.iter().map(|&n| usize::from(n.max(1)));
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(event) = next_event(&mut buf) {
            // Errors compare by their message: framing must not change it.
            let event = event.map_err(|e| e.to_string());
            let failed = event.is_err();
            out.push(event);
            if failed {
                return out;
            }
        }
    }
    out
}

fn check_delta(before: &Snapshot, after: &Snapshot, delta: &outpost_proto::Delta) {
    assert_eq!(after.revision, delta.revision);
    for (key, app) in &delta.upsert {
        assert_eq!(after.apps.get(key), Some(app), "upserted app {key} missing");
    }
    for key in &delta.remove {
        if !delta.upsert.contains_key(key) {
            assert!(
                !after.apps.contains_key(key),
                "removed app {key} still there"
            );
        }
    }
    for (host, cert) in &delta.certificates {
        assert_eq!(after.certificates.get(host), Some(cert));
    }
    for host in &delta.removed_certificates {
        if !delta.certificates.contains_key(host) {
            assert!(!after.certificates.contains_key(host));
        }
    }
    let minimal = before.delta_to(after);
    let mut replayed = before.clone();
    replayed
        .apply(&minimal)
        .expect("a delta from `before` applies to it");
    assert_eq!(&replayed, after, "delta_to does not reproduce the state");
}

fuzz_target!(|input: Input<'_>| {
    let events = decode(input.stream, &input.frames);
    let whole = decode(input.stream, &[]);
    assert_eq!(events, whole, "decoding depends on the framing");

    // What the watch loop does with them.
    let mut have: Option<Snapshot> = None;
    let mut assembly = outpost_proto::SnapshotAssembly::default();
    for event in events {
        let Ok(event) = event else { break };
        match event {
            WatchEvent::Snapshot { snapshot } => have = Some(snapshot),
            part @ (WatchEvent::SnapshotBegin { .. }
            | WatchEvent::SnapshotPart { .. }
            | WatchEvent::SnapshotEnd { .. }) => match assembly.take(part) {
                Ok(Some(snapshot)) => have = Some(snapshot),
                Ok(None) => {}
                Err(_) => break,
            },
            WatchEvent::Delta { delta } => {
                let Some(before) = have.clone() else { break };
                let mut next = before.clone();
                if next.apply(&delta).is_err() {
                    assert_ne!(delta.base, before.revision);
                    assert_eq!(next, before, "a refused delta changed the snapshot");
                    break;
                }
                check_delta(&before, &next, &delta);
                have = Some(next);
            }
            WatchEvent::Heartbeat { revision } => {
                let at = have.as_ref().map_or(0, |s| s.revision);
                let _ = revision.saturating_sub(at);
            }
        }
    }
});
