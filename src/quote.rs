//! The quote: what a feed produces and what clients receive.
//!
//! A feed builds a [`QuoteDraft`] (prices and session statistics, already rounded to the
//! instrument's tick size); the bus stamps it with the symbol's `seq` and the publish time `pt`
//! and freezes it into a [`Quote`]. The JSON form of a published quote is rendered at most once,
//! the first time a session needs it, and then shared by every recipient — a quote that
//! conflation merges away before anyone reads it is never serialised at all.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// A quote before the bus has stamped it: everything the feed knows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QuoteDraft {
    /// Event time, milliseconds since the Unix epoch (historical time for replay).
    pub ts: i64,
    pub last: f64,
    pub bid: f64,
    pub ask: f64,
    /// Size of the trade that printed `last`.
    pub size: u64,
    /// Cumulative volume of the trading session.
    pub volume: u64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub prev_close: f64,
    /// Decimal places of the instrument's tick size; `change` is rounded to it as well.
    pub decimals: u8,
}

/// A published quote as clients see it. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Quote {
    pub symbol: Arc<str>,
    /// Per symbol, +1 for every quote published for it since the server started.
    pub seq: u64,
    /// Event time, ms since the Unix epoch.
    pub ts: i64,
    /// Publish time on this server's bus, µs since the Unix epoch.
    pub pt: i64,
    pub last: f64,
    pub bid: f64,
    pub ask: f64,
    pub size: u64,
    pub volume: u64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub prev_close: f64,
    pub change: f64,
    pub change_pct: f64,
}

impl Quote {
    /// Freezes a draft: derives `change` and `change_pct` from `last` and `prev_close`.
    pub(crate) fn from_draft(symbol: Arc<str>, seq: u64, pt: i64, draft: &QuoteDraft) -> Quote {
        let change = round_to(draft.last - draft.prev_close, draft.decimals);
        let change_pct = if draft.prev_close != 0.0 { round_to(100.0 * (draft.last - draft.prev_close) / draft.prev_close, 2) } else { 0.0 };
        Quote {
            symbol,
            seq,
            ts: draft.ts,
            pt,
            // Feeds round already; rounding again here guarantees the wire never shows
            // float noise such as 107.99000000000001 whatever a feed computed.
            last: round_to(draft.last, draft.decimals),
            bid: round_to(draft.bid, draft.decimals),
            ask: round_to(draft.ask, draft.decimals),
            size: draft.size,
            volume: draft.volume,
            open: round_to(draft.open, draft.decimals),
            high: round_to(draft.high, draft.decimals),
            low: round_to(draft.low, draft.decimals),
            prev_close: round_to(draft.prev_close, draft.decimals),
            change,
            change_pct,
        }
    }
}

/// A quote on the bus: the value plus its JSON, rendered on first use and shared afterwards.
#[derive(Debug)]
pub(crate) struct PublishedQuote {
    pub quote: Quote,
    json: OnceLock<Box<str>>,
}

impl PublishedQuote {
    pub(crate) fn new(quote: Quote) -> PublishedQuote {
        PublishedQuote { quote, json: OnceLock::new() }
    }

    /// A quote received as JSON (from another node): the text is what clients get.
    pub(crate) fn with_json(quote: Quote, json: &str) -> PublishedQuote {
        let published = PublishedQuote::new(quote);
        let _ = published.json.set(json.into());
        published
    }

    /// The quote's JSON object, serialised once for all recipients.
    pub(crate) fn json(&self) -> &str {
        self.json.get_or_init(|| {
            // Serialising a struct of numbers and one string cannot fail.
            serde_json::to_string(&self.quote).expect("quote serialises").into_boxed_str()
        })
    }
}

/// The longest symbol, in characters.
pub(crate) const MAX_SYMBOL_LEN: usize = 16;

/// Why a text is not a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SymbolError {
    Empty,
    TooLong,
    BadCharacter,
}

impl std::fmt::Display for SymbolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for SymbolError {}

impl SymbolError {
    /// What is wrong, to follow the symbol's name in a message.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            SymbolError::Empty => "must not be empty",
            SymbolError::TooLong => "is longer than 16 characters",
            SymbolError::BadCharacter => "may only contain letters, digits and . - ^ =",
        }
    }
}

/// Whether `c` may appear in a symbol: an ASCII letter or digit, `.`, `-`, `^` or `=`.
pub(crate) fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '^' | '=')
}

/// The one symbol rule, for feed files, REST and every transport: surrounding spaces are
/// dropped, the rest must be 1 to [`MAX_SYMBOL_LEN`] of [`is_symbol_char`], and it is
/// upper-cased (symbols are case-insensitive on the way in, upper case everywhere after).
pub(crate) fn normalise_symbol(raw: &str) -> Result<String, SymbolError> {
    let text = raw.trim();
    check_symbol(text)?;
    Ok(text.to_ascii_uppercase())
}

/// The syntax half of [`normalise_symbol`], for a text taken as it is (no trimming, no
/// allocation: a replay file checks every row's symbol with it).
pub(crate) fn check_symbol(text: &str) -> Result<(), SymbolError> {
    if text.is_empty() {
        return Err(SymbolError::Empty);
    }
    if text.len() > MAX_SYMBOL_LEN {
        return Err(SymbolError::TooLong);
    }
    if !text.chars().all(is_symbol_char) {
        return Err(SymbolError::BadCharacter);
    }
    Ok(())
}

/// Rounds `value` to `decimals` places. Values are then printed by serde_json's shortest
/// round-trip formatting, so a rounded price prints with no more digits than its tick size.
pub(crate) fn round_to(value: f64, decimals: u8) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    let rounded = (value * scale).round() / scale;
    // Avoid printing "-0.0" for a change that rounds to nothing.
    if rounded == 0.0 { 0.0 } else { rounded }
}

/// Decimal places of a tick size such as 0.01 (2) or 0.00001 (5); at most 8.
pub(crate) fn decimals_of_tick(tick: f64) -> u8 {
    let mut decimals = 0u8;
    while decimals < 8 && ((tick * 10f64.powi(decimals as i32)).round() - tick * 10f64.powi(decimals as i32)).abs() > 1e-9 {
        decimals += 1;
    }
    decimals
}

/// Bid and ask around a price: a spread of `spread_fraction` of the price, at least one tick,
/// placed so that `bid <= last <= ask` and `bid < ask` once rounded.
pub(crate) fn synthetic_spread(last: f64, spread_fraction: f64, decimals: u8) -> (f64, f64) {
    let tick = 10f64.powi(-(decimals as i32));
    let half = (last * spread_fraction / 2.0).max(tick / 2.0);
    let mut bid = round_to(((last - half) / tick).floor() * tick, decimals);
    let mut ask = round_to(((last + half) / tick).ceil() * tick, decimals);
    if bid > last {
        bid = round_to(last - tick, decimals);
    }
    if ask <= bid {
        ask = round_to(bid + tick, decimals);
    }
    if ask < last {
        ask = round_to(last + tick, decimals);
    }
    (bid, ask)
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_micros() as i64
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    now_micros() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> QuoteDraft {
        QuoteDraft {
            ts: 1_764_100_000_123,
            last: 231.52,
            bid: 231.50,
            ask: 231.54,
            size: 100,
            volume: 1_834_200,
            open: 229.10,
            high: 232.00,
            low: 228.75,
            prev_close: 228.90,
            decimals: 2,
        }
    }

    #[test]
    fn json_matches_the_documented_shape() {
        let quote = Quote::from_draft("AAPL".into(), 1042, 1_764_100_000_123_456, &draft());
        let published = PublishedQuote::new(quote);
        assert_eq!(
            published.json(),
            r#"{"symbol":"AAPL","seq":1042,"ts":1764100000123,"pt":1764100000123456,"last":231.52,"bid":231.5,"ask":231.54,"size":100,"volume":1834200,"open":229.1,"high":232.0,"low":228.75,"prev_close":228.9,"change":2.62,"change_pct":1.14}"#
        );
        // Rendered once: the same allocation is handed out every time.
        assert!(std::ptr::eq(published.json(), published.json()));
    }

    #[test]
    fn five_decimal_prices_keep_their_precision() {
        let mut d = draft();
        d.decimals = 5;
        d.last = 1.08437;
        d.prev_close = 1.08401;
        let quote = Quote::from_draft("EURUSD".into(), 1, 0, &d);
        assert_eq!(quote.change, 0.00036);
    }

    #[test]
    fn tick_decimals() {
        assert_eq!(decimals_of_tick(0.01), 2);
        assert_eq!(decimals_of_tick(0.00001), 5);
        assert_eq!(decimals_of_tick(1.0), 0);
        assert_eq!(decimals_of_tick(0.25), 2);
    }

    #[test]
    fn synthetic_spread_brackets_last() {
        for &(last, frac, dec) in &[(231.52, 0.0002, 2), (1.08437, 0.00005, 5), (0.01, 0.001, 2), (5000.0, 0.0001, 2)] {
            let (bid, ask) = synthetic_spread(last, frac, dec);
            assert!(bid < ask, "{bid} < {ask}");
            assert!(bid <= last && last <= ask, "{bid} <= {last} <= {ask}");
        }
    }

    #[test]
    fn one_symbol_rule() {
        for (raw, symbol) in [("AAPL", "AAPL"), (" brk.b ", "BRK.B"), ("^GSPC", "^GSPC"), ("EURUSD=X", "EURUSD=X"), ("ES-2025", "ES-2025"), ("a", "A")] {
            assert_eq!(normalise_symbol(raw).as_deref(), Ok(symbol), "{raw}");
        }
        assert_eq!(normalise_symbol("  "), Err(SymbolError::Empty));
        assert_eq!(normalise_symbol(&"A".repeat(17)), Err(SymbolError::TooLong));
        for bad in ["../etc", "A B", "A/B", "ÄPPL"] {
            assert_eq!(normalise_symbol(bad), Err(SymbolError::BadCharacter), "{bad}");
        }
    }
}

/// The one symbol rule's invariants, checked on any text: by the property tests below and by
/// the fuzz target `symbol` (through `crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use super::*;

    /// Asserts, whatever `raw` is: an accepted symbol is 1 to [`MAX_SYMBOL_LEN`] symbol
    /// characters in upper case, accepted again as itself (normalising is idempotent), and is
    /// `raw` trimmed and upper-cased; the syntax check of a file's cell ([`check_symbol`], no
    /// trimming) agrees with it on a text with no surrounding space.
    pub(crate) fn check_any_text(raw: &str) {
        match normalise_symbol(raw) {
            Ok(symbol) => {
                assert!((1..=MAX_SYMBOL_LEN).contains(&symbol.chars().count()), "{raw:?} → {symbol:?}");
                assert!(symbol.chars().all(is_symbol_char) && !symbol.chars().any(|c| c.is_ascii_lowercase()), "{raw:?} → {symbol:?}");
                assert_eq!(symbol, raw.trim().to_ascii_uppercase());
                assert_eq!(normalise_symbol(&symbol).as_deref(), Ok(symbol.as_str()), "normalising {symbol:?} again");
            }
            Err(error) => assert!(!error.reason().is_empty()),
        }
        if raw.trim() == raw {
            assert_eq!(check_symbol(raw).is_ok(), normalise_symbol(raw).is_ok(), "{raw:?}: a file and a client disagree");
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;
        use crate::test_support::proptest_config;

        proptest! {
            #![proptest_config(proptest_config(1024, "target/proptest-regressions/quote.txt"))]

            #[test]
            fn any_text_is_a_normal_symbol_or_refused(raw in prop_oneof![any::<String>(), "\\s{0,2}[A-Za-z0-9.^=*é -]{0,20}\\s{0,2}"]) {
                check_any_text(&raw);
            }

            #[test]
            fn symbols_are_case_insensitive_and_spaces_around_do_not_count(symbol in "[A-Za-z0-9.^=-]{1,16}", before in "[ \t]{0,3}", after in "[ \t\r\n]{0,3}") {
                let expected = symbol.to_ascii_uppercase();
                prop_assert_eq!(normalise_symbol(&format!("{before}{symbol}{after}")), Ok(expected.clone()));
                prop_assert_eq!(normalise_symbol(&symbol.to_ascii_lowercase()), Ok(expected));
            }
        }
    }
}
