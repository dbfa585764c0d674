//! The module map DEVELOPERS.md and the README describe: data flows one way,
//! so the top-level modules under `src/` must not depend on each other in a
//! cycle. Dependencies are read from the source (`crate::MODULE` paths in
//! `use` lines and in code), file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module and the top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                let after = &rest[at + "crate::".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
                rest = after;
            }
        }
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A cycle through `start`, if there is one (depth-first search).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(g.len() > 10, "the scan found the modules: {g:?}");
    if let Some(c) = cycle(&g) {
        panic!("module cycle: {}\nwhole graph: {g:#?}", c.join(" -> "));
    }
}

#[test]
fn config_reads_no_module_above_it() {
    // Only leaves: newtype ids, private durable files (the cookie key) and
    // the macro that derives an enum's tables.
    let g = graph();
    let allowed: BTreeSet<String> = ["ids", "files", "indexed"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let extra: Vec<_> = g["config"].difference(&allowed).collect();
    assert!(extra.is_empty(), "config depends on {extra:?}");
    assert!(
        g["indexed"].is_empty(),
        "indexed must stay a leaf: {:?}",
        g["indexed"]
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g).unwrap().len(), 4);
}

#[test]
fn the_http_layer_does_not_know_where_events_go() {
    // It hands events to `delivery`; only delivery knows the journal and
    // the sink (and which durability mode is on).
    let g = graph();
    for hidden in ["journal", "sink"] {
        assert!(
            !g["http"].contains(hidden) && !g["pixel"].contains(hidden),
            "http or pixel reaches {hidden}: {:?} {:?}",
            g["http"],
            g["pixel"]
        );
    }
}
