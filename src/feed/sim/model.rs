//! The simulation model: correlated geometric Brownian motion over the instrument universe,
//! with Poisson trade arrivals. Pure and deterministic — no I/O, no clocks, no tokio — so the
//! runtime in [`super`] decides when to publish and this module decides what.
//!
//! **Prices.** Each instrument follows GBM, stepped with the exact log-normal solution
//! `S(t+Δ) = S(t)·exp((μ − σ²/2)Δ + σ·ΔW)`, `ΔW ~ N(0, Δ)`, so a step of any length has the
//! right distribution (no Euler error, prices can never go negative). Δ is in *years of
//! trading time*: a year is 252 days × 6.5 h = [`TRADING_SECONDS_PER_YEAR`] seconds, the
//! convention under which quoted annual volatilities apply. Model time advances by
//! `wall seconds × time_scale`; with the default scale of 600 (ten trading minutes per wall
//! second) a 30 %-volatility stock moves about 0.3 % per wall second, which is visible on a
//! dashboard within seconds.
//!
//! **Correlation.** `ΔW` of instrument `i` over its own interval is
//! `√w_m·ΔW_market + √w_s·ΔW_sector(i) + √(1−w_m−w_s)·ΔW_idio`, which is again a Brownian
//! increment with variance Δ. The market and sector factors are shared Brownian paths kept as
//! cumulative values, advanced at each event by a fresh `N(0, Δt)` over the time since they were
//! last advanced; each instrument remembers the factor values at its previous tick, so its
//! factor increment is exact however irregular the ticks. Log returns of two instruments of one
//! sector then correlate at `w_m + w_s`, of different sectors at `w_m`.
//!
//! **Arrivals.** Each instrument trades as a Poisson process of rate `rate / n`. The
//! superposition of independent Poisson processes is a Poisson process with the summed rate in
//! which each event belongs to process `i` with probability `rate_i / rate`, so drawing one
//! `Exp(rate)` inter-arrival for the whole feed and then a uniformly chosen instrument is exactly
//! equivalent — and O(1) per tick, with no event queue of `n` entries.
//!
//! **Determinism.** All randomness comes from one seeded `Xoshiro256PlusPlus` (a named, portable
//! algorithm, unlike `SmallRng`), drawn in a fixed order per tick; the same instruments and
//! parameters, with the same calls to the setters at the same points, give the same ticks.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Exp, StandardNormal};

use crate::feed::universe::{DEFAULT_TICK_SIZE, Instrument};
use crate::quote::{decimals_of_tick, round_to, synthetic_spread};

/// Trading seconds in a year: 252 sessions of 6.5 hours (US equities, 09:30–16:00).
pub(crate) const TRADING_SECONDS_PER_YEAR: f64 = 252.0 * 6.5 * 3600.0;

/// The lowest accepted rate: below it the next tick would be so far away that the runtime's
/// deadline arithmetic overflows. Pausing is the runtime's business, not a rate of zero.
pub(crate) const MIN_RATE: f64 = 1e-6;
/// The highest accepted rate (quotes per wall second), far above what any consumer can take.
pub(crate) const MAX_RATE: f64 = 1e9;

/// Share of trades that are odd lots (fewer than 100 shares).
const ODD_LOT_PROBABILITY: f64 = 0.08;
/// Tail index of the round-lot count: P(lots ≥ k) = k^−α. 1.5 gives a median of 1 lot, a mean
/// of about 2.6 and the occasional block of dozens of lots, like real prints.
const LOT_TAIL_INDEX: f64 = 1.5;
/// Largest trade, in round lots (10,000 shares).
const MAX_LOTS: f64 = 100.0;
const ROUND_LOT: u64 = 100;

/// Parameters of the simulation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimParams {
    /// Seed of the random generator; the same seed replays the same market.
    pub seed: u64,
    /// Total quotes per wall-clock second over all symbols; clamped to [`MIN_RATE`]..=[`MAX_RATE`].
    pub rate: f64,
    /// Model (trading) seconds per wall second; finite and ≥ 0 (0 freezes prices).
    pub time_scale: f64,
    /// Share of each instrument's variance driven by the market factor, in [0, 1].
    pub market_weight: f64,
    /// Share driven by its sector's factor, in [0, 1 − market_weight].
    pub sector_weight: f64,
    /// Quoted spread in basis points of the price; never less than one tick.
    pub spread_bps: f64,
}

impl Default for SimParams {
    fn default() -> SimParams {
        SimParams {
            // Fixed, so two runs with default settings show the same market; set it to vary.
            seed: 42,
            rate: 1000.0,
            time_scale: 600.0,
            market_weight: 0.45,
            sector_weight: 0.35,
            spread_bps: 2.0,
        }
    }
}

/// One simulated trade and the quote around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SimTick {
    /// Schedule time in wall seconds since the model started (pauses are the runtime's business).
    pub at: f64,
    /// Index of the instrument in the slice the model was built from.
    pub index: usize,
    /// Trade price, on the instrument's tick grid and at least one tick.
    pub last: f64,
    pub bid: f64,
    pub ask: f64,
    /// Shares traded, ≥ 1.
    pub size: u64,
}

/// A shared Brownian path (market or sector), sampled only when someone needs its value.
#[derive(Debug, Clone, Copy)]
struct Factor {
    /// W(at), in √years.
    value: f64,
    /// Model time (years) the value belongs to.
    at: f64,
}

impl Factor {
    const START: Factor = Factor { value: 0.0, at: 0.0 };

    /// Advances the path to model time `t` with an independent `N(0, t − at)` increment.
    fn advance_to(&mut self, t: f64, rng: &mut Xoshiro256PlusPlus) {
        let dt = t - self.at;
        if dt > 0.0 {
            let z: f64 = rng.sample(StandardNormal);
            self.value += dt.sqrt() * z;
            self.at = t;
        }
    }
}

/// The evolving state of one instrument.
#[derive(Debug, Clone)]
struct SymbolState {
    /// ln of the exact (unrounded) price; rounding is applied to what is published only, so
    /// it never biases the walk.
    log_price: f64,
    drift: f64,
    volatility: f64,
    sector: usize,
    /// Model time (years) of the previous tick.
    last_at: f64,
    /// Market and sector factor values at the previous tick.
    market_at_last: f64,
    sector_at_last: f64,
    tick: f64,
    decimals: u8,
}

/// Square roots of the factor weights, computed once.
#[derive(Debug, Clone, Copy)]
struct Loadings {
    market: f64,
    sector: f64,
    idio: f64,
}

impl Loadings {
    /// Clamps the weights into a valid split of the variance and takes their roots.
    fn new(market_weight: f64, sector_weight: f64) -> Loadings {
        let unit = |w: f64| if w.is_finite() { w.clamp(0.0, 1.0) } else { 0.0 };
        let market = unit(market_weight);
        let sector = unit(sector_weight).min(1.0 - market);
        let idio = (1.0 - market - sector).max(0.0);
        Loadings { market: market.sqrt(), sector: sector.sqrt(), idio: idio.sqrt() }
    }

    /// The instrument's Brownian increment from the factor increments; variance is preserved
    /// because the squared loadings sum to 1 and the increments are independent.
    fn mix(self, d_market: f64, d_sector: f64, d_idio: f64) -> f64 {
        self.market * d_market + self.sector * d_sector + self.idio * d_idio
    }
}

/// The simulation: state of every instrument and factor, the schedule clock and the generator.
#[derive(Debug, Clone)]
pub(crate) struct SimModel {
    rng: Xoshiro256PlusPlus,
    symbols: Vec<SymbolState>,
    market: Factor,
    sectors: Vec<Factor>,
    loadings: Loadings,
    arrivals: Exp<f64>,
    time_scale: f64,
    spread_fraction: f64,
    /// Schedule time of the last tick, wall seconds since start.
    wall: f64,
    /// Model time of the last tick, years.
    model_years: f64,
}

impl SimModel {
    /// Builds the model at time 0 with every instrument at its start price.
    ///
    /// Instruments are expected to be validated (see [`crate::feed::universe`]); anything
    /// nonsensical is clamped so the model never produces NaN. Panics on an empty slice: a
    /// market of nothing is a configuration bug, and the universe loader never returns one.
    pub(crate) fn new(instruments: &[Instrument], params: SimParams) -> SimModel {
        assert!(!instruments.is_empty(), "the simulation needs at least one instrument");
        let mut sector_names: Vec<&str> = Vec::new();
        let symbols = instruments
            .iter()
            .map(|instrument| {
                let sector = match sector_names.iter().position(|s| *s == instrument.sector) {
                    Some(at) => at,
                    None => {
                        sector_names.push(&instrument.sector);
                        sector_names.len() - 1
                    }
                };
                symbol_state(instrument, sector)
            })
            .collect();
        let rate = clamp_rate(params.rate);
        SimModel {
            rng: Xoshiro256PlusPlus::seed_from_u64(params.seed),
            symbols,
            market: Factor::START,
            sectors: vec![Factor::START; sector_names.len()],
            loadings: Loadings::new(params.market_weight, params.sector_weight),
            arrivals: arrivals(rate),
            time_scale: clamp_time_scale(params.time_scale),
            spread_fraction: if params.spread_bps.is_finite() { params.spread_bps.max(0.0) / 10_000.0 } else { 0.0 },
            wall: 0.0,
            model_years: 0.0,
        }
    }

    /// The next trade in schedule order. O(1), no allocation.
    pub(crate) fn next_tick(&mut self) -> SimTick {
        let dt_wall: f64 = self.rng.sample(self.arrivals);
        self.wall += dt_wall;
        self.model_years += dt_wall * self.time_scale / TRADING_SECONDS_PER_YEAR;
        let now = self.model_years;
        let index = self.rng.random_range(0..self.symbols.len());

        let symbol = &mut self.symbols[index];
        let sector = &mut self.sectors[symbol.sector];
        self.market.advance_to(now, &mut self.rng);
        sector.advance_to(now, &mut self.rng);
        let dt = now - symbol.last_at;
        let z: f64 = self.rng.sample(StandardNormal);
        let dw = self.loadings.mix(self.market.value - symbol.market_at_last, sector.value - symbol.sector_at_last, dt.sqrt() * z);
        symbol.log_price += log_step(symbol.drift, symbol.volatility, dt, dw);
        symbol.last_at = now;
        symbol.market_at_last = self.market.value;
        symbol.sector_at_last = sector.value;

        let last = price_on_tick(symbol.log_price.exp(), symbol.tick, symbol.decimals);
        let (bid, ask) = synthetic_spread(last, self.spread_fraction, symbol.decimals);
        let size = trade_size(&mut self.rng);
        SimTick { at: self.wall, index, last, bid, ask, size }
    }

    /// Sets model seconds per wall second for every step from now on (finite, ≥ 0; anything
    /// else is taken as 0, which freezes prices while trades keep printing).
    pub(crate) fn set_time_scale(&mut self, time_scale: f64) {
        self.time_scale = clamp_time_scale(time_scale);
    }

    #[cfg(test)]
    fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// Trading seconds of model time elapsed up to the last tick.
    #[cfg(test)]
    fn model_seconds(&self) -> f64 {
        self.model_years * TRADING_SECONDS_PER_YEAR
    }

    /// The exact log price of instrument `index`, before rounding.
    #[cfg(test)]
    fn log_price(&self, index: usize) -> f64 {
        self.symbols[index].log_price
    }
}

fn symbol_state(instrument: &Instrument, sector: usize) -> SymbolState {
    let tick = if instrument.tick_size.is_finite() && instrument.tick_size > 0.0 { instrument.tick_size } else { DEFAULT_TICK_SIZE };
    let finite_or = |x: f64, default: f64| if x.is_finite() { x } else { default };
    SymbolState {
        log_price: finite_or(instrument.price, tick).max(tick).ln(),
        drift: finite_or(instrument.drift, 0.0),
        volatility: finite_or(instrument.volatility, 0.0).max(0.0),
        sector,
        last_at: 0.0,
        market_at_last: 0.0,
        sector_at_last: 0.0,
        tick,
        decimals: decimals_of_tick(tick),
    }
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() { MIN_RATE } else { rate.clamp(MIN_RATE, MAX_RATE) }
}

fn clamp_time_scale(time_scale: f64) -> f64 {
    if time_scale.is_finite() && time_scale > 0.0 { time_scale } else { 0.0 }
}

/// Inter-arrival distribution of the whole feed.
fn arrivals(rate: f64) -> Exp<f64> {
    // clamp_rate keeps the rate finite and > 0, the only thing Exp::new rejects.
    Exp::new(rate).expect("rate is finite and positive")
}

/// The exact GBM log-price step over `dt` years, given the Brownian increment `dw ~ N(0, dt)`:
/// `(μ − σ²/2)·dt + σ·dw`. The −σ²/2 term makes `E[S(t+dt)] = S(t)·e^{μ·dt}`.
fn log_step(drift: f64, volatility: f64, dt: f64, dw: f64) -> f64 {
    (drift - 0.5 * volatility * volatility) * dt + volatility * dw
}

/// Rounds a price to the instrument's tick grid, never below one tick (a traded price of 0 is
/// impossible, and `prev_close`-relative changes would divide by it).
fn price_on_tick(price: f64, tick: f64, decimals: u8) -> f64 {
    // The second rounding removes the binary noise of `n × tick` (0.1 × 3 = 0.30000000000000004).
    let on_grid = round_to((price / tick).round() * tick, decimals);
    on_grid.max(round_to(tick, decimals))
}

/// A trade size: mostly round lots with a Pareto tail (many 100s, some 500s, the odd block),
/// sometimes an odd lot. Always ≥ 1.
fn trade_size(rng: &mut Xoshiro256PlusPlus) -> u64 {
    if rng.random_bool(ODD_LOT_PROBABILITY) {
        return rng.random_range(1..ROUND_LOT);
    }
    // Inverse-CDF of a Pareto(1, α): u in (0, 1] so the power is finite and ≥ 1.
    let u = 1.0 - rng.random::<f64>();
    let lots = u.powf(-1.0 / LOT_TAIL_INDEX).floor().min(MAX_LOTS);
    lots as u64 * ROUND_LOT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::universe::default_universe;

    fn instrument(symbol: &str, sector: &str, price: f64, volatility: f64, drift: f64) -> Instrument {
        Instrument { symbol: symbol.into(), name: symbol.into(), sector: sector.into(), price, volatility, drift, tick_size: 0.01 }
    }

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    fn correlation(xs: &[f64], ys: &[f64]) -> f64 {
        let (mx, my) = (mean(xs), mean(ys));
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (x, y) in xs.iter().zip(ys) {
            sxy += (x - mx) * (y - my);
            sxx += (x - mx) * (x - mx);
            syy += (y - my) * (y - my);
        }
        sxy / (sxx * syy).sqrt()
    }

    #[test]
    fn log_step_is_the_exact_gbm_exponent() {
        assert_eq!(log_step(0.10, 0.20, 0.5, 0.0), (0.10 - 0.02) * 0.5);
        assert_eq!(log_step(0.0, 0.30, 0.0, 0.0), 0.0);
        assert!((log_step(0.05, 0.40, 0.25, 0.1) - ((0.05 - 0.08) * 0.25 + 0.04)).abs() < 1e-15);
    }

    #[test]
    fn loadings_split_the_variance() {
        let l = Loadings::new(0.45, 0.35);
        assert!((l.market.powi(2) + l.sector.powi(2) + l.idio.powi(2) - 1.0).abs() < 1e-12);
        // Over-allocated weights are cut back rather than producing a negative variance.
        let l = Loadings::new(0.7, 0.7);
        assert!((l.sector.powi(2) - 0.3).abs() < 1e-12 && l.idio == 0.0);
        let l = Loadings::new(f64::NAN, -1.0);
        assert_eq!((l.market, l.sector, l.idio), (0.0, 0.0, 1.0));
    }

    #[test]
    fn log_returns_have_the_gbm_mean_and_variance() {
        // One instrument, steps averaging 0.01 year: long enough for the drift to show against
        // the noise, short enough that the exact price stays finite over the run.
        let (mu, sigma) = (0.30, 0.60);
        let params = SimParams { rate: 1000.0, time_scale: 10.0 * TRADING_SECONDS_PER_YEAR, ..SimParams::default() };
        let mut model = SimModel::new(&[instrument("X", "S", 100.0, sigma, mu)], params.clone());
        let (mut prev_at, mut prev_log) = (0.0, model.log_price(0));
        let (mut returns, mut steps) = (Vec::new(), Vec::new());
        for _ in 0..200_000 {
            let tick = model.next_tick();
            steps.push((tick.at - prev_at) * params.time_scale / TRADING_SECONDS_PER_YEAR);
            returns.push(model.log_price(0) - prev_log);
            (prev_at, prev_log) = (tick.at, model.log_price(0));
        }
        let total_time: f64 = steps.iter().sum();
        let drift_hat = returns.iter().sum::<f64>() / total_time;
        let var_hat = returns.iter().zip(&steps).map(|(r, dt)| (r - drift_hat * dt).powi(2)).sum::<f64>() / total_time;
        // Standard error of the drift estimate is σ/√T ≈ 0.013; of the variance about 0.5 %.
        let expected_drift = mu - sigma * sigma / 2.0;
        assert!((drift_hat - expected_drift).abs() < 0.05, "drift {drift_hat} vs {expected_drift}");
        assert!((var_hat / (sigma * sigma) - 1.0).abs() < 0.03, "variance {var_hat} vs {}", sigma * sigma);
    }

    #[test]
    fn returns_correlate_by_sector_and_market() {
        let instruments =
            [instrument("A1", "A", 100.0, 0.30, 0.0), instrument("A2", "A", 50.0, 0.30, 0.0), instrument("B1", "B", 100.0, 0.30, 0.0), instrument("B2", "B", 50.0, 0.30, 0.0)];
        let params = SimParams::default();
        let mut model = SimModel::new(&instruments, params.clone());
        // Returns over blocks of 400 ticks (~100 per instrument): nearly synchronous, so the
        // asynchronous-sampling bias (Epps effect) is about 1 %, well inside the tolerance.
        let mut returns = vec![Vec::new(); instruments.len()];
        let mut prev: Vec<f64> = (0..instruments.len()).map(|i| model.log_price(i)).collect();
        for _ in 0..2_500 {
            for _ in 0..400 {
                model.next_tick();
            }
            for (i, r) in returns.iter_mut().enumerate() {
                r.push(model.log_price(i) - prev[i]);
                prev[i] = model.log_price(i);
            }
        }
        let within = params.market_weight + params.sector_weight;
        let across = params.market_weight;
        for (a, b, expected) in [(0, 1, within), (2, 3, within), (0, 2, across), (1, 3, across), (0, 3, across)] {
            let rho = correlation(&returns[a], &returns[b]);
            assert!((rho - expected).abs() < 0.08, "corr({a},{b}) = {rho}, expected {expected}");
        }
    }

    #[test]
    fn arrivals_are_poisson_at_the_set_rate_and_uniform_over_symbols() {
        let instruments: Vec<Instrument> = (0..5).map(|i| instrument(&format!("S{i}"), "S", 10.0, 0.2, 0.0)).collect();
        let mut model = SimModel::new(&instruments, SimParams { rate: 500.0, ..SimParams::default() });
        let mut counts = [0usize; 5];
        let mut gaps = Vec::new();
        let mut prev = 0.0;
        for _ in 0..100_000 {
            let tick = model.next_tick();
            counts[tick.index] += 1;
            gaps.push(tick.at - prev);
            prev = tick.at;
        }
        // Exponential gaps: the mean is 1/rate with standard error 1/(rate·√n) ≈ 0.3 %;
        // the standard deviation equals the mean.
        let m = mean(&gaps);
        assert!((m * 500.0 - 1.0).abs() < 0.02, "mean gap {m}");
        let sd = (gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / m - 1.0).abs() < 0.03, "sd/mean {}", sd / m);
        for c in counts {
            assert!((c as f64 / 20_000.0 - 1.0).abs() < 0.05, "counts {counts:?}");
        }
    }

    #[test]
    fn same_inputs_give_the_same_ticks() {
        let universe = default_universe();
        let run = |seed: u64| {
            let mut model = SimModel::new(&universe, SimParams { seed, ..SimParams::default() });
            let mut ticks = Vec::new();
            for n in 0..20_000 {
                if n == 10_000 {
                    model.set_time_scale(3600.0);
                }
                ticks.push(model.next_tick());
            }
            ticks
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
    }

    #[test]
    fn many_ticks_keep_their_invariants() {
        let universe = default_universe();
        let mut model = SimModel::new(&universe, SimParams::default());
        let mut prev_at = 0.0;
        let mut last_seen = vec![f64::NAN; universe.len()];
        for _ in 0..200_000 {
            let t = model.next_tick();
            assert!(t.index < universe.len());
            assert!(t.at >= prev_at && t.at.is_finite());
            prev_at = t.at;
            assert!(t.bid < t.ask && t.bid <= t.last && t.last <= t.ask, "{t:?}");
            assert!(t.bid > 0.0 && t.last >= 0.01, "{t:?}");
            for p in [t.last, t.bid, t.ask] {
                assert!(((p * 100.0).round() - p * 100.0).abs() < 1e-6, "{p} is off the cent grid");
            }
            assert!(t.size >= 1 && t.size <= 10_000);
            last_seen[t.index] = t.last;
        }
        // 200,000 ticks at the default rate and scale are ~200 s, ~33 trading hours: prices
        // have moved, but not absurdly.
        for (i, last) in last_seen.iter().enumerate() {
            let ratio = last / universe[i].price;
            assert!((0.5..2.0).contains(&ratio), "{} went from {} to {last}", universe[i].symbol, universe[i].price);
        }
    }

    #[test]
    fn prices_never_fall_below_one_tick() {
        // A penny stock with a brutal drift ends up far below a cent in exact terms.
        let mut model = SimModel::new(&[instrument("DOWN", "S", 0.02, 0.7, -50.0)], SimParams { time_scale: 100.0 * TRADING_SECONDS_PER_YEAR, ..SimParams::default() });
        for _ in 0..2_000 {
            let t = model.next_tick();
            assert!(t.last >= 0.01 && t.bid < t.ask && t.bid <= t.last, "{t:?}");
        }
        assert!(model.log_price(0) < (0.001f64).ln());
    }

    #[test]
    fn odd_ticks_round_to_their_grid() {
        assert_eq!(price_on_tick(100.037, 0.05, 2), 100.05);
        assert_eq!(price_on_tick(0.3000001, 0.1, 1), 0.3);
        assert_eq!(price_on_tick(1.084372, 0.00001, 5), 1.08437);
        assert_eq!(price_on_tick(0.0001, 0.01, 2), 0.01);
    }

    #[test]
    fn a_zero_time_scale_freezes_prices() {
        let mut model = SimModel::new(&default_universe(), SimParams::default());
        for _ in 0..1_000 {
            model.next_tick();
        }
        model.set_time_scale(0.0);
        assert_eq!(model.time_scale(), 0.0);
        let seconds = model.model_seconds();
        // An instrument's first tick after the freeze still catches up on the model time
        // between its previous tick and the freeze; from then on it stays put.
        let mut ticked = vec![false; model.symbols.len()];
        while !ticked.iter().all(|&t| t) {
            ticked[model.next_tick().index] = true;
        }
        let frozen: Vec<f64> = (0..model.symbols.len()).map(|i| model.log_price(i)).collect();
        for _ in 0..1_000 {
            model.next_tick();
        }
        assert_eq!(model.model_seconds(), seconds);
        assert!((0..frozen.len()).all(|i| model.log_price(i) == frozen[i]));
        model.set_time_scale(f64::NAN);
        assert_eq!(model.time_scale(), 0.0);
    }

    #[test]
    fn default_scale_moves_a_30_vol_stock_about_0_3_percent_per_wall_second() {
        // σ·√(600 s / year) for σ = 0.30.
        let per_second = 0.30 * (600.0 / TRADING_SECONDS_PER_YEAR).sqrt();
        assert!((0.002..0.004).contains(&per_second), "{per_second}");
    }

    #[test]
    fn trade_sizes_look_like_prints() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let sizes: Vec<u64> = (0..100_000).map(|_| trade_size(&mut rng)).collect();
        assert!(sizes.iter().all(|&s| (1..=10_000).contains(&s)));
        let round = sizes.iter().filter(|&&s| s % 100 == 0).count() as f64 / sizes.len() as f64;
        assert!((0.9..0.95).contains(&round), "round-lot share {round}");
        let hundreds = sizes.iter().filter(|&&s| s == 100).count() as f64 / sizes.len() as f64;
        assert!((0.5..0.7).contains(&hundreds), "100-share share {hundreds}");
        let avg = sizes.iter().sum::<u64>() as f64 / sizes.len() as f64;
        assert!((150.0..400.0).contains(&avg), "mean size {avg}");
        assert!(sizes.iter().any(|&s| s >= 2_000), "no block trades");
    }
}
