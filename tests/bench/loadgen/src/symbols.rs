//! Which symbols each client subscribes to.
//!
//! A tiny self-contained PRNG (SplitMix64) keeps a seed's choices identical across versions of
//! any random-number crate, so runs with the same `--seed` are comparable. Each client gets its
//! own generator derived from (seed, client index), which makes its symbols independent of the
//! order in which tasks happen to run.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for picking symbols.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Generator for stream `index` of `seed` (client i, or the probes).
    pub fn derive(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) (Lemire's multiply-shift; the tiny bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in (0, 1]: never 0, so `ln` is finite.
    pub fn unit_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// How popular each symbol is when clients choose.
#[derive(Clone, Debug, PartialEq)]
pub enum Popularity {
    Uniform,
    /// Weight of the symbol at rank r (0-based position in the list) is 1/(r+1)^s.
    Zipf(f64),
}

/// Draws K distinct symbols from a fixed universe.
pub struct SymbolChooser {
    universe: Vec<String>,
    /// ln(weight) per symbol for weighted choice; `None` = uniform.
    log_weights: Option<Vec<f64>>,
}

impl SymbolChooser {
    pub fn new(universe: Vec<String>, popularity: Popularity) -> SymbolChooser {
        let log_weights = match popularity {
            Popularity::Zipf(s) if s > 0.0 => Some((0..universe.len()).map(|r| -s * ((r + 1) as f64).ln()).collect()),
            _ => None,
        };
        SymbolChooser { universe, log_weights }
    }

    pub fn len(&self) -> usize {
        self.universe.len()
    }

    /// K distinct symbols (all of them if K ≥ universe size), in no particular order.
    pub fn choose(&self, rng: &mut Rng, k: usize) -> Vec<String> {
        let n = self.universe.len();
        let k = k.min(n);
        let picked: Vec<usize> = match &self.log_weights {
            None => {
                // Partial Fisher–Yates over indices: O(N) setup, O(K) draws.
                let mut idx: Vec<usize> = (0..n).collect();
                for i in 0..k {
                    let j = i + rng.below(n - i);
                    idx.swap(i, j);
                }
                idx.truncate(k);
                idx
            }
            Some(lw) => {
                // Weighted sampling without replacement (Efraimidis–Spirakis): key = u^(1/w),
                // keep the K largest. In log space: ln(u)/w = ln(u)·exp(−ln w).
                let mut keys: Vec<(f64, usize)> = lw.iter().enumerate().map(|(i, &l)| (rng.unit_open0().ln() * (-l).exp(), i)).collect();
                if k < n {
                    keys.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
                }
                keys.truncate(k);
                keys.into_iter().map(|(_, i)| i).collect()
            }
        };
        picked.into_iter().map(|i| self.universe[i].clone()).collect()
    }
}
