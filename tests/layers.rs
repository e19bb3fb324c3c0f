//! The shape of the crate: every library module belongs to a layer, and imports only from its
//! own layer or those below it, without cycles between modules. The layers, lowest first, are
//! [`LAYERS`] (mirrored in ARCHITECTURE.md, "What each layer may import"); the binary's own
//! modules (`src/main.rs` and what it declares: `src/cli/`, ...) are the top layer and are not
//! checked, since nothing in the library can import them.
//!
//! The check reads `src/**/*.rs` as text: it blanks comments and string literals, then takes
//! every `crate::a::b...` path and every `super::...` path (resolved from the file's module and
//! any inline module it sits in). A path names a *unit*: a top-level module, or for
//! `models` one family or shared part (`models::nn`, `models::clip`, ...). Any reference from a
//! unit to a unit of a higher layer fails, as does any cycle between units, naming the file and
//! line of each import involved.
//!
//! `LAYERS_ROOT=/path/to/checkout cargo test --test layers` checks another checkout's `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first, each with the units (module paths) in it. A unit belongs to the
/// layer of the longest entry that is a prefix of its path.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["error", "device", "path_text", "text_lines", "text_terms", "places"]),
    ("photo", &["photo", "video", "thumbnail"]),
    ("model kernels", &["models::nn", "models::source", "models::weights", "models::preprocess"]),
    ("models", &["models"]),
    ("store", &["store"]),
    ("ann", &["ann"]),
    ("query", &["query", "segment"]),
    ("workflows", &["indexer", "eval", "output_dir", "finetune"]),
    ("library", &["library"]),
    ("server", &["server"]),
];

/// Modules split into one unit per child (a family each), rather than counted as one.
const SPLIT: &[&str] = &["models"];

/// Re-exports at another path: a reference to the first is one to the second.
const ALIASES: &[(&str, &str)] = &[("models::precision", "models::nn::precision")];

#[test]
fn no_upward_imports_or_cycles() {
    let root = std::env::var("LAYERS_ROOT").map(PathBuf::from).unwrap_or(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = root.as_path();
    let mut files = Vec::new();
    collect(&root.join("src"), &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    let problems = check(&sources);
    assert!(problems.is_empty(), "the layer rules are broken:\n{}", problems.join("\n"));
}

/// The checker finds what it is for, on a small made-up crate.
#[test]
fn the_check_catches_upward_imports_and_cycles() {
    let lib = "pub mod error;\npub mod store;\npub mod query;\npub mod models;\n";
    let ok = [
        ("src/lib.rs", lib),
        ("src/main.rs", "mod cli;\n"),
        ("src/cli/mod.rs", "use clipdex::query::search;\n"),
        ("src/error.rs", ""),
        (
            "src/store/mod.rs",
            "use crate::error::Error; // crate::query::Kind in a comment\nlet s = \"crate::query\";\n",
        ),
        ("src/query/mod.rs", "use crate::store::Store;\nuse crate::{error::Error, models::clip::Clip};\n"),
        ("src/models/mod.rs", "pub mod nn;\npub mod clip;\n"),
        ("src/models/nn/mod.rs", "use crate::models::source::ModelRepo;\n"),
        ("src/models/source.rs", "use crate::error::Error;\n"),
        ("src/models/clip/mod.rs", "use crate::models::nn::Dense;\nuse crate::models::precision::Precision;\n"),
    ];
    let owned = |files: &[(&str, &str)]| -> Vec<(String, String)> {
        files.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
    };
    assert_eq!(check(&owned(&ok)), Vec::<String>::new());

    let mut upward = ok.to_vec();
    upward[4] = ("src/store/mod.rs", "use crate::error::Error;\n\nuse crate::query::SearchFilter;\n");
    let problems = check(&owned(&upward));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("src/store/mod.rs:3: store (layer store) imports query (layer query)"),
        "{problems:?}"
    );
    assert_eq!(problems[1], "module cycle: query -> store (src/query/mod.rs:1), store -> query (src/store/mod.rs:3)");

    let mut nested = ok.to_vec();
    nested[7] = ("src/models/nn/mod.rs", "mod inner {\n    fn f() { super::super::clip::Clip::new() }\n}\n");
    let problems = check(&owned(&nested));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("src/models/nn/mod.rs:2: models::nn (layer model kernels) imports models::clip"),
        "{problems:?}"
    );

    let mut cycle = ok.to_vec();
    cycle.push(("src/models/bert.rs", "use crate::models::clip::HiddenAct;\n"));
    cycle[6] = ("src/models/mod.rs", "pub mod nn;\npub mod clip;\npub mod bert;\n");
    cycle[9] = ("src/models/clip/mod.rs", "use crate::models::nn::Dense;\n\nuse super::bert::Stack;\n");
    let problems = check(&owned(&cycle));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("cycle"), "{problems:?}");
    assert!(
        problems[0].contains("src/models/bert.rs:1") && problems[0].contains("src/models/clip/mod.rs:3"),
        "{problems:?}"
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Where a reference comes from.
#[derive(Clone, Debug)]
struct Site {
    file: String,
    line: usize,
}

/// The problems found in `sources` (repository-relative path, contents), one line each.
fn check(sources: &[(String, String)]) -> Vec<String> {
    let file_set: BTreeSet<&str> = sources.iter().map(|(p, _)| p.as_str()).collect();
    let binary_modules: BTreeSet<String> =
        sources.iter().find(|(p, _)| p == "src/main.rs").map(|(_, s)| declared_modules(s)).unwrap_or_default();
    let root_names: BTreeMap<String, Vec<String>> =
        sources.iter().find(|(p, _)| p == "src/lib.rs").map(|(_, s)| root_reexports(s)).unwrap_or_default();

    let mut problems = Vec::new();
    // unit -> unit -> the first import that makes the edge
    let mut edges: BTreeMap<String, BTreeMap<String, Site>> = BTreeMap::new();
    for (file, text) in sources {
        let Some(module) = module_of(file) else { continue };
        if module.is_empty() || binary_modules.contains(&module[0]) {
            continue; // the crate root's re-exports, and the binary: the top layer
        }
        let from = unit_of(&module, &file_set);
        let mut reported = BTreeSet::new();
        let Some(from_layer) = layer_of(&from) else {
            problems.push(format!("{file}:1: {from} is in no layer: add it to LAYERS in tests/layers.rs"));
            continue;
        };
        for (line, target) in references(text, &module) {
            let target = resolve(target, &root_names);
            if target.is_empty() {
                continue;
            }
            let to = unit_of(&target, &file_set);
            if to == from {
                continue;
            }
            let site = Site { file: file.clone(), line };
            match layer_of(&to) {
                Some(to_layer) if to_layer.0 > from_layer.0 && reported.insert((line, to.clone())) => {
                    problems.push(format!(
                        "{file}:{line}: {from} (layer {}) imports {to} (layer {}), a layer above it: move what it \
                     needs down to the lowest layer that uses it (see ARCHITECTURE.md)",
                        from_layer.1, to_layer.1
                    ))
                }
                Some(_) => {}
                None => {
                    problems.push(format!("{file}:{line}: {to} is in no layer: add it to LAYERS in tests/layers.rs"))
                }
            }
            edges.entry(from.clone()).or_default().entry(to).or_insert(site);
        }
    }
    for cycle in cycles(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let site = &edges[&w[0]][&w[1]];
                format!("{} -> {} ({}:{})", w[0], w[1], site.file, site.line)
            })
            .collect();
        problems.push(format!("module cycle: {}", steps.join(", ")));
    }
    problems
}

/// The module path of a file under `src/` (empty for the crate roots).
fn module_of(file: &str) -> Option<Vec<String>> {
    let rest = file.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    Some(parts)
}

/// The modules a crate root declares (`mod x;`).
fn declared_modules(text: &str) -> BTreeSet<String> {
    code_lines(text)
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(|m| m.trim().to_string())
        })
        .collect()
}

/// The names the crate root re-exports (`pub use error::{Error, Result};`), with their paths.
fn root_reexports(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut names = BTreeMap::new();
    for line in code_lines(text) {
        let Some(rest) = line.trim().strip_prefix("pub use ") else { continue };
        let rest = rest.trim_end_matches(';');
        let (prefix, list) = match rest.split_once("::{") {
            Some((p, l)) => (p.to_string(), l.trim_end_matches('}').to_string()),
            None => match rest.rsplit_once("::") {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => continue,
            },
        };
        let prefix: Vec<String> = prefix.split("::").map(str::to_string).collect();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let mut path = prefix.clone();
            path.push(name.to_string());
            names.insert(name.to_string(), path);
        }
    }
    names
}

/// A path as the crate root's re-exports and [`ALIASES`] say it is.
fn resolve(mut path: Vec<String>, root_names: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    if let Some(full) = path.first().and_then(|n| root_names.get(n)) {
        path.splice(0..1, full.iter().cloned());
    }
    let joined = path.join("::");
    for (alias, real) in ALIASES {
        if joined == *alias || joined.starts_with(&format!("{alias}::")) {
            return format!("{real}{}", &joined[alias.len()..]).split("::").map(str::to_string).collect();
        }
    }
    path
}

/// The unit a module path falls in: its top-level module, or under a [`SPLIT`] module, the
/// child module it names (the module itself for its own items).
fn unit_of(path: &[String], files: &BTreeSet<&str>) -> String {
    let top = &path[0];
    if SPLIT.contains(&top.as_str()) && path.len() > 1 {
        let child = &path[1];
        if files.contains(format!("src/{top}/{child}.rs").as_str())
            || files.contains(format!("src/{top}/{child}/mod.rs").as_str())
        {
            return format!("{top}::{child}");
        }
    }
    top.clone()
}

/// The layer (index, name) of a unit: that of the longest entry of [`LAYERS`] it starts with.
fn layer_of(unit: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (i, (name, members)) in LAYERS.iter().enumerate() {
        for m in *members {
            if (unit == *m || unit.starts_with(&format!("{m}::"))) && best.is_none_or(|b| m.len() > b.0) {
                best = Some((m.len(), i, name));
            }
        }
    }
    best.map(|(_, i, name)| (i, name))
}

/// Every `crate::...` and `super::...` path in the code of a file of module `module`, with its
/// line number, as an absolute module path (`super` resolved, through inline modules too).
fn references(text: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    // Inline modules open at these brace depths.
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    for (n, line) in code_lines(text).iter().enumerate() {
        let mut here: Vec<String> = module.to_vec();
        here.extend(inline.iter().map(|(_, m)| m.clone()));
        for (start, _) in line.match_indices("crate::").chain(line.match_indices("super::")) {
            if start > 0 && is_ident(line[..start].chars().next_back().unwrap_or(' ')) {
                continue; // `my_crate::`, `clipdex::`
            }
            if line[..start].ends_with("::") {
                continue; // the second `super::` of `super::super::`
            }
            let mut rest = &line[start..];
            let mut path: Vec<String> = if let Some(r) = rest.strip_prefix("crate::") {
                rest = r;
                Vec::new()
            } else {
                let mut base = here.clone();
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
                base
            };
            // Segments up to the first that is not a module path step.
            loop {
                let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
                if ident.is_empty() {
                    break;
                }
                rest = &rest[ident.len()..];
                path.push(ident);
                match rest.strip_prefix("::") {
                    Some(r) if !r.starts_with('{') && !r.starts_with('*') && !r.starts_with('<') => rest = r,
                    _ => break,
                }
            }
            if let Some(group) = rest.strip_prefix("::{") {
                // `crate::{a::b, c}`: each member is a path of its own.
                let group = group.split('}').next().unwrap_or("");
                for member in group.split(',') {
                    let mut p = path.clone();
                    p.extend(member.trim().split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string));
                    if !p.is_empty() {
                        out.push((n + 1, p));
                    }
                }
                continue;
            }
            if !path.is_empty() {
                out.push((n + 1, path));
            }
        }
        // Track inline modules (`mod tests { ... }`) for `super`.
        let trimmed = line.trim_start();
        let decl = trimmed.strip_prefix("pub(crate) ").or_else(|| trimmed.strip_prefix("pub ")).unwrap_or(trimmed);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.split_once('{')).map(|(n, _)| n.trim()) {
            inline.push((depth, name.to_string()));
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(d, _)| *d == depth) {
                        inline.pop();
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The file's lines with comments and the insides of string and character literals blanked
/// (so neither a doc link nor a message counts as an import, nor a brace in a string).
fn code_lines(text: &str) -> Vec<String> {
    #[derive(PartialEq)]
    enum State {
        Code,
        LineComment,
        Block(usize),
        Str,
        Raw(usize),
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut state = State::Code;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            if state == State::LineComment {
                state = State::Code;
            }
            out.push('\n');
            i += 1;
            continue;
        }
        match state {
            State::Code => {
                if c == '/' && next == Some('/') {
                    state = State::LineComment;
                    i += 2;
                    continue;
                }
                if c == '/' && next == Some('*') {
                    state = State::Block(1);
                    i += 2;
                    continue;
                }
                if c == '"' {
                    state = State::Str;
                    out.push('"');
                    i += 1;
                    continue;
                }
                if c == 'r'
                    && (next == Some('#') || next == Some('"'))
                    && !chars[..i].last().is_some_and(|p| is_ident(*p))
                {
                    let hashes = chars[i + 1..].iter().take_while(|h| **h == '#').count();
                    if chars.get(i + 1 + hashes) == Some(&'"') {
                        state = State::Raw(hashes);
                        out.push('"');
                        i += 2 + hashes;
                        continue;
                    }
                }
                if c == '\'' {
                    // A character literal ('x', '\n', '\u{..}'), not a lifetime.
                    let close = if next == Some('\\') {
                        chars[i + 2..].iter().position(|x| *x == '\'').map(|p| i + 2 + p)
                    } else if chars.get(i + 2) == Some(&'\'') {
                        Some(i + 2)
                    } else {
                        None
                    };
                    if let Some(end) = close {
                        out.push_str("' '");
                        i = end + 1;
                        continue;
                    }
                }
                out.push(c);
            }
            State::LineComment => {}
            State::Block(n) => {
                if c == '*' && next == Some('/') {
                    state = if n == 1 { State::Code } else { State::Block(n - 1) };
                    i += 2;
                    continue;
                }
                if c == '/' && next == Some('*') {
                    state = State::Block(n + 1);
                    i += 2;
                    continue;
                }
            }
            State::Str => {
                if c == '\\' {
                    i += 2;
                    continue;
                }
                if c == '"' {
                    state = State::Code;
                    out.push('"');
                }
            }
            State::Raw(hashes) => {
                if c == '"' && chars[i + 1..].iter().take(hashes).filter(|h| **h == '#').count() == hashes {
                    state = State::Code;
                    out.push('"');
                    i += 1 + hashes;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.split('\n').map(str::to_string).collect()
}

/// The cycles among units, each as a closed walk (`a, b, a`), one per strongly connected set.
fn cycles(edges: &BTreeMap<String, BTreeMap<String, Site>>) -> Vec<Vec<String>> {
    // For each unit, the shortest way back to itself, if any; report each set of units on a
    // cycle once (by its smallest member).
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut found = Vec::new();
    for start in edges.keys() {
        if seen.contains(start) {
            continue;
        }
        // Breadth-first from `start` until it comes back.
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.as_str()]);
        let mut back = None;
        while let Some(at) = queue.pop_front() {
            for next in edges.get(at).map(|e| e.keys()).into_iter().flatten() {
                if next == start {
                    back = Some(at);
                    break;
                }
                if !previous.contains_key(next.as_str()) {
                    previous.insert(next, at);
                    queue.push_back(next);
                }
            }
            if back.is_some() {
                break;
            }
        }
        let Some(last) = back else { continue };
        let mut walk = vec![start.clone()];
        let mut at = last;
        let mut reversed = Vec::new();
        while at != start {
            reversed.push(at.to_string());
            at = previous[at];
        }
        walk.extend(reversed.into_iter().rev());
        walk.push(start.clone());
        seen.extend(walk.iter().cloned());
        found.push(walk);
    }
    found
}
