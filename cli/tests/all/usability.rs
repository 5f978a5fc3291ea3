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

/// `outpost ARGS` with only `config` as its saved state: no URL or token
/// from the environment. (success, stdout, stderr)
fn saved_only(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("OUTPOST_CONFIG_DIR", config)
        .env_remove("OUTPOST_URL")
        .env_remove("OUTPOST_TOKEN")
        .env_remove("OUTPOST_PROFILE")
        .env_remove("OUTPOST_CA_FILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Two saved logins (a tenant's and the admin's) side by side: `whoami`
/// names who each one is and the tenant's limits, `--profile` picks one,
/// `profiles use` changes the default, `logout` forgets one (and only
/// that one), tokens are never printed, and a file written before
/// profiles existed still works.
#[test]
fn profiles_keep_several_logins_and_whoami_and_logout_act_on_one() {
    let state = tempfile::tempdir().unwrap();
    let dev = crate::support::start_dev(state.path(), &[]);
    let (tenant, admin) = (dev.tenant_token(), dev.admin_token());
    let url = format!("http://{}", dev.api);
    let config = state.path().join("profiles");
    let config_file = config.join("config.toml");

    let (ok, out, err) = saved_only(&config, &["whoami"]);
    assert!(!ok, "{out}");
    assert!(err.contains("not logged in"), "{err}");

    let (ok, out, err) = saved_only(
        &config,
        &[
            "login",
            "--profile",
            "dev",
            "--url",
            &url,
            "--token",
            &tenant,
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("as tenant dev (profile dev"), "{out}");
    let (ok, _, err) = saved_only(
        &config,
        &[
            "login",
            "--profile",
            "ops",
            "--url",
            &url,
            "--token",
            &admin,
        ],
    );
    assert!(ok, "{err}");

    // The first login became the default; --profile picks the other.
    let (ok, out, err) = saved_only(&config, &["whoami"]);
    assert!(ok, "{err}");
    assert!(out.contains("tenant dev at"), "{out}");
    assert!(out.contains("token from profile dev"), "{out}");
    assert!(out.contains("memory=128MiB"), "{out}");
    let (_, out, _) = saved_only(&config, &["whoami", "--profile", "ops"]);
    assert!(out.contains("the admin at"), "{out}");
    let (ok, _, err) = saved_only(&config, &["apps", "list", "--profile", "nosuch"]);
    assert!(!ok);
    assert!(
        err.contains("no login is saved under profile nosuch"),
        "{err}"
    );
    let (ok, _, err) = saved_only(&config, &["whoami", "--profile", "../x"]);
    assert!(!ok);
    assert!(err.contains("profile name"), "{err}");

    let (ok, list, _) = saved_only(&config, &["profiles", "list"]);
    assert!(ok);
    let json = saved_only(&config, &["--json", "profiles", "list"]).1;
    for printed in [&list, &json] {
        assert!(
            printed.contains("dev") && printed.contains("ops"),
            "{printed}"
        );
        assert!(
            !printed.contains(&tenant[4..]) && !printed.contains(&admin),
            "a token was printed: {printed}"
        );
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with('*') && l.contains("dev")),
        "{list}"
    );

    let (ok, _, err) = saved_only(&config, &["profiles", "use", "ops"]);
    assert!(ok, "{err}");
    assert!(saved_only(&config, &["whoami"]).1.contains("the admin"));

    let (ok, out, err) = saved_only(&config, &["logout"]);
    assert!(ok, "{err}");
    assert!(out.contains("profile ops"), "{out}");
    let text = std::fs::read_to_string(&config_file).unwrap();
    assert!(!text.contains(&admin), "the admin token is still saved");
    assert!(text.contains(&tenant), "logout forgot the other profile");
    // With ops gone, the default is `default` again: not saved, so the
    // command has no token.
    assert!(!saved_only(&config, &["whoami"]).0);
    assert!(saved_only(&config, &["whoami", "--profile", "dev"]).0);
    let (ok, out, _) = saved_only(&config, &["logout", "--profile", "ops"]);
    assert!(ok && out.contains("nothing to forget"), "{out}");

    // A file from before profiles: one login at the top level.
    std::fs::write(&config_file, format!("url = {url:?}\ntoken = {tenant:?}\n")).unwrap();
    let (ok, out, err) = saved_only(&config, &["whoami"]);
    assert!(ok, "{err}");
    assert!(out.contains("token from profile default"), "{out}");
}

/// `outpost cache purge` against `outpost dev`: one of URL, --key or
/// --all; the node applies it before the command answers; a bad URL is
/// the API's clear error.
#[test]
fn cache_purge_names_one_thing_and_answers_once_the_node_applied_it() {
    let state = tempfile::tempdir().unwrap();
    let dev = crate::support::start_dev(state.path(), &[]);
    let token = dev.tenant_token();
    let out = dev.ok(&token, &["cache", "purge", "--key", "news"]);
    assert!(
        out.starts_with("Purged surrogate key news on 1/1 node(s), "),
        "{out}"
    );
    let json = dev.json(&token, &["cache", "purge", "https://origin.example.com/a"]);
    assert_eq!(json["rollout"]["applied"], 1, "{json}");
    assert_eq!(
        json["purge"],
        serde_json::json!({"by": "url", "url": "https://origin.example.com/a"})
    );
    let err = dev.fails(&token, &["cache", "purge", "/relative"]);
    assert!(
        err.contains("bad_purge") || err.contains("absolute"),
        "{err}"
    );
    for args in [
        &["cache", "purge"][..],
        &["cache", "purge", "--all", "--key", "k"],
    ] {
        let out = dev.outpost(&token, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--key"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The admin has no cache: purges are a tenant's.
    let err = dev.fails(&dev.admin_token(), &["cache", "purge", "--all"]);
    assert!(err.contains("tenant token"), "{err}");
}
