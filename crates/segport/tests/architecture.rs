//! The module arrows inside the catalog, the engine and the store run one way: no module
//! reaches, through others, back to itself. Read from the sources (what each module names of
//! `crate::…` outside comments and tests), so a new circle fails here, naming its modules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the crate modules it names. A file under `src/x/` belongs to module `x`; the
/// catalog's `src/sql/` files, compiled once per backend, are each a module of their own and
/// name their siblings as `super::y::`.
fn arrows(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let module = match parts.as_slice() {
                [sql, file] if sql == "sql" => format!("sql/{file}"),
                [first, ..] => first.clone(),
                [] => continue,
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let named = graph.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (prefix, scope) in [("crate::", ""), ("super::", "sql/")] {
                    if prefix == "super::" && !module.starts_with("sql/") {
                        continue;
                    }
                    for piece in line.split(prefix).skip(1) {
                        let name: String = piece
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if piece[name.len()..].starts_with("::") && !name.is_empty() {
                            named.insert(format!("{scope}{name}"));
                        }
                    }
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (module, named) in graph.iter_mut() {
        named.retain(|n| modules.contains(n) && n != module && n != "lib");
    }
    graph
}

/// A circle of modules, if there is one: a path that comes back to where it started.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|start| visit(graph, start, &mut Vec::new(), &mut done))
}

#[test]
fn module_arrows_run_one_way() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for name in ["segport-catalog", "segport-engine", "segport-store"] {
        let graph = arrows(&crates.join(name).join("src"));
        assert!(graph.len() > 5, "{name}: {} modules read", graph.len());
        if let Some(found) = circle(&graph) {
            panic!("{name}: modules import each other in a circle: {}", found.join(" → "));
        }
    }
}

#[test]
fn a_circle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
    assert_eq!(circle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut one_way = graph.clone();
    one_way.get_mut("c").unwrap().clear();
    assert_eq!(circle(&one_way), None);
}
