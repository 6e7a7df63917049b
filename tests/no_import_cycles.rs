//! The layering of `src/` (see the crate docs in `src/lib.rs`): each
//! top-level module imports only the layers below it, and no two files
//! import each other in a circle. Reads the source as text: `crate::…` and
//! `super::…` paths (grouped `use crate::{…}` too), outside comments and
//! `#[cfg(test)]` modules (tests may import anything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module may import its own layer's modules and
/// the layers before it.
const LAYERS: &[&[&str]] = &[
    &["sys"],
    &["proto"],
    &["auth", "backend"],
    &["hub"],
    &["config", "metrics"],
    &["engine"],
    &["net"],
    &["core"],
    &["serve"],
    &["app"],
];

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`; `src/a/mod.rs` → `[a]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Module = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text without line comments and `#[cfg(test)] mod … { … }` bodies.
fn code_only(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect();
    let text = lines.join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let is_mod = after["#[cfg(test)]".len()..]
            .trim_start()
            .trim_start_matches("pub ")
            .starts_with("mod ");
        let Some(open) = after.find(['{', ';']).filter(|_| is_mod) else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path the code names through `crate::` or `super::`, as segments
/// from the crate root.
fn referenced_paths(me: &Module, is_dir_module: bool, code: &str) -> Vec<Module> {
    let mut found = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bytes = code.as_bytes();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if at > 0 && (ident(bytes[at - 1] as char) || bytes[at - 1] == b':') {
            continue;
        }
        let path: String = code[at..]
            .chars()
            .take_while(|&c| ident(c) || c == ':')
            .collect();
        let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut base: Module = if segs[0] == "crate" {
            segs.remove(0);
            Vec::new()
        } else {
            let mut base = me.clone();
            if !is_dir_module {
                base.pop(); // a file's `super` is its parent's module
            }
            while segs.first() == Some(&"super") {
                segs.remove(0);
                if segs.first() == Some(&"super") {
                    base.pop();
                }
            }
            base
        };
        // `use crate::{a::X, b::Y}`: each part is a path of its own.
        let tail = &code[at + path.len()..];
        if tail.starts_with('{') {
            let group = &tail[1..tail.find('}').unwrap_or(tail.len())];
            for part in group.split(',') {
                let mut full = base.clone();
                full.extend(segs.iter().map(|s| s.to_string()));
                full.extend(
                    part.split("::")
                        .map(|s| s.trim().trim_start_matches('{').to_string())
                        .filter(|s| !s.is_empty() && s.chars().all(ident)),
                );
                found.push(full);
            }
            continue;
        }
        base.extend(segs.iter().map(|s| s.to_string()));
        found.push(base);
    }
    found
}

/// The longest prefix of `path` that is a module with a file.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Module {
    (0..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| modules.contains(m))
        .unwrap_or_default()
}

fn layer(m: &Module) -> Option<usize> {
    let top = m.first()?;
    LAYERS.iter().position(|l| l.contains(&top.as_str()))
}

fn edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        if name == "main.rs" || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let me = module_of(&src, file);
        let dir_module = matches!(&*name, "mod.rs" | "lib.rs");
        let code = code_only(&std::fs::read_to_string(file).expect("readable"));
        for path in referenced_paths(&me, dir_module, &code) {
            let target = resolve(&path, &modules);
            // Naming one's own ancestor (or oneself) is not an import.
            if target.is_empty() || me.starts_with(&target) {
                continue;
            }
            edges.entry(me.clone()).or_default().insert(target);
        }
    }
    edges
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let mut wrong = Vec::new();
    for (from, targets) in edges() {
        let Some(mine) = layer(&from) else { continue };
        for to in targets {
            if layer(&to).is_some_and(|theirs| theirs > mine) {
                wrong.push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports from a lower layer up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other_in_a_circle() {
    let edges = edges();
    // Depth-first search; a back edge closes a circle.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            return Some(stack[at..].to_vec());
        }
        if !done.insert(m.clone()) {
            return None;
        }
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(circle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = circle
                .iter()
                .map(|m| format!("src/{}", m.join("/")))
                .collect();
            panic!(
                "import circle: {} -> (back to the first)",
                names.join(" -> ")
            );
        }
    }
    assert!(
        !edges.is_empty(),
        "the scan found no imports at all: it is broken"
    );
}

#[test]
fn the_scan_sees_the_imports_it_must() {
    // A known edge of each kind, so a broken scan cannot pass silently.
    let edges = edges();
    let has = |from: &[&str], to: &[&str]| {
        let from: Module = from.iter().map(|s| s.to_string()).collect();
        let to: Module = to.iter().map(|s| s.to_string()).collect();
        edges.get(&from).is_some_and(|t| t.contains(&to))
    };
    assert!(
        has(&["serve", "websocket"], &["serve", "frames"]),
        "super:: path"
    );
    assert!(has(&["serve", "websocket"], &["core"]), "crate:: path");
    assert!(
        has(&["app"], &["serve", "drain"]),
        "grouped use crate::serve::{{..}}"
    );
}

#[test]
fn the_scan_reads_paths_and_skips_tests_and_comments() {
    // The path reader itself, on made-up source.
    let code = "use crate::b::X;";
    let paths = referenced_paths(&vec!["a".into()], false, code);
    assert_eq!(paths, vec![vec!["b".to_string(), "X".into()]]);
    let stripped =
        code_only("use crate::a;\n#[cfg(test)]\nmod tests { use crate::z; }\n// crate::y\n");
    assert!(
        stripped.contains("crate::a")
            && !stripped.contains("crate::z")
            && !stripped.contains("crate::y")
    );
}
