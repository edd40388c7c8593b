//! The layering ARCHITECTURE.md promises, checked: every `crate::…` path in a
//! top-level module of `src/` must name a module its row of the table under
//! "Layering" allows. A new edge fails here until the table (and the design)
//! says it may exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The "Layering" table of ARCHITECTURE.md: module → the modules it may use.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let section = doc.split("## Layering").nth(1).expect("ARCHITECTURE.md has a \"## Layering\" section");
    let mut table = BTreeMap::new();
    for row in section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_string();
        let uses = cells[1].split(',').map(|m| m.trim().trim_matches('`').to_string()).filter(|m| !m.is_empty() && m != "—").collect();
        table.insert(name, uses);
    }
    assert!(table.len() > 5, "the Layering table is empty or unreadable:\n{section}");
    table
}

/// The top-level modules a source file names through `crate::`, grouped imports included.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        used.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            used.insert(ident(rest));
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

#[test]
fn every_module_uses_only_what_the_layering_table_allows() {
    let table = allowed();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for entry in walkdir::WalkDir::new(&src).into_iter().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "rs")) {
        let rel = entry.path().strip_prefix(&src).expect("under src");
        let module = rel.components().next().expect("a component").as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "lib" | "main" | "cli") {
            continue;
        }
        let allowed = table.get(&module).unwrap_or_else(|| panic!("module {module} has no row in ARCHITECTURE.md's Layering table"));
        let text = std::fs::read_to_string(entry.path()).expect("read source");
        for used in used_modules(&text) {
            if used != module && !allowed.contains(&used) {
                wrong.push(format!("{} uses crate::{used}, which the {module} row does not allow", rel.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "edges the layering forbids:\n{}", wrong.join("\n"));
}

#[test]
fn grouped_and_nested_imports_are_read() {
    let text = "use crate::{exec::{a, b}, store::X};\nfn f() { crate::oci::to_blob(); }\n";
    assert_eq!(used_modules(text), BTreeSet::from(["exec".to_string(), "store".to_string(), "oci".to_string()]));
}

#[test]
fn the_library_does_not_export_the_command_line() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).expect("read lib.rs");
    assert!(!lib.lines().any(|l| l.trim_start().starts_with("pub mod cli")), "cli is private to the binary");
}
