//! What a tenant meets before any deploy: shell completions, and errors
//! that keep their cause.

use std::process::Command;

use crate::support::BIN;

#[test]
fn completions_generate_for_bash_zsh_and_fish_and_bash_completes_subcommands() {
    for (shell, marker) in [
        ("bash", "complete -F _outpost"),
        ("zsh", "#compdef outpost"),
        ("fish", "complete -c outpost"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        assert!(script.contains("deploy"), "{shell} completes subcommands");
    }
    // Loaded into bash, the function is registered and completes `de`.
    let probe = format!(
        r#"source <("{BIN}" completions bash) && complete -p outpost &&
           COMP_WORDS=(outpost de) COMP_CWORD=1 COMP_LINE="outpost de" COMP_POINT=10 &&
           _outpost outpost de outpost && echo "${{COMPREPLY[@]}}""#
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().contains("-F _outpost outpost"),
        "{text}"
    );
    assert_eq!(
        lines.next().unwrap().trim(),
        "deploy deployments dev",
        "{text}"
    );
}

#[test]
fn a_refused_connection_says_which_url_and_asks_whether_the_control_plane_runs() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["apps", "list"])
        .env("OUTPOST_URL", format!("http://127.0.0.1:{port}"))
        .env("OUTPOST_TOKEN", "t")
        .env("OUTPOST_CONFIG_DIR", config.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "connection refused to http://127.0.0.1:{port} (is the control plane running?)"
        )),
        "{err}"
    );
    assert!(!err.contains("client error (Connect)"), "{err}");
}
