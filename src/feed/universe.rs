//! STUB (helper B replaces)
use std::path::Path;
#[derive(Debug, Clone)]
pub struct Instrument { pub symbol: String, pub name: String, pub sector: String, pub price: f64, pub volatility: f64, pub drift: f64, pub tick_size: f64 }
#[derive(Debug, thiserror::Error)]
pub enum UniverseError { #[error("x")] X }
pub fn load_universe(_path: &Path) -> Result<Vec<Instrument>, UniverseError> { Ok(default_universe()) }
pub fn default_universe() -> Vec<Instrument> { ["AAPL","MSFT","NVDA"].iter().map(|s| Instrument{symbol:s.to_string(),name:s.to_string(),sector:"Tech".into(),price:100.0,volatility:0.3,drift:0.05,tick_size:0.01}).collect() }
