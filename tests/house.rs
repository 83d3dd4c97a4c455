//! House rules of the source tree, checked by reading `src/` as text:
//! - the top-level modules (`config`, `sources`, `store` …) depend on each other without a
//!   cycle, so each can be read, tested and changed from the bottom up;
//! - no file is longer than [`MAX_LINES`] lines unless its module comment says why it is "one
//!   room" (a file that is read as a whole and would be harder to follow split).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a file may be without a module comment explaining why it is one room.
const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`src/sources/yahoo/mod.rs` → `sources`); `None`
/// for the crate roots.
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).expect("under src/");
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// `text` with comments blanked (line and block comments, doc comments included), so a
/// module named in prose is no dependency. Line breaks are kept, for line numbers.
fn without_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut depth = 0_usize;
    let mut in_line = false;
    let mut in_string = false;
    while i < bytes.len() {
        let rest = &text[i..];
        let c = rest.chars().next().expect("not at the end");
        if in_line {
            if c == '\n' {
                in_line = false;
                out.push('\n');
            }
        } else if depth > 0 {
            if rest.starts_with("*/") {
                depth -= 1;
                i += 2;
                continue;
            }
            if rest.starts_with("/*") {
                depth += 1;
                i += 2;
                continue;
            }
            if c == '\n' {
                out.push('\n');
            }
        } else if in_string {
            if rest.starts_with("\\\"") || rest.starts_with("\\\\") {
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
            if c == '\n' {
                out.push('\n');
            }
        } else if rest.starts_with("//") {
            in_line = true;
        } else if rest.starts_with("/*") {
            depth = 1;
            i += 2;
            continue;
        } else if c == '\'' {
            // A char literal (`'"'`, `'\''`, `'\u{1F600}'`) is skipped whole; a lifetime is kept.
            let body = &rest[1..];
            let len = if body.starts_with('\\') {
                body[2..].find('\'').map(|end| end + 4)
            } else {
                let mut chars = body.chars();
                let first = chars.next().map_or(0, char::len_utf8);
                (chars.next() == Some('\'')).then_some(first + 2)
            };
            match len {
                Some(len) => i += len,
                None => {
                    out.push(c);
                    i += 1;
                }
            }
            continue;
        } else if c == '"' {
            in_string = true;
        } else {
            out.push(c);
        }
        i += c.len_utf8();
    }
    out
}

/// The top-level modules a file's code names through `crate::`, each with the line it is
/// first named on: `use crate::config::Config`, `crate::metrics::Metrics::new()`, and the
/// groups of `use crate::{config::Config, model::Bar}`.
fn crate_references(code: &str) -> BTreeMap<String, usize> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeMap::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            let after = &rest[at + "crate::".len()..];
            rest = after;
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                continue; // `$crate::`, `mycrate::`
            }
            if let Some(group) = after.strip_prefix('{') {
                // Only the group's first level: `{config::Config, model::{Bar, Quote}}`.
                let mut level = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => level += 1,
                        '}' if level == 0 => break,
                        '}' => level -= 1,
                        ',' if level == 0 => item_start = true,
                        c if item_start && !c.is_whitespace() => {
                            item_start = false;
                            let name = ident(&group[i..]);
                            if !name.is_empty() {
                                out.entry(name).or_insert(n + 1);
                            }
                        }
                        _ => {}
                    }
                }
            } else {
                let name = ident(after);
                if !name.is_empty() {
                    out.entry(name).or_insert(n + 1);
                }
            }
        }
    }
    out
}

/// Module → (module it uses → where, as `file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn dependency_graph() -> Graph {
    let root = src();
    let mut graph = Graph::new();
    for path in rust_files(&root) {
        let Some(from) = top_module(&path) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read a source file");
        let shown = path.strip_prefix(&root).expect("under src/").display();
        let edges = graph.entry(from.clone()).or_default();
        for (to, line) in crate_references(&without_comments(&text)) {
            if to != from {
                edges
                    .entry(to)
                    .or_insert_with(|| format!("src/{shown}:{line}"));
            }
        }
    }
    graph
}

/// Every cycle of the graph, once each, as the modules along it (Tarjan's strongly connected
/// components, then one cycle through each component's edges).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn reach(
        graph: &Graph,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if !seen.insert(from.to_string()) {
            return None;
        }
        for next in graph.get(from).into_iter().flat_map(|e| e.keys()) {
            if next == to {
                return Some(vec![from.to_string(), to.to_string()]);
            }
            if let Some(mut path) = reach(graph, next, to, seen) {
                path.insert(0, from.to_string());
                return Some(path);
            }
        }
        None
    }
    // A cycle through each edge that closes one; the same cycle found again is dropped.
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut keys: BTreeSet<Vec<String>> = BTreeSet::new();
    for (from, edges) in graph {
        for to in edges.keys() {
            if let Some(mut path) = reach(graph, to, from, &mut BTreeSet::new()) {
                path.insert(0, from.clone());
                path.pop();
                let mut key = path.clone();
                key.sort();
                key.dedup();
                if keys.insert(key) {
                    path.push(from.clone());
                    found.push(path);
                }
            }
        }
    }
    found
}

#[test]
fn the_reference_scanner_sees_uses_paths_and_groups_but_not_prose() {
    let code = without_comments(
        "//! See crate::prose for details.\n\
         /* crate::block */ use crate::config::Config;\n\
         let m = crate::metrics::Metrics::new(); // crate::trailing\n\
         use crate::{model::{Bar, Quote}, store};\n\
         let s = \"crate::in_a_string\"; let c = '\"'; macro_rules! m { () => { $crate::x } }\n",
    );
    let refs = crate_references(&code);
    let names: Vec<&str> = refs.keys().map(String::as_str).collect();
    assert_eq!(names, ["config", "metrics", "model", "store"]);
    assert_eq!(refs["config"], 2);
}

#[test]
fn the_cycle_finder_finds_long_and_short_cycles() {
    let mut graph = Graph::new();
    for (a, b) in [
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "c"),
        ("e", "a"),
    ] {
        graph
            .entry(a.into())
            .or_default()
            .insert(b.into(), String::new());
    }
    let found = cycles(&graph);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert!(found.contains(&vec!["c".into(), "d".into(), "c".into()]));
}

#[test]
fn top_level_modules_depend_on_each_other_without_a_cycle() {
    let graph = dependency_graph();
    assert!(graph.contains_key("config") && graph.contains_key("sources"));
    // The two leaves everything may use.
    for leaf in ["env", "instrument"] {
        assert_eq!(
            graph.get(leaf).map(BTreeMap::len),
            Some(0),
            "{leaf} must import nothing from the crate"
        );
    }
    let found = cycles(&graph);
    let report: Vec<String> = found
        .iter()
        .map(|cycle| {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("  {} → {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            format!("{}\n{}", cycle.join(" → "), edges.join("\n"))
        })
        .collect();
    assert!(
        report.is_empty(),
        "import cycles between top-level modules (break one edge of each):\n{}",
        report.join("\n")
    );
}

/// The module comment of a file: its leading `//!` lines, or its leading `/*! … */` block.
fn module_comment(text: &str) -> String {
    let trimmed = text.trim_start();
    if let Some(block) = trimmed.strip_prefix("/*!") {
        return block.split("*/").next().unwrap_or_default().to_string();
    }
    trimmed
        .lines()
        .take_while(|l| l.trim_start().starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_file_is_longer_than_600_lines_unless_it_says_why_it_is_one_room() {
    let root = src();
    let mut over: Vec<String> = Vec::new();
    for path in rust_files(&root) {
        let text = std::fs::read_to_string(&path).expect("read a source file");
        let lines = text.lines().count();
        if lines > MAX_LINES && !module_comment(&text).contains("one room") {
            let shown = path.strip_prefix(&root).expect("under src/").display();
            over.push(format!("  src/{shown}: {lines} lines"));
        }
    }
    assert!(
        over.is_empty(),
        "files over {MAX_LINES} lines without a module comment saying why they are \"one room\" \
         (split them, or explain):\n{}",
        over.join("\n")
    );
}
