//! Build script: records the git commit of the build for `tickerfeed_build_info`.
//! `TICKERFEED_GIT_COMMIT` in the environment wins (container builds have no `.git`).

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
}
