//! STUB (helper B replaces)
use super::super::universe::Instrument;
#[derive(Debug, Clone)]
pub struct SimParams { pub seed: u64, pub rate: f64, pub time_scale: f64, pub market_weight: f64, pub sector_weight: f64, pub spread_bps: f64 }
impl Default for SimParams { fn default() -> Self { SimParams { seed: 0, rate: 1000.0, time_scale: 600.0, market_weight: 0.45, sector_weight: 0.35, spread_bps: 2.0 } } }
pub struct SimTick { pub at: f64, pub index: usize, pub last: f64, pub bid: f64, pub ask: f64, pub size: u64 }
pub struct SimModel { n: usize, p: SimParams, t: f64, k: u64, prices: Vec<f64> }
impl SimModel {
    pub fn new(i: &[Instrument], p: SimParams) -> SimModel { SimModel { n: i.len(), prices: i.iter().map(|x| x.price).collect(), p, t: 0.0, k: 0 } }
    pub fn next_tick(&mut self) -> SimTick { self.k += 1; self.t += 1.0 / self.p.rate; let index = (self.k as usize) % self.n; self.prices[index] += if self.k % 3 == 0 { 0.01 } else { -0.01 }; let last = (self.prices[index]*100.0).round()/100.0; SimTick { at: self.t, index, last, bid: last - 0.01, ask: last + 0.01, size: 100 } }
    pub fn set_time_scale(&mut self, s: f64) { self.p.time_scale = s }
    pub fn time_scale(&self) -> f64 { self.p.time_scale }
}
