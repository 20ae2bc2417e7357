//! STUB (helper A replaces)
use std::{collections::HashMap, path::{Path, PathBuf}, sync::Arc};
pub enum FileFormat { Ticks, LongPrices, Bars }
pub struct ReplayTick { pub ts: i64, pub symbol: Arc<str>, pub price: f64, pub size: Option<u64>, pub bid: Option<f64>, pub ask: Option<f64>, pub volume: Option<u64>, pub line: u64 }
pub struct LoadedFile { pub path: PathBuf, pub format: FileFormat, pub ticks: Vec<ReplayTick>, pub decimals: HashMap<Arc<str>, u8>, pub rows_read: u64, pub rows_skipped: u64 }
pub struct FileOptions { pub symbol: Option<String>, pub seed: u64, pub ticks_per_bar: usize }
#[derive(Debug, thiserror::Error)]
pub enum ReplayError { #[error("x")] X }
pub fn load_file(_path: &Path, _o: &FileOptions) -> Result<LoadedFile, ReplayError> { Err(ReplayError::X) }
