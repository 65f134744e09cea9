//! The module structure ARCHITECTURE.md describes: the top-level modules' `crate::`
//! references (test code left out) form no cycle, and no stage of the pipeline
//! reaches back into what drives it (`build`, `operator`, `bench`, `cli`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text` before its first `#[cfg(test)]`: test modules come last.
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or_default()
}

/// Top-level module → the top-level modules it names as `crate::…`.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    let mut g = Graph::new();
    for f in &files {
        let Some(from) = top_module(&src, f) else {
            continue;
        };
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let edges = g.entry(from.clone()).or_default();
        for part in non_test(&text).split("crate::").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name != from && modules.contains(&name) {
                edges.insert(name);
            }
        }
    }
    g
}

fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// A cycle in `g`, if there is one, as the path that closes it.
fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut found = path[i..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(
        g.contains_key("plan") && g["plan"].contains("history"),
        "{g:?}"
    );
    if let Some(c) = cycle(&g) {
        panic!("a cycle among top-level modules: {}", c.join(" → "));
    }
}

#[test]
fn the_pipeline_does_not_reach_back_into_its_drivers() {
    let g = graph();
    let pipeline = [
        "source",
        "components",
        "layout",
        "history",
        "plan",
        "layers",
        "image",
        "diff",
    ];
    let drivers = ["build", "operator", "bench", "cli"];
    for stage in pipeline {
        for driver in drivers {
            assert!(
                !g.get(stage).is_some_and(|e| e.contains(driver)),
                "{stage} uses {driver}"
            );
        }
    }
}

/// The planner is a pure function of components, history and layouts: it reads no
/// source, writes no layer, and reports no image.
#[test]
fn the_planner_uses_no_later_stage() {
    let g = graph();
    for later in ["source", "layers", "image", "diff"] {
        assert!(!g["plan"].contains(later), "plan uses {later}");
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&g), None);
}

#[test]
fn the_reconciler_does_not_link_the_pipeline() {
    let operator = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/operator");
    for file in ["reconcile.rs", "status.rs", "report.rs", "pod/mod.rs"] {
        let text = std::fs::read_to_string(operator.join(file)).unwrap();
        assert!(
            !non_test(&text).contains("crate::build"),
            "src/operator/{file} uses crate::build"
        );
    }
}
