//! Precedence of the four sources of a setting, through the same parsing the binary does:
//! flags over `TICKERFEED_*` variables over the TOML file over the declared defaults. One test
//! in its own process, because it sets environment variables.

use clap::FromArgMatches;
use tickerfeed::config::{Cli, Config};

#[test]
fn flags_beat_environment_beats_the_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tickerfeed.toml");
    std::fs::write(&file, "rate_burst = 5.0\nidle_timeout = 8.0\nping_interval = 4.0\nmax_symbols = 20\nworkers = 3\nseed = 11\n").unwrap();
    // SAFETY: this process runs this one test; nothing else reads the environment meanwhile.
    unsafe {
        std::env::set_var("TICKERFEED_RATE_BURST", "7");
        std::env::set_var("TICKERFEED_IDLE_TIMEOUT", "9");
        std::env::set_var("TICKERFEED_THROTTLE_MS", "300");
        std::env::set_var("TICKERFEED_SEED", "12");
    }
    let args = ["tickerfeed", "--config", file.to_str().unwrap(), "--idle-timeout", "11", "--workers", "1"];
    let matches = Cli::command_with_defaults().try_get_matches_from(args).unwrap();
    let config = Config::load(Cli::from_arg_matches(&matches).unwrap()).unwrap();
    let defaults = Config::load(Cli::from_arg_matches(&Cli::command_with_defaults().try_get_matches_from(["tickerfeed", "--seed", "1"]).unwrap()).unwrap()).unwrap();

    assert_eq!(config.limits.idle_timeout, 11.0, "flag over variable over file");
    assert_eq!(config.listen.workers, 1, "flag over file");
    assert_eq!(config.limits.rate_burst, 7.0, "variable over file");
    assert_eq!(config.seed, 12, "variable over file (a feed setting)");
    assert_eq!(config.limits.throttle_ms, 300, "variable over default");
    assert_eq!((config.limits.ping_interval, config.limits.max_symbols), (4.0, 20), "file over defaults");
    assert_eq!(config.limits.min_throttle_ms, 0, "the default where nothing is set");
    assert_ne!(config.limits.ping_interval, defaults.limits.ping_interval, "the file's value differs from the default, or this proves nothing");
    assert_ne!(config.limits.max_symbols, defaults.limits.max_symbols);
}
