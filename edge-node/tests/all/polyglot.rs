//! "Any language": the C, JavaScript (componentize-js) and Python
//! (componentize-py) hello workers served side by side by one node.
//!
//! The JS and Python components are ~13-18 MB and need npm/pip toolchains,
//! so they are not committed: `guests/build.sh js python` builds them into
//! `guests/out/`, and CI (`.ci/run`) then runs this test with `--ignored`.

use std::path::PathBuf;

use crate::support::{TestNode, app};
use outpost_runtime::Limits;
use outpost_test_fixtures as fixtures;

fn built(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/out")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `guests/build.sh js python` first",
            path.display()
        )
    })
}

#[tokio::test]
#[ignore = "needs guests/build.sh js python (npm + pip toolchains); CI runs it"]
async fn c_javascript_and_python_workers_serve_side_by_side() {
    let c = std::fs::read(fixtures::c_guest("hello")).unwrap();
    let node = TestNode::start(vec![
        (&["c.example.com"], app("t", "c", c, Limits::default())),
        (
            &["js.example.com"],
            app("t", "js", built("js-hello.wasm"), Limits::default()),
        ),
        (
            &["py.example.com"],
            app("t", "py", built("python-hello.wasm"), Limits::default()),
        ),
    ])
    .await;
    // Several rounds: a JS component cannot serve two requests on one
    // instance, so this also proves every request gets a fresh one.
    for _ in 0..5 {
        for (host, want) in [
            ("c.example.com", "Hello from C!\n"),
            ("js.example.com", "Hello from JavaScript!\n"),
            ("py.example.com", "Hello from Python!\n"),
        ] {
            let r = node.get(host, "/").await;
            assert_eq!(
                (r.status.as_u16(), r.text().as_str()),
                (200, want),
                "{host}"
            );
            assert!(r.outpost_error().is_none());
        }
    }
    let text = node.scrape().await;
    for app in ["c", "js", "py"] {
        let line =
            format!(r#"outpost_http_requests_total{{app="{app}",status="2xx",tenant="t"}} 5"#);
        assert!(text.contains(&line), "missing {line}");
    }
}
