//! STUB (helper A replaces)
#[derive(Debug, thiserror::Error)]
pub enum TimestampError { #[error("bad timestamp")] X }
pub fn parse_timestamp(t: &str) -> Result<i64, TimestampError> { t.parse().map_err(|_| TimestampError::X) }
