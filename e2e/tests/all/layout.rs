//! The workspace's structure, checked the way a reviewer would: the
//! control plane does not depend on the edge node, each binary's `main.rs`
//! is thin, `outpost dev` has no start-up sequence of its own, and the edge
//! node's and the runtime's modules import each other without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_control_plane_does_not_depend_on_the_edge_node() {
    let manifest = read("control-plane/Cargo.toml");
    assert!(
        !manifest.contains("outpost-edge-node"),
        "control-plane/Cargo.toml names outpost-edge-node (in any table)"
    );
    let sources = rust_files(&root().join("control-plane"));
    for file in sources {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("outpost_edge_node"),
            "{} uses outpost_edge_node",
            file.display()
        );
    }
}

#[test]
fn every_main_rs_is_thin() {
    for main in [
        "edge-node/src/main.rs",
        "control-plane/src/main.rs",
        "cli/src/main.rs",
    ] {
        let lines = read(main).lines().count();
        assert!(lines < 60, "{main} has {lines} lines");
    }
}

/// `outpost dev` starts the control plane and the node through their own
/// `start` functions, not with a copy of their steps.
#[test]
fn outpost_dev_has_no_start_up_sequence_of_its_own() {
    let dev = read("cli/src/dev.rs");
    for step in [
        "Listeners::bind",
        "server::run",
        "sync::restore",
        "Node::new",
        "Runtime::new",
        "enable_compile_cache",
        "Follower",
    ] {
        assert!(!dev.contains(step), "cli/src/dev.rs calls {step} itself");
    }
    assert!(dev.contains("outpost_edge_node::start("));
    assert!(dev.contains("outpost_control_plane::start_with("));
}

#[test]
fn the_edge_node_modules_import_each_other_without_a_cycle() {
    assert_acyclic("edge-node/src");
}

#[test]
fn the_runtime_modules_import_each_other_without_a_cycle() {
    assert_acyclic("runtime/src");
}

/// The checker itself finds a cycle where there is one.
#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(dir.path().join("b.rs"), "pub struct B(crate::a::A);\n").unwrap();
    let cycle = find_cycle(&module_graph(dir.path()));
    assert_eq!(cycle.map(|c| c.len()), Some(2));
}

fn assert_acyclic(src: &str) {
    let graph = module_graph(&root().join(src));
    assert!(graph.len() > 3, "no modules found under {src}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "{src}: modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Each module file of a crate (`lib.rs` and `main.rs` left out: they are
/// roots that declare and re-export everything) and the module files its
/// `crate::`, `super::` and child-module paths name. Test modules (after
/// `#[cfg(test)]`) are left out.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    // Module path ("sync::watch") of every file.
    let mut modules = BTreeMap::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        modules.insert(parts.join("::"), file);
    }
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let here: Vec<&str> = module.split("::").collect();
        let mut edges = BTreeSet::new();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for path in paths_in(line) {
                let absolute: Vec<String> = match path.first().map(String::as_str) {
                    Some("crate") => path[1..].to_vec(),
                    Some("super") => {
                        let mut base: Vec<String> = here[..here.len().saturating_sub(1)]
                            .iter()
                            .map(|s| s.to_string())
                            .collect();
                        base.extend(path[1..].iter().cloned());
                        base
                    }
                    Some("self") => {
                        let mut base: Vec<String> = here.iter().map(|s| s.to_string()).collect();
                        base.extend(path[1..].iter().cloned());
                        base
                    }
                    // A child module named from its parent (`watch::Follower`).
                    Some(_) => {
                        let mut base: Vec<String> = here.iter().map(|s| s.to_string()).collect();
                        base.extend(path.iter().cloned());
                        base
                    }
                    None => continue,
                };
                // The longest prefix that is a module file is what it names.
                let target = (1..=absolute.len())
                    .rev()
                    .map(|n| absolute[..n].join("::"))
                    .find(|m| known.contains(m));
                if let Some(target) = target
                    && target != *module
                {
                    edges.insert(target);
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// Every `a::b::c` path in a line, split into its segments.
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_';
        if ident_start(bytes[i])
            && (i == 0
                || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':'))
        {
            let mut segments = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
                    j += 1;
                }
                segments.push(bytes[start..j].iter().collect::<String>());
                if j + 2 < bytes.len()
                    && bytes[j] == ':'
                    && bytes[j + 1] == ':'
                    && ident_start(bytes[j + 2])
                {
                    j += 2;
                } else {
                    break;
                }
            }
            if segments.len() > 1 {
                out.push(segments);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|m| m == next).unwrap();
                    return Some(stack[at..].to_vec());
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, graph, &mut state, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}
