//! Build script: records the git commit of the build for `tickerfeed_build_info`
//! (`TICKERFEED_GIT_COMMIT` in the environment wins: container builds have no `.git`), and
//! embeds the browser dashboard's files (see `src/web.rs`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TICKERFEED_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // HEAD names a branch whose ref file moves with every commit.
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(reference) = head.strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{}", reference.trim());
        }
    }
    let commit = std::env::var("TICKERFEED_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let output = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    });
    println!("cargo:rustc-env=TICKERFEED_GIT_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
    embed_web_assets();
}

/// Lists every file under `dashboards/web/` as `(path, bytes)` in `$OUT_DIR/web_assets.rs`, so
/// the binary serves the dashboard with no files beside it and no Node step.
fn embed_web_assets() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("dashboards/web");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut code = String::from("&[\n");
    for (relative, absolute) in &files {
        println!("cargo:rerun-if-changed={}", absolute.display());
        code.push_str(&format!("    ({relative:?}, include_bytes!({:?}) as &[u8]),\n", absolute.display().to_string()));
    }
    code.push(']');
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_assets.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

fn collect(root: &std::path::Path, dir: &std::path::Path, files: &mut Vec<(String, std::path::PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            files.push((relative.to_string_lossy().replace('\\', "/"), path));
        }
    }
}
