//! The instrument universe of the simulation: symbol, name, sector, start price, annual
//! volatility and drift, tick size — read from `feeds/universe.csv` (embedded in the binary as
//! the default, so the server needs no file to start).
//!
//! HELPER-B: implement. Interface (keep these names):
//!
//! pub struct Instrument { pub symbol: String, pub name: String, pub sector: String,
//!     pub price: f64, pub volatility: f64, pub drift: f64, pub tick_size: f64 }
//! pub fn load_universe(path: &std::path::Path) -> Result<Vec<Instrument>, UniverseError>
//! pub fn default_universe() -> Vec<Instrument>
//! #[derive(thiserror::Error)] pub enum UniverseError { ... names file and line ... }
