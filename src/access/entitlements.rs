//! Which symbols a token lets its holder read: the `symbols` claim's patterns.
//!
//! A pattern is a symbol (`AAPL`), a prefix ending in `*` (`EUR*`: every symbol that starts
//! with `EUR`), or `*` alone (every symbol). Patterns are checked when the token is verified
//! (each prefix must be the start of a valid symbol), so matching is a plain comparison.
//! Invariant: [`Entitlements::allows`] is the one answer every transport and the REST API
//! use, and an unrestricted value (no authentication) allows everything.

use crate::quote::{MAX_SYMBOL_LEN, normalise_symbol};

/// Patterns in one token, at most: a token carries its patterns in every request, and more
/// than this is a list of symbols, not of entitlements (the request head limit bounds it too).
pub(crate) const MAX_PATTERNS: usize = 1000;

/// One pattern of the `symbols` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Every symbol.
    All,
    /// Symbols that start with this (upper case).
    Prefix(Box<str>),
    /// This symbol (upper case).
    Symbol(Box<str>),
}

/// The symbols a session or request may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entitlements {
    /// `None`: no token is required, so nothing is restricted.
    patterns: Option<Box<[Pattern]>>,
}

impl Entitlements {
    /// Everything: the server requires no token.
    pub(crate) fn unrestricted() -> Entitlements {
        Entitlements { patterns: None }
    }

    /// The patterns of a `symbols` claim, or why one cannot be used (naming it).
    pub(crate) fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Entitlements, String> {
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("claim 'symbols': {} patterns; at most {MAX_PATTERNS}", patterns.len()));
        }
        let parsed = patterns.iter().map(|p| parse_pattern(p.as_ref())).collect::<Result<Vec<_>, _>>()?;
        Ok(Entitlements { patterns: Some(parsed.into()) })
    }

    /// Whether `symbol` (as the feeds publish it: upper case) may be read.
    pub(crate) fn allows(&self, symbol: &str) -> bool {
        let Some(patterns) = &self.patterns else { return true };
        patterns.iter().any(|pattern| match pattern {
            Pattern::All => true,
            Pattern::Prefix(prefix) => symbol.starts_with(&**prefix),
            Pattern::Symbol(exact) => symbol == &**exact,
        })
    }

    /// Whether every symbol may be read (no token required, or a `*` pattern).
    pub(crate) fn allows_all(&self) -> bool {
        self.patterns.as_ref().is_none_or(|patterns| patterns.contains(&Pattern::All))
    }
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    let invalid = |why: &str| format!("claim 'symbols': pattern '{}' {why}", crate::api_error::excerpt(text, 32));
    let trimmed = text.trim();
    if trimmed == "*" {
        return Ok(Pattern::All);
    }
    match trimmed.strip_suffix('*') {
        Some(prefix) => {
            // A prefix is the start of a symbol: checked as one (a symbol is at most
            // MAX_SYMBOL_LEN characters, so is a prefix of one shorter than that).
            if prefix.len() >= MAX_SYMBOL_LEN {
                return Err(invalid("is longer than any symbol"));
            }
            let prefix = normalise_symbol(prefix).map_err(|e| invalid(&format!("is not a symbol prefix followed by '*' ({e})")))?;
            Ok(Pattern::Prefix(prefix.into()))
        }
        None => normalise_symbol(trimmed).map(|s| Pattern::Symbol(s.into())).map_err(|e| invalid(&format!("is not a symbol, a prefix ending in '*' or '*' ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_symbols_prefixes_and_everything() {
        let entitled = Entitlements::parse(&["aapl", "EUR*", " MSFT "]).unwrap();
        assert!(entitled.allows("AAPL") && entitled.allows("MSFT"));
        assert!(entitled.allows("EURUSD") && entitled.allows("EUR"));
        assert!(!entitled.allows("AAP") && !entitled.allows("AAPLX") && !entitled.allows("GBPUSD"));
        assert!(!entitled.allows_all());
        let all = Entitlements::parse(&["AAPL", "*"]).unwrap();
        assert!(all.allows("ANYTHING") && all.allows_all());
        assert!(Entitlements::unrestricted().allows("X") && Entitlements::unrestricted().allows_all());
        assert!(!Entitlements::parse::<&str>(&[]).unwrap().allows("AAPL"), "an empty claim allows nothing");
    }

    #[test]
    fn bad_patterns_are_refused_naming_them() {
        for bad in ["", "A*B", "**", "AA PL", "TOOLONGSYMBOLNAMEXX*", "é*"] {
            let error = Entitlements::parse(&[bad]).unwrap_err();
            assert!(error.starts_with("claim 'symbols': pattern"), "{bad}: {error}");
        }
        let many = vec!["AAPL"; MAX_PATTERNS + 1];
        assert!(Entitlements::parse(&many).unwrap_err().contains("at most 1000"));
    }
}
