//! Tests that fail when the documentation and the code disagree, or when the code's layering
//! slips (rust-analyzer's tidy tests are the model). No root, no network.
//!
//! - ARCHITECTURE.md's code map lists every module of every crate, and nothing else.
//! - Its crate list names every workspace member, and its xtask line every xtask command.
//! - `sensor-core` depends on none of the I/O libraries.
//! - No crate's modules import each other in a circle (top-level modules, and the children of
//!   one module among themselves); in sensord nothing below the API imports from `api`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use sensor_tests::workspace_root;

fn architecture() -> String {
    std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// Workspace members: (package name, directory).
fn members() -> Vec<(String, PathBuf)> {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = manifest.find("members = [").expect("members");
    let end = start + manifest[start..].find(']').unwrap();
    manifest[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|dir| {
            let path = root.join(dir);
            let cargo = std::fs::read_to_string(path.join("Cargo.toml")).unwrap();
            let name = cargo
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|l| l.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{dir}/Cargo.toml has no name"))
                .to_owned();
            (name, path)
        })
        .collect()
}

/// Every module of a crate that lives in a file of its own: `a`, `a::b` (not the crate roots,
/// `tests.rs` test modules and theirs, or the programs under `src/bin`).
fn modules(src: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                // Programs, and the test modules of a `tests.rs` (`tests/quic.rs`).
                if (prefix.is_empty() && name == "bin") || name == "tests" {
                    continue;
                }
                let mut p = prefix.to_vec();
                p.push(name);
                if path.join("mod.rs").exists() {
                    out.insert(p.join("::"));
                }
                walk(&path, &p, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let root_file = prefix.is_empty() && (name == "lib" || name == "main");
                if root_file || name == "mod" || name == "tests" {
                    continue;
                }
                let mut p = prefix.to_vec();
                p.push(name);
                out.insert(p.join("::"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(src, &[], &mut out);
    out
}

/// The code map of each crate in ARCHITECTURE.md: `### `crate`` then table rows whose first
/// cell is a module path.
fn documented_modules() -> BTreeMap<String, BTreeSet<String>> {
    let text = architecture();
    let map = text
        .split("## Code map")
        .nth(1)
        .expect("a Code map section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in map.lines() {
        if let Some(name) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
            current = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
        } else if let (Some(krate), Some(cell)) = (&current, line.strip_prefix("| `")) {
            let module = cell.split('`').next().unwrap();
            out.get_mut(krate).unwrap().insert(module.to_owned());
        }
    }
    out
}

#[test]
fn the_code_map_lists_every_module_and_nothing_else() {
    let documented = documented_modules();
    let mut problems = Vec::new();
    for (name, dir) in members() {
        let actual = modules(&dir.join("src"));
        if actual.is_empty() {
            continue;
        }
        let Some(listed) = documented.get(&name) else {
            problems.push(format!("ARCHITECTURE.md has no code map for `{name}`"));
            continue;
        };
        for m in actual.difference(listed) {
            problems.push(format!("{name}: module `{m}` is not in ARCHITECTURE.md"));
        }
        for m in listed.difference(&actual) {
            problems.push(format!(
                "{name}: ARCHITECTURE.md lists `{m}`, which does not exist"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_crate_list_and_the_xtask_commands_are_current() {
    let text = architecture();
    let crates = text
        .split("## Crates")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let root = workspace_root();
    for (_, dir) in members() {
        let rel = dir
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            crates.contains(&format!("`{rel}/`")),
            "the Crates section does not name `{rel}/`"
        );
    }
    let listed: BTreeSet<String> = text
        .split("`xtask/` — `cargo xtask ")
        .nth(1)
        .expect("the xtask crate's line")
        .split('`')
        .next()
        .unwrap()
        .split('|')
        .map(str::to_owned)
        .collect();
    let main = std::fs::read_to_string(root.join("xtask/src/main.rs")).unwrap();
    let body = main
        .split("enum Cmd {")
        .nth(1)
        .unwrap()
        .split("\n}")
        .next()
        .unwrap();
    let commands: BTreeSet<String> = body
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("    ")?;
            let first = l.chars().next()?;
            first.is_ascii_uppercase().then(|| {
                l.split(|c: char| !c.is_ascii_alphanumeric())
                    .next()
                    .unwrap()
                    .to_ascii_lowercase()
            })
        })
        .collect();
    assert_eq!(
        listed, commands,
        "ARCHITECTURE.md's xtask line and `enum Cmd`"
    );
}

#[test]
fn the_core_depends_on_no_io_library() {
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "tree",
            "-p",
            "sensor-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
        ])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains("sensor-core") && names.contains("rustls-webpki"));
    for banned in [
        "aya", "tokio", "rusqlite", "tonic", "axum", "clap", "hyper", "mio",
    ] {
        assert!(
            !names.contains(banned),
            "sensor-core depends on {banned}:\n{tree}"
        );
    }
}

/// The module names a `crate::` or `super::` path (or a `{…}` group of them) starts with.
fn path_heads(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices(prefix) {
        // `super::super::` and `self::super::` are not followed.
        if at > 0 && text[..at].ends_with("::") {
            continue;
        }
        let rest = text[at + prefix.len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(item.trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

/// Code without its comment lines (doc links name modules without depending on them).
fn code_of(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first cycle in a graph, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut c = stack[i..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
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

/// The files of module `module` (its own file or folder) under `src`.
fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
    let rel: PathBuf = module.split("::").collect();
    let file = src.join(&rel).with_extension("rs");
    let dir = src.join(&rel);
    let mut out = Vec::new();
    if file.exists() {
        out.push(file);
    }
    if dir.is_dir() {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let mut problems = Vec::new();
    for (name, dir) in members() {
        let src = dir.join("src");
        let all = modules(&src);
        if all.is_empty() {
            continue;
        }
        // Top-level modules: edges from `crate::x` paths anywhere in a module's files.
        let top: BTreeSet<String> = all.iter().filter(|m| !m.contains("::")).cloned().collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in &top {
            let deps = graph.entry(m.clone()).or_default();
            for file in files_of(&src, m) {
                for head in path_heads(&code_of(&file), "crate::") {
                    if top.contains(&head) && &head != m {
                        deps.insert(head);
                    }
                }
            }
        }
        if let Some(c) = cycle(&graph) {
            problems.push(format!("{name}: {}", c.join(" → ")));
        }
        if name == "sensord" {
            for (m, deps) in &graph {
                if deps.contains("api") && m != "daemon" {
                    problems.push(format!(
                        "sensord: `{m}` imports from `api`, which is above it"
                    ));
                }
            }
        }
        // Siblings: the children of one module, through `super::x` and `crate::parent::x`.
        for parent in &all {
            let children: BTreeSet<String> = all
                .iter()
                .filter_map(|m| m.strip_prefix(&format!("{parent}::")))
                .filter(|m| !m.contains("::"))
                .map(str::to_owned)
                .collect();
            let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for child in &children {
                let deps = graph.entry(child.clone()).or_default();
                for file in files_of(&src, &format!("{parent}::{child}")) {
                    let code = code_of(&file);
                    let mut heads = path_heads(&code, "super::");
                    heads.extend(path_heads(&code, &format!("crate::{parent}::")));
                    for head in heads {
                        if children.contains(&head) && &head != child {
                            deps.insert(head);
                        }
                    }
                }
            }
            if let Some(c) = cycle(&graph) {
                problems.push(format!("{name}: in `{parent}`: {}", c.join(" → ")));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_path_parser_sees_grouped_imports() {
    let code = "use crate::{a::b, c, d::{e, f}};\nfn x() { crate::g::h(); super::i::j(); }";
    assert_eq!(path_heads(code, "crate::"), ["a", "c", "d", "g"]);
    assert_eq!(path_heads(code, "super::"), ["i"]);
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "a"]);
}
