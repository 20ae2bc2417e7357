//! The replay feed (runtime). Parsing lives in [`format`], [`timestamp`], [`intrabar`].
pub mod format;
pub mod intrabar;
pub mod timestamp;
