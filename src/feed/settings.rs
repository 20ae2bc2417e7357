//! The feed subsystem's settings: the feeds the flags describe (`--sim`, `--replay`, …), the
//! `[[feeds]]` entries of the TOML file, and how the two make the list of feeds to run. Each
//! default is declared here once; `config` hands both sources over and gets [`FeedConfig`]s.
//!
//! Rules: with no feed configured the simulation runs; `--replay` adds a feed named `replay`
//! and turns the default simulation off unless `--sim` is given; a flag that names a feed's
//! value (`--sim-rate`, `--speed`, …) wins over the entry's own. Every refusal names its key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{FeedConfig, FeedKind, MAX_SPEED};
use crate::settings::{Invalid, check_range};

/// Default quotes per second of a simulation, over all its symbols.
pub(crate) const SIM_RATE: f64 = 1000.0;
/// Default time scale of a simulation: ten trading minutes per second, so a 30%-volatility
/// stock moves about 0.3% per second — visible on a dashboard at once.
pub(crate) const SIM_SPEED: f64 = 600.0;
/// Default replay speed: one day of history per second.
pub(crate) const REPLAY_SPEED: f64 = 86_400.0;
/// Default intrabar ticks per OHLC bar.
pub(crate) use super::replay::format::DEFAULT_TICKS_PER_BAR;

/// The feeds as flags and environment describe them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FeedArgs {
    /// Seed of the simulation and of intrabar paths; the same seed and configuration give the
    /// same sequence of quotes.
    #[arg(long, env = "TICKERFEED_SEED")]
    pub seed: Option<u64>,

    /// Run the simulated feed even when replay files are given.
    #[arg(long, env = "TICKERFEED_SIM")]
    pub sim: bool,

    /// Simulated quotes per second over all symbols.
    #[arg(long, env = "TICKERFEED_SIM_RATE")]
    pub sim_rate: Option<f64>,

    /// Simulation time scale: model seconds per wall second (600: ten trading minutes per
    /// second, so moves are visible within seconds).
    #[arg(long, env = "TICKERFEED_SIM_SPEED")]
    pub sim_speed: Option<f64>,

    /// Instrument universe CSV of the simulation.
    #[arg(long, env = "TICKERFEED_UNIVERSE")]
    pub universe: Option<PathBuf>,

    /// Replay a CSV file (repeatable; all together form the feed named `replay`). Turns the
    /// simulation off unless --sim is given.
    #[arg(long = "replay", value_name = "FILE", env = "TICKERFEED_REPLAY", value_delimiter = ',')]
    pub replay: Vec<PathBuf>,

    /// Replay speed: history seconds per wall second; 0 = as fast as possible.
    #[arg(long, env = "TICKERFEED_SPEED")]
    pub speed: Option<f64>,

    /// Replay at a fixed wall interval per row (per bar for bar files) instead of --speed.
    #[arg(long, env = "TICKERFEED_INTERVAL_MS")]
    pub interval_ms: Option<f64>,

    /// Restart replays at the end of their data.
    #[arg(long = "loop", env = "TICKERFEED_LOOP")]
    pub loop_replay: bool,
}

impl FeedArgs {
    /// Each flag's id and its default as `--help` and the README state it.
    pub fn shown_defaults() -> Vec<(&'static str, String)> {
        vec![
            ("seed", "random, logged at start".to_string()),
            ("sim_rate", SIM_RATE.to_string()),
            ("sim_speed", SIM_SPEED.to_string()),
            ("universe", "feeds/universe.csv, built in".to_string()),
            ("speed", REPLAY_SPEED.to_string()),
        ]
    }
}

/// One `[[feeds]]` entry of the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedEntry {
    /// The feed's name: 1-32 letters, digits, `-` or `_`.
    pub name: String,
    /// `sim` or `replay`.
    pub kind: FeedKind,
    /// Replay: the files.
    #[serde(default)]
    pub files: Vec<ReplayFile>,
    /// Appended to every symbol of the feed (e.g. ".H"), so it can run beside another feed.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Sim: time scale; replay: history seconds per wall second.
    pub speed: Option<f64>,
    /// Replay: a fixed wall interval per row instead of `speed`.
    pub interval_ms: Option<f64>,
    /// Replay: start again at the end (`loop` in TOML).
    #[serde(rename = "loop", default)]
    pub loop_replay: Option<bool>,
    /// This feed's own seed instead of the top-level one.
    pub seed: Option<u64>,
    /// Sim: quotes per second.
    pub rate: Option<f64>,
    /// Sim: universe CSV.
    pub universe: Option<PathBuf>,
    /// Replay: intrabar ticks per OHLC bar.
    pub ticks_per_bar: Option<usize>,
}

impl FeedEntry {
    /// Makes the entry's relative paths relative to `base` (the TOML file's directory), so a
    /// configuration works from any directory.
    pub fn relative_to(&mut self, base: &Path) {
        let relative = |p: &Path| if p.is_relative() && !p.exists() { base.join(p) } else { p.to_path_buf() };
        for file in &mut self.files {
            match file {
                ReplayFile::Path(p) | ReplayFile::Table { path: p, .. } => *p = relative(p),
            }
        }
        if let Some(u) = &self.universe {
            self.universe = Some(relative(u));
        }
    }
}

/// A replayed file in TOML: a path, or a table with the path and the symbol of a bar file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ReplayFile {
    /// `"file.csv"`.
    Path(PathBuf),
    /// `{ path = "spx.csv", symbol = "SPX" }`: a bar file without a symbol column.
    Table {
        /// The file.
        path: PathBuf,
        /// The symbol its rows are published as.
        symbol: Option<String>,
    },
}

impl ReplayFile {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            ReplayFile::Path(p) | ReplayFile::Table { path: p, .. } => p,
        }
    }

    /// The symbol given for it, if any.
    pub fn symbol(&self) -> Option<&str> {
        match self {
            ReplayFile::Path(_) => None,
            ReplayFile::Table { symbol, .. } => symbol.as_deref(),
        }
    }
}

/// The feeds to run, from the flags over the file's entries, each checked; `seed` is the one
/// a feed without its own uses.
pub(crate) fn resolve(args: &FeedArgs, entries: &[FeedEntry], seed: u64) -> Result<Vec<FeedConfig>, Invalid> {
    let mut feeds: Vec<FeedConfig> = Vec::new();
    for entry in entries {
        if !valid_feed_name(&entry.name) {
            return Err(Invalid::new("feeds.name", format!("'{}' must be 1-32 letters, digits, '-' or '_'", entry.name)));
        }
        if feeds.iter().any(|f| f.name == entry.name) {
            return Err(Invalid::new("feeds.name", format!("feed '{}' is declared twice", entry.name)));
        }
        feeds.push(from_entry(args, entry, seed)?);
    }
    if !args.replay.is_empty() {
        if feeds.iter().any(|f| f.name == "replay") {
            return Err(Invalid::new("replay", "--replay makes a feed named 'replay', but the config file declares one too"));
        }
        let replay = FeedConfig { files: args.replay.iter().map(|p| (p.clone(), None)).collect(), ..default_feed("replay", FeedKind::Replay, args, seed) };
        feeds.push(replay);
    }
    let has_sim = feeds.iter().any(|f| f.kind == FeedKind::Sim);
    let want_default_sim = args.sim || (entries.is_empty() && args.replay.is_empty());
    if want_default_sim && !has_sim {
        if feeds.iter().any(|f| f.name == "sim") {
            return Err(Invalid::new("sim", "--sim makes a feed named 'sim', but the config file declares a replay feed by that name"));
        }
        feeds.insert(0, default_feed("sim", FeedKind::Sim, args, seed));
    }
    if feeds.is_empty() {
        return Err(Invalid::new("feeds", "no feed configured"));
    }
    for feed in &feeds {
        check(feed)?;
    }
    Ok(feeds)
}

/// A feed the flags make (`sim`, `replay`): the flags' values over the defaults.
fn default_feed(name: &str, kind: FeedKind, args: &FeedArgs, seed: u64) -> FeedConfig {
    let sim = kind == FeedKind::Sim;
    FeedConfig {
        name: name.into(),
        kind,
        seed,
        suffix: String::new(),
        speed: if sim { args.sim_speed.unwrap_or(SIM_SPEED) } else { args.speed.unwrap_or(REPLAY_SPEED) },
        rate: if sim { args.sim_rate.unwrap_or(SIM_RATE) } else { 0.0 },
        universe: if sim { args.universe.clone() } else { None },
        files: Vec::new(),
        interval_ms: if sim { None } else { args.interval_ms },
        loop_replay: !sim && args.loop_replay,
        ticks_per_bar: DEFAULT_TICKS_PER_BAR,
    }
}

/// A `[[feeds]]` entry: the flags' values over the entry's over the defaults.
fn from_entry(args: &FeedArgs, entry: &FeedEntry, seed: u64) -> Result<FeedConfig, Invalid> {
    let sim = entry.kind == FeedKind::Sim;
    if sim && !entry.files.is_empty() {
        return Err(Invalid::new(&format!("feeds.{}.files", entry.name), "a sim feed takes no files"));
    }
    if !sim && entry.files.is_empty() {
        return Err(Invalid::new(&format!("feeds.{}.files", entry.name), "a replay feed needs at least one file"));
    }
    let defaults = default_feed(&entry.name, entry.kind, &FeedArgs::default(), entry.seed.unwrap_or(seed));
    Ok(FeedConfig {
        suffix: entry.suffix.clone().unwrap_or_default().to_uppercase(),
        speed: if sim { args.sim_speed } else { args.speed }.or(entry.speed).unwrap_or(defaults.speed),
        rate: if sim { args.sim_rate.or(entry.rate).unwrap_or(defaults.rate) } else { 0.0 },
        universe: if sim { args.universe.clone().or(entry.universe.clone()) } else { None },
        files: entry.files.iter().map(|x| (x.path().to_path_buf(), x.symbol().map(str::to_string))).collect(),
        interval_ms: if sim { None } else { args.interval_ms.or(entry.interval_ms) },
        loop_replay: !sim && (args.loop_replay || entry.loop_replay.unwrap_or(false)),
        ticks_per_bar: entry.ticks_per_bar.unwrap_or(defaults.ticks_per_bar),
        ..defaults
    })
}

/// One feed's values, each within its range; a refusal names `feeds.<name>.<key>`.
fn check(feed: &FeedConfig) -> Result<(), Invalid> {
    let key = |field: &str| format!("feeds.{}.{field}", feed.name);
    check_range(&key("speed"), feed.speed, 0.0, MAX_SPEED)?;
    if feed.kind == FeedKind::Sim {
        check_range(&key("rate"), feed.rate, 0.001, 10_000_000.0)?;
        if feed.speed <= 0.0 {
            return Err(Invalid::new(&key("speed"), "the simulation's time scale must be > 0"));
        }
    }
    if let Some(interval) = feed.interval_ms {
        check_range(&key("interval_ms"), interval, 0.0, 86_400_000.0)?;
    }
    check_range(&key("ticks_per_bar"), feed.ticks_per_bar as f64, 4.0, 1000.0)
}

fn valid_feed_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A seed for a run given none: different on every start (it is logged, so a run can be repeated).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}
