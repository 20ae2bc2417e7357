//! The fault subsystem's settings: `--faults` (fault injection on), `--fault SPEC` (a fault from
//! the start, repeatable, implying `--faults`) and, in the TOML file, `faults = true` or
//! `[[faults]]` tables. Each spec is parsed at start by [`FaultSpec`]'s one parser, so a bad
//! one stops the server with the flag (or the table) and the key at fault.

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

use super::spec::FaultSpec;
use crate::settings::Invalid;

/// Fault injection as flags and environment give it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FaultArgs {
    /// Enable fault injection (for tests, never in production): the /api/faults routes (403
    /// without it) and the faults they add (docs/FAULTS.md).
    #[arg(long, env = "TICKERFEED_FAULTS")]
    pub faults: bool,

    /// A fault injected from the start, KIND:KEY=VALUE,... (e.g. gap:symbol=AAPL,count=3,every=10s);
    /// repeatable (the variable: ;-separated); implies --faults.
    #[arg(long = "fault", value_name = "SPEC", env = "TICKERFEED_FAULT", value_delimiter = ';')]
    pub fault: Vec<String>,
}

/// The TOML file's `faults` key: `faults = true` (or false), or `[[faults]]` tables (which
/// imply true).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileFaults {
    /// `faults = true` / `false`.
    pub enabled: Option<bool>,
    /// The `[[faults]]` tables, parsed.
    pub faults: Vec<FaultSpec>,
}

impl<'de> Deserialize<'de> for FileFaults {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FileFaults, D::Error> {
        struct FaultsVisitor;
        impl<'de> Visitor<'de> for FaultsVisitor {
            type Value = FileFaults;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false, or [[faults]] tables (kind = \"gap\", symbol = \"AAPL\", …)")
            }
            fn visit_bool<E: serde::de::Error>(self, enabled: bool) -> Result<FileFaults, E> {
                Ok(FileFaults { enabled: Some(enabled), faults: Vec::new() })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileFaults, A::Error> {
                let mut faults = Vec::new();
                while let Some(table) = seq.next_element::<toml::Table>()? {
                    let spec = FaultSpec::from_toml(&table).map_err(|e| serde::de::Error::custom(format!("[[faults]] number {}: {e}", faults.len() + 1)))?;
                    faults.push(spec);
                }
                Ok(FileFaults { enabled: None, faults })
            }
        }
        deserializer.deserialize_any(FaultsVisitor)
    }
}

/// Fault injection as the server runs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSettings {
    /// `/api/faults` served and faults applied; off: nothing of fault injection exists.
    pub enabled: bool,
    /// Added at start, in order: the file's `[[faults]]`, then each `--fault`.
    pub faults: Vec<FaultSpec>,
}

/// The settings from the flags over the file: on if either says so or any fault is given.
pub(crate) fn resolve(args: &FaultArgs, file: &FileFaults) -> Result<FaultSettings, Invalid> {
    let mut faults = file.faults.clone();
    for text in args.fault.iter().filter(|text| !text.trim().is_empty()) {
        faults.push(FaultSpec::parse_cli(text).map_err(|e| Invalid::new("--fault", format!("'{}': {e}", text.trim())))?);
    }
    let enabled = args.faults || file.enabled == Some(true) || !faults.is_empty();
    Ok(FaultSettings { enabled, faults })
}
