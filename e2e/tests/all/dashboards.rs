//! The Grafana dashboards (`deploy/grafana/dashboards/*.json`) and the
//! Prometheus alert rules (`deploy/prometheus/alerts.yml`) query only what
//! the code exports: a real control plane and a real edge node in sync mode
//! serve a little traffic (HTTP, a 404, HTTPS with a tenant certificate),
//! then every metric name, label name and exact label value used in a query
//! must be found in their live `/metrics` text. A renamed metric or a typo
//! in a dashboard fails here, listing what is missing.
//!
//! Also checked: dashboards are valid JSON with unique uids and, per
//! dashboard, unique panel ids and titles; every panel uses the
//! `${DS_PROMETHEUS}` data-source variable; every `$variable` in a query is
//! defined; jobs are `outpost-edge-node` / `outpost-control-plane`; every
//! alert has a severity, a summary and a description.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{ControlPlane, EdgeNode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use outpost_test_fixtures as fixtures;
use serde_json::{Value, json};

/// The data-source variable every dashboard panel and target goes through.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";
/// Scrape job names the rules and dashboards assume.
const JOBS: [&str; 2] = ["outpost-edge-node", "outpost-control-plane"];
/// Labels Prometheus adds at scrape time (absent from the in-process text).
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
/// Grafana's built-in variables.
const GRAFANA_BUILTINS: [&str; 5] = [
    "__rate_interval",
    "__interval",
    "__range",
    "__interval_ms",
    "__range_s",
];

// ----------------------------------------------------------------------------
// The exposition text: which series names exist, with which labels/values.

/// What a scrape exports: series name → label name → values seen.
#[derive(Debug, Default)]
struct Exported {
    /// `# TYPE` families: name → type.
    families: BTreeMap<String, String>,
    /// Sample names (histograms as `_bucket`/`_sum`/`_count`) → labels.
    series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exported {
    fn parse(text: &str) -> Exported {
        let mut out = Exported::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                    continue;
                };
                out.families.insert(name.into(), kind.into());
                // A family with no sample yet still names its series.
                let names: Vec<String> = match kind {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .collect(),
                    "summary" => vec![name.into(), format!("{name}_sum"), format!("{name}_count")],
                    _ => vec![name.into()],
                };
                for n in names {
                    out.series.entry(n).or_default();
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..end];
            let labels = out.series.entry(name.into()).or_default();
            if line[end..].starts_with('{') {
                for (label, value) in parse_label_pairs(&line[end + 1..]) {
                    labels.entry(label).or_default().insert(value);
                }
            }
        }
        out
    }

    fn merge(mut self, other: Exported) -> Exported {
        self.families.extend(other.families);
        for (name, labels) in other.series {
            let mine = self.series.entry(name).or_default();
            for (label, values) in labels {
                mine.entry(label).or_default().extend(values);
            }
        }
        self
    }
}

/// `a="x",b="y"} 1` → `[(a, x), (b, y)]` (stops at the closing brace).
fn parse_label_pairs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(',' | ' ')) {
            chars.next();
        }
        let mut label = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == '}' {
                break;
            }
            label.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((label.trim().into(), value));
    }
}

// ----------------------------------------------------------------------------
// PromQL: just enough of a tokenizer to find metric selectors.

/// One `op "value"` matcher inside `{…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// A metric name in a query and the matchers written right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

/// Every `outpost_*` metric selector in a PromQL expression (string
/// literals and `#` comments skipped), and every `up{…}` selector too (to
/// check its job names).
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == b'.' {
            // Numbers and durations (0.05, 1e-9, 5m): never metric names.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let ident = &expr[start..i];
            // `$tenant`: a Grafana variable, not an identifier.
            let variable = start > 0 && (b[start - 1] == b'$' || b[start - 1] == b'{');
            let metric =
                ident.starts_with("outpost_") || ident.starts_with("process_") || ident == "up";
            if variable || !metric {
                continue;
            }
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let mut matchers = Vec::new();
            if j < b.len() && b[j] == b'{' {
                let (m, next) = parse_matchers(expr, j + 1);
                matchers = m;
                i = next;
            } else if ident == "up" {
                continue; // `up` only as a selector with matchers
            }
            out.push(Selector {
                metric: ident.into(),
                matchers,
            });
        } else {
            i += 1;
        }
    }
    out
}

/// Index just past the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' && quote != b'`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Parses `label op "value", …}` from `start`; returns the matchers and the
/// index past the closing brace.
fn parse_matchers(expr: &str, start: usize) -> (Vec<Matcher>, usize) {
    let b = expr.as_bytes();
    let mut i = start;
    let mut out = Vec::new();
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() || b[i] == b'}' {
            return (out, i + 1);
        }
        let l = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let label = expr[l..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let o = i;
        while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = expr[o..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if label.is_empty() || op.is_empty() || i >= b.len() || b[i] != b'"' {
            // Not a matcher list we understand: report it as a bad label.
            out.push(Matcher {
                label: format!("<unparsed {:?}>", &expr[l..]),
                op: String::new(),
                value: String::new(),
            });
            return (out, b.len());
        }
        let end = skip_string(b, i);
        let value = expr[i + 1..end - 1].replace("\\\"", "\"");
        out.push(Matcher { label, op, value });
        i = end;
    }
}

/// `$name` and `${name}` (also `${name:fmt}`) variables in a query.
fn variables(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let mut j = i + 1;
            let braced = j < b.len() && b[j] == b'{';
            if braced {
                j += 1;
            }
            let s = j;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > s {
                out.insert(expr[s..j].to_string());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// What is wrong with `expr` against `exported`; `owner` names the query.
fn check_expr(owner: &str, expr: &str, exported: &Exported, problems: &mut Vec<String>) {
    let found = selectors(expr);
    // `process_*` are the standard series of the process collector (the
    // node's resident memory); they are checked against the scrape too.
    let ours = |m: &str| m.starts_with("outpost_") || m.starts_with("process_");
    if !found.iter().any(|s| ours(&s.metric)) && !expr.contains("up{") {
        problems.push(format!("{owner}: no outpost_* metric in {expr:?}"));
    }
    for sel in found {
        if sel.metric == "up" {
            for m in &sel.matchers {
                if m.label == "job" && !JOBS.contains(&m.value.as_str()) {
                    problems.push(format!("{owner}: job {:?} is neither of {JOBS:?}", m.value));
                }
            }
            continue;
        }
        let Some(labels) = exported.series.get(&sel.metric) else {
            let hint = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| sel.metric.strip_suffix(s))
                .filter(|base| exported.families.contains_key(*base))
                .map(|base| format!(" ({base} is a {})", exported.families[base]))
                .or_else(|| {
                    (exported.families.get(&sel.metric).map(String::as_str) == Some("histogram"))
                        .then(|| " (a histogram: use _bucket, _sum or _count)".to_string())
                })
                .unwrap_or_default();
            problems.push(format!(
                "{owner}: MISSING metric {}{hint} — not in the live scrape",
                sel.metric
            ));
            continue;
        };
        for m in &sel.matchers {
            if TARGET_LABELS.contains(&m.label.as_str()) {
                continue;
            }
            let Some(values) = labels.get(&m.label) else {
                problems.push(format!(
                    "{owner}: {} has no label {:?} (it has {:?})",
                    sel.metric,
                    m.label,
                    labels.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            if m.op == "=" && !m.value.contains('$') && !values.contains(&m.value) {
                problems.push(format!(
                    "{owner}: {}{{{}=\"{}\"}} matches nothing exported (values: {values:?})",
                    sel.metric, m.label, m.value
                ));
            }
        }
    }
}

// ----------------------------------------------------------------------------
// The files.

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `(file name, parsed JSON)` of every dashboard, sorted by name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("deploy/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "expected the four dashboards in {dir:?}");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), value)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(list: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        out.push(p);
        out.extend(panels(&p["panels"]));
    }
    out
}

/// Checks one dashboard's structure; returns `(query owner, expr)` pairs of
/// its targets and template-variable queries.
fn dashboard_queries(file: &str, d: &Value, problems: &mut Vec<String>) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for key in ["uid", "title"] {
        if d[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{file}: no {key}"));
        }
    }
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut defined: BTreeSet<String> = GRAFANA_BUILTINS.iter().map(|s| s.to_string()).collect();
    let mut has_ds_var = false;
    for v in &vars {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if v["type"] == "datasource" {
            has_ds_var |= format!("${{{name}}}") == DATASOURCE_UID && v["query"] == "prometheus";
        }
        if v["type"] == "query" {
            if v["datasource"]["uid"] != DATASOURCE_UID {
                problems.push(format!("{file}: variable {name} has another data source"));
            }
            let q = v["definition"].as_str().unwrap_or_default();
            // label_values(METRIC{…}, LABEL): the label must exist too.
            let owner = format!("{file} variable ${name}");
            if let Some(label) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, label)| (sel.trim(), label.trim()))
            {
                queries.push((owner.clone(), label.0.to_string()));
                queries.push((
                    owner,
                    format!("{}{{{}=~\".*\"}}", first_metric(label.0), label.1),
                ));
            } else {
                problems.push(format!("{owner}: not label_values(metric, label): {q:?}"));
            }
        }
        defined.insert(name);
    }
    if !has_ds_var {
        problems.push(format!(
            "{file}: no datasource variable {DATASOURCE_UID} of type prometheus"
        ));
    }
    let all = panels(&d["panels"]);
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        match p["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => problems.push(format!("{file}: panel id {id} is used twice")),
            None => problems.push(format!("{file}: panel {title:?} has no id")),
        }
        if title.is_empty() {
            problems.push(format!("{file}: a panel has no title"));
        } else if !titles.insert(title.clone()) {
            problems.push(format!("{file}: panel title {title:?} is used twice"));
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != DATASOURCE_UID {
            problems.push(format!(
                "{file}: panel {title:?} does not use {DATASOURCE_UID}"
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{file}: panel {title:?} has no query"));
        }
        for t in targets {
            if t["datasource"]["uid"] != DATASOURCE_UID {
                problems.push(format!(
                    "{file}: a query of {title:?} does not use {DATASOURCE_UID}"
                ));
            }
            let expr = t["expr"].as_str().unwrap_or_default().to_string();
            let owner = format!(
                "{file} panel {title:?} ({})",
                t["refId"].as_str().unwrap_or("?")
            );
            for var in variables(&expr) {
                if !defined.contains(&var) {
                    problems.push(format!(
                        "{owner}: ${var} is not a variable of this dashboard"
                    ));
                }
            }
            queries.push((owner, expr));
        }
    }
    queries
}

/// The first `outpost_*` identifier of a selector.
fn first_metric(selector: &str) -> String {
    selectors(selector)
        .into_iter()
        .map(|s| s.metric)
        .next()
        .unwrap_or_default()
}

/// The `expr:` of every rule in alerts.yml (plain or `|`/`>` block
/// scalars), and problems with its alerts' labels and annotations.
fn alert_rules(problems: &mut Vec<String>) -> Vec<(String, String)> {
    let path = repo_root().join("deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut alert = String::new();
    let mut blocks: Vec<(String, String)> = Vec::new(); // (alert, its whole text)
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_string();
            blocks.push((alert.clone(), String::new()));
        }
        if let Some((_, body)) = blocks.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            value.trim_matches(|c| c == '\'' || c == '"').to_string()
        };
        rules.push((format!("alerts.yml {alert}"), expr));
    }
    assert!(
        rules.len() >= 5,
        "too few rules found in {}",
        path.display()
    );
    let mut names = BTreeSet::new();
    for (name, body) in &blocks {
        if !names.insert(name) {
            problems.push(format!("alerts.yml: alert {name} is defined twice"));
        }
        for want in ["expr:", "severity:", "summary:", "description:"] {
            if !body.contains(want) {
                problems.push(format!("alerts.yml: alert {name} has no {want}"));
            }
        }
        if !["critical", "warning", "info"]
            .iter()
            .any(|s| body.contains(&format!("severity: {s}")))
        {
            problems.push(format!(
                "alerts.yml: alert {name}: severity not critical|warning|info"
            ));
        }
    }
    rules
}

/// Every problem of the dashboards and rules against `exported`, and the
/// metric families they use.
fn check_all(exported: &Exported) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = Vec::new();
    let mut queries = Vec::new();
    let mut uids = BTreeSet::new();
    for (file, d) in dashboards() {
        if !uids.insert(d["uid"].to_string()) {
            problems.push(format!(
                "{file}: uid {} is used by another dashboard",
                d["uid"]
            ));
        }
        queries.extend(dashboard_queries(&file, &d, &mut problems));
    }
    let from_dashboards = queries.len();
    queries.extend(alert_rules(&mut problems));
    println!(
        "checking {from_dashboards} dashboard queries (panel targets and variables) and {} alert rules",
        queries.len() - from_dashboards
    );
    let mut used = BTreeSet::new();
    for (owner, expr) in &queries {
        check_expr(owner, expr, exported, &mut problems);
        for s in selectors(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| s.metric.strip_suffix(suffix))
                .filter(|b| exported.families.get(*b).is_some_and(|t| t == "histogram"))
                .unwrap_or(&s.metric);
            if base != "up" {
                used.insert(base.to_string());
            }
        }
    }
    (problems, used)
}

// ----------------------------------------------------------------------------
// The tests.

/// The checker itself catches what it is for (no network needed).
#[test]
fn the_checker_catches_typos_missing_metrics_and_bad_labels() {
    let exported = Exported::parse(
        "# HELP outpost_http_requests_total x\n\
         # TYPE outpost_http_requests_total counter\n\
         outpost_http_requests_total{app=\"web\",status=\"5xx\",tenant=\"acme\"} 1\n\
         # TYPE outpost_http_request_duration_seconds histogram\n\
         outpost_http_request_duration_seconds_bucket{app=\"web\",tenant=\"acme\",le=\"+Inf\"} 1\n\
         outpost_http_request_duration_seconds_sum{app=\"web\",tenant=\"acme\"} 0.1\n\
         outpost_http_request_duration_seconds_count{app=\"web\",tenant=\"acme\"} 1\n",
    );
    let problems = |expr: &str| {
        let mut p = Vec::new();
        check_expr("t", expr, &exported, &mut p);
        p
    };
    let good = r#"sum by (tenant) (rate(outpost_http_requests_total{tenant=~"$tenant",status="5xx",instance=~"$instance"}[$__rate_interval])) / 1e-9 > 0.05
        and histogram_quantile(0.99, sum by (le) (rate(outpost_http_request_duration_seconds_bucket[5m]))) # outpost_nope in a comment
        and up{job="outpost-edge-node"} == 0 and on() vector(1) unless label_replace(vector(1), "x", "outpost_nope", "", "")"#;
    assert_eq!(problems(good), Vec::<String>::new());
    for (bad, want) in [
        (
            "rate(outpost_http_requests_totl[5m])",
            "MISSING metric outpost_http_requests_totl",
        ),
        ("outpost_http_request_duration_seconds", "use _bucket"),
        ("outpost_http_request_duration_seconds_bukket", "MISSING"),
        (
            "outpost_http_requests_total{stauts=\"5xx\"}",
            "no label \"stauts\"",
        ),
        (
            "outpost_http_requests_total{status=\"5XX\"}",
            "matches nothing",
        ),
        ("up{job=\"edge\"} == 0", "is neither of"),
        ("vector(1)", "no outpost_* metric"),
    ] {
        let got = problems(bad);
        assert!(
            got.iter().any(|p| p.contains(want)),
            "{bad:?} should report {want:?}, got {got:?}"
        );
    }
    assert_eq!(
        variables("rate(x{a=~\"$tenant\",b=\"${app:regex}\"}[$__rate_interval])"),
        ["__rate_interval", "app", "tenant"]
            .map(String::from)
            .into()
    );
}

async fn get_text(url: &str) -> String {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = crate::support::client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_use_only_exported_metrics() {
    use fixtures::tls::{Client, TestCa, https_get};
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let token = cp.acme_with_web_app().await;
    cp.deploy(&token, fixtures::hello("dash\n")).await;
    // A worker whose origin fetches go through the edge cache.
    let (origin, _) = crate::edge_cache::origin().await;
    crate::edge_cache::add_proxy_app(&cp, &token, "cached", "cached.example.com", origin).await;
    let node = crate::edge_cache::node(&cp, cache.path(), "edge-1").await;
    node.until_serves("web.example.com", "dash\n").await;
    crate::edge_cache::until_up(&node, "cached.example.com").await;
    assert_eq!(
        crate::edge_cache::get(&node, "cached.example.com", "/up")
            .await
            .0,
        "HIT"
    );

    // Traffic: a few answers, and a 404 for a host nobody routes.
    for _ in 0..3 {
        assert_eq!(node.get("web.example.com").await, (200, "dash\n".into()));
    }
    assert_eq!(node.get("nobody.example.com").await.0, 404);

    // HTTPS: the tenant's certificate, then a handshake that presents it
    // (the attempts before it reaches the node fail their verification).
    let ca = TestCa::new();
    let roots = [ca.root()];
    let issued = ca.issue(&["web.example.com"]);
    let (status, body) = cp
        .json(
            "PUT",
            "/v1/certificates/web.example.com",
            &token,
            json!({"cert_chain_pem": issued.chain_pem, "private_key_pem": issued.key_pem}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    loop {
        let client = Client {
            roots: &roots,
            alpn: &["h2"],
            tls12_only: false,
        };
        if let Ok(r) = https_get(client, node.https, "web.example.com", "web.example.com").await
            && r.peer_leaf == issued.leaf_der
        {
            assert_eq!((r.status, r.body.as_str()), (200, "dash\n"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the node never presented the uploaded certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The control plane has the node's report (per-node series).
    let cp_url = format!("http://{}/metrics", cp.addr);
    let started = Instant::now();
    let cp_text = loop {
        let text = get_text(&cp_url).await;
        if text.contains("outpost_cp_node_lag_revisions{node=\"edge-1\"}") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "edge-1 never reported to the control plane:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let node_text = node.metrics.render();
    let value = |series: &str| -> f64 {
        node_text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{node_text}"))
    };
    // until_serves and the HTTPS retries add to these: at least, not exactly.
    assert!(value(r#"outpost_http_requests_total{app="web",status="2xx",tenant="acme"}"#) >= 4.0);
    assert!(value(r#"outpost_http_unrouted_requests_total{reason="unknown_host"}"#) >= 1.0);
    assert!(value(r#"outpost_tls_handshakes_total{result="ok",version="TLSv1_3"}"#) >= 1.0);

    let node_exported = Exported::parse(&node_text);
    let cp_exported = Exported::parse(&cp_text);
    println!(
        "live scrape: {} node families, {} control-plane families",
        node_exported.families.len(),
        cp_exported.families.len()
    );
    let exported = node_exported.merge(cp_exported);
    let (problems, used) = check_all(&exported);
    let unused: Vec<_> = exported
        .families
        .keys()
        .filter(|f| !used.contains(*f))
        .collect();
    println!(
        "{} exported families used by the dashboards and rules; not used: {unused:?}",
        used.len()
    );
    let missing: BTreeSet<_> = problems.iter().filter(|p| p.contains("MISSING")).collect();
    for p in &problems {
        println!("PROBLEM: {p}");
    }
    assert!(
        problems.is_empty(),
        "{} problem(s), {} missing metric(s):\n{}",
        problems.len(),
        missing.len(),
        problems.join("\n")
    );

    node.stop();
    cp.stop().await;
}

/// `promtool check metrics` (names, units, types, help) on `text`; its
/// complaints, empty when it is happy.
fn promtool_complaints(text: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("{}: {said}", out.status)
    }
}

/// A node and a control plane that have served nothing yet export what
/// promtool accepts, and every series the dashboards and alert rules read
/// already exists, at 0 for each label value the code knows in advance
/// (TLS results and versions): a panel never shows "no data" for lack of
/// traffic. Series per tenant and app come with the apps, per node with
/// the nodes ([`PER_APP_OR_NODE`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_and_control_plane_export_clean_complete_metrics() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let node = EdgeNode::start(cp.addr, cache.path(), "edge-1").await;
    let node_text = node.metrics.render();
    let cp_text = get_text(&format!("http://{}/metrics", cp.addr)).await;
    for (who, text) in [("edge node", &node_text), ("control plane", &cp_text)] {
        let complaints = promtool_complaints(text);
        assert!(complaints.is_empty(), "promtool on the {who}: {complaints}");
    }
    let exported = Exported::parse(&node_text).merge(Exported::parse(&cp_text));
    let (problems, _) = check_all(&exported);
    let unexpected: Vec<_> = problems
        .iter()
        .filter(|p| {
            !PER_APP_OR_NODE
                .iter()
                .any(|family| p.contains(&format!("MISSING metric {family}")))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "missing from a fresh node or control plane:\n{unexpected:#?}"
    );
    assert!(
        node_text
            .lines()
            .any(|l| l == r#"outpost_tls_handshakes_total{result="timeout",version="none"} 0"#),
        "{node_text}"
    );
}

/// Families labelled by tenant and app (node) or by node and tenant
/// (control plane), and the edge cache's by tenant: their series come
/// with the apps, nodes and tenants' fetches they describe, so a fresh
/// process with none has none.
const PER_APP_OR_NODE: &[&str] = &[
    "outpost_http_requests_total",
    "outpost_http_request_duration_seconds",
    "outpost_runtime_instantiate_duration_seconds",
    "outpost_runtime_fuel_consumed_total",
    "outpost_runtime_instances_in_flight",
    "outpost_runtime_limit_kills_total",
    "outpost_runtime_traps_total",
    "outpost_runtime_guest_log_dropped_bytes_total",
    "outpost_runtime_subrequests_total",
    "outpost_runtime_compile_duration_seconds",
    "outpost_runtime_background_requests_total",
    "outpost_runtime_demotions_total",
    "outpost_cp_deployments_total",
    "outpost_cache_requests_total",
    "outpost_cache_coalesced_total",
    "outpost_cache_stored_bytes",
    "outpost_cache_evictions_total",
    "outpost_cp_node_applied_revision",
    "outpost_cp_node_lag_revisions",
    "outpost_cp_node_last_contact_timestamp_seconds",
];
