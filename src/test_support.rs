//! What the property tests (`mod properties` beside a module's unit tests) share.

use proptest::test_runner::{Config, FileFailurePersistence};

/// The configuration of a module's property tests: `cases` per property, or `PROPTEST_CASES` from
/// the environment to run longer (`PROPTEST_CASES=100000 cargo test properties`). A failing
/// case's seed is saved in `file` under `target/proptest-regressions/` — never in the source
/// tree — and tried first on the next run, until `cargo clean`.
pub(crate) fn proptest_config(cases: u32, file: &'static str) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|value| value.parse().ok()).unwrap_or(cases);
    Config { cases, failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))), ..Config::default() }
}
