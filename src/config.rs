//! Configuration: command-line flags over `TICKERFEED_*` environment variables over a TOML file
//! (`--config`) over built-in defaults.
//!
//! clap resolves flags and environment variables (every flag has an `env`); the TOML file fills
//! what neither set; [`Config`] is the validated result the server runs with. Every value is
//! checked here, before anything starts, and a bad one is reported with the flag, variable or
//! TOML key that set it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::feed::{FeedConfig, FeedKind};

/// Command line. Every flag can also be set by the environment variable shown, or in the TOML
/// file given with `--config` under the same name with `_` for `-`.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "tickerfeed", version, about = "Real-time market data feed server: simulated and replayed quotes over WebSocket, throttled and conflated per client.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file (see feeds/default.toml for every key).
    #[arg(long, env = "TICKERFEED_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TICKERFEED_BIND")]
    pub bind: Option<String>,

    /// Seed of the simulation and of intrabar paths; the same seed and configuration give the
    /// same sequence of quotes [default: random, logged at start].
    #[arg(long, env = "TICKERFEED_SEED")]
    pub seed: Option<u64>,

    /// Run the simulated feed even when replay files are given.
    #[arg(long, env = "TICKERFEED_SIM")]
    pub sim: bool,

    /// Simulated quotes per second over all symbols [default: 1000].
    #[arg(long, env = "TICKERFEED_SIM_RATE")]
    pub sim_rate: Option<f64>,

    /// Simulation time scale: model seconds per wall second [default: 600, ten trading
    /// minutes per second, so moves are visible within seconds].
    #[arg(long, env = "TICKERFEED_SIM_SPEED")]
    pub sim_speed: Option<f64>,

    /// Instrument universe CSV of the simulation [default: feeds/universe.csv, built in].
    #[arg(long, env = "TICKERFEED_UNIVERSE")]
    pub universe: Option<PathBuf>,

    /// Replay a CSV file (repeatable; all together form the feed named `replay`). Turns the
    /// simulation off unless --sim is given.
    #[arg(long = "replay", value_name = "FILE", env = "TICKERFEED_REPLAY", value_delimiter = ',')]
    pub replay: Vec<PathBuf>,

    /// Replay speed: history seconds per wall second; 0 = as fast as possible [default: 86400].
    #[arg(long, env = "TICKERFEED_SPEED")]
    pub speed: Option<f64>,

    /// Replay at a fixed wall interval per row (per bar for bar files) instead of --speed.
    #[arg(long, env = "TICKERFEED_INTERVAL_MS")]
    pub interval_ms: Option<f64>,

    /// Restart replays at the end of their data.
    #[arg(long = "loop", env = "TICKERFEED_LOOP")]
    pub loop_replay: bool,

    /// Default throttle of a subscription in ms [default: 250].
    #[arg(long, env = "TICKERFEED_THROTTLE_MS")]
    pub throttle_ms: Option<u64>,

    /// Lowest throttle a client may ask for, in ms [default: 0].
    #[arg(long, env = "TICKERFEED_MIN_THROTTLE_MS")]
    pub min_throttle_ms: Option<u64>,

    /// Symbols per session ("*" counts as one) [default: 1000].
    #[arg(long, env = "TICKERFEED_MAX_SYMBOLS")]
    pub max_symbols: Option<usize>,

    /// Concurrent WebSocket connections; further upgrades get 503 [default: 16000].
    #[arg(long, env = "TICKERFEED_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Largest quote frame sent, in bytes [default: 16384].
    #[arg(long, env = "TICKERFEED_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Largest client message accepted, in bytes; bigger closes with 1009 [default: 4096].
    #[arg(long, env = "TICKERFEED_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Client messages per second per connection [default: 50].
    #[arg(long, env = "TICKERFEED_RATE_LIMIT")]
    pub rate_limit: Option<f64>,

    /// Burst of client messages allowed above the rate [default: 100].
    #[arg(long, env = "TICKERFEED_RATE_BURST")]
    pub rate_burst: Option<f64>,

    /// SO_SNDBUF of accepted sockets in bytes (the kernel doubles it); 0 = system default
    /// [default: 30720: the kernel doubles it to 60 KiB and may overshoot that a little, and the
    /// budget is 64 KiB queued per client].
    #[arg(long, env = "TICKERFEED_SEND_BUFFER_BYTES")]
    pub send_buffer_bytes: Option<usize>,

    /// Close a client whose socket accepts no writes for this long, in seconds [default: 30].
    #[arg(long, env = "TICKERFEED_SLOW_CONSUMER_TIMEOUT")]
    pub slow_consumer_timeout: Option<f64>,

    /// Seconds between server pings [default: 15].
    #[arg(long, env = "TICKERFEED_PING_INTERVAL")]
    pub ping_interval: Option<f64>,

    /// Close a peer silent for this many seconds [default: 45].
    #[arg(long, env = "TICKERFEED_IDLE_TIMEOUT")]
    pub idle_timeout: Option<f64>,

    /// Seconds to wait for connections to close at shutdown [default: 5].
    #[arg(long, env = "TICKERFEED_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<f64>,

    /// HTTP worker threads [default: number of CPUs].
    #[arg(long, env = "TICKERFEED_WORKERS")]
    pub workers: Option<usize>,
}

/// Subcommands besides running the server.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Write a reproducible tick file (timestamp,symbol,price,size,bid,ask,volume) from the
    /// simulation, for benchmarks: replay it with --replay FILE --interval-ms MS --loop.
    Gen {
        /// Seed of the simulation.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of symbols (the default universe first, then synthetic S0102, S0103, ...).
        #[arg(long, default_value_t = 500)]
        symbols: usize,
        /// Number of quotes to write.
        #[arg(long, default_value_t = 1_000_000)]
        quotes: u64,
        /// Quotes per second of event time (the spacing of the timestamps).
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// Output file [default: standard output].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Ask a running server's /healthz and exit 0 if it answers 200 (for container health checks).
    Healthcheck {
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

/// The TOML file. Same keys as the flags (with `_`), plus `[[feeds]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub seed: Option<u64>,
    pub throttle_ms: Option<u64>,
    pub min_throttle_ms: Option<u64>,
    pub max_symbols: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_frame_bytes: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub rate_limit: Option<f64>,
    pub rate_burst: Option<f64>,
    pub send_buffer_bytes: Option<usize>,
    pub slow_consumer_timeout: Option<f64>,
    pub ping_interval: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub shutdown_timeout: Option<f64>,
    pub workers: Option<usize>,
    #[serde(default)]
    pub feeds: Vec<FeedFileConfig>,
}

/// One `[[feeds]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedFileConfig {
    pub name: String,
    pub kind: FeedKind,
    /// Replay: the files.
    #[serde(default)]
    pub files: Vec<ReplayFileConfig>,
    /// Appended to every symbol of the feed (e.g. ".H"), so it can run beside another feed.
    #[serde(default)]
    pub suffix: Option<String>,
    pub speed: Option<f64>,
    pub interval_ms: Option<f64>,
    #[serde(rename = "loop", default)]
    pub loop_replay: Option<bool>,
    pub seed: Option<u64>,
    /// Sim: quotes per second.
    pub rate: Option<f64>,
    /// Sim: universe CSV.
    pub universe: Option<PathBuf>,
    /// Replay: intrabar ticks per OHLC bar.
    pub ticks_per_bar: Option<usize>,
}

/// A replayed file in TOML: a path, or a table with the path and the symbol of a bar file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ReplayFileConfig {
    Path(PathBuf),
    Table { path: PathBuf, symbol: Option<String> },
}

impl ReplayFileConfig {
    pub fn path(&self) -> &Path {
        match self {
            ReplayFileConfig::Path(p) | ReplayFileConfig::Table { path: p, .. } => p,
        }
    }

    pub fn symbol(&self) -> Option<&str> {
        match self {
            ReplayFileConfig::Path(_) => None,
            ReplayFileConfig::Table { symbol, .. } => symbol.as_deref(),
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bind: SocketAddr,
    pub seed: u64,
    pub feeds: Vec<FeedConfig>,
    pub throttle_ms: u64,
    pub min_throttle_ms: u64,
    pub max_symbols: usize,
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub rate_limit: f64,
    pub rate_burst: f64,
    pub send_buffer_bytes: usize,
    pub slow_consumer_timeout: f64,
    pub ping_interval: f64,
    pub idle_timeout: f64,
    pub shutdown_timeout: f64,
    pub workers: usize,
}

/// Longest throttle a client may ask for.
pub const MAX_THROTTLE_MS: u64 = 60_000;
/// Default intrabar ticks per OHLC bar.
pub use crate::feed::replay::format::DEFAULT_TICKS_PER_BAR;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), message: message.into() }
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(Cli::default(), FileConfig::default()).expect("defaults are valid")
    }
}

impl Config {
    /// Reads the TOML file named by `--config` (if any) and resolves everything.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        Config::resolve(cli, file)
    }

    /// Merges flags/environment (`cli`) over the file over defaults, and validates.
    pub fn resolve(cli: Cli, file: FileConfig) -> Result<Config, ConfigError> {
        let bind_text = cli.bind.or(file.bind).unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let bind: SocketAddr = bind_text.parse().map_err(|e| invalid("bind", format!("'{bind_text}' is not an address like 127.0.0.1:8080 ({e})")))?;
        let seed = cli.seed.or(file.seed).unwrap_or_else(random_seed);
        let workers = cli.workers.or(file.workers).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));

        let config = Config {
            bind,
            seed,
            feeds: Vec::new(),
            throttle_ms: cli.throttle_ms.or(file.throttle_ms).unwrap_or(250),
            min_throttle_ms: cli.min_throttle_ms.or(file.min_throttle_ms).unwrap_or(0),
            max_symbols: cli.max_symbols.or(file.max_symbols).unwrap_or(1000),
            max_connections: cli.max_connections.or(file.max_connections).unwrap_or(16_000),
            max_frame_bytes: cli.max_frame_bytes.or(file.max_frame_bytes).unwrap_or(16 * 1024),
            max_message_bytes: cli.max_message_bytes.or(file.max_message_bytes).unwrap_or(4096),
            rate_limit: cli.rate_limit.or(file.rate_limit).unwrap_or(50.0),
            rate_burst: cli.rate_burst.or(file.rate_burst).unwrap_or(100.0),
            send_buffer_bytes: cli.send_buffer_bytes.or(file.send_buffer_bytes).unwrap_or(30 * 1024),
            slow_consumer_timeout: cli.slow_consumer_timeout.or(file.slow_consumer_timeout).unwrap_or(30.0),
            ping_interval: cli.ping_interval.or(file.ping_interval).unwrap_or(15.0),
            idle_timeout: cli.idle_timeout.or(file.idle_timeout).unwrap_or(45.0),
            shutdown_timeout: cli.shutdown_timeout.or(file.shutdown_timeout).unwrap_or(5.0),
            workers,
        };
        let feeds = resolve_feeds(&cli.replay, cli.sim, cli.sim_rate, cli.sim_speed, cli.universe.clone(), cli.speed, cli.interval_ms, cli.loop_replay, &file.feeds, seed)?;
        let config = Config { feeds, ..config };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.min_throttle_ms > MAX_THROTTLE_MS {
            return Err(invalid("min_throttle_ms", format!("{} exceeds the maximum throttle {MAX_THROTTLE_MS}", self.min_throttle_ms)));
        }
        if self.throttle_ms > MAX_THROTTLE_MS || self.throttle_ms < self.min_throttle_ms {
            return Err(invalid("throttle_ms", format!("{} must be between min_throttle_ms ({}) and {MAX_THROTTLE_MS}", self.throttle_ms, self.min_throttle_ms)));
        }
        check_range("max_symbols", self.max_symbols as f64, 1.0, 1_000_000.0)?;
        check_range("max_connections", self.max_connections as f64, 1.0, 10_000_000.0)?;
        check_range("max_frame_bytes", self.max_frame_bytes as f64, 1024.0, 16.0 * 1024.0 * 1024.0)?;
        check_range("max_message_bytes", self.max_message_bytes as f64, 256.0, 1024.0 * 1024.0)?;
        check_range("rate_limit", self.rate_limit, 0.1, 1e6)?;
        check_range("rate_burst", self.rate_burst, 1.0, 1e6)?;
        check_range("send_buffer_bytes", self.send_buffer_bytes as f64, 0.0, 64.0 * 1024.0 * 1024.0)?;
        check_range("slow_consumer_timeout", self.slow_consumer_timeout, 0.1, 86_400.0)?;
        check_range("ping_interval", self.ping_interval, 0.1, 86_400.0)?;
        check_range("idle_timeout", self.idle_timeout, 0.1, 86_400.0)?;
        check_range("shutdown_timeout", self.shutdown_timeout, 0.0, 3600.0)?;
        check_range("workers", self.workers as f64, 1.0, 1024.0)?;
        if self.feeds.is_empty() {
            return Err(invalid("feeds", "no feed configured"));
        }
        for feed in &self.feeds {
            let key = |field: &str| format!("feeds.{}.{field}", feed.name);
            check_range(&key("speed"), feed.speed, 0.0, crate::feed::MAX_SPEED)?;
            if feed.kind == FeedKind::Sim {
                check_range(&key("rate"), feed.rate, 0.001, 10_000_000.0)?;
                if feed.speed <= 0.0 {
                    return Err(invalid(&key("speed"), "the simulation's time scale must be > 0"));
                }
            }
            if let Some(interval) = feed.interval_ms {
                check_range(&key("interval_ms"), interval, 0.0, 86_400_000.0)?;
            }
            check_range(&key("ticks_per_bar"), feed.ticks_per_bar as f64, 4.0, 1000.0)?;
        }
        Ok(())
    }
}

fn check_range(key: &str, value: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if !value.is_finite() || value < min || value > max {
        return Err(invalid(key, format!("{value} must be between {min} and {max}")));
    }
    Ok(())
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let mut file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    // Relative paths in the file are relative to the file, so a config works from any directory.
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let relative = |p: &Path| if p.is_relative() && !p.exists() { base.join(p) } else { p.to_path_buf() };
    for feed in &mut file.feeds {
        for f in &mut feed.files {
            match f {
                ReplayFileConfig::Path(p) | ReplayFileConfig::Table { path: p, .. } => *p = relative(p),
            }
        }
        if let Some(u) = &feed.universe {
            feed.universe = Some(relative(u));
        }
    }
    Ok(file)
}

#[allow(clippy::too_many_arguments)]
fn resolve_feeds(
    replay: &[PathBuf],
    sim_flag: bool,
    sim_rate: Option<f64>,
    sim_speed: Option<f64>,
    universe: Option<PathBuf>,
    speed: Option<f64>,
    interval_ms: Option<f64>,
    loop_replay: bool,
    file_feeds: &[FeedFileConfig],
    seed: u64,
) -> Result<Vec<FeedConfig>, ConfigError> {
    let mut feeds = Vec::new();
    for f in file_feeds {
        if !valid_feed_name(&f.name) {
            return Err(invalid("feeds.name", format!("'{}' must be 1-32 letters, digits, '-' or '_'", f.name)));
        }
        if feeds.iter().any(|x: &FeedConfig| x.name == f.name) {
            return Err(invalid("feeds.name", format!("feed '{}' is declared twice", f.name)));
        }
        let sim = f.kind == FeedKind::Sim;
        if sim && !f.files.is_empty() {
            return Err(invalid(&format!("feeds.{}.files", f.name), "a sim feed takes no files"));
        }
        if !sim && f.files.is_empty() {
            return Err(invalid(&format!("feeds.{}.files", f.name), "a replay feed needs at least one file"));
        }
        feeds.push(FeedConfig {
            name: f.name.clone(),
            kind: f.kind,
            seed: f.seed.unwrap_or(seed),
            suffix: f.suffix.clone().unwrap_or_default().to_uppercase(),
            speed: if sim { sim_speed.or(f.speed).unwrap_or(600.0) } else { speed.or(f.speed).unwrap_or(86_400.0) },
            rate: if sim { sim_rate.or(f.rate).unwrap_or(1000.0) } else { 0.0 },
            universe: if sim { universe.clone().or(f.universe.clone()) } else { None },
            files: f.files.iter().map(|x| (x.path().to_path_buf(), x.symbol().map(str::to_string))).collect(),
            interval_ms: if sim { None } else { interval_ms.or(f.interval_ms) },
            loop_replay: !sim && (loop_replay || f.loop_replay.unwrap_or(false)),
            ticks_per_bar: f.ticks_per_bar.unwrap_or(DEFAULT_TICKS_PER_BAR),
        });
    }
    if !replay.is_empty() {
        if feeds.iter().any(|f| f.name == "replay") {
            return Err(invalid("replay", "--replay makes a feed named 'replay', but the config file declares one too"));
        }
        feeds.push(FeedConfig {
            name: "replay".into(),
            kind: FeedKind::Replay,
            seed,
            suffix: String::new(),
            speed: speed.unwrap_or(86_400.0),
            rate: 0.0,
            universe: None,
            files: replay.iter().map(|p| (p.clone(), None)).collect(),
            interval_ms,
            loop_replay,
            ticks_per_bar: DEFAULT_TICKS_PER_BAR,
        });
    }
    let has_sim = feeds.iter().any(|f| f.kind == FeedKind::Sim);
    let want_default_sim = sim_flag || (file_feeds.is_empty() && replay.is_empty());
    if want_default_sim && !has_sim {
        if feeds.iter().any(|f| f.name == "sim") {
            return Err(invalid("sim", "--sim makes a feed named 'sim', but the config file declares a replay feed by that name"));
        }
        feeds.insert(
            0,
            FeedConfig {
                name: "sim".into(),
                kind: FeedKind::Sim,
                seed,
                suffix: String::new(),
                speed: sim_speed.unwrap_or(600.0),
                rate: sim_rate.unwrap_or(1000.0),
                universe,
                files: Vec::new(),
                interval_ms: None,
                loop_replay: false,
                ticks_per_bar: DEFAULT_TICKS_PER_BAR,
            },
        );
    }
    Ok(feeds)
}

fn valid_feed_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["tickerfeed"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_need_no_configuration() {
        let config = Config::resolve(cli(&[]), FileConfig::default()).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.feeds.len(), 1);
        assert_eq!(config.feeds[0].kind, FeedKind::Sim);
        assert_eq!((config.throttle_ms, config.min_throttle_ms, config.max_symbols, config.max_connections), (250, 0, 1000, 16_000));
    }

    #[test]
    fn replay_turns_sim_off_unless_asked() {
        let config = Config::resolve(cli(&["--replay", "a.csv", "--replay", "b.csv"]), FileConfig::default()).unwrap();
        assert_eq!(config.feeds.len(), 1);
        assert_eq!(config.feeds[0].name, "replay");
        assert_eq!(config.feeds[0].files.len(), 2);
        let config = Config::resolve(cli(&["--replay", "a.csv", "--sim"]), FileConfig::default()).unwrap();
        assert_eq!(config.feeds.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), vec!["sim", "replay"]);
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig = toml::from_str("throttle_ms = 500\nmax_symbols = 20\n").unwrap();
        let config = Config::resolve(cli(&["--throttle-ms", "100"]), file).unwrap();
        assert_eq!((config.throttle_ms, config.max_symbols), (100, 20));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::resolve(cli(&["--bind", "nowhere"]), FileConfig::default()).unwrap_err();
        assert!(err.to_string().starts_with("bind: 'nowhere'"), "{err}");
        let err = Config::resolve(cli(&["--throttle-ms", "70000"]), FileConfig::default()).unwrap_err();
        assert!(err.to_string().starts_with("throttle_ms:"), "{err}");
        let err = Config::resolve(cli(&["--sim-rate=-3"]), FileConfig::default()).unwrap_err();
        assert!(err.to_string().starts_with("feeds.sim.rate:"), "{err}");
        let err = toml::from_str::<FileConfig>("throttle = 5").unwrap_err();
        assert!(err.to_string().contains("throttle"), "{err}");
    }

    #[test]
    fn shipped_config_files_parse() {
        for path in ["feeds/default.toml", "feeds/demo-replay.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            let file = read_file_config(&path).unwrap_or_else(|e| panic!("{e}"));
            Config::resolve(cli(&[]), file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
