//! Timestamp parsing for replay files: one function, [`parse_timestamp`], that turns the
//! time column of any supported file into milliseconds since the Unix epoch, UTC.
//!
//! Replay files come from many tools (spreadsheets, pandas, exchange dumps, hand-written demo
//! data), so the parser accepts several spellings of the same instant instead of asking users
//! to convert their data first. It is hand-written rather than a chain of `strptime` attempts
//! because it runs once per row and a million-row file must load in seconds.
//!
//! Accepted styles (surrounding whitespace ignored):
//! - ISO-8601 dates, `2008-09-15`, and datetimes `2008-09-15T14:30:00` or `2008-09-15 14:30:00`,
//!   seconds optional (`2008-09-15T14:30`), fractional seconds optional (truncated to the
//!   millisecond), followed by an optional `Z` or UTC offset `+02:00`, `-0500` or `+02`.
//!   A datetime without an offset is taken as UTC. `/` may replace `-` in the date
//!   (`2000/01/31`); the order is always year, month, day, so that form is unambiguous.
//! - Month-name dates, `Jan 1 2000`, `Jan 1, 2000`, `January 1 2000` (case-insensitive),
//!   optionally followed by a time of day as above (`Jan 1 2000 14:30:00`).
//! - Unix time as an integer or decimal number. A magnitude of at least 1e11 is read as
//!   milliseconds, anything smaller as seconds: 1e11 seconds is the year 5138, while 1e11
//!   milliseconds is March 1973, so real data on either side of that line is never confused.

use chrono::NaiveDate;

/// The styles the parser accepts, quoted in every error so users see what to write instead.
pub(crate) const EXPECTED_STYLES: &str = "an ISO-8601 date or datetime (2008-09-15, 2008-09-15T14:30:00Z, \
     2008-09-15 14:30:00.250+02:00), a month-name date (Jan 1 2000, January 1, 2000), \
     a Y/M/D date (2000/01/31) or Unix seconds/milliseconds (1221489000, 1221489000000)";

/// Unix numbers at or above this magnitude are milliseconds; below it, seconds.
pub(crate) const MILLIS_THRESHOLD: f64 = 1e11;

/// Why a timestamp could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TimestampError {
    #[error("empty timestamp: expected {EXPECTED_STYLES}")]
    Empty,
    #[error("unrecognised timestamp '{text}': expected {EXPECTED_STYLES}")]
    Unrecognised { text: String },
    #[error("timestamp '{text}' is out of range: {reason}")]
    OutOfRange { text: String, reason: String },
}

/// Parses `text` into milliseconds since the Unix epoch, UTC. See the module docs for the
/// accepted styles.
pub(crate) fn parse_timestamp(text: &str) -> Result<i64, TimestampError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(TimestampError::Empty);
    }
    let unrecognised = || TimestampError::Unrecognised { text: trimmed.to_string() };
    let first = trimmed.as_bytes()[0];
    if let Some(result) = parse_unix_number(trimmed) {
        return result;
    }
    if first.is_ascii_digit() {
        let mut cursor = Cursor::new(trimmed);
        let date = parse_ymd(&mut cursor).ok_or_else(unrecognised)?;
        return finish_datetime(trimmed, date, &mut cursor);
    }
    if first.is_ascii_alphabetic() {
        return parse_month_name(trimmed);
    }
    Err(unrecognised())
}

/// Milliseconds in a UTC day (no leap seconds: Unix time has none).
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Whether `text` is a calendar date with no time of day (`2008-09-15`, `2008/9/15`,
/// `Sep 15 2008`): a seek to it means that whole UTC day. A Unix timestamp is never a date.
pub(crate) fn is_date_only(text: &str) -> bool {
    let trimmed = text.trim();
    if parse_unix_number(trimmed).is_some() {
        return false;
    }
    match trimmed.as_bytes().first() {
        Some(b) if b.is_ascii_digit() => {
            let mut cursor = Cursor::new(trimmed);
            parse_ymd(&mut cursor).is_some() && cursor.at_end()
        }
        Some(b) if b.is_ascii_alphabetic() => month_name_date(trimmed).is_ok_and(|(_, cursor)| cursor.at_end()),
        _ => false,
    }
}

fn out_of_range(text: &str, reason: impl Into<String>) -> TimestampError {
    TimestampError::OutOfRange { text: text.to_string(), reason: reason.into() }
}

/// Unix seconds or milliseconds. Returns `None` when `text` is not a plain number, so the
/// caller goes on to try the date styles (a compact `20080915` is still a number here:
/// seconds, by the magnitude rule).
fn parse_unix_number(text: &str) -> Option<Result<i64, TimestampError>> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int_part, frac_part) = match body.split_once('.') {
        Some((int_part, frac_part)) => (int_part, Some(frac_part)),
        None => (body, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !all_digits(int_part) || !frac_part.is_none_or(|f| !f.is_empty() && all_digits(f)) {
        return None;
    }
    let ms = if frac_part.is_none() {
        // Integers go through i64 so that millisecond values keep every digit.
        match text.parse::<i64>() {
            Ok(n) if (n as f64).abs() >= MILLIS_THRESHOLD => Some(n),
            Ok(n) => n.checked_mul(1000),
            Err(_) => None,
        }
    } else {
        let n: f64 = text.parse().ok()?;
        let ms = if n.abs() >= MILLIS_THRESHOLD { n } else { n * 1000.0 };
        let ms = ms.floor();
        (ms.is_finite() && ms.abs() < 9.0e18).then_some(ms as i64)
    };
    Some(match ms {
        Some(ms) if chrono::DateTime::from_timestamp_millis(ms).is_some() => Ok(ms),
        _ => Err(out_of_range(text, "Unix time beyond the representable dates")),
    })
}

/// A byte cursor over ASCII-ish input; non-ASCII bytes simply never match.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Cursor<'a> {
        Cursor { bytes: text.as_bytes(), pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b == b' ' || b == b'\t') {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Between `min` and `max` decimal digits, as a number and the count actually read.
    fn digits(&mut self, min: usize, max: usize) -> Option<(u32, usize)> {
        let start = self.pos;
        let mut value: u32 = 0;
        while self.pos - start < max {
            match self.peek() {
                Some(b) if b.is_ascii_digit() => {
                    value = value * 10 + u32::from(b - b'0');
                    self.pos += 1;
                }
                _ => break,
            }
        }
        let count = self.pos - start;
        if count < min {
            self.pos = start;
            return None;
        }
        Some((value, count))
    }
}

/// Year, month and day as written, not yet checked against the calendar.
#[derive(Debug, Clone, Copy)]
struct YearMonthDay {
    year: i32,
    month: u32,
    day: u32,
}

/// `YYYY-MM-DD` or `YYYY/MM/DD` (one- or two-digit month and day are tolerated).
fn parse_ymd(cursor: &mut Cursor) -> Option<YearMonthDay> {
    let (year, _) = cursor.digits(4, 4)?;
    let separator = cursor.peek().filter(|&b| b == b'-' || b == b'/')?;
    cursor.pos += 1;
    let (month, _) = cursor.digits(1, 2)?;
    if !cursor.eat(separator) {
        return None;
    }
    let (day, _) = cursor.digits(1, 2)?;
    Some(YearMonthDay { year: year as i32, month, day })
}

/// Time of day in milliseconds: `HH:MM`, `HH:MM:SS`, `HH:MM:SS.fff…`.
fn parse_time_of_day(cursor: &mut Cursor, text: &str) -> Result<Option<i64>, TimestampError> {
    let Some((hour, _)) = cursor.digits(1, 2) else { return Ok(None) };
    if !cursor.eat(b':') {
        return Ok(None);
    }
    let Some((minute, _)) = cursor.digits(2, 2) else { return Ok(None) };
    let mut second = 0;
    let mut millis = 0;
    if cursor.eat(b':') {
        let Some((s, _)) = cursor.digits(2, 2) else { return Ok(None) };
        second = s;
        if cursor.eat(b'.') || cursor.eat(b',') {
            // Finer digits than milliseconds are dropped: feeds publish millisecond times.
            let Some((frac, count)) = cursor.digits(1, 3) else { return Ok(None) };
            millis = frac * 10u32.pow(3 - count as u32);
            while cursor.peek().is_some_and(|b| b.is_ascii_digit()) {
                cursor.pos += 1;
            }
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(out_of_range(text, format!("no such time of day {hour:02}:{minute:02}:{second:02}")));
    }
    Ok(Some(((i64::from(hour) * 60 + i64::from(minute)) * 60 + i64::from(second)) * 1000 + i64::from(millis)))
}

/// A UTC offset in milliseconds: `Z`, `+02:00`, `-0500`, `+02`.
fn parse_offset(cursor: &mut Cursor, text: &str) -> Result<Option<i64>, TimestampError> {
    if cursor.eat(b'Z') || cursor.eat(b'z') {
        return Ok(Some(0));
    }
    let sign = match cursor.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Ok(None),
    };
    cursor.pos += 1;
    let Some((hours, _)) = cursor.digits(2, 2) else { return Ok(None) };
    cursor.eat(b':');
    let minutes = cursor.digits(2, 2).map_or(0, |(m, _)| m);
    if hours > 23 || minutes > 59 {
        return Err(out_of_range(text, format!("no such UTC offset {hours:02}:{minutes:02}")));
    }
    Ok(Some(sign * (i64::from(hours) * 60 + i64::from(minutes)) * 60_000))
}

/// Everything after the date: an optional time of day and offset, then the end of the text.
fn finish_datetime(text: &str, date: YearMonthDay, cursor: &mut Cursor) -> Result<i64, TimestampError> {
    let unrecognised = || TimestampError::Unrecognised { text: text.to_string() };
    let mut time_ms = 0;
    let mut offset_ms = 0;
    if !cursor.at_end() {
        let spaces = cursor.skip_spaces();
        if spaces == 0 && !(cursor.eat(b'T') || cursor.eat(b't')) {
            return Err(unrecognised());
        }
        time_ms = parse_time_of_day(cursor, text)?.ok_or_else(unrecognised)?;
        cursor.skip_spaces();
        offset_ms = parse_offset(cursor, text)?.unwrap_or(0);
        if !cursor.at_end() {
            return Err(unrecognised());
        }
    }
    let day =
        NaiveDate::from_ymd_opt(date.year, date.month, date.day).ok_or_else(|| out_of_range(text, format!("no such date {:04}-{:02}-{:02}", date.year, date.month, date.day)))?;
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis();
    Ok(midnight + time_ms - offset_ms)
}

/// Month number from an English month name or its three-letter abbreviation ("Sept" too).
fn month_number(word: &str) -> Option<u32> {
    const NAMES: [&str; 12] = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"];
    let lower = word.to_ascii_lowercase();
    if lower == "sept" {
        return Some(9);
    }
    NAMES.iter().position(|name| lower == *name || (lower.len() == 3 && name.starts_with(lower.as_str()))).map(|index| index as u32 + 1)
}

/// `Jan 1 2000`, `Jan 1, 2000`, `January 01 2000`, optionally with a time of day after it.
fn parse_month_name(text: &str) -> Result<i64, TimestampError> {
    let (date, mut cursor) = month_name_date(text)?;
    finish_datetime(text, date, &mut cursor)
}

/// The date of a `Sep 15 2008`-style text, and the cursor after its year.
fn month_name_date(text: &str) -> Result<(YearMonthDay, Cursor<'_>), TimestampError> {
    let unrecognised = || TimestampError::Unrecognised { text: text.to_string() };
    let word_end = text.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(text.len());
    let month = month_number(&text[..word_end]).ok_or_else(unrecognised)?;
    let mut cursor = Cursor::new(text);
    cursor.pos = word_end;
    cursor.eat(b'.');
    if cursor.skip_spaces() == 0 {
        return Err(unrecognised());
    }
    let (day, _) = cursor.digits(1, 2).ok_or_else(unrecognised)?;
    cursor.eat(b',');
    if cursor.skip_spaces() == 0 {
        return Err(unrecognised());
    }
    let (year, _) = cursor.digits(4, 4).ok_or_else(unrecognised)?;
    if cursor.peek().is_some_and(|b| b.is_ascii_digit()) {
        return Err(unrecognised());
    }
    Ok((YearMonthDay { year: year as i32, month, day }, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2008-09-15T00:00:00Z.
    const DAY: i64 = 1_221_436_800_000;
    const HOUR: i64 = 3_600_000;

    fn ok(text: &str) -> i64 {
        parse_timestamp(text).unwrap_or_else(|err| panic!("{text:?}: {err}"))
    }

    #[test]
    fn iso_dates_and_datetimes() {
        assert_eq!(ok("2008-09-15"), DAY);
        assert_eq!(ok("  2008-09-15 \t"), DAY);
        assert_eq!(ok("2008-09-15T14:30:00"), DAY + 14 * HOUR + 30 * 60_000);
        assert_eq!(ok("2008-09-15 14:30:00"), DAY + 14 * HOUR + 30 * 60_000);
        assert_eq!(ok("2008-09-15T14:30"), DAY + 14 * HOUR + 30 * 60_000);
        assert_eq!(ok("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ok("1969-12-31"), -86_400_000);
    }

    #[test]
    fn fractional_seconds_are_truncated_to_millis() {
        assert_eq!(ok("2008-09-15T00:00:01.5"), DAY + 1500);
        assert_eq!(ok("2008-09-15T00:00:01.25Z"), DAY + 1250);
        assert_eq!(ok("2008-09-15 00:00:01.123456789"), DAY + 1123);
        assert_eq!(ok("2008-09-15T00:00:01,250"), DAY + 1250);
    }

    #[test]
    fn offsets_convert_to_utc() {
        assert_eq!(ok("2008-09-15T14:30:00Z"), DAY + 14 * HOUR + 30 * 60_000);
        assert_eq!(ok("2008-09-15T14:30:00+02:00"), DAY + 12 * HOUR + 30 * 60_000);
        assert_eq!(ok("2008-09-15T14:30:00-0500"), DAY + 19 * HOUR + 30 * 60_000);
        assert_eq!(ok("2008-09-15 14:30:00 +05:30"), DAY + 9 * HOUR);
        assert_eq!(ok("2008-09-15T14:30+02"), DAY + 12 * HOUR + 30 * 60_000);
        assert_eq!(ok("2008-09-15T14:30:00.100z"), DAY + 14 * HOUR + 30 * 60_000 + 100);
    }

    #[test]
    fn slash_dates_are_year_month_day() {
        assert_eq!(ok("2008/09/15"), DAY);
        assert_eq!(ok("2008/9/15 01:00"), DAY + HOUR);
        assert!(parse_timestamp("15/09/2008").is_err());
        assert!(parse_timestamp("2008/09-15").is_err(), "mixed separators");
    }

    #[test]
    fn month_name_dates() {
        assert_eq!(ok("Sep 15 2008"), DAY);
        assert_eq!(ok("sep 15, 2008"), DAY);
        assert_eq!(ok("SEPTEMBER 15 2008"), DAY);
        assert_eq!(ok("Sept 15 2008"), DAY);
        assert_eq!(ok("Sep. 15, 2008"), DAY);
        assert_eq!(ok("Jan 1 2000"), 946_684_800_000);
        assert_eq!(ok("Sep 15 2008 14:30:00Z"), DAY + 14 * HOUR + 30 * 60_000);
        assert!(parse_timestamp("Sep 15 20081").is_err());
        assert!(parse_timestamp("Sepember 15 2008").is_err());
        assert!(parse_timestamp("Ja 1 2000").is_err());
        assert!(parse_timestamp("Jan 1 2000 garbage").is_err());
    }

    #[test]
    fn unix_seconds_and_milliseconds_by_magnitude() {
        assert_eq!(ok("1221436800"), DAY);
        assert_eq!(ok("1221436800000"), DAY);
        assert_eq!(ok("1221436800.25"), DAY + 250);
        assert_eq!(ok("1221436800250.0"), DAY + 250);
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("-86400"), -86_400_000);
        // Just below the threshold is still seconds (year 5138), just above is milliseconds.
        assert_eq!(ok("99999999999"), 99_999_999_999_000);
        assert_eq!(ok("100000000000"), 100_000_000_000);
        assert!(matches!(parse_timestamp("99999999999999999999"), Err(TimestampError::OutOfRange { .. })));
    }

    #[test]
    fn impossible_dates_and_times_are_out_of_range() {
        for text in ["2001-02-30", "2001-13-01", "2001-00-10", "Feb 30 2001", "2008-09-15T24:00:00", "2008-09-15T12:60"] {
            match parse_timestamp(text) {
                Err(TimestampError::OutOfRange { text: reported, reason }) => {
                    assert_eq!(reported, text);
                    assert!(!reason.is_empty());
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(ok("2000-02-29"), 951_782_400_000, "leap day");
    }

    #[test]
    fn garbage_and_empty_are_rejected_with_the_text() {
        assert_eq!(parse_timestamp(""), Err(TimestampError::Empty));
        assert_eq!(parse_timestamp("   "), Err(TimestampError::Empty));
        for text in ["hello", "2008-09", "2008-09-15X", "2008-09-15T", "2008-09-15T14", "12:30", "1.2.3", "-", ".5", "1e9", "2008-09-15 14:30:00 UTC", "Jan"] {
            let err = parse_timestamp(text).expect_err(text);
            assert!(err.to_string().contains(text.trim()), "{err}");
            assert!(err.to_string().contains("expected"), "{err}");
        }
    }

    #[test]
    fn dates_without_a_time_are_told_apart() {
        for date in ["2008-09-15", " 2008/9/15 ", "Sep 15 2008", "September 15, 2008"] {
            assert!(is_date_only(date), "{date}");
        }
        for not in ["2008-09-15T00:00", "2008-09-15 09:30", "Sep 15 2008 09:30", "1221436800", "20080915", "", "soon"] {
            assert!(!is_date_only(not), "{not}");
        }
    }
}

/// The parser's invariants, checked on any text: by the property tests below and by the fuzz
/// target `replay_csv` (through `crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use super::*;

    /// Parses `text` and asserts, whatever it is: no panic; a time is one chrono can represent;
    /// a date alone ([`is_date_only`]) is a UTC midnight; a refusal quotes the styles or says
    /// what is out of range.
    pub(crate) fn check_any_text(text: &str) {
        match parse_timestamp(text) {
            Ok(ms) => {
                assert!(chrono::DateTime::from_timestamp_millis(ms).is_some(), "{text:?} gave {ms}, no representable time");
                if is_date_only(text) {
                    assert_eq!(ms.rem_euclid(DAY_MS), 0, "{text:?} is a date, {ms} is not a midnight");
                }
            }
            Err(error) => {
                let message = error.to_string();
                assert!(message.contains(EXPECTED_STYLES) || message.contains("out of range"), "{text:?}: {message}");
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;
        use crate::test_support::proptest_config;

        /// Years 1000 to 9999: what four-digit years spell.
        fn instant() -> impl Strategy<Value = i64> {
            -30_610_224_000_000i64..253_402_300_799_999
        }

        proptest! {
            #![proptest_config(proptest_config(1024, "target/proptest-regressions/feed-replay-timestamp.txt"))]

            #[test]
            fn any_text_is_a_time_or_a_refusal_that_says_why(text in prop_oneof![any::<String>(), "[0-9 :TZz+./,-]{0,30}", "[A-Za-z]{3,9}\\.? [0-9]{1,2},? [0-9]{4}( [0-9:]{4,12})?"]) {
                check_any_text(&text);
            }

            #[test]
            fn every_style_of_one_instant_parses_to_it(ms in instant(), offset_minutes in -23i64 * 60..=23 * 60, separator in prop::sample::select(vec!["T", " ", "t"])) {
                let time = chrono::DateTime::from_timestamp_millis(ms).expect("in range");
                let iso = format!("{}{separator}{}Z", time.format("%Y-%m-%d"), time.format("%H:%M:%S%.3f"));
                prop_assert_eq!(parse_timestamp(&iso), Ok(ms), "{}", iso);
                // The same instant in another zone: the offset is applied.
                let offset = chrono::FixedOffset::east_opt(offset_minutes as i32 * 60).expect("within a day");
                let local = time.with_timezone(&offset);
                let text = local.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string();
                let parsed = parse_timestamp(&text);
                // Near year 1000 or 9999 the local date may leave the four-digit years.
                if (1000..=9999).contains(&chrono::Datelike::year(&local)) {
                    prop_assert_eq!(parsed, Ok(ms), "{}", text);
                }
                let date = time.format("%Y-%m-%d").to_string();
                prop_assert!(is_date_only(&date));
                prop_assert_eq!(parse_timestamp(&date), Ok(ms.div_euclid(DAY_MS) * DAY_MS));
                prop_assert_eq!(parse_timestamp(&time.format("%b %-d, %Y").to_string()), Ok(ms.div_euclid(DAY_MS) * DAY_MS));
                prop_assert_eq!(parse_timestamp(&time.format("%Y/%m/%d %H:%M").to_string()), Ok(ms.div_euclid(60_000) * 60_000));
                // Unix numbers: seconds below 1e11, milliseconds from there on.
                if ms.abs() as f64 >= MILLIS_THRESHOLD {
                    prop_assert_eq!(parse_timestamp(&ms.to_string()), Ok(ms));
                }
                let seconds = ms.div_euclid(1000);
                if (seconds.abs() as f64) < MILLIS_THRESHOLD {
                    prop_assert_eq!(parse_timestamp(&seconds.to_string()), Ok(seconds * 1000));
                }
            }
        }
    }
}
