//! A tenant's project on disk: `outpost new` writes one from the
//! templates inside this binary, `outpost build` builds it and checks the
//! result is a component the nodes will run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use outpost_runtime::{Metrics, PoolConfig, Runtime};

use crate::args::{Build, Lang, New};
use crate::manifest::{self, Loaded};

/// The WIT the nodes implement (wasmtime-wasi-http's, copied into
/// `cli/templates/wit`; a test keeps the copy equal to the crate's).
const WIT_DEPS: &[(&str, &str)] = &[
    ("cli.wit", include_str!("../templates/wit/deps/cli.wit")),
    (
        "clocks.wit",
        include_str!("../templates/wit/deps/clocks.wit"),
    ),
    (
        "filesystem.wit",
        include_str!("../templates/wit/deps/filesystem.wit"),
    ),
    ("http.wit", include_str!("../templates/wit/deps/http.wit")),
    ("io.wit", include_str!("../templates/wit/deps/io.wit")),
    (
        "random.wit",
        include_str!("../templates/wit/deps/random.wit"),
    ),
    (
        "sockets.wit",
        include_str!("../templates/wit/deps/sockets.wit"),
    ),
];

/// A template file: its path in the project and its text (`{{name}}` is
/// the app's name, `{{crate_name}}` the same with `-` as `_`, as rustc
/// names a crate's artifacts).
struct File(&'static str, &'static str);

const C: &[File] = &[
    File("outpost.toml", include_str!("../templates/c/outpost.toml")),
    File("app.c", include_str!("../templates/c/app.c")),
    File("build.sh", include_str!("../templates/c/build.sh")),
    File("README.md", include_str!("../templates/c/README.md")),
    File(".gitignore", include_str!("../templates/c/gitignore")),
];

const JS: &[File] = &[
    File("outpost.toml", include_str!("../templates/js/outpost.toml")),
    File("app.js", include_str!("../templates/js/app.js")),
    File("package.json", include_str!("../templates/js/package.json")),
    File("build.sh", include_str!("../templates/js/build.sh")),
    File("README.md", include_str!("../templates/js/README.md")),
    File(".gitignore", include_str!("../templates/js/gitignore")),
];

const PYTHON: &[File] = &[
    File(
        "outpost.toml",
        include_str!("../templates/python/outpost.toml"),
    ),
    File("app.py", include_str!("../templates/python/app.py")),
    File("build.sh", include_str!("../templates/python/build.sh")),
    File("README.md", include_str!("../templates/python/README.md")),
    File(".gitignore", include_str!("../templates/python/gitignore")),
];

/// The `wasi` crate carries its own wasi:http bindings (and WIT), so a
/// Rust project gets no `wit/`. Its manifest is `Cargo.toml.template` in
/// the CLI's tree: a file named `Cargo.toml` there would be a package
/// (with a name that is not one) to cargo and to editors.
const RUST: &[File] = &[
    File(
        "outpost.toml",
        include_str!("../templates/rust/outpost.toml"),
    ),
    File(
        "Cargo.toml",
        include_str!("../templates/rust/Cargo.toml.template"),
    ),
    File("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    File("README.md", include_str!("../templates/rust/README.md")),
    File(".gitignore", include_str!("../templates/rust/gitignore")),
];

/// The wasi:http version componentize-js 0.23 embeds: it finds the
/// handler export only if the world names exactly this one.
const JS_HTTP_VERSION: &str = "0.2.10";

/// `text` (a WIT file of [`WIT_DEPS`]) relabelled from wasi version
/// `have` to the older `want`; items added after `want` are hidden behind
/// a feature gate nobody enables (a package may not refer to a version
/// newer than its own). 0.2.x releases are compatible, so a component
/// built against the relabelled WIT runs on a host of `have`.
fn relabel(text: &str, have: &str, want: &str) -> String {
    const SINCE: &str = "@since(version = ";
    let key = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let text = text.replace(&format!("@{have}"), &format!("@{want}"));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(SINCE) {
        out.push_str(&rest[..at]);
        let after = &rest[at + SINCE.len()..];
        let end = after.find(')').unwrap_or(after.len());
        let version = after[..end].trim();
        if key(version) > key(want) {
            out.push_str(&format!(
                "@unstable(feature = newer-than-{})",
                want.replace('.', "-")
            ));
        } else {
            out.push_str(&rest[at..at + SINCE.len() + end + 1]);
        }
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// The version of wasi:http in [`WIT_DEPS`].
fn http_version() -> &'static str {
    let http = WIT_DEPS
        .iter()
        .find(|(name, _)| *name == "http.wit")
        .expect("listed")
        .1;
    http.lines()
        .find_map(|l| l.strip_prefix("package wasi:http@")?.strip_suffix(';'))
        .expect("http.wit names its package")
}

/// `outpost new NAME --lang LANG [--dir DIR]`.
pub fn new(cmd: New) -> anyhow::Result<()> {
    if !manifest::name_ok(&cmd.name) {
        bail!(
            "app name {:?} must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'",
            cmd.name
        );
    }
    if matches!(cmd.lang, Lang::Rust) && cmd.name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!(
            "app name {:?} is also the Rust package's name, which cannot start with a digit",
            cmd.name
        );
    }
    let dir = cmd.dir.clone().unwrap_or_else(|| PathBuf::from(&cmd.name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; pick another NAME or --dir",
            dir.display()
        );
    }
    let files = match cmd.lang {
        Lang::C => C,
        Lang::Js => JS,
        Lang::Python => PYTHON,
        Lang::Rust => RUST,
    };
    let crate_name = cmd.name.replace('-', "_");
    for File(path, text) in files {
        let text = text
            .replace("{{name}}", &cmd.name)
            .replace("{{crate_name}}", &crate_name);
        write(&dir, path, &text)?;
    }
    // The WIT the app is built against, relabelled for its toolchain; a
    // Rust project's comes inside the `wasi` crate.
    let have = http_version();
    let version = match cmd.lang {
        Lang::Js => Some(JS_HTTP_VERSION),
        Lang::C | Lang::Python => Some(have),
        Lang::Rust => None,
    };
    if let Some(version) = version {
        write(
            &dir,
            "wit/app.wit",
            &format!(
                "// The world this app is built for: wasi:http/proxy, plus\n// wasi:cli/environment for its env variables.\npackage outpost:app;\n\nworld app {{\n  include wasi:http/proxy@{version};\n  import wasi:cli/environment@{version};\n}}\n"
            ),
        )?;
        for (name, text) in WIT_DEPS {
            write(
                &dir,
                &format!("wit/deps/{name}"),
                &relabel(text, have, version),
            )?;
        }
    }
    println!(
        "Created {} ({:?}) in {}.",
        cmd.name,
        cmd.lang,
        dir.display()
    );
    let setup = match cmd.lang {
        Lang::Rust => "\n  rustup target add wasm32-wasip2   # once; `cargo test` runs without it",
        Lang::C | Lang::Js | Lang::Python => "",
    };
    println!(
        "Next:\n  cd {}{setup}\n  outpost build\n  outpost dev --watch",
        dir.display()
    );
    Ok(())
}

fn write(dir: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// `outpost build [--manifest FILE]`.
pub fn build_command(cmd: Build) -> anyhow::Result<()> {
    let loaded = manifest::load(cmd.manifest.as_deref())?;
    let (path, bytes) = build(&loaded)?;
    println!(
        "Built {} ({bytes} bytes): a wasi:http/proxy component the nodes can run.",
        path.display()
    );
    Ok(())
}

/// Runs the manifest's build command in its directory (output goes to
/// this process's), then checks the component. Its path and size.
pub fn build(loaded: &Loaded) -> anyhow::Result<(PathBuf, u64)> {
    let Some(build) = &loaded.manifest.build else {
        bail!(
            "{} has no [build] command; add one, or build {} yourself",
            loaded.path.display(),
            loaded.manifest.app.component
        );
    };
    eprintln!("Building {}: {}", loaded.manifest.app.name, build.command);
    let status = Command::new("sh")
        .arg("-c")
        .arg(&build.command)
        .current_dir(&loaded.dir)
        .status()
        .with_context(|| format!("running sh -c {:?}", build.command))?;
    if !status.success() {
        bail!("the build failed ({status}): {}", build.command);
    }
    let component = loaded.component();
    if !component.is_file() {
        bail!(
            "the build succeeded but {} is not there (app.component in {})",
            component.display(),
            loaded.path.display()
        );
    }
    let bytes = check(&component)?;
    Ok((component, bytes))
}

/// Compiles and links the component as a node would: a core module, a
/// component that does not export the HTTP handler, or one importing what
/// the nodes do not provide is an error naming it. Its size.
pub fn check(path: &Path) -> anyhow::Result<u64> {
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let runtime = Runtime::new(&PoolConfig::for_validation(), Metrics::new())
        .context("starting wasmtime to check the component")?;
    runtime
        .check(&path.display().to_string(), &wasm)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(wasm.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabelling_renames_versions_and_hides_what_is_newer() {
        let wit = "package wasi:http@0.2.12;\nuse wasi:io/streams@0.2.12.{x};\n@since(version = 0.2.0)\nold: func();\n@since(version = 0.2.11)\nnewer: func();\n";
        assert_eq!(
            relabel(wit, "0.2.12", "0.2.10"),
            "package wasi:http@0.2.10;\nuse wasi:io/streams@0.2.10.{x};\n@since(version = 0.2.0)\nold: func();\n@unstable(feature = newer-than-0-2-10)\nnewer: func();\n"
        );
        assert_eq!(relabel(wit, "0.2.12", "0.2.12"), wit);
    }
}
