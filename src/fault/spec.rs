//! What a fault is: [`FaultSpec`], read by one parser from the three forms it is written in —
//! the command line (`gap:symbol=AAPL,count=3,every=10s`), a `[[faults]]` TOML table and a JSON
//! body (`{"kind":"gap","symbol":"AAPL","count":3,"every":"10s"}`). Each form is first turned
//! into the same list of `key = value` entries ([`FaultSpec::from_entries`]), so the three accept
//! and refuse the same faults with the same messages. A refusal names the key at fault and, for a
//! key the kind does not take, what the kind takes.
//!
//! [`FaultSpec::to_json`] writes the fields that were set; its output parses back to the same
//! spec (the JSON that `GET /api/faults` lists can be posted again as it is).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::quote::normalise_symbol;

/// The kinds of fault. `Disconnect`, `Stall`, `Delay` and `Duplicate` act on sessions; `Gap`
/// and `FeedStall` on what the feeds publish; `RejectConnect` on new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Drop the connection with no close frame, or close it with `code`.
    Disconnect,
    /// Write nothing to the session for `ms`.
    Stall,
    /// Hold each delivery `ms`, for `for`.
    Delay,
    /// Skip the next `count` quotes of `symbol`: its seq jumps by `count + 1`.
    Gap,
    /// Send the next `count` quotes (of `symbol`, or any) twice.
    Duplicate,
    /// The feed (or one symbol) publishes nothing for `for`, with no `feed` event.
    FeedStall,
    /// The next `count` connections are refused with 503.
    RejectConnect,
}

impl FaultKind {
    /// Every kind, in the order docs/FAULTS.md lists them.
    pub const ALL: [FaultKind; 7] =
        [FaultKind::Disconnect, FaultKind::Stall, FaultKind::Delay, FaultKind::Gap, FaultKind::Duplicate, FaultKind::FeedStall, FaultKind::RejectConnect];

    /// The kinds' names, as the metric's `kind` label and the `kind` field.
    pub(crate) const LABELS: [&'static str; 7] = ["disconnect", "stall", "delay", "gap", "duplicate", "feed_stall", "reject_connect"];

    /// The kind's name (`feed_stall`).
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    fn parse(text: &str) -> Option<FaultKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The keys this kind takes besides `kind`.
    pub(crate) fn keys(self) -> &'static [&'static str] {
        match self {
            FaultKind::Disconnect => &["fraction", "session", "code", "every", "for"],
            FaultKind::Stall => &["fraction", "session", "ms", "every", "for"],
            FaultKind::Delay => &["fraction", "session", "ms", "for"],
            FaultKind::Gap => &["symbol", "count", "every", "for"],
            FaultKind::Duplicate => &["fraction", "session", "symbol", "count", "every", "for"],
            FaultKind::FeedStall => &["feed", "symbol", "for"],
            FaultKind::RejectConnect => &["count", "every", "for"],
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every key any kind takes, in the order [`FaultSpec::to_json`] writes them.
const KEYS: [&str; 9] = ["fraction", "session", "symbol", "feed", "ms", "code", "count", "every", "for"];

/// Keys `GET /api/faults` adds to a fault's JSON that are not part of the spec: a JSON body
/// may carry them (so a listed fault can be posted back) and they are ignored.
pub(crate) const LISTED_ONLY: [&str; 5] = ["id", "fired", "remaining", "added_at", "expires_at"];

/// Bounds of the values (docs/FAULTS.md states them).
const MAX_MS: u64 = 3_600_000;
const MAX_COUNT: u32 = 1_000_000;
const MIN_EVERY: Duration = Duration::from_millis(10);
const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// A fault as written: its kind, its target and its timing. Which keys a kind takes is
/// [`FaultKind::keys`]; `None` is a key not given.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// What the fault does.
    pub kind: FaultKind,
    /// Target: this share of sessions (0 to 1), chosen by the seed (see `fault::hits`).
    pub fraction: Option<f64>,
    /// Target: the session with this id (`welcome.session`).
    pub session: Option<u64>,
    /// Target (gap, feed_stall) or filter (duplicate): this symbol, normalised.
    pub symbol: Option<String>,
    /// Target of a feed_stall: the feed with this name.
    pub feed: Option<String>,
    /// Stall: how long the session gets nothing; delay: how long each delivery is held.
    pub ms: Option<u64>,
    /// Disconnect: close with this code instead of dropping the connection.
    pub code: Option<u16>,
    /// Gap: quotes skipped per firing; duplicate: quotes sent twice per firing and session;
    /// reject_connect: connections refused per firing.
    pub count: Option<u32>,
    /// Fire again this often after the first firing (at the fault's addition).
    pub every: Option<Duration>,
    /// The fault is removed this long after it was added (`for`).
    pub lasts: Option<Duration>,
}

/// A spec that cannot be used: the key at fault (or `kind`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    /// The key at fault: `kind`, `count`, … (`spec` for the text as a whole).
    pub key: String,
    /// What is wrong and what would do.
    pub message: String,
}

impl SpecError {
    fn new(key: &str, message: impl Into<String>) -> SpecError {
        SpecError { key: clip(key), message: message.into() }
    }
}

/// A value as a form gives it: text (every value on the command line) or a number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Text(String),
    Number(serde_json::Number),
}

impl Raw {
    fn text(&self) -> String {
        match self {
            Raw::Text(text) => text.clone(),
            Raw::Number(number) => number.to_string(),
        }
    }
}

impl FaultSpec {
    /// The command-line form: `kind` or `kind:key=value,key=value`.
    pub fn parse_cli(text: &str) -> Result<FaultSpec, SpecError> {
        let text = text.trim();
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        let mut entries = Vec::new();
        for pair in rest.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(SpecError::new(pair, "expected key=value (e.g. count=3), separated by commas"));
            };
            entries.push((key.trim().to_string(), Raw::Text(value.trim().to_string())));
        }
        FaultSpec::from_entries(kind.trim(), entries)
    }

    /// The JSON form: an object with `kind` and the keys; the keys `GET /api/faults` adds
    /// ([`LISTED_ONLY`]) are ignored.
    pub fn from_json(value: &Value) -> Result<FaultSpec, SpecError> {
        let Value::Object(object) = value else {
            return Err(SpecError::new("spec", format!("a fault is a JSON object such as {{\"kind\":\"gap\",\"symbol\":\"AAPL\",\"count\":3}}, not {}", json_kind(value))));
        };
        let entries = object.iter().filter(|(key, _)| !LISTED_ONLY.contains(&key.as_str())).map(|(key, value)| {
            let raw = match value {
                Value::String(text) => Raw::Text(text.clone()),
                Value::Number(number) => Raw::Number(number.clone()),
                other => return Err(SpecError::new(key, format!("must be a string or a number, not {}", json_kind(other)))),
            };
            Ok((key.clone(), raw))
        });
        FaultSpec::from_keyed(entries)
    }

    /// The TOML form: a `[[faults]]` table with `kind` and the keys.
    pub fn from_toml(table: &toml::Table) -> Result<FaultSpec, SpecError> {
        let entries = table.iter().map(|(key, value)| {
            let raw = match value {
                toml::Value::String(text) => Raw::Text(text.clone()),
                toml::Value::Integer(n) => Raw::Number((*n).into()),
                toml::Value::Float(f) => Raw::Number(serde_json::Number::from_f64(*f).ok_or_else(|| SpecError::new(key, format!("{f} is not a finite number")))?),
                other => return Err(SpecError::new(key, format!("must be a string or a number, not a {}", other.type_str()))),
            };
            Ok((key.clone(), raw))
        });
        FaultSpec::from_keyed(entries)
    }

    /// The JSON and TOML forms once their values are read: `kind` taken out, the rest as entries.
    fn from_keyed(entries: impl Iterator<Item = Result<(String, Raw), SpecError>>) -> Result<FaultSpec, SpecError> {
        let mut kind = None;
        let mut rest = Vec::new();
        for entry in entries {
            let (key, raw) = entry?;
            if key == "kind" {
                kind = Some(raw.text());
            } else {
                rest.push((key, raw));
            }
        }
        let kind = kind.ok_or_else(|| SpecError::new("kind", format!("missing; one of {}", FaultKind::LABELS.join(", "))))?;
        FaultSpec::from_entries(&kind, rest)
    }

    /// The one parser: a kind and its `key = value` entries, each checked, then the rules
    /// across keys.
    pub(crate) fn from_entries(kind: &str, entries: Vec<(String, Raw)>) -> Result<FaultSpec, SpecError> {
        let kind = FaultKind::parse(kind).ok_or_else(|| SpecError::new("kind", format!("unknown kind '{}'; one of {}", clip(kind), FaultKind::LABELS.join(", "))))?;
        let mut spec = FaultSpec { kind, fraction: None, session: None, symbol: None, feed: None, ms: None, code: None, count: None, every: None, lasts: None };
        let takes = kind.keys();
        let mut seen: Vec<&str> = Vec::new();
        for (key, raw) in &entries {
            if !KEYS.contains(&key.as_str()) && key != "kind" {
                return Err(SpecError::new(key, format!("unknown key; {kind} takes {}", takes.join(", "))));
            }
            if !takes.contains(&key.as_str()) {
                return Err(SpecError::new(key, format!("{kind} does not take '{key}'; it takes {}", takes.join(", "))));
            }
            if seen.contains(&key.as_str()) {
                return Err(SpecError::new(key, "given more than once"));
            }
            seen.push(key);
            let text = raw.text();
            match key.as_str() {
                "fraction" => {
                    let fraction: f64 = text.parse().map_err(|_| SpecError::new(key, format!("'{}' is not a number between 0 and 1", clip(&text))))?;
                    if !(0.0..=1.0).contains(&fraction) {
                        return Err(SpecError::new(key, format!("{fraction} is not between 0 and 1")));
                    }
                    spec.fraction = Some(fraction);
                }
                "session" => {
                    spec.session = Some(text.parse().map_err(|_| SpecError::new(key, format!("'{}' is not a session id (a whole number, as in welcome.session)", clip(&text))))?)
                }
                "symbol" => spec.symbol = Some(normalise_symbol(&text).map_err(|reason| SpecError::new(key, format!("'{}' is not a symbol: it {reason}", clip(&text))))?),
                "feed" => {
                    if text.is_empty() || text.len() > 32 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                        return Err(SpecError::new(key, format!("'{}' is not a feed name (1-32 letters, digits, - or _)", clip(&text))));
                    }
                    spec.feed = Some(text);
                }
                "ms" => spec.ms = Some(whole(key, &text, 1, MAX_MS, "milliseconds")?),
                "code" => {
                    let code = whole(key, &text, 1000, 4999, "a close code")? as u16;
                    if !sendable_close_code(code) {
                        return Err(SpecError::new(key, format!("{code} is not a close code a server may send: 1000-1003, 1007-1014 or 3000-4999")));
                    }
                    spec.code = Some(code);
                }
                "count" => spec.count = Some(whole(key, &text, 1, u64::from(MAX_COUNT), "a count")? as u32),
                "every" => spec.every = Some(duration(key, raw, MIN_EVERY)?),
                "for" => spec.lasts = Some(duration(key, raw, Duration::from_millis(1))?),
                _ => unreachable!("KEYS lists '{key}'"),
            }
        }
        spec.check()?;
        Ok(spec)
    }

    /// The rules across keys.
    fn check(&self) -> Result<(), SpecError> {
        let kind = self.kind;
        if self.fraction.is_some() && self.session.is_some() {
            return Err(SpecError::new("session", "give one target: fraction or session, not both"));
        }
        if self.feed.is_some() && self.symbol.is_some() {
            return Err(SpecError::new("symbol", "give one target: feed or symbol, not both"));
        }
        let required = match kind {
            FaultKind::Stall => Some(("ms", self.ms.is_some(), "how long the session gets nothing, e.g. ms=3000")),
            FaultKind::Delay if self.ms.is_none() => Some(("ms", false, "how long each delivery is held, e.g. ms=500")),
            FaultKind::Delay => Some(("for", self.lasts.is_some(), "how long deliveries are held, e.g. for=20s")),
            FaultKind::Gap => Some(("symbol", self.symbol.is_some(), "the symbol whose quotes are skipped, e.g. symbol=AAPL")),
            FaultKind::FeedStall => Some(("for", self.lasts.is_some(), "how long the feed publishes nothing, e.g. for=5s")),
            _ => None,
        };
        if let Some((key, false, what)) = required {
            return Err(SpecError::new(key, format!("{kind} needs '{key}': {what}")));
        }
        Ok(())
    }

    /// The spec as JSON: `kind`, then each key that is set (durations as `"10s"` or
    /// `"1500ms"`). [`FaultSpec::from_json`] reads it back to the same spec.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("kind".into(), self.kind.as_str().into());
        for (key, value) in self.entries() {
            map.insert(key.into(), value);
        }
        map
    }

    /// The keys that are set, in [`KEYS`] order.
    fn entries(&self) -> Vec<(&'static str, Value)> {
        let mut entries = Vec::new();
        if let Some(fraction) = self.fraction {
            entries.push(("fraction", Value::from(fraction)));
        }
        if let Some(session) = self.session {
            entries.push(("session", Value::from(session)));
        }
        if let Some(symbol) = &self.symbol {
            entries.push(("symbol", Value::from(symbol.as_str())));
        }
        if let Some(feed) = &self.feed {
            entries.push(("feed", Value::from(feed.as_str())));
        }
        if let Some(ms) = self.ms {
            entries.push(("ms", Value::from(ms)));
        }
        if let Some(code) = self.code {
            entries.push(("code", Value::from(code)));
        }
        if let Some(count) = self.count {
            entries.push(("count", Value::from(count)));
        }
        if let Some(every) = self.every {
            entries.push(("every", Value::from(format_duration(every))));
        }
        if let Some(lasts) = self.lasts {
            entries.push(("for", Value::from(format_duration(lasts))));
        }
        entries
    }
}

/// The command-line form, which [`FaultSpec::parse_cli`] reads back.
impl std::fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.as_str())?;
        for (i, (key, value)) in self.entries().into_iter().enumerate() {
            let value = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            write!(f, "{}{key}={value}", if i == 0 { ':' } else { ',' })?;
        }
        Ok(())
    }
}

/// A whole number in `min..=max`.
fn whole(key: &str, text: &str, min: u64, max: u64, what: &str) -> Result<u64, SpecError> {
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(SpecError::new(key, format!("{n} is not between {min} and {max}"))),
        Err(_) => Err(SpecError::new(key, format!("'{}' is not {what} (a whole number from {min} to {max})", clip(text)))),
    }
}

/// RFC 6455's codes a server may put in a close frame (not the reserved 1004-1006 and 1015).
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A duration with its unit: `500ms`, `10s`, `1.5s`, `2m`, `1h`; from `at_least` to a day.
fn duration(key: &str, raw: &Raw, at_least: Duration) -> Result<Duration, SpecError> {
    let text = raw.text();
    let bad = || SpecError::new(key, format!("'{}' is not a duration: a number with its unit, ms, s, m or h (e.g. 500ms, 10s, 2m)", clip(&text)));
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let millis = match unit.trim() {
        "ms" => number,
        "s" => number * 1e3,
        "m" => number * 60e3,
        "h" => number * 3600e3,
        _ => return Err(bad()),
    };
    let duration = Duration::from_millis(millis.round() as u64);
    if !millis.is_finite() || duration < at_least || duration > MAX_DURATION {
        return Err(SpecError::new(key, format!("{} is not between {} and 24h", format_duration(duration), format_duration(at_least))));
    }
    Ok(duration)
}

/// `10s` for whole seconds, else `1500ms`: what [`duration`] reads back to the same value.
pub(crate) fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 == 0 { format!("{}s", millis / 1000) } else { format!("{millis}ms") }
}

/// Text from a spec quoted in a message: at most 32 characters.
fn clip(text: &str) -> String {
    text.chars().take(32).collect()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(text: &str) -> FaultSpec {
        FaultSpec::parse_cli(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn cli_error(text: &str) -> String {
        FaultSpec::parse_cli(text).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_examples_parse() {
        let gap = cli("gap:symbol=aapl,count=3,every=10s");
        assert_eq!((gap.kind, gap.symbol.as_deref(), gap.count, gap.every), (FaultKind::Gap, Some("AAPL"), Some(3), Some(Duration::from_secs(10))));
        let disconnect = cli("disconnect:fraction=0.5,code=4000");
        assert_eq!((disconnect.fraction, disconnect.code), (Some(0.5), Some(4000)));
        assert_eq!(cli("stall:ms=3000").ms, Some(3000));
        assert_eq!(cli("delay:ms=500,for=20s").lasts, Some(Duration::from_secs(20)));
        assert_eq!(cli("duplicate:symbol=AAPL,count=5").count, Some(5));
        assert_eq!(cli("feed_stall:for=5s").lasts, Some(Duration::from_secs(5)));
        assert_eq!(cli("feed_stall:feed=sim,for=1.5s").lasts, Some(Duration::from_millis(1500)));
        assert_eq!(cli("reject_connect:count=3").count, Some(3));
        assert_eq!(cli("disconnect:session=17").session, Some(17));
        assert_eq!(cli("disconnect").kind, FaultKind::Disconnect);
    }

    #[test]
    fn the_three_forms_give_the_same_spec() {
        let from_cli = cli("gap:symbol=AAPL,count=3,every=10s");
        let from_json = FaultSpec::from_json(&serde_json::json!({"kind":"gap","symbol":"AAPL","count":3,"every":"10s"})).unwrap();
        let table: toml::Table = toml::from_str("kind = \"gap\"\nsymbol = \"AAPL\"\ncount = 3\nevery = \"10s\"\n").unwrap();
        assert_eq!(from_json, from_cli);
        assert_eq!(FaultSpec::from_toml(&table).unwrap(), from_cli);
        let error = FaultSpec::from_json(&serde_json::json!({"kind":"gap","symbol":"AAPL","count":0})).unwrap_err();
        assert_eq!(error, FaultSpec::parse_cli("gap:symbol=AAPL,count=0").unwrap_err());
    }

    #[test]
    fn refusals_name_the_key_and_what_the_kind_takes() {
        assert_eq!(cli_error("stall:ms=5,symbol=AAPL"), "symbol: stall does not take 'symbol'; it takes fraction, session, ms, every, for");
        assert_eq!(cli_error("gap:symbol=AAPL,bogus=1"), "bogus: unknown key; gap takes symbol, count, every, for");
        assert_eq!(cli_error("explode:ms=1"), "kind: unknown kind 'explode'; one of disconnect, stall, delay, gap, duplicate, feed_stall, reject_connect");
        assert_eq!(cli_error("stall"), "ms: stall needs 'ms': how long the session gets nothing, e.g. ms=3000");
        assert_eq!(cli_error("delay:ms=5"), "for: delay needs 'for': how long deliveries are held, e.g. for=20s");
        assert_eq!(cli_error("gap:count=3"), "symbol: gap needs 'symbol': the symbol whose quotes are skipped, e.g. symbol=AAPL");
        assert_eq!(cli_error("feed_stall"), "for: feed_stall needs 'for': how long the feed publishes nothing, e.g. for=5s");
        assert!(cli_error("disconnect:fraction=1.5").starts_with("fraction: 1.5 is not between 0 and 1"));
        assert!(cli_error("disconnect:fraction=0.5,session=3").starts_with("session: give one target"));
        assert!(cli_error("disconnect:code=1006").starts_with("code: 1006 is not a close code a server may send"));
        assert!(cli_error("gap:symbol=AAPL,every=10").starts_with("every: '10' is not a duration"));
        assert!(cli_error("gap:symbol=AAPL,every=1ms").starts_with("every: 1ms is not between 10ms and 24h"));
        assert!(cli_error("gap:symbol=AAPL,count=3,count=4").starts_with("count: given more than once"));
        assert!(cli_error("gap:symbol=A A").starts_with("symbol: 'A A' is not a symbol"));
        assert!(cli_error("gap:symbol").starts_with("symbol: expected key=value"));
        let error = FaultSpec::from_json(&serde_json::json!({"kind":"stall","ms":true})).unwrap_err();
        assert_eq!(error.to_string(), "ms: must be a string or a number, not a boolean");
        assert!(FaultSpec::from_json(&serde_json::json!({"ms":1})).unwrap_err().to_string().starts_with("kind: missing"));
        assert!(FaultSpec::from_json(&serde_json::json!([1])).unwrap_err().to_string().starts_with("spec: a fault is a JSON object"));
    }

    #[test]
    fn json_and_the_command_line_form_read_back_to_the_same_spec() {
        for text in [
            "gap:symbol=AAPL,count=3,every=10s",
            "disconnect:fraction=0.25,code=4000,every=1500ms,for=1m",
            "stall:session=17,ms=3000",
            "delay:fraction=1,ms=500,for=20s",
            "duplicate:symbol=MSFT,count=5",
            "feed_stall:feed=sim,for=5s",
            "reject_connect:count=2,every=2s,for=1h",
        ] {
            let spec = cli(text);
            let mut listed = spec.to_json();
            // As GET lists it: the registry's own fields beside the spec's.
            listed.insert("id".into(), 3.into());
            listed.insert("fired".into(), 1.into());
            listed.insert("expires_at".into(), 1_700_000_000_000u64.into());
            assert_eq!(FaultSpec::from_json(&Value::Object(listed)).unwrap(), spec, "{text}");
            assert_eq!(FaultSpec::parse_cli(&spec.to_string()).unwrap(), spec, "{text}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::test_support::proptest_config;

        fn spec() -> impl Strategy<Value = FaultSpec> {
            let kind = proptest::sample::select(FaultKind::ALL.to_vec());
            (kind, any::<u64>(), 0u32..=4, 1u64..=MAX_MS, 1u32..=MAX_COUNT, 10u64..=86_400_000, 1u64..=86_400_000, 0.0f64..=1.0, 1000u16..=4999).prop_map(
                |(kind, session, target, ms, count, every, lasts, fraction, code)| {
                    let takes = |key: &str| kind.keys().contains(&key);
                    let mut spec = FaultSpec { kind, fraction: None, session: None, symbol: None, feed: None, ms: None, code: None, count: None, every: None, lasts: None };
                    match target {
                        1 if takes("fraction") => spec.fraction = Some(fraction),
                        2 if takes("session") => spec.session = Some(session),
                        3 if takes("feed") => spec.feed = Some("sim".into()),
                        _ => {}
                    }
                    if takes("symbol") && (kind == FaultKind::Gap || target == 4) && spec.feed.is_none() {
                        spec.symbol = Some("BRK.B".into());
                    }
                    if takes("ms") {
                        spec.ms = Some(ms);
                    }
                    if takes("code") && sendable_close_code(code) && session % 2 == 0 {
                        spec.code = Some(code);
                    }
                    if takes("count") && session % 3 != 0 {
                        spec.count = Some(count);
                    }
                    if takes("every") && session % 5 != 0 {
                        spec.every = Some(Duration::from_millis(every));
                    }
                    if takes("for") && (session % 7 != 0 || matches!(kind, FaultKind::Delay | FaultKind::FeedStall)) {
                        spec.lasts = Some(Duration::from_millis(lasts));
                    }
                    spec
                },
            )
        }

        proptest! {
            #![proptest_config(proptest_config(512, "target/proptest-regressions/fault_spec.txt"))]

            #[test]
            fn a_listed_fault_posts_back_as_the_same_spec(spec in spec()) {
                let json = Value::Object(spec.to_json());
                let text = serde_json::to_string(&json).unwrap();
                let reread: Value = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(FaultSpec::from_json(&reread).unwrap(), spec.clone());
                prop_assert_eq!(FaultSpec::parse_cli(&spec.to_string()).unwrap(), spec);
            }
        }
    }
}
