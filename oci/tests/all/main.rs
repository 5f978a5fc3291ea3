//! The OCI layer against a real registry (Debian's `docker-registry`,
//! CNCF distribution 2.8) on a loopback port.

use outpost_oci::{OciError, Registry, RegistryConfig, digest_of};
use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::registry::Registry as TestRegistry;

fn client(registry: &TestRegistry) -> Registry {
    Registry::new(&RegistryConfig {
        url: registry.url("outpost/modules"),
        ..RegistryConfig::default()
    })
    .unwrap()
}

/// `GET` of a path on the registry, with an `Accept` header; the body.
fn get(registry: &TestRegistry, path: &str, accept: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(registry.addr()).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n",
        registry.addr()
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_pushed_once_is_pulled_by_digest_as_a_wasm_artifact() {
    let registry = TestRegistry::start();
    let oci = client(&registry);
    let wasm = fixtures::hello("from the registry\n");
    let digest = digest_of(&wasm);
    assert!(!oci.exists(&digest).await.unwrap());
    assert!(oci.pull(&digest).await.unwrap().is_none());

    oci.push(&digest, &wasm).await.unwrap();
    // Pushing again (another control plane, a retry) changes nothing.
    oci.push(&digest, &wasm).await.unwrap();
    assert!(oci.exists(&digest).await.unwrap());
    assert_eq!(oci.pull(&digest).await.unwrap().unwrap(), wasm);

    // What other OCI tools see: a manifest tagged sha256-<hex> whose one
    // layer is the component.
    let hex = digest.trim_start_matches("sha256:");
    let manifest = get(
        &registry,
        &format!("/v2/outpost/modules/manifests/sha256-{hex}"),
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert!(manifest.starts_with("HTTP/1.1 200"), "{manifest}");
    let body = &manifest[manifest.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(json["layers"][0]["digest"], digest.as_str());
    assert_eq!(json["layers"][0]["size"], wasm.len());
    assert_eq!(
        json["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_do_not_match_their_digest_are_refused_both_ways() {
    let registry = TestRegistry::start();
    let oci = client(&registry);
    let wasm = fixtures::hello("tampered\n");
    let digest = digest_of(&wasm);
    let other = digest_of(b"something else");
    assert!(matches!(
        oci.push(&other, &wasm).await,
        Err(OciError::Mismatch(_))
    ));
    assert!(matches!(
        oci.pull("sha256:not-hex").await,
        Err(OciError::Digest(_))
    ));

    oci.push(&digest, &wasm).await.unwrap();
    // Someone with the registry's disk replaces the blob's bytes.
    let hex = digest.trim_start_matches("sha256:");
    let data = registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut evil = wasm.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    std::fs::write(&data, &evil).unwrap();
    let pulled = oci.pull(&digest).await;
    assert!(pulled.is_err(), "a tampered blob was accepted: {pulled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_an_error_and_its_return_is_served() {
    let mut registry = TestRegistry::start();
    let oci = client(&registry);
    let wasm = fixtures::hello("outage\n");
    let digest = digest_of(&wasm);
    oci.push(&digest, &wasm).await.unwrap();
    registry.stop();
    let started = std::time::Instant::now();
    let err = oci.pull(&digest).await.unwrap_err();
    assert!(matches!(err, OciError::Registry { .. }), "{err}");
    // Connection refused on loopback: well inside the 10 s timeout.
    assert!(started.elapsed() < std::time::Duration::from_secs(11));
    registry.restart();
    assert_eq!(oci.pull(&digest).await.unwrap().unwrap(), wasm);
}
