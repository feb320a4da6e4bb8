//! The module graph, checked: no two modules depend on each other (directly or around a loop), at
//! the top level of `src/` and among the files of each directory, and the protocol core stays pure
//! (no Pingora, no tokio, no I/O, nothing of the crate outside it). ARCHITECTURE.md points here.
//!
//! A dependency is a `crate::…` or `super::…` path in a file's non-test code (comments and the
//! `#[cfg(test)]` module excluded).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, e.g. `["clients", "store"]`; the crate root is `[]`.
type Module = Vec<String>;

fn src_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            src_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The file's code without its test module and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path segment sequence following `prefix` (`crate::` or `super::`).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segments: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
        out.push(segments);
    }
    out
}

/// Module → the modules (full paths, as far as they are modules of the crate) it uses.
fn dependencies() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    src_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    // The longest prefix of `path` that is a module of the crate.
    let resolve = |path: Vec<String>| -> Option<Module> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
    };
    let mut deps = BTreeMap::new();
    for f in &files {
        let module = module_of(&src, f);
        let code = code(&std::fs::read_to_string(f).unwrap());
        let is_dir_module = f.file_stem().is_some_and(|s| s == "mod" || s == "lib");
        let mut used = BTreeSet::new();
        for p in paths_after(&code, "crate::") {
            used.extend(resolve(p.iter().map(|s| s.to_string()).collect()));
        }
        for p in paths_after(&code, "super::") {
            // `super` of a `mod.rs` is its directory's parent; of a file, its directory.
            let mut base = module.clone();
            base.pop();
            if is_dir_module {
                base.pop();
            }
            base.extend(p.iter().map(|s| s.to_string()));
            used.extend(resolve(base));
        }
        used.remove(&module);
        deps.insert(module, used);
    }
    deps
}

/// The edges between the children of `parent` (or the top-level modules for `[]`), each
/// dependency lifted to the child of `parent` it lies in.
fn edges_under(
    deps: &BTreeMap<Module, BTreeSet<Module>>,
    parent: &[String],
) -> BTreeMap<String, BTreeSet<String>> {
    let child = |m: &Module| -> Option<String> {
        (m.len() > parent.len() && m.starts_with(parent)).then(|| m[parent.len()].clone())
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in deps {
        let Some(a) = child(from) else { continue };
        for to in tos {
            if let Some(b) = child(to) {
                if a != b {
                    edges.entry(a.clone()).or_default().insert(b);
                }
            }
        }
    }
    edges
}

/// A cycle in the graph, if any (depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut done, &mut Vec::new()))
}

#[test]
fn no_module_depends_on_itself_around_a_loop() {
    let deps = dependencies();
    let parents: BTreeSet<Module> = deps
        .keys()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    for parent in &parents {
        let edges = edges_under(&deps, parent);
        if let Some(cycle) = find_cycle(&edges) {
            panic!(
                "module cycle under crate::{}: {}",
                parent.join("::"),
                cycle.join(" -> ")
            );
        }
    }
    // The check sees what it should: the proxy uses the protocol core, not the other way round.
    let top = edges_under(&deps, &[]);
    assert!(top["proxy"].contains("protocol"), "{top:?}");
    assert!(!top.contains_key("protocol"), "{top:?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_protocol_core_is_pure() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut files = Vec::new();
    src_files(&dir, &mut files);
    assert!(files.len() >= 5);
    for f in files {
        let code = code(&std::fs::read_to_string(&f).unwrap());
        for banned in [
            "pingora",
            "tokio",
            "std::fs",
            "std::net",
            "std::env",
            "Instant",
            "SystemTime",
            "crate::",
        ] {
            assert!(
                !code.contains(banned),
                "{} uses {banned}: the protocol core is pure (bytes in, decisions out)",
                f.display()
            );
        }
    }
}
