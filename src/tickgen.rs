//! `tickerfeed gen`: writes a reproducible tick file for benchmarks and tests.
//!
//! The benchmark gives every server — tickerfeed and its peers — the same input: one quote file,
//! generated once by the simulation model and replayed from memory at the scenario's rate
//! (`--replay FILE --interval-ms … --loop` for tickerfeed), so no server is charged for a random
//! walk and all see identical quotes. The file is in the replay's tick format
//! (`timestamp,symbol,price,size,bid,ask,volume`), so it is also a large, realistic fixture.

use std::io::Write;

use crate::feed::sim::model::{SimModel, SimParams};
use crate::feed::universe::{Instrument, default_universe};
use crate::quote::{decimals_of_tick, round_to};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOptions {
    /// Seed of the simulation: the same options give the same file.
    pub seed: u64,
    /// Number of symbols: the default universe first, then synthetic ones (`S0102`, …).
    pub symbols: usize,
    /// Number of quotes to write.
    pub quotes: u64,
    /// Quotes per second of event time (spacing of the timestamps).
    pub rate: f64,
    /// Event time of the first quote, ms since the epoch.
    pub start_ms: i64,
}

impl Default for GenOptions {
    fn default() -> Self {
        // 2025-01-02T14:30:00Z, a market open.
        GenOptions { seed: 1, symbols: 500, quotes: 1_000_000, rate: 5000.0, start_ms: 1_735_828_200_000 }
    }
}

/// The instruments of a generated file: the default universe, extended with synthetic
/// instruments spread over the same sectors when more symbols are asked for.
pub fn instruments(count: usize) -> Vec<Instrument> {
    let base = default_universe();
    let sectors: Vec<String> = {
        let mut s: Vec<String> = base.iter().map(|i| i.sector.clone()).collect();
        s.dedup();
        s
    };
    let mut out: Vec<Instrument> = base.into_iter().take(count).collect();
    let mut n = out.len();
    while out.len() < count {
        n += 1;
        // Deterministic variety: prices 20–520, volatility 0.2–0.6.
        let k = n as f64;
        out.push(Instrument {
            symbol: format!("S{n:04}"),
            name: format!("Synthetic {n}"),
            sector: sectors[n % sectors.len()].clone(),
            price: round_to(20.0 + (k * 37.0) % 500.0, 2),
            volatility: 0.2 + (k * 0.013) % 0.4,
            drift: 0.05,
            tick_size: 0.01,
        });
    }
    out
}

/// Writes the tick file. Returns the number of rows written.
pub fn generate(options: &GenOptions, out: &mut impl Write) -> std::io::Result<u64> {
    let instruments = instruments(options.symbols.max(1));
    let params = SimParams { seed: options.seed, rate: options.rate, ..SimParams::default() };
    let mut model = SimModel::new(&instruments, params);
    let mut volume = vec![0u64; instruments.len()];
    let decimals: Vec<u8> = instruments.iter().map(|i| decimals_of_tick(i.tick_size)).collect();
    writeln!(out, "timestamp,symbol,price,size,bid,ask,volume")?;
    for _ in 0..options.quotes {
        let tick = model.next_tick();
        volume[tick.index] += tick.size;
        let d = decimals[tick.index] as usize;
        let ts = options.start_ms + (tick.at * 1000.0) as i64;
        writeln!(out, "{ts},{},{:.d$},{},{:.d$},{:.d$},{}", instruments[tick.index].symbol, tick.last, tick.size, tick.bid, tick.ask, volume[tick.index])?;
    }
    out.flush()?;
    Ok(options.quotes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::replay::format::{FileFormat, FileOptions, load_file};

    #[test]
    fn generated_files_are_reproducible_and_replayable() {
        let options = GenOptions { symbols: 150, quotes: 3000, ..GenOptions::default() };
        let mut first = Vec::new();
        let mut second = Vec::new();
        generate(&options, &mut first).unwrap();
        generate(&options, &mut second).unwrap();
        assert_eq!(first, second, "same seed, same file");
        let mut other = Vec::new();
        generate(&GenOptions { seed: 2, ..options.clone() }, &mut other).unwrap();
        assert_ne!(first, other);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.csv");
        std::fs::write(&path, &first).unwrap();
        let loaded = load_file(&path, &FileOptions::default()).unwrap();
        assert_eq!(loaded.format, FileFormat::Ticks);
        assert_eq!((loaded.rows_read, loaded.rows_skipped), (3000, 0));
        let symbols: std::collections::HashSet<_> = loaded.ticks.iter().map(|t| t.symbol.clone()).collect();
        assert!(symbols.len() > 101, "synthetic symbols beyond the universe appear: {}", symbols.len());
        assert!(loaded.ticks.windows(2).all(|w| w[0].ts <= w[1].ts));
    }
}
