//! The crate's shape, checked: every import points down the layers, nothing below the plan sees
//! the CLI's types, no two source files import each other (directly or around a circle), and the
//! README's *Layout* section names every module there is and none that is gone.
//!
//! The module graph is read from the sources: every `crate::a::b…` path (in `use` lines and in
//! code) and every `super::…` path, resolved to the longest module prefix that is a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Layers, bottom up: a module may use its own layer's `core` and the layers below it.
const LAYERS: &[&[&str]] = &[
    &["core"],
    &["workload", "ledger", "sim"],
    &["template"],
    &["hub"],
    &["client"],
    &["engine"],
    &["metrics"],
    &["replay"],
    &["schedule"],
    &["analysis"],
    &["report"],
    &["cli"],
    &["plan"],
    &["run", "merge"],
    &["commands"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/lib.rs` → `` (the crate root).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(Path::new(ROOT).join("src")).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

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

/// The source without comments and without its `#[cfg(test)]` module (tests may reach anywhere).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") .or_else(|| text.find("#[cfg(test)]\npub(crate) mod tests")) {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Paths `crate::x::y…` and `super::x…` (resolved against `module`) used in `code`, as module
/// path segments. Braced groups (`use crate::a::{b, c::d}`) expand to each member.
fn referenced_paths(module: &str, is_mod_file: bool, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let at = &bytes[i..];
        if !(at.starts_with(b"crate::") || at.starts_with(b"super::")) {
            i += 1;
            continue;
        }
        // An ASCII match: `i` is a char boundary.
        let rest = &code[i..];
        let (base, skip): (Vec<String>, usize) = if rest.starts_with("crate::") && (i == 0 || !ident(bytes[i - 1])) {
            (vec![], "crate::".len())
        } else if rest.starts_with("super::") && (i == 0 || !ident(bytes[i - 1]) && bytes[i - 1] != b':') {
            let mut segs: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            // `super` of `a::b` (file a/b.rs) is `a`; of `a` written in a/mod.rs it is the root.
            let mut n = 0;
            let mut r = rest;
            while r.starts_with("super::") {
                n += 1;
                r = &r["super::".len()..];
            }
            let _ = is_mod_file;
            for _ in 0..n {
                segs.pop();
            }
            (segs, rest.len() - r.len())
        } else {
            i += 1;
            continue;
        };
        let start = i + skip;
        // Read `a::b::{c, d::e}` up to the end of the path.
        let mut end = start;
        let mut depth = 0;
        while end < bytes.len() {
            let c = bytes[end];
            if c == b'{' {
                depth += 1;
            } else if c == b'}' {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            } else if depth == 0 && !(ident(c) || c == b':') {
                break;
            }
            end += 1;
        }
        for path in expand(&code[start..end]) {
            let mut full = base.clone();
            full.extend(path.split("::").filter(|s| !s.is_empty() && *s != "self").map(|s| s.trim().to_string()));
            out.push(full);
        }
        i = end.max(i + 1);
    }
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let path: String = path.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = path.find('{') else { return vec![path] };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut parts = Vec::new();
    let (mut depth, mut last) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[last..k]);
                last = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[last..]);
    parts.into_iter().filter(|p| !p.is_empty()).flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}"))).collect()
}

struct Graph {
    /// Module of each file.
    modules: BTreeMap<String, PathBuf>,
    /// File module → the file modules it uses.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    let modules: BTreeMap<String, PathBuf> = files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        if module.is_empty() {
            continue; // lib.rs and main.rs declare the modules; they sit above every layer
        }
        let text = std::fs::read_to_string(file).unwrap();
        let is_mod = file.ends_with("mod.rs");
        let mut uses = BTreeSet::new();
        for path in referenced_paths(module, is_mod, &code_of(&text)) {
            // The longest prefix that is a module file.
            let target = (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains_key(m));
            if let Some(t) = target {
                if &t != module && !module.starts_with(&format!("{t}::")) {
                    uses.insert(t);
                }
            }
        }
        edges.insert(module.clone(), uses);
    }
    Graph { modules, edges }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

#[test]
fn nothing_below_the_plan_sees_the_cli() {
    let g = graph();
    let allowed = |m: &str| matches!(top(m), "plan" | "commands" | "cli");
    let offenders: Vec<String> = g
        .edges
        .iter()
        .filter(|(m, uses)| !allowed(m) && uses.contains("cli"))
        .map(|(m, _)| g.modules[m].display().to_string())
        .collect();
    assert!(offenders.is_empty(), "these files import crate::cli: {offenders:?}");
}

#[test]
fn every_import_points_down_the_layers() {
    let g = graph();
    let mut upward = Vec::new();
    for (m, uses) in &g.edges {
        let Some(from) = layer_of(top(m)) else { panic!("module {m} is in no layer: add it to LAYERS") };
        for t in uses {
            let to = layer_of(top(t)).unwrap_or_else(|| panic!("module {t} is in no layer"));
            let same_top = top(m) == top(t);
            // `sim` stands beside the client stack: it may use `core` only.
            let sim_ok = top(m) != "sim" || same_top || top(t) == "core";
            if (to > from && !same_top) || !sim_ok || (to == from && !same_top && top(t) != "core") {
                upward.push(format!("{m} → {t}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that do not point down:\n{}", upward.join("\n"));
}

#[test]
fn no_two_source_files_import_each_other() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        g: &'a Graph,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(m, 1);
        stack.push(m);
        for t in g.edges.get(m).into_iter().flatten() {
            match state.get(t.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| *s == t).unwrap_or(0);
                    cycles.push(format!("{} → {t}", stack[from..].join(" → ")));
                }
                Some(_) => {}
                None => visit(t, g, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(m, 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for m in g.edges.keys() {
        if !state.contains_key(m.as_str()) {
            visit(m, &g, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles between source files:\n{}", cycles.join("\n"));
}

#[test]
fn the_graph_reader_sees_what_it_must() {
    // The checks above are only as good as the paths they read.
    let paths = referenced_paths("run::servers", false, "use super::warmup::warm_up;\nuse crate::client::{api::{reset, ServerInfo}, Client};\nlet x = crate::core::hash::sha256_hex(b);");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["run::warmup::warm_up", "client::api::reset", "client::api::ServerInfo", "client::Client", "core::hash::sha256_hex"]);
    let g = graph();
    assert!(g.edges["run"].contains("plan"), "{:?}", g.edges["run"]);
    assert!(g.edges["commands::run"].contains("plan"));
}

#[test]
fn the_readme_layout_matches_the_tree() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let start = readme.find("## Layout").expect("README has a Layout section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    // Every `src/…` the section names exists.
    let named: BTreeSet<String> = section
        .split('`')
        .filter(|s| s.starts_with("src/"))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    let missing: Vec<&String> = named.iter().filter(|p| !Path::new(ROOT).join(p).exists()).collect();
    assert!(missing.is_empty(), "the README Layout names files that do not exist: {missing:?}");
    // Every top-level module of the tree is named once.
    let mut tops = BTreeSet::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("src")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "lib.rs" || name == "main.rs" {
            continue;
        }
        tops.insert(format!("src/{name}"));
    }
    let unnamed: Vec<&String> = tops.iter().filter(|t| !named.contains(*t)).collect();
    assert!(unnamed.is_empty(), "the README Layout does not name: {unnamed:?}");
    for t in &tops {
        let n = section.matches(&format!("`{t}")).count();
        assert_eq!(n, 1, "the README Layout names {t} {n} times");
    }
}
