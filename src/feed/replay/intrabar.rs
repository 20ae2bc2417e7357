//! Synthetic intrabar paths: how a replay of OHLC bars turns each bar into a handful of ticks.
//!
//! A bar only says where the price opened, how far it went each way and where it closed. To
//! replay it as a moving quote the feed needs a path through those four prices, and that path
//! should look like trading rather than a zig-zag between corners: the extremes are visited in
//! a random (seeded, so replays repeat) order at random times, and the stretches between the
//! anchors wander as Brownian bridges scaled to the bar's range. The path never leaves the bar:
//! its maximum is exactly the high and its minimum exactly the low.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

/// The fewest ticks a path can have: open, the two extremes, close.
pub(crate) const MIN_TICKS: usize = 4;

/// Step size of the bridges, as a fraction of the bar's range per square root of the number
/// of ticks: large enough that paths visibly wander, small enough that they are not mostly
/// pinned to the bar's edges by the clamp.
const WANDER: f64 = 0.5;

/// Limits on the probability of visiting the high first, so either order stays possible
/// however lopsided the bar.
const ORDER_PROBABILITY_RANGE: (f64, f64) = (0.15, 0.85);

/// A price path through one bar of `ticks` points (at least [`MIN_TICKS`]; fewer is raised to
/// it): starts at `open`, visits `high` and `low` in an order drawn from `rng`, ends at
/// `close`, and stays within `[low, high]`.
///
/// The caller validates the bar (`low <= open, close <= high`, all finite); an invalid bar is
/// not rejected here, but its output is still clamped into `[low, high]` (or `[high, low]`).
pub(crate) fn intrabar_path<R: Rng + ?Sized>(open: f64, high: f64, low: f64, close: f64, ticks: usize, rng: &mut R) -> Vec<f64> {
    let (low, high) = if low <= high { (low, high) } else { (high, low) };
    let ticks = ticks.max(MIN_TICKS);
    let range = high - low;
    if range <= 0.0 {
        return vec![high; ticks];
    }
    let clamp = |price: f64| price.max(low).min(high);
    let (open, close) = (clamp(open), clamp(close));

    let high_first = rng.random_bool(high_first_probability(open, high, low, close));
    let (first_extreme, second_extreme) = if high_first { (high, low) } else { (low, high) };
    let (first_at, second_at) = extreme_positions(ticks, rng);

    let sigma = range * WANDER / (ticks as f64).sqrt();
    let mut path = Vec::with_capacity(ticks);
    path.push(open);
    let anchors = [(first_at, first_extreme), (second_at, second_extreme), (ticks - 1, close)];
    let mut from = (0, open);
    for to in anchors {
        bridge_into(&mut path, from.1, to.1, to.0 - from.0, sigma, rng);
        from = to;
    }
    for price in &mut path {
        *price = clamp(*price);
    }
    debug_assert_eq!(path.len(), ticks);
    path
}

/// Probability that the high comes before the low. The shorter way round is the more likely
/// one: a bar that opens near its high and closes near its low probably went up first.
fn high_first_probability(open: f64, high: f64, low: f64, close: f64) -> f64 {
    let high_first_travel = (high - open) + (close - low);
    let low_first_travel = (open - low) + (high - close);
    let total = high_first_travel + low_first_travel;
    if total <= 0.0 {
        return 0.5;
    }
    (low_first_travel / total).clamp(ORDER_PROBABILITY_RANGE.0, ORDER_PROBABILITY_RANGE.1)
}

/// Two distinct interior indices, in increasing order, at which the extremes are reached.
fn extreme_positions<R: Rng + ?Sized>(ticks: usize, rng: &mut R) -> (usize, usize) {
    // A uniformly chosen pair among the interior slots 1..=ticks-2: draw one slot, then
    // another from the remaining ones.
    let a = rng.random_range(1..ticks - 1);
    let mut b = rng.random_range(1..ticks - 2);
    if b >= a {
        b += 1;
    }
    (a.min(b), a.max(b))
}

/// Appends the `steps` points after `from` up to and including `to`: a Brownian bridge, i.e.
/// a random walk with step `sigma` whose end is pulled back onto the straight line.
fn bridge_into<R: Rng + ?Sized>(path: &mut Vec<f64>, from: f64, to: f64, steps: usize, sigma: f64, rng: &mut R) {
    let start = path.len();
    let mut walk = 0.0;
    for _ in 0..steps {
        let z: f64 = StandardNormal.sample(rng);
        walk += z * sigma;
        path.push(walk);
    }
    let end_walk = walk;
    for (offset, point) in path[start..].iter_mut().enumerate() {
        let t = (offset + 1) as f64 / steps as f64;
        *point = from + (to - from) * t + (*point - t * end_walk);
    }
    // The bridge ends on `to` in exact arithmetic; make it so in floating point as well.
    if let Some(last) = path.last_mut() {
        *last = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn path(bar: (f64, f64, f64, f64), ticks: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        intrabar_path(bar.0, bar.1, bar.2, bar.3, ticks, &mut rng)
    }

    fn assert_valid(bar: (f64, f64, f64, f64), prices: &[f64]) {
        let (open, high, low, close) = bar;
        assert_eq!(prices[0], open);
        assert_eq!(*prices.last().unwrap(), close);
        assert!(prices.iter().all(|&p| low <= p && p <= high), "{prices:?} outside [{low}, {high}]");
        assert_eq!(prices.iter().copied().fold(f64::MIN, f64::max), high);
        assert_eq!(prices.iter().copied().fold(f64::MAX, f64::min), low);
    }

    #[test]
    fn hits_open_high_low_close_and_stays_in_range() {
        let bars = [(1469.25, 1478.0, 1438.359985, 1455.219971), (10.0, 12.0, 9.0, 11.0), (1.08437, 1.08512, 1.08401, 1.08455)];
        for bar in bars {
            for ticks in [4, 5, 12, 100] {
                for seed in 0..50 {
                    let prices = path(bar, ticks, seed);
                    assert_eq!(prices.len(), ticks);
                    assert_valid(bar, &prices);
                }
            }
        }
    }

    #[test]
    fn degenerate_bars() {
        for bar in [(10.0, 10.0, 10.0, 10.0), (12.0, 12.0, 9.0, 9.0), (9.0, 12.0, 9.0, 12.0), (12.0, 12.0, 9.0, 12.0), (10.0, 12.0, 9.0, 9.0)] {
            for seed in 0..20 {
                assert_valid(bar, &path(bar, 12, seed));
            }
        }
        assert_eq!(path((5.0, 5.0, 5.0, 5.0), 6, 1), vec![5.0; 6]);
    }

    #[test]
    fn too_few_ticks_are_raised_to_the_minimum() {
        for ticks in 0..MIN_TICKS {
            let prices = path((10.0, 12.0, 9.0, 11.0), ticks, 3);
            assert_eq!(prices.len(), MIN_TICKS);
            assert_valid((10.0, 12.0, 9.0, 11.0), &prices);
        }
    }

    #[test]
    fn same_seed_same_path() {
        let bar = (10.0, 12.0, 9.0, 11.0);
        assert_eq!(path(bar, 24, 42), path(bar, 24, 42));
        assert_ne!(path(bar, 24, 42), path(bar, 24, 43));
    }

    #[test]
    fn both_extreme_orders_occur() {
        let bar = (10.0, 12.0, 9.0, 11.0);
        let mut high_first = 0;
        let seeds = 200;
        for seed in 0..seeds {
            let prices = path(bar, 12, seed);
            let high_at = prices.iter().position(|&p| p == 12.0).unwrap();
            let low_at = prices.iter().position(|&p| p == 9.0).unwrap();
            if high_at < low_at {
                high_first += 1;
            }
        }
        assert!(high_first > 0 && high_first < seeds, "high first in {high_first} of {seeds}");
    }

    #[test]
    fn order_probability_favours_the_shorter_way() {
        // Opens at the high, closes at the low: almost surely went up first.
        assert_eq!(high_first_probability(12.0, 12.0, 9.0, 9.0), ORDER_PROBABILITY_RANGE.1);
        assert_eq!(high_first_probability(9.0, 12.0, 9.0, 12.0), ORDER_PROBABILITY_RANGE.0);
        assert_eq!(high_first_probability(10.5, 12.0, 9.0, 10.5), 0.5);
    }
}
