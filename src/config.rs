//! Configuration: command-line flags over `TICKERFEED_*` environment variables over a TOML file
//! (`--config`) over built-in defaults.
//!
//! Each setting is declared once, by the subsystem that uses it: the HTTP listener's in
//! [`Listen`], the sessions' in [`Limits`], the feeds' in [`FeedArgs`] and [`FeedEntry`]
//! (with `settings!`, `src/settings.rs`). This module only layers the sources: clap
//! resolves flags over environment variables (every flag has an `env`), the TOML file fills what
//! neither set, the declared defaults the rest. [`Config`] is the validated result the server
//! runs with: every value is checked before anything starts, and a bad one is reported with the
//! key that set it (the flag is the key with `-`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use crate::feed::settings as feed_settings;

// The settings types of each subsystem, nested in `Cli`, `FileConfig` and `Config`.
pub use crate::access::settings::{AccessArgs, AccessSettings};
pub use crate::bus::settings::{Backend, BusArgs, BusSettings, Role};
pub use crate::fault::settings::{FaultArgs, FaultSettings, FileFaults};
pub use crate::fault::{FaultKind, FaultSpec, SpecError};
pub use crate::feed::settings::{FeedArgs, FeedEntry, ReplayFile};
pub use crate::feed::{FeedConfig, FeedKind};
pub use crate::http::listen::{Listen, ListenArgs};
pub use crate::session::limits::{Limits, LimitsArgs};
pub use crate::settings::Invalid;
pub use crate::socketio::settings::{SocketIoArgs, SocketIoSettings};

/// Command line. Every flag can also be set by the environment variable shown, or in the TOML
/// file given with `--config` under the same name with `_` for `-`.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "tickerfeed", version, about = "Real-time market data feed server: simulated and replayed quotes over WebSocket, throttled and conflated per client.")]
pub struct Cli {
    #[command(subcommand)]
    /// A subcommand; none runs the server.
    pub command: Option<Command>,

    /// TOML configuration file (see feeds/default.toml for every key).
    #[arg(long, env = "TICKERFEED_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    #[command(flatten, next_help_heading = "HTTP listener")]
    /// The HTTP listener's flags.
    pub listen: ListenArgs,

    #[command(flatten, next_help_heading = "Feeds")]
    /// The feeds' flags.
    pub feeds: FeedArgs,

    #[command(flatten, next_help_heading = "WebSocket sessions")]
    /// The WebSocket sessions' flags.
    pub limits: LimitsArgs,

    #[command(flatten, next_help_heading = "Socket.IO")]
    /// The Socket.IO endpoint's flags.
    pub socketio: SocketIoArgs,

    #[command(flatten, next_help_heading = "Access: tokens and origins")]
    /// Access control's flags.
    pub access: AccessArgs,

    #[command(flatten, next_help_heading = "Bus: Redis and roles")]
    /// The bus's flags.
    pub bus: BusArgs,

    #[command(flatten, next_help_heading = "Fault injection (testing)")]
    /// Fault injection's flags.
    pub faults: FaultArgs,
}

impl Cli {
    /// The command line as clap reads it, each setting's help ending with its default from the
    /// code (so `--help` cannot disagree with it).
    pub fn command_with_defaults() -> clap::Command {
        let shown = ListenArgs::shown_defaults()
            .into_iter()
            .chain(FeedArgs::shown_defaults())
            .chain(LimitsArgs::shown_defaults())
            .chain(SocketIoArgs::shown_defaults())
            .chain(AccessArgs::shown_defaults())
            .chain(BusArgs::shown_defaults());
        shown.fold(Cli::command(), |command, (id, default)| {
            command.mut_arg(id, |arg| {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let arg = match arg.get_long_help().map(|h| format!("{h} [default: {default}]")) {
                    Some(long_help) => arg.long_help(long_help),
                    None => arg,
                };
                arg.help(format!("{help} [default: {default}]"))
            })
        })
    }

    /// Parses the process's arguments and environment (exits with clap's message on an error).
    pub fn from_env() -> Cli {
        let matches = Cli::command_with_defaults().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
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
    /// Print a signed token (HS256) for a server started with --auth-secret-file: for tests and
    /// demos. Production tokens come from your own issuer.
    Token {
        /// The HS256 secret file the server verifies with.
        #[arg(long)]
        secret_file: PathBuf,
        /// The subject (`sub`): who the token is for.
        #[arg(long)]
        sub: String,
        /// Symbol patterns it may read, comma-separated: AAPL, EUR* (a prefix), * (all).
        #[arg(long, value_delimiter = ',', required = true)]
        symbols: Vec<String>,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// May control feeds (pause, resume, seek, speed).
        #[arg(long)]
        admin: bool,
    },
}

/// The TOML file: the keys of every subsystem's settings (as the flags, with `_`), plus `[[feeds]]`.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    /// The HTTP listener's keys.
    pub listen: ListenArgs,
    /// The WebSocket sessions' keys.
    pub limits: LimitsArgs,
    /// The Socket.IO endpoint's keys.
    pub socketio: SocketIoArgs,
    /// Access control's keys.
    pub access: AccessArgs,
    /// The bus's keys.
    pub bus: BusArgs,
    /// `faults = true`, or the `[[faults]]` tables.
    pub faults: FileFaults,
    /// `seed`: the seed of every feed that names none of its own.
    pub seed: Option<u64>,
    /// The `[[feeds]]` entries.
    pub feeds: Vec<FeedEntry>,
}

impl<'de> Deserialize<'de> for FileConfig {
    /// Each key goes to the subsystem that declares it; an unknown key is refused naming it
    /// and every known one (as a derived `deny_unknown_fields` struct would, with its line).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FileConfig, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = FileConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of tickerfeed settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileConfig, A::Error> {
                let mut file = FileConfig::default();
                // A key is checked as it is read, so that the parser's error points at it.
                while let Some(key) = map.next_key::<KnownKey>()? {
                    match key.0 {
                        "seed" => file.seed = Some(map.next_value()?),
                        "feeds" => file.feeds = map.next_value()?,
                        "faults" => file.faults = map.next_value()?,
                        key => {
                            let read = file.listen.read_toml(key, &mut map)?
                                || file.limits.read_toml(key, &mut map)?
                                || file.socketio.read_toml(key, &mut map)?
                                || file.access.read_toml(key, &mut map)?
                                || file.bus.read_toml(key, &mut map)?;
                            debug_assert!(read, "file_keys() lists {key}, which no part reads");
                        }
                    }
                }
                Ok(file)
            }
        }
        deserializer.deserialize_struct("FileConfig", file_keys(), FileVisitor)
    }
}

/// A top-level key of the TOML file, refused while it is read if no part declares it.
struct KnownKey(&'static str);

impl<'de> Deserialize<'de> for KnownKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KnownKey, D::Error> {
        let key = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        match file_keys().iter().find(|k| **k == key) {
            Some(known) => Ok(KnownKey(known)),
            None => Err(serde::de::Error::unknown_field(&key, file_keys())),
        }
    }
}

/// Every top-level key of the TOML file.
fn file_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        ListenArgs::KEYS
            .iter()
            .chain(["seed"].iter())
            .chain(LimitsArgs::KEYS)
            .chain(SocketIoArgs::KEYS)
            .chain(AccessArgs::KEYS)
            .chain(BusArgs::KEYS)
            .chain(["feeds", "faults"].iter())
            .copied()
            .collect()
    })
}

/// The validated configuration the server runs with, one part per subsystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The HTTP listener.
    pub listen: Listen,
    /// The WebSocket sessions' limits and timings.
    pub limits: Limits,
    /// The Socket.IO endpoint's heartbeat and payload limit.
    pub socketio: SocketIoSettings,
    /// Tokens and allowed origins.
    pub access: AccessSettings,
    /// The bus backend and this node's role.
    pub bus: BusSettings,
    /// The seed of every feed that names none of its own.
    pub seed: u64,
    /// The feeds to run, in order (the flags' `sim` first).
    pub feeds: Vec<FeedConfig>,
    /// Fault injection: off unless `--faults`, `--fault` or the file turns it on.
    pub faults: FaultSettings,
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line and the key at fault.
        message: String,
    },
    /// A value out of its range or against a rule; names the key.
    #[error(transparent)]
    Invalid(#[from] Invalid),
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
        let listen = cli.listen.or(file.listen).resolve()?;
        let seed = cli.feeds.seed.or(file.seed).unwrap_or_else(feed_settings::random_seed);
        let feeds = feed_settings::resolve(&cli.feeds, &file.feeds, seed)?;
        let limits = cli.limits.or(file.limits).resolve()?;
        let socketio = cli.socketio.or(file.socketio).resolve()?;
        let access = cli.access.or(file.access).resolve()?;
        let bus = cli.bus.or(file.bus).resolve()?;
        let faults = crate::fault::settings::resolve(&cli.faults, &file.faults)?;
        Ok(Config { listen, limits, socketio, access, bus, seed, feeds, faults })
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let mut file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    // Relative paths in the file are relative to the file, so a config works from any directory.
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for feed in &mut file.feeds {
        feed.relative_to(&base);
    }
    for key_file in [&mut file.access.auth_secret_file, &mut file.access.auth_public_key].into_iter().flatten() {
        if !key_file.is_empty() && Path::new(key_file.as_str()).is_relative() {
            *key_file = base.join(&*key_file).display().to_string();
        }
    }
    Ok(file)
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
        assert_eq!(config.listen.addr().to_string(), "127.0.0.1:8080");
        assert_eq!(config.feeds.len(), 1);
        assert_eq!(config.feeds[0].kind, FeedKind::Sim);
        assert_eq!((config.limits.throttle_ms, config.limits.min_throttle_ms, config.limits.max_symbols, config.limits.max_connections), (250, 0, 1000, 16_000));
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
        assert_eq!((config.limits.throttle_ms, config.limits.max_symbols), (100, 20));
    }

    #[test]
    fn every_part_reads_its_keys_from_the_file() {
        let file: FileConfig = toml::from_str("bind = \"127.0.0.1:9\"\nshutdown_timeout = 2.5\nidle_timeout = 7\nseed = 3\n").unwrap();
        let config = Config::resolve(cli(&[]), file).unwrap();
        assert_eq!((config.listen.bind.as_str(), config.listen.shutdown_timeout), ("127.0.0.1:9", 2.5));
        assert_eq!((config.limits.idle_timeout, config.seed, config.feeds[0].seed), (7.0, 3, 3));
        let err = toml::from_str::<FileConfig>("workers = \"many\"").unwrap_err();
        assert!(err.to_string().contains("expected usize"), "{err}");
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
    fn faults_come_from_flags_and_the_file() {
        let config = Config::resolve(cli(&[]), FileConfig::default()).unwrap();
        assert_eq!(config.faults, FaultSettings::default(), "off by default");
        let config = Config::resolve(cli(&["--faults"]), FileConfig::default()).unwrap();
        assert!(config.faults.enabled && config.faults.faults.is_empty());
        let file: FileConfig = toml::from_str("[[faults]]\nkind = \"gap\"\nsymbol = \"AAPL\"\ncount = 3\nevery = \"10s\"\n").unwrap();
        let config = Config::resolve(cli(&["--fault", "reject_connect:count=2"]), file).unwrap();
        assert!(config.faults.enabled, "a fault implies --faults");
        let kinds: Vec<FaultKind> = config.faults.faults.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FaultKind::Gap, FaultKind::RejectConnect], "the file's, then the flags'");
        let file: FileConfig = toml::from_str("faults = true\n").unwrap();
        assert!(Config::resolve(cli(&[]), file).unwrap().faults.enabled);
        let err = Config::resolve(cli(&["--fault", "gap:count=3"]), FileConfig::default()).unwrap_err();
        assert_eq!(err.to_string(), "--fault: 'gap:count=3': symbol: gap needs 'symbol': the symbol whose quotes are skipped, e.g. symbol=AAPL");
        let err = toml::from_str::<FileConfig>("[[faults]]\nkind = \"stall\"\nsymbol = \"AAPL\"\n").unwrap_err();
        assert!(err.to_string().contains("[[faults]] number 1: symbol: stall does not take 'symbol'"), "{err}");
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
