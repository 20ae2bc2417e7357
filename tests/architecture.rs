//! The dependency rule of docs/ARCHITECTURE.md, checked: every `crate::<module>` a source file
//! names must be an edge the rule allows, so an import that points the wrong way (anything into
//! `server`, `metrics` into `ws`, `feed` into `config`) fails here before a reviewer has to spot it.

use std::collections::BTreeSet;
use std::path::Path;

/// Each module and the modules it may import (docs/ARCHITECTURE.md, "The dependency rule").
const ALLOWED: &[(&str, &[&str])] = &[
    ("server", &["access", "http", "ws", "socketio", "session", "config", "metrics", "fault", "feed", "bus", "history", "logging", "api_error"]),
    ("http", &["access", "ws", "sse", "socketio", "session", "api_error", "metrics", "fault", "feed", "bus", "history", "quote", "web", "settings"]),
    ("ws", &["session", "api_error", "metrics", "feed", "bus", "quote", "settings"]),
    ("sse", &["session", "api_error", "metrics", "bus"]),
    ("session", &["access", "api_error", "metrics", "fault", "feed", "bus", "history", "quote", "settings"]),
    ("config", &["access", "http", "session", "socketio", "fault", "feed", "bus", "settings"]),
    ("metrics", &["feed", "bus"]),
    // Fault injection: below the transports and the session core (which apply what it asks),
    // above what it acts on (the feeds' publisher, the metrics).
    ("fault", &["metrics", "feed", "bus", "quote", "settings"]),
    ("feed", &["bus", "quote", "settings"]),
    ("bus", &["history", "quote", "settings"]),
    ("history", &["quote"]),
    ("tickgen", &["feed", "quote"]),
    ("socketio", &["access", "session", "ws", "api_error", "metrics", "bus", "settings"]),
    ("access", &["api_error", "quote", "settings"]),
    ("quote", &[]),
    ("api_error", &[]),
    ("settings", &[]),
    ("logging", &[]),
    ("web", &[]),
    ("healthcheck", &[]),
    // The fuzz targets' entry points (feature `fuzzing`): a leaf nothing imports.
    ("fuzzing", &["session", "feed", "socketio", "ws", "bus", "quote"]),
];

/// The top-level module a source file belongs to (`src/ws/session.rs` → `ws`).
fn module_of(path: &Path, src: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_string_lossy().to_string();
    Some(first.trim_end_matches(".rs").to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_follow_the_dependency_rule() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = BTreeSet::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(file, &src) else { continue };
        // The binaries and the build script use the library from outside.
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| *name == module) else { continue };
        checked += 1;
        let text = std::fs::read_to_string(file).expect("readable source file");
        // Comments may name a module (a doc saying who calls this); only code imports.
        let code: String = text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let text = code;
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + "crate::".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name.is_empty() || name == module || !ALLOWED.iter().any(|(m, _)| *m == name) {
                continue;
            }
            if !allowed.contains(&name.as_str()) {
                violations.insert(format!("{} imports crate::{name} ({module} may import: {})", file.strip_prefix(&src).unwrap().display(), allowed.join(", ")));
            }
        }
    }
    assert!(checked >= 25, "only {checked} files checked: is the source tree where this test looks?");
    assert!(violations.is_empty(), "imports against docs/ARCHITECTURE.md:\n{}", violations.into_iter().collect::<Vec<_>>().join("\n"));
}
