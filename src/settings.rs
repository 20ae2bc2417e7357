//! How a subsystem declares its settings: once each, with its type, default, range and meaning.
//!
//! [`settings!`] turns one declaration per setting into the two types the subsystem owns — the
//! resolved settings it runs with (with the one `Default`) and their `…Args` form, where each is
//! an `Option` (clap `Args` for flags and environment, read from TOML by key) — so adding a
//! setting is one edit in the subsystem that uses it. `config` layers the sources (flags over
//! environment over TOML over defaults) and `--help` states each default from the code.
//!
//! Invariant: a resolved value is within its declared range; one out of range is refused with
//! an [`Invalid`] naming its key, before anything starts.

/// A setting that cannot be used: the key (as in TOML; the flag is the same with `-`) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    /// The TOML key (`feeds.<name>.<key>` for a feed's).
    pub key: String,
    /// What is wrong with the value, and what would do.
    pub message: String,
}

impl Invalid {
    /// A refusal of `key`'s value.
    pub fn new(key: &str, message: impl Into<String>) -> Invalid {
        Invalid { key: key.to_string(), message: message.into() }
    }
}

/// Refuses a value outside `min..=max` (or not a finite number), naming `key`.
pub(crate) fn check_range(key: &str, value: f64, min: f64, max: f64) -> Result<(), Invalid> {
    if !value.is_finite() || value < min || value > max {
        return Err(Invalid::new(key, format!("{value} must be between {min} and {max}")));
    }
    Ok(())
}

/// Declares a subsystem's settings. Each setting is written once:
///
/// ```text
/// /// Meaning, shown by --help.
/// name: Type = default, env "TICKERFEED_NAME" [, range(min, max)] [, shown "text"];
/// ```
///
/// `range` is checked on the resolved value; `shown` replaces the default in `--help` where the
/// value is computed (e.g. "number of CPUs"). After the list, `check = path` names a function
/// `fn(&Settings) -> Result<(), Invalid>` for rules across settings.
///
/// It generates `pub struct $Settings` (the values, `Default` from the declarations) and
/// `pub struct $Args` (each value an `Option`, derives `clap::Args`) with `KEYS`, `or` (merge
/// two sources), `resolve` (fill defaults, check), `read_toml` (one TOML key) and
/// `shown_defaults` (for `--help` and the documentation test).
macro_rules! settings {
    (
        $(#[$smeta:meta])*
        pub struct $Settings:ident, args $Args:ident {
            $(
                $(#[doc = $doc:literal])*
                $name:ident : $ty:ty = $default:expr, env $env:literal
                    $(, range($min:expr, $max:expr))?
                    $(, shown $shown:literal)?
                ;
            )*
        }
        $(check = $check:path;)?
    ) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $Settings {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for $Settings {
            fn default() -> Self {
                $Settings { $( $name: $default, )* }
            }
        }

        #[doc = concat!("[`", stringify!($Settings), "`] as one source gives them (flags and environment, or the TOML file): what it leaves unset is `None`.")]
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $Args {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env)]
                pub $name: Option<$ty>,
            )*
        }

        impl $Args {
            /// The TOML keys (the flags are the same with `-`).
            pub const KEYS: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Each setting from `self` where it is set, else from `lower`.
            pub fn or(self, lower: $Args) -> $Args {
                $Args { $( $name: self.$name.or(lower.$name), )* }
            }

            /// The settings: what is unset takes its default; each range and rule is checked.
            pub fn resolve(self) -> Result<$Settings, $crate::settings::Invalid> {
                let defaults = $Settings::default();
                let settings = $Settings { $( $name: self.$name.unwrap_or(defaults.$name), )* };
                $( $( $crate::settings::check_range(stringify!($name), settings.$name as f64, $min as f64, $max as f64)?; )? )*
                $( $check(&settings)?; )?
                Ok(settings)
            }

            /// Reads `key`'s value from a TOML table being deserialized; false if `key` is not one of these.
            pub fn read_toml<'de, A: serde::de::MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
                match key {
                    $( stringify!($name) => self.$name = Some(map.next_value::<$ty>()?), )*
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// Each setting's key and its default as `--help` and the README state it.
            pub fn shown_defaults() -> Vec<(&'static str, String)> {
                // Unused when every default is `shown`.
                #[allow(unused_variables)]
                let defaults = $Settings::default();
                vec![$( (stringify!($name), $crate::settings::settings!(@shown defaults.$name $(, $shown)?)) ),*]
            }
        }
    };
    (@shown $value:expr) => { $value.to_string() };
    (@shown $value:expr, $shown:literal) => { $shown.to_string() };
}
pub(crate) use settings;
