//! Hand-written scanner for `quotes` and `trades` frames and `gap` messages — the fast path in
//! front of serde.
//!
//! Why: with serde_json even a borrowed, field-skipping parse costs ~2 ns per byte (~500 ns
//! per quote), which caps one core at ~2 M quotes/s — below what a wildcard run asks of it.
//! This scanner walks the bytes once, extracts `type`, `snapshot` and per quote (or trade)
//! `symbol`, `seq`, `pt`, and skips everything else without converting numbers. A frame of
//! another type is declined as soon as its `type` is read (the server writes it first), so
//! trying one scanner after another costs a few bytes each.
//!
//! It is deliberately conservative: anything it does not fully understand (escapes in a
//! string it must return, fractional or huge seq/pt, malformed JSON, a frame that is not of
//! the type asked for) makes it return `None`, and the caller falls back to the serde parser,
//! which is the reference. Key order does not matter and unknown keys are skipped.

/// One quote's (or trade's) fields of interest; `symbol` borrows from the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Q<'a> {
    pub symbol: &'a str,
    pub seq: Option<u64>,
    pub pt: Option<i64>,
}

/// A scanned `quotes` frame (or `trades` frame: `snapshot` is then false, its items trades).
#[derive(Debug, PartialEq)]
pub struct Quotes<'a> {
    pub snapshot: bool,
    pub quotes: Vec<Q<'a>>,
}

/// A scanned `gap` message: `channel`'s items of `symbol` with seqs `from_seq..=to_seq` lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap<'a> {
    pub channel: &'a str,
    pub symbol: &'a str,
    pub from_seq: u64,
    pub to_seq: u64,
}

/// Scans `text`; `Some` only for a well-formed frame of type `quotes`.
pub fn scan_quotes(text: &str) -> Option<Quotes<'_>> {
    scan(text, "quotes", true)
}

/// Scans a Socket.IO `quotes` event's payload: the same object without `type` (the event's
/// name says it), `{"quotes":[...]}` or `{"snapshot":true,"quotes":[...]}`. `Some` only for a
/// well-formed object with a `quotes` array; a `type` field, if any, is skipped.
pub fn scan_quotes_payload(text: &str) -> Option<Quotes<'_>> {
    scan(text, "quotes", false)
}

/// Scans a `trades` frame, `{"type":"trades","trades":[{"symbol":…,"seq":…,"ts":…,"pt":…,
/// "price":…,"size":…},…]}` (`recovered` skipped); `Some` only for a well-formed one.
pub fn scan_trades(text: &str) -> Option<Quotes<'_>> {
    scan(text, "trades", true)
}

/// Scans a Socket.IO `trades` event's payload, `{"trades":[…]}`.
pub fn scan_trades_payload(text: &str) -> Option<Quotes<'_>> {
    scan(text, "trades", false)
}

/// Scans a `gap` message, `{"type":"gap","channel":"trades","symbol":"AAPL","from_seq":a,
/// "to_seq":b}`; `typed`: it must say its type (v1), otherwise (a Socket.IO `gap` event's
/// payload) a `type` is skipped.
pub fn scan_gap(text: &str, typed: bool) -> Option<Gap<'_>> {
    let mut s = Scanner { b: text.as_bytes(), src: text, i: 0 };
    let (mut kind_is_gap, mut channel, mut symbol, mut from_seq, mut to_seq) = (false, None, None, None, None);
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        let key = s.plain_string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            "type" if typed => {
                if s.plain_string()? != "gap" {
                    return None;
                }
                kind_is_gap = true;
            }
            "channel" => channel = Some(s.plain_string()?),
            "symbol" => symbol = Some(s.plain_string()?),
            "from_seq" => from_seq = Some(s.uint()?),
            "to_seq" => to_seq = Some(s.uint()?),
            _ => s.skip_value()?,
        }
        s.ws();
        match s.next()? {
            b',' => s.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != s.b.len() || (typed && !kind_is_gap) {
        return None;
    }
    Some(Gap { channel: channel?, symbol: symbol?, from_seq: from_seq?, to_seq: to_seq? })
}

/// `name`: the frame's type and the key of its array (`quotes` or `trades`). `typed`: the
/// object must say `"type":name` (v1); otherwise it must hold the array.
fn scan<'t>(text: &'t str, name: &str, typed: bool) -> Option<Quotes<'t>> {
    let mut s = Scanner { b: text.as_bytes(), src: text, i: 0 };
    let mut kind_matches = false;
    let mut has_items = false;
    let mut snapshot = false;
    let mut quotes = Vec::new();
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None; // no type, no items
    }
    loop {
        let key = s.plain_string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            "type" if typed => {
                // Another type: declined at once, without reading the rest.
                if s.plain_string()? != name {
                    return None;
                }
                kind_matches = true;
            }
            "snapshot" => snapshot = s.boolean_or_null()?,
            k if k == name => {
                s.quote_array(&mut quotes)?;
                has_items = true;
            }
            _ => s.skip_value()?,
        }
        s.ws();
        match s.next()? {
            b',' => s.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != s.b.len() || !(if typed { kind_matches } else { has_items }) {
        return None;
    }
    Some(Quotes { snapshot, quotes })
}

struct Scanner<'a> {
    b: &'a [u8],
    src: &'a str,
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// A string without escapes, returned borrowed; `None` if it has any escape.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some(&self.src[start..self.i - 1]),
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    self.next()?;
                }
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn boolean_or_null(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|_| true),
            b'f' => self.literal(b"false").map(|_| false),
            b'n' => self.literal(b"null").map(|_| false),
            _ => None,
        }
    }

    /// A JSON number, validated loosely (digits, sign, '.', exponent) but not converted.
    fn skip_number(&mut self) -> Option<()> {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// A non-negative integer that fits in u64; `None` for anything else (fraction, sign...).
    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        if self.i == start || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }

    fn int(&mut self) -> Option<i64> {
        if self.peek()? == b'-' {
            self.i += 1;
            let v = self.uint()?;
            0i64.checked_sub_unsigned(v)
        } else {
            i64::try_from(self.uint()?).ok()
        }
    }

    /// `null` or an integer (the serde path treats null as absent too).
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Some(None)
        } else {
            f(self).map(Some)
        }
    }

    /// Any value: string, number, literal, or nested object/array.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_nested(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.skip_number(),
        }
    }

    /// Skips a whole object or array by bracket depth, minding strings. Not a validator of
    /// the inside, but any imbalance ends in `None` at the end of input.
    fn skip_nested(&mut self) -> Option<()> {
        self.skip_nested_from(0)
    }

    /// As [`Self::skip_nested`], starting `depth` levels inside.
    fn skip_nested_from(&mut self, mut depth: usize) -> Option<()> {
        let b = self.b;
        let mut i = self.i;
        while let Some(&c) = b.get(i) {
            // Mostly digits here: jump 8 bytes at a time while none of them is structural.
            if let Some(w) = b.get(i..i + 8)
                && !has_structural(u64::from_le_bytes(w.try_into().expect("8 bytes")))
            {
                i += 8;
                continue;
            }
            match c {
                b'"' => {
                    self.i = i;
                    self.skip_string()?;
                    i = self.i;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i = i + 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }

    fn quote_array(&mut self, out: &mut Vec<Q<'a>>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            out.push(self.quote()?);
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn quote(&mut self) -> Option<Q<'a>> {
        self.eat(b'{')?;
        self.ws();
        let mut symbol = None;
        let (mut seq, mut pt) = (None, None);
        if self.peek()? != b'}' {
            loop {
                let key = self.plain_string()?;
                self.ws();
                self.eat(b':')?;
                self.ws();
                match key {
                    "symbol" => symbol = Some(self.plain_string()?),
                    "seq" => seq = self.opt(Self::uint)?,
                    "pt" => pt = self.opt(Self::int)?,
                    _ => self.skip_value()?,
                }
                if symbol.is_some() && seq.is_some() && pt.is_some() {
                    // The server writes symbol, seq, ts, pt first: the remaining ~60 % of the
                    // quote is prices, skipped with a bracket counter instead of tokenised.
                    self.skip_nested_from(1)?;
                    break;
                }
                self.ws();
                match self.next()? {
                    b',' => self.ws(),
                    b'}' => break,
                    _ => return None,
                }
            }
        } else {
            self.i += 1;
        }
        // A quote without a symbol is malformed; let serde produce the verdict.
        Some(Q { symbol: symbol?, seq, pt })
    }
}

/// Whether any of the 8 bytes in `w` is `"`, `{`, `}`, `[` or `]` (SWAR zero-byte test).
/// OR-ing 0x20 folds `[`→`{` and `]`→`}` and maps no other byte onto those two.
#[inline]
fn has_structural(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let folded = w | (ONES * 0x20);
    zero_in(w ^ (ONES * u64::from(b'"'))) || zero_in(folded ^ (ONES * u64::from(b'{'))) || zero_in(folded ^ (ONES * u64::from(b'}')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_bytes_are_found_anywhere_in_a_word() {
        for pos in 0..8 {
            for c in [b'"', b'{', b'}', b'[', b']'] {
                let mut w = *b"12345678";
                w[pos] = c;
                assert!(has_structural(u64::from_le_bytes(w)), "{c} at {pos}");
            }
        }
        for w in [*b"12345678", *b"e-0.9,:x", *b"\\ abcZzz", *b";=?_;=?_"] {
            assert!(!has_structural(u64::from_le_bytes(w)), "{:?}", std::str::from_utf8(&w));
        }
        for c in 0u8..=255 {
            let w = u64::from_le_bytes([c; 8]);
            assert_eq!(has_structural(w), matches!(c, b'"' | b'{' | b'}' | b'[' | b']'), "byte {c}");
        }
    }

    #[test]
    fn scanner_matches_serde() {
        let cases = [
            r#"{"type":"quotes","quotes":[{"symbol":"AAPL","seq":1,"ts":5,"pt":1764100000123456,"last":1.5,"x":{"a":[1,"}"]}}]}"#,
            r#" { "quotes" : [ { "pt" : -3 , "seq" : 7 , "symbol" : "B" } , {"symbol":"C","seq":null} ] , "snapshot" : true , "type" : "quotes" } "#,
            r#"{"type":"quotes","snapshot":false,"quotes":[]}"#,
            r#"{"type":"quotes","quotes":[{"symbol":"A","seq":1,"pt":2,"note":"a \"q\" }"},{"symbol":"D","seq":2,"pt":3}]}"#,
            r#"{"type":"quotes","quotes":[{"symbol":"A","seq":1,"ts":2,"pt":3,"last":231.52,"bid":231.5,"ask":231.54,"size":100,"volume":1834200,"open":229.1,"high":232.0,"low":228.75,"prev_close":228.9,"change":-2.62,"change_pct":1e-3}]}"#,
        ];
        for text in cases {
            let fast = scan_quotes(text).unwrap_or_else(|| panic!("declined {text}"));
            let slow: crate::frame::Frame = serde_json::from_str(text).unwrap();
            assert_eq!(fast.snapshot, slow.snapshot.unwrap_or(false), "{text}");
            let slow_q: Vec<Q> = slow.quotes.iter().map(|q| Q { symbol: &q.symbol, seq: q.seq, pt: q.pt }).collect();
            assert_eq!(fast.quotes, slow_q, "{text}");
        }
    }

    #[test]
    fn payload_scanner_matches_serde() {
        let cases = [
            r#"{"quotes":[{"symbol":"AAPL","seq":1,"ts":5,"pt":1764100000123456,"last":1.5,"x":{"a":[1,"}"]}}]}"#,
            r#" { "quotes" : [ { "pt" : -3 , "seq" : 7 , "symbol" : "B" } , {"symbol":"C","seq":null} ] , "snapshot" : true } "#,
            r#"{"snapshot":true,"quotes":[]}"#,
            r#"{"quotes":[{"symbol":"A","seq":1,"pt":2,"note":"a \"q\" }"},{"symbol":"D","seq":2,"pt":3}],"extra":[1,{"b":2}]}"#,
            r#"{"type":"quotes","snapshot":false,"quotes":[{"symbol":"E","seq":3,"pt":4}]}"#, // a type is skipped
        ];
        for text in cases {
            let fast = scan_quotes_payload(text).unwrap_or_else(|| panic!("declined {text}"));
            let slow: crate::frame::QuotesPayload = serde_json::from_str(text).unwrap();
            assert_eq!(fast.snapshot, slow.snapshot.unwrap_or(false), "{text}");
            let slow_q: Vec<Q> = slow.quotes.iter().map(|q| Q { symbol: &q.symbol, seq: q.seq, pt: q.pt }).collect();
            assert_eq!(fast.quotes, slow_q, "{text}");
        }
        for text in [
            r#"{"snapshot":true}"#, // no quotes
            "{}",
            r#"{"quotes":7}"#,
            r#"{"quotes":[{"symbol":"A","seq":1}]"#, // truncated
            r#"{"quotes":[{"symbol":"A","seq":1}]} trailing"#,
            r#"["quotes",{"quotes":[]}]"#, // not an object
            "",
        ] {
            assert_eq!(scan_quotes_payload(text), None, "{text}");
        }
    }

    #[test]
    fn trades_and_gaps_are_scanned_as_serde_reads_them() {
        let cases = [
            r#"{"type":"trades","trades":[{"symbol":"AAPL","seq":1043,"ts":1795644640649,"pt":1795644640649312,"price":271.52,"size":100},{"symbol":"MSFT","seq":7,"ts":1,"pt":2,"price":1e2,"size":1}]}"#,
            r#"{"type":"trades","recovered":true,"trades":[]}"#,
            r#" { "trades" : [ { "size" : 5 , "pt" : 3 , "seq" : 2 , "symbol" : "B" } ] , "type" : "trades" } "#,
        ];
        for text in cases {
            let fast = scan_trades(text).unwrap_or_else(|| panic!("declined {text}"));
            let slow: crate::frame::TradesPayload = serde_json::from_str(text).unwrap();
            let slow_q: Vec<Q> = slow.trades.iter().map(|q| Q { symbol: &q.symbol, seq: q.seq, pt: q.pt }).collect();
            assert_eq!((fast.snapshot, fast.quotes), (false, slow_q), "{text}");
            assert_eq!(scan_quotes(text), None, "a trades frame is not quotes: {text}");
            assert_eq!(scan_gap(text, true), None, "{text}");
        }
        let payload = r#"{"trades":[{"symbol":"A","seq":1,"ts":2,"pt":3,"price":4.5,"size":6}]}"#;
        assert_eq!(scan_trades_payload(payload).unwrap().quotes, [Q { symbol: "A", seq: Some(1), pt: Some(3) }]);
        assert_eq!(scan_trades(payload), None, "v1 needs its type");
        let gap = r#"{"type":"gap","channel":"trades","symbol":"AAPL","from_seq":1044,"to_seq":1310}"#;
        let want = Gap { channel: "trades", symbol: "AAPL", from_seq: 1044, to_seq: 1310 };
        assert_eq!(scan_gap(gap, true), Some(want));
        let shuffled = r#" { "to_seq" : 1310 , "symbol" : "AAPL" , "x" : [1] , "from_seq" : 1044 , "channel" : "trades" } "#;
        assert_eq!(scan_gap(shuffled, false), Some(want));
        assert_eq!((scan_quotes(gap), scan_trades(gap)), (None, None));
        for text in [
            r#"{"type":"trades","trades":7}"#,
            r#"{"type":"trades","trades":[{"seq":1}]}"#,                          // no symbol
            r#"{"type":"trades","trades":[{"symbol":"A","seq":1.5}]}"#,           // fractional seq
            r#"{"type":"trades","trades":[{"symbol":"A","seq":1,"pt":2,"x":1}]"#, // truncated
            r#"{"type":"quotes","trades":[]}"#,
        ] {
            assert_eq!(scan_trades(text), None, "{text}");
        }
        for text in [
            r#"{"type":"gap","channel":"trades","symbol":"A","from_seq":1}"#, // no to_seq
            r#"{"type":"gap","channel":"trades","symbol":"A","from_seq":1,"to_seq":-2}"#,
            r#"{"type":"gap","channel":"trades","symbol":"A\u0042","from_seq":1,"to_seq":2}"#,
            r#"{"type":"feed","channel":"trades","symbol":"A","from_seq":1,"to_seq":2}"#,
            r#"{"channel":"trades","symbol":"A","from_seq":1,"to_seq":2}"#, // v1 needs its type
            r#"{"type":"gap","channel":"trades","symbol":"A","from_seq":1,"to_seq":2} x"#,
        ] {
            assert_eq!(scan_gap(text, true), None, "{text}");
        }
    }

    #[test]
    fn scanner_declines_what_it_does_not_understand() {
        for text in [
            r#"{"type":"feed","quotes":[]}"#,                               // not quotes
            r#"{"quotes":[]}"#,                                             // no type
            r#"{"type":"quotes","quotes":[{"symbol":"A\u0042","seq":1}]}"#, // escaped symbol
            r#"{"type":"quotes","quotes":[{"symbol":"A","seq":1.5}]}"#,     // fractional seq
            r#"{"type":"quotes","quotes":[{"symbol":"A","seq":-1}]}"#,      // negative seq
            r#"{"type":"quotes","quotes":[{"symbol":"A","seq":99999999999999999999}]}"#,
            r#"{"type":"quotes","quotes":[{"seq":1}]}"#,                          // no symbol
            r#"{"type":"quotes","quotes":[{"symbol":"A","seq":1}"#,               // truncated
            r#"{"type":"quotes","quotes":[{"symbol":"A","seq":1,"pt":2,"x":1}]"#, // truncated after early exit
            r#"{"type":"quotes","quotes":7}"#,
            r#"{"type":"quotes"} trailing"#,
            "",
            "{}",
        ] {
            assert_eq!(scan_quotes(text), None, "{text}");
        }
    }
}
