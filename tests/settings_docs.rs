//! A setting's default is declared once, in the code (`settings!` in its subsystem), and `--help`
//! states it from there; the README's settings table and `feeds/default.toml` are written by
//! hand. This test reads all three and compares each with what the code resolves when nothing
//! is configured, so a default changed in the code and not in the documents fails here, and so
//! does a setting the README does not list.

use clap::Parser;
use tickerfeed::config::{Cli, Config};

/// The configuration with nothing set (but the seed, which is otherwise random).
fn defaults() -> Config {
    Config::load(Cli::try_parse_from(["tickerfeed", "--seed", "7"]).unwrap()).expect("the defaults are valid")
}

/// Each flag with a numeric or address default, and that default as the code resolves it.
fn code_defaults() -> Vec<(&'static str, String)> {
    let config = defaults();
    let sim = config.feeds.iter().find(|f| f.name == "sim").expect("the default setup runs the simulation");
    vec![
        ("--bind", config.listen.bind.clone()),
        ("--sim-rate", sim.rate.to_string()),
        ("--sim-speed", sim.speed.to_string()),
        ("--throttle-ms", config.limits.throttle_ms.to_string()),
        ("--min-throttle-ms", config.limits.min_throttle_ms.to_string()),
        ("--max-symbols", config.limits.max_symbols.to_string()),
        ("--max-connections", config.limits.max_connections.to_string()),
        ("--max-connections-per-ip", config.limits.max_connections_per_ip.to_string()),
        ("--max-frame-bytes", config.limits.max_frame_bytes.to_string()),
        ("--max-message-bytes", config.limits.max_message_bytes.to_string()),
        ("--rate-limit", config.limits.rate_limit.to_string()),
        ("--rate-burst", config.limits.rate_burst.to_string()),
        ("--send-buffer-bytes", config.limits.send_buffer_bytes.to_string()),
        ("--slow-consumer-timeout", config.limits.slow_consumer_timeout.to_string()),
        ("--ping-interval", config.limits.ping_interval.to_string()),
        ("--idle-timeout", config.limits.idle_timeout.to_string()),
        ("--socketio-ping-interval-ms", config.socketio.socketio_ping_interval_ms.to_string()),
        ("--socketio-ping-timeout-ms", config.socketio.socketio_ping_timeout_ms.to_string()),
        ("--socketio-max-payload", config.socketio.socketio_max_payload.to_string()),
        ("--shutdown-timeout", config.listen.shutdown_timeout.to_string()),
        ("--tls-handshake-timeout", config.listen.tls_handshake_timeout.to_string()),
        ("--request-head-timeout", config.listen.request_head_timeout.to_string()),
        ("--keep-alive-timeout", config.listen.keep_alive_timeout.to_string()),
        ("--disconnect-timeout", config.listen.disconnect_timeout.to_string()),
    ]
}

/// `1000`, `1000.0` and `1,000` are one number; an address is compared as text.
fn same(documented: &str, code: &str) -> bool {
    let number = |text: &str| text.replace([',', '`'], "").parse::<f64>().ok();
    match (number(documented), number(code)) {
        (Some(a), Some(b)) => a == b,
        _ => documented.trim_matches('`') == code,
    }
}

#[test]
fn the_readme_settings_table_states_the_code_defaults() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (flag, code) in code_defaults() {
        // A row is `| `--a`, `--b` | env | default[, default] | meaning |`; a row may carry two flags.
        let row = readme
            .lines()
            .filter(|line| line.starts_with("| `--"))
            .find(|line| line.split('|').nth(1).is_some_and(|flags| flags.split(',').any(|f| f.trim().trim_matches('`') == flag)))
            .unwrap_or_else(|| panic!("README's settings table has no row for {flag}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let flags: Vec<&str> = cells[1].split(',').map(|f| f.trim().trim_matches('`')).collect();
        let position = flags.iter().position(|f| *f == flag).unwrap();
        let documented = cells[3].split(", ").nth(position).unwrap_or(cells[3]);
        assert!(same(documented, &code), "README says {flag} defaults to {documented}; the code says {code}");
    }
}

#[test]
fn every_flag_help_states_the_code_default() {
    let command = Cli::command_with_defaults();
    for (flag, code) in code_defaults() {
        let arg = command.get_arguments().find(|a| a.get_long() == Some(&flag[2..])).unwrap_or_else(|| panic!("no flag {flag}"));
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let Some(start) = help.find("[default: ") else {
            // A flag whose help states no default must at least not state a wrong one.
            continue;
        };
        // `[default: 30720: the kernel doubles it …]`, `[default: 600, ten trading minutes …]`:
        // the value is the whole bracket or its part before the explanation.
        let rest: String = help[start + "[default: ".len()..].chars().take_while(|c| *c != ']').collect();
        let value = rest.split([':', ',']).next().unwrap_or(&rest).trim();
        assert!(same(rest.trim(), &code) || same(value, &code), "--help says {flag} defaults to {rest}; the code says {code}");
    }
}

/// The README's flags column, every flag of every row.
fn readme_flags() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows = readme.lines().filter(|line| line.starts_with("| `--")).map(|line| line.split('|').nth(1).unwrap_or_default().to_string()).collect::<Vec<_>>();
    rows.iter().flat_map(|flags| flags.split(',').map(|f| f.trim().trim_matches('`').split(' ').next().unwrap_or_default().to_string())).collect()
}

#[test]
fn every_setting_has_a_readme_row() {
    let documented = readme_flags();
    let command = Cli::command_with_defaults();
    let flags: Vec<String> = command.get_arguments().filter_map(|a| a.get_long()).filter(|f| !["help", "version"].contains(f)).map(|f| format!("--{f}")).collect();
    assert!(flags.len() >= 25, "only {} flags: {flags:?}", flags.len());
    for flag in flags {
        assert!(documented.contains(&flag), "{flag} is a setting the README's settings table does not list");
    }
}

#[test]
fn feeds_default_toml_is_the_default_setup() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/feeds/default.toml");
    let from_file = Config::load(Cli::try_parse_from(["tickerfeed", "--seed", "7", "--config", path]).unwrap()).expect("feeds/default.toml is valid");
    let mut expected = defaults();
    // The file names the universe the binary has built in; everything else must be equal.
    for (feed, file_feed) in expected.feeds.iter_mut().zip(&from_file.feeds) {
        feed.universe = file_feed.universe.clone();
    }
    assert_eq!(from_file, expected, "feeds/default.toml differs from the defaults in code");
}
