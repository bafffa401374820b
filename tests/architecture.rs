//! The crate's shape, checked: no module imports a module that imports it back, and no
//! source or test file grows past 600 lines without saying why at its top.
//!
//! The import graph is read from the source text: every `crate::a::b` and `super::b`
//! path outside comments is an edge from the file's module to the module it names.
//! Edges are compared level by level — between top-level modules (`repository` →
//! `metrics`), and between sibling submodules (`pipeline::settle` → `pipeline::batch`) —
//! and a parent and its own child are never counted (a `mod.rs` declares its children
//! and they use its items; that is how Rust modules nest). The layers the README's
//! architecture section draws are what this test keeps true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files longer than this must say why in their first lines.
const MAX_LINES: usize = 600;
/// What such a file says.
const REASON: &str = "Longer than 600 lines because";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`; `src/a/mod.rs` → `[a]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of `text` without comments (line comments and doc comments; block
/// comments are not used in this crate).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//"))
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// Every module path named after `prefix` (`crate::` or `super::`) on `line`: the
/// segments that follow, `{a, b::c}` groups expanded to their first segments.
fn paths_after<'a>(line: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        // `foo_super::` or `mycrate::` are not ours.
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let mut segs = Vec::new();
        let mut s = rest;
        loop {
            if let Some(group) = s.strip_prefix('{') {
                for item in group.split(['}', ',']) {
                    let item = item.trim();
                    if let Some(id) = ident_at(item) {
                        let mut p = segs.clone();
                        p.push(id);
                        found.push(p);
                    }
                }
                segs.clear();
                break;
            }
            let Some(id) = ident_at(s) else { break };
            segs.push(id);
            s = &s[id.len()..];
            match s.strip_prefix("::") {
                Some(more) => s = more,
                None => break,
            }
        }
        if !segs.is_empty() {
            found.push(segs);
        }
    }
    found
}

struct Graph {
    /// Module path → the module paths its code names.
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn read_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    // The longest known module that `path` starts with.
    let resolve = |path: Vec<String>| -> Vec<String> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
            .unwrap_or_default()
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        let text = std::fs::read_to_string(f).expect("read a source file");
        for line in code_lines(&text) {
            for p in paths_after(line, "crate::") {
                let target = resolve(p.iter().map(|s| s.to_string()).collect());
                edges.entry(me.clone()).or_default().insert(target);
            }
            for p in paths_after(line, "super::") {
                // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` it is also `a`.
                let mut base = me.clone();
                base.pop();
                base.extend(p.iter().map(|s| s.to_string()));
                let target = resolve(base);
                edges.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    Graph { edges }
}

impl Graph {
    /// The edges between siblings: for `from → to`, the first segments where the two
    /// paths differ, under their common parent. Parent/child pairs give none.
    fn sibling_edges(&self) -> BTreeMap<Vec<String>, BTreeSet<(String, String)>> {
        let mut out: BTreeMap<Vec<String>, BTreeSet<(String, String)>> = BTreeMap::new();
        for (from, tos) in &self.edges {
            for to in tos {
                let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
                if common < from.len() && common < to.len() {
                    out.entry(from[..common].to_vec())
                        .or_default()
                        .insert((from[common].clone(), to[common].clone()));
                }
            }
        }
        out
    }
}

/// Every edge `a → b` of `edges` from which `a` can be reached again, with the way back.
fn edges_on_cycles(edges: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut out = Vec::new();
    for (a, b) in edges {
        // Is there a path b → … → a? Then a → b lies on a cycle.
        let mut seen = BTreeSet::from([b.clone()]);
        let mut todo = vec![(b.clone(), vec![b.clone()])];
        while let Some((n, path)) = todo.pop() {
            if &n == a {
                out.push(format!("{a} → {}", path.join(" → ")));
                break;
            }
            for (x, y) in edges {
                if x == &n && seen.insert(y.clone()) {
                    let mut p = path.clone();
                    p.push(y.clone());
                    todo.push((y.clone(), p));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = read_graph();
    let mut cycles = Vec::new();
    for (parent, edges) in graph.sibling_edges() {
        let scope = if parent.is_empty() {
            "crate".to_string()
        } else {
            format!("crate::{}", parent.join("::"))
        };
        for c in edges_on_cycles(&edges) {
            cycles.push(format!("under {scope}: {c}"));
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles (each edge on one, with the way back):\n  {}",
        cycles.join("\n  ")
    );
}

/// The README's architecture table: each module, in order from the top, with the
/// modules it may use.
fn readme_layers() -> Vec<(String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Architecture\n")
        .nth(1)
        .expect("README.md has an `## Architecture` section");
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the architecture section draws the layers in a ```text block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let name = l
                .split_whitespace()
                .next()
                .expect("a module name")
                .to_string();
            let uses = l
                .split_once('→')
                .unwrap_or_else(|| panic!("README layer line without `→`: {l}"))
                .1
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            (name, uses)
        })
        .collect()
}

#[test]
fn the_readme_draws_the_layers_as_they_are() {
    let layers = readme_layers();
    let graph = read_graph();
    let top: BTreeSet<String> = graph
        .edges
        .keys()
        .chain(graph.edges.values().flatten())
        .filter_map(|m| m.first().cloned())
        .collect();
    let drawn: BTreeSet<String> = layers.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        drawn, top,
        "the README's table names exactly the crate's modules"
    );
    // Each layer may use only layers below it…
    for (i, (name, uses)) in layers.iter().enumerate() {
        let below: BTreeSet<String> = layers[i + 1..].iter().map(|(n, _)| n.clone()).collect();
        let above: Vec<&String> = uses.difference(&below).collect();
        assert!(
            above.is_empty(),
            "README: {name} may use {above:?}, not below it"
        );
    }
    // …and uses nothing the table does not give it.
    let allowed: BTreeMap<String, BTreeSet<String>> = layers.into_iter().collect();
    let mut undrawn = Vec::new();
    for (from, tos) in &graph.edges {
        let Some(f) = from.first() else { continue };
        for t in tos.iter().filter_map(|t| t.first()) {
            if t != f && !allowed[f].contains(t) {
                undrawn.push(format!("{f} → {t}"));
            }
        }
    }
    undrawn.sort();
    undrawn.dedup();
    assert!(
        undrawn.is_empty(),
        "imports the README's architecture table does not draw:\n  {}",
        undrawn.join("\n  ")
    );
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    // The checker itself can fail: a made-up pair of modules naming each other.
    let edges: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let acyclic: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("a", "c")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert!(edges_on_cycles(&acyclic).is_empty());
    assert_eq!(
        edges_on_cycles(&edges),
        vec!["a → b → c → a", "b → c → a → b", "c → a → b → c"]
    );
    // And the path reader sees grouped, nested and `super` paths.
    assert_eq!(
        paths_after("use crate::{agent::Scope, domain};", "crate::"),
        vec![vec!["agent"], vec!["domain"]]
    );
    assert_eq!(
        paths_after("x: crate::feed::Hub, y: super::batch::Claim", "super::"),
        vec![vec!["batch", "Claim"]]
    );
    assert!(paths_after("use mycrate::x;", "crate::").is_empty());
}

#[test]
fn no_file_over_600_lines_without_a_reason_at_its_top() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut long = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read a file");
        let lines = text.lines().count();
        let says_why = text.lines().take(10).any(|l| l.contains(REASON));
        if lines > MAX_LINES && !says_why {
            long.push(format!(
                "{} ({lines} lines)",
                f.strip_prefix(root).unwrap_or(&f).display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines with no `{REASON} …` in their first lines:\n  {}",
        long.join("\n  ")
    );
}
