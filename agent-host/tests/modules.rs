//! The host's modules form layers: no top-level module of `agent-host/src` reaches a module that
//! reaches it back (through `crate::…` paths, or `super::…` paths that leave the module). Inside
//! one top-level module (a folder), parent and children may use each other; doc comments and
//! `#[cfg(test)] mod tests` at the end of a file do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/exec/pool.rs` → `[exec, pool]`, `src/exec/mod.rs` → `[exec]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> =
        relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines.get(i + 1).is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let without_comment = match line.find("// ") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a file's code names.
fn uses(module: &[String], code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let before = rest[..at].chars().last();
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `some_crate::`
        }
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::c}`: the first name of each item at the outer level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        named.insert(ident_at(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            named.insert(ident_at(after).to_string());
        }
    }
    // `super::` chains that climb out of the top-level module.
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let before = rest[..at].chars().last();
        let mut after = &rest[at..];
        rest = &rest[at + "super::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue; // counted from the first `super::` of its chain
        }
        let mut climbs = 0;
        while let Some(more) = after.strip_prefix("super::") {
            climbs += 1;
            after = more;
        }
        if climbs == module.len() {
            named.insert(ident_at(after).to_string());
        }
    }
    named
}

#[test]
fn no_module_reaches_a_module_that_reaches_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == ["lib"] || module == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a source file");
        let top = module[0].clone();
        let edges = graph.entry(top.clone()).or_default();
        for used in uses(&module, &code_of(&text)) {
            if used != top && !used.is_empty() && used != "self" {
                edges.insert(used);
            }
        }
    }
    assert!(graph.len() > 10, "found {} modules: is this the source folder?", graph.len());
    for (module, edges) in &graph {
        for used in edges {
            assert!(graph.contains_key(used), "{module} names crate::{used}, which is no module");
        }
    }
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            cycles.push(cycle.join(" → "));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in &graph[node] {
            visit(next, graph, path, done, cycles);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    let mut cycles = Vec::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "modules that reach themselves back:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_sees_imports_of_every_form() {
    let code = code_of(
        "use crate::{a, b::{c, d}};\n\
         // use crate::commented;\n\
         /// [`crate::doc`]\n\
         fn f() { crate::e::g(); other_crate::h(); super::super::i::j(); }\n\
         #[cfg(test)]\nmod tests { use crate::test_only; }\n",
    );
    let named = uses(&["top".into(), "child".into()], &code);
    assert_eq!(named, ["a", "b", "e", "i"].map(String::from).into_iter().collect());
}
