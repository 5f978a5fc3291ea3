//! Reading `outpost.toml` ([`outpost_proto::manifest`]): every problem
//! reported at once, each with the line it is on.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use outpost_proto::manifest::{MANIFEST_FILE, MANIFEST_VERSION, Manifest};
use outpost_runtime::router::Route;
use toml::de::{DeTable, DeValue};

/// A manifest read from disk, with where it was.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its contents.
    pub manifest: Manifest,
    /// The file.
    pub path: PathBuf,
    /// The directory relative paths in it start from.
    pub dir: PathBuf,
}

impl Loaded {
    /// The component's path.
    pub fn component(&self) -> PathBuf {
        if self.dir == Path::new(".") {
            return PathBuf::from(&self.manifest.app.component);
        }
        self.dir.join(&self.manifest.app.component)
    }

    /// The app's routes as the control plane stores them (normalized).
    pub fn routes(&self) -> Vec<String> {
        self.manifest
            .app
            .routes
            .iter()
            .map(|r| {
                r.parse::<Route>()
                    .map_or_else(|_| r.clone(), |r| r.to_string())
            })
            .collect()
    }
}

/// `path`, or `outpost.toml` in the current directory.
pub fn load(path: Option<&Path>) -> anyhow::Result<Loaded> {
    let path = path.map_or_else(|| PathBuf::from(MANIFEST_FILE), Path::to_path_buf);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (`outpost new NAME` creates a project with one)",
            path.display()
        )
    })?;
    let manifest = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Loaded {
        manifest,
        path,
        dir,
    })
}

/// The manifest in `text`: syntax, unknown keys and types as TOML's own
/// errors say them (with line and column), then every bad value, one
/// `line N: …` each.
pub fn parse(text: &str) -> anyhow::Result<Manifest> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let problems = problems(&manifest);
    if problems.is_empty() {
        return Ok(manifest);
    }
    let spans = DeTable::parse(text).ok();
    let lines: Vec<String> = problems
        .into_iter()
        .map(
            |(at, message)| match spans.as_ref().and_then(|t| line_of(text, t.get_ref(), &at)) {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            },
        )
        .collect();
    bail!("{}", lines.join("\n"))
}

/// Where a value sits: keys from the top, then an array index.
type At = (Vec<&'static str>, Option<usize>);

/// Every bad value, with where it is.
fn problems(m: &Manifest) -> Vec<(At, String)> {
    let mut out = Vec::new();
    let app = &m.app;
    if m.manifest_version != MANIFEST_VERSION {
        out.push((
            (vec!["manifest_version"], None),
            format!(
                "manifest_version = {} is not one this outpost reads (it reads {MANIFEST_VERSION})",
                m.manifest_version
            ),
        ));
    }
    if !name_ok(&app.name) {
        out.push((
            (vec!["app", "name"], None),
            format!(
                "app.name {:?} must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'",
                app.name
            ),
        ));
    }
    if app.routes.is_empty() {
        out.push((
            (vec!["app", "routes"], None),
            "app.routes must name at least one route (HOST or HOST/PATH-PREFIX)".into(),
        ));
    }
    for (i, r) in app.routes.iter().enumerate() {
        if let Err(e) = r.parse::<Route>() {
            out.push((
                (vec!["app", "routes"], Some(i)),
                format!("route {r:?}: {e}"),
            ));
        }
    }
    for (i, h) in app.allow_outbound.iter().enumerate() {
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            out.push((
                (vec!["app", "allow_outbound"], Some(i)),
                format!("allow_outbound entry {h:?} must be a host or host:port"),
            ));
        }
    }
    if app.component.trim().is_empty() {
        out.push((
            (vec!["app", "component"], None),
            "app.component must be the path of the .wasm".into(),
        ));
    }
    for name in app.env.keys() {
        if !env_name_ok(name) {
            out.push((
                (vec!["app", "env"], None),
                format!("environment variable name {name:?} must be non-empty without '=' or NUL"),
            ));
        }
    }
    for (i, name) in app.secrets.iter().enumerate() {
        let at = (vec!["app", "secrets"], Some(i));
        if !env_name_ok(name) {
            out.push((
                at,
                format!("secret name {name:?} must be non-empty without '=' or NUL"),
            ));
        } else if app.env.contains_key(name) {
            out.push((
                at,
                format!("{name:?} is both in app.env and app.secrets: a secret's value stays out of this file"),
            ));
        } else if app.secrets[..i].contains(name) {
            out.push((at, format!("secret {name:?} is listed twice")));
        }
    }
    if let Some(build) = &m.build
        && build.command.trim().is_empty()
    {
        out.push((
            (vec!["build", "command"], None),
            "build.command must not be empty".into(),
        ));
    }
    out
}

/// The control plane's rule for app names.
pub fn name_ok(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// The 1-based line of the value at `at`, if the document has it.
fn line_of(text: &str, table: &DeTable<'_>, (keys, index): &At) -> Option<usize> {
    let (last, parents) = keys.split_last()?;
    let mut table = table;
    for key in parents {
        match table.get(*key)?.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    let value = table.get(*last)?;
    let span = match (index, value.get_ref()) {
        (Some(i), DeValue::Array(items)) => items.get(*i)?.span(),
        _ => value.span(),
    };
    Some(text[..span.start.min(text.len())].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"manifest_version = 1

[app]
name = "demo"
routes = ["demo.localhost"]
component = "app.wasm"
secrets = ["API_KEY"]

[app.env]
GREETING = "hello"

[build]
command = "make"
"#;

    #[test]
    fn a_good_manifest_reads() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.app.name, "demo");
        assert_eq!(m.app.env["GREETING"], "hello");
        assert_eq!(m.build.unwrap().command, "make");
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_its_line() {
        let text = GOOD.replace("secrets =", "secretz =");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("line 7"), "{e}");
        assert!(e.contains("secretz"), "{e}");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_line() {
        let text = GOOD
            .replace(r#"name = "demo""#, r#"name = "Demo!""#)
            .replace(
                r#"routes = ["demo.localhost"]"#,
                "routes = [\n  \"demo.localhost\",\n  \"http://x.example.com\",\n]",
            )
            .replace(r#"secrets = ["API_KEY"]"#, r#"secrets = ["GREETING"]"#);
        let e = parse(&text).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(lines[0].starts_with("line 4: app.name \"Demo!\""), "{e}");
        assert!(
            lines[1].starts_with("line 7: route \"http://x.example.com\""),
            "{e}"
        );
        assert!(lines[2].starts_with("line 10: \"GREETING\" is both"), "{e}");
    }

    #[test]
    fn a_missing_key_or_wrong_type_is_an_error() {
        let e = parse(&GOOD.replace("component = \"app.wasm\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `component`"), "{e}");
        let e = parse(&GOOD.replace("manifest_version = 1", "manifest_version = \"1\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse(&GOOD.replace("manifest_version = 1", "manifest_version = 2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: manifest_version = 2"), "{e}");
    }
}
