//! Loading one replay CSV file into time-ordered ticks.
//!
//! Owns everything between a path on disk and a sorted `Vec<ReplayTick>`: recognising which of
//! the three supported layouts a file uses from its header, parsing and validating rows,
//! expanding OHLC bars into intrabar ticks, and measuring the price precision of every symbol.
//! The replay runtime then only merges files and paces ticks; it never sees text.
//!
//! Replay data is hand-collected and messy, so a bad row never fails a load: it is skipped,
//! counted and reported (a bounded number of times, so a broken million-row file cannot flood
//! the log). Only a file that cannot be read, whose header is not understood, or that has no
//! usable row at all is an error.
//!
//! The three layouts (header names are case-insensitive, trimmed, column order free, unknown
//! extra columns ignored):
//! - [`FileFormat::Ticks`]: `timestamp` (or `time`, `datetime`), `symbol`, `price`, optional
//!   `size`, `bid`, `ask`, `volume` (cumulative session volume).
//! - [`FileFormat::LongPrices`]: `symbol`, `date`, `price` — one row per symbol per date, as in
//!   `feeds/stocks.csv`. The optional tick columns are honoured here too.
//! - [`FileFormat::Bars`]: OHLC bars of one instrument: a `date`/`datetime`/`timestamp`/`time`
//!   column (or an unnamed first column, as pandas writes its index), `open`, `high`, `low`,
//!   `close`, optional `volume`. Each bar becomes a few ticks along a synthetic path
//!   ([`intrabar_path`]) spread over the bar's interval.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::intrabar::intrabar_path;
use super::timestamp::{DAY_MS, parse_timestamp};
use crate::quote::{MAX_SYMBOL_LEN, check_symbol, is_symbol_char, round_to};

/// Price precision is capped here: finer digits in a file are noise, not tick size.
pub(crate) const MAX_DECIMALS: u8 = 8;
/// How many skipped rows a [`LoadedFile`] keeps for reporting.
pub(crate) const MAX_SKIPPED_KEPT: usize = 100;
/// How many skipped rows per file are logged individually before one summary line.
pub(crate) const MAX_SKIPPED_LOGGED: u64 = 10;
/// Ticks per bar when the configuration does not say.
pub(crate) const DEFAULT_TICKS_PER_BAR: usize = 12;

/// What the error for an unrecognised header lists as acceptable.
const ACCEPTED_FORMATS: &str = "ticks (timestamp|time|datetime, symbol, price [, size, bid, ask, volume]); \
     long prices (symbol, date, price); \
     bars (date|datetime|timestamp|time or an unnamed first column, open, high, low, close [, volume])";

/// The layout of a replay file, detected from its header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Ticks,
    LongPrices,
    Bars,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Ticks => "ticks",
            FileFormat::LongPrices => "long prices",
            FileFormat::Bars => "bars",
        })
    }
}

/// One replayed trade or price, in historical time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplayTick {
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    pub symbol: Arc<str>,
    pub price: f64,
    pub size: Option<u64>,
    pub bid: Option<f64>,
    pub ask: Option<f64>,
    /// Cumulative session volume, when the file gives it.
    pub volume: Option<u64>,
    /// 1-based line of the row in the file (for bars: the bar's line).
    pub line: u64,
}

/// A row that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    pub line: u64,
    pub reason: String,
}

/// The result of loading one file.
#[derive(Debug, Clone)]
pub(crate) struct LoadedFile {
    pub format: FileFormat,
    /// Sorted by `ts`; rows with equal times keep their file order.
    pub ticks: Vec<ReplayTick>,
    /// Per symbol, the most decimals written in any of its prices, at most [`MAX_DECIMALS`].
    pub decimals: HashMap<Arc<str>, u8>,
    /// Data rows read (the header and blank lines excluded), including the skipped ones.
    pub rows_read: u64,
    pub rows_skipped: u64,
    /// The first [`MAX_SKIPPED_KEPT`] skipped rows: the report the format's tests read (the
    /// server logs each skipped row as it meets it, and names the first if none is usable).
    #[cfg_attr(not(test), allow(dead_code))]
    pub skipped: Vec<SkippedRow>,
}

/// How to load a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileOptions {
    /// Symbol of a bar file; without it the file stem is used.
    pub symbol: Option<String>,
    /// Seed of the intrabar paths; with the bar's index it fixes every path of the file.
    pub seed: u64,
    /// Ticks generated per bar, at least [`super::intrabar::MIN_TICKS`].
    pub ticks_per_bar: usize,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions { symbol: None, seed: 0, ticks_per_bar: DEFAULT_TICKS_PER_BAR }
    }
}

/// Why a file could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read replay file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("replay file {}, line {line}: malformed CSV: {message}", .path.display())]
    Csv { path: PathBuf, line: u64, message: String },
    #[error("replay file {} is empty: expected a header row, one of: {ACCEPTED_FORMATS}", .path.display())]
    Empty { path: PathBuf },
    #[error("replay file {}: header [{}] matches no replay format; accepted: {ACCEPTED_FORMATS}", .path.display(), .header.join(", "))]
    UnknownFormat { path: PathBuf, header: Vec<String> },
    #[error("replay file {}: invalid symbol '{symbol}': {reason}", .path.display())]
    InvalidSymbol { path: PathBuf, symbol: String, reason: String },
    #[error("replay file {} has no usable rows: {rows_read} read, {rows_skipped} skipped{}", .path.display(), first_reason(.first))]
    NoUsableRows { path: PathBuf, rows_read: u64, rows_skipped: u64, first: Option<SkippedRow> },
}

fn first_reason(first: &Option<SkippedRow>) -> String {
    match first {
        Some(row) => format!(" (first at line {}: {})", row.line, row.reason),
        None => String::new(),
    }
}

/// Loads one replay file. See the module docs for the layouts.
pub(crate) fn load_file(path: &Path, options: &FileOptions) -> Result<LoadedFile, ReplayError> {
    let file = File::open(path).map_err(|source| ReplayError::Io { path: path.to_path_buf(), source })?;
    load_from(file, path, options)
}

/// Loads replay rows read from `input` as if from the file at `path`, which errors name and
/// which gives a bar file its symbol when the options do not (the fuzz target and the property
/// tests feed text this way).
pub(crate) fn load_from(input: impl Read, path: &Path, options: &FileOptions) -> Result<LoadedFile, ReplayError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        // Only `\n` ends a row, so the `\r` of CRLF files lands in the last field (where `trim`
        // drops it) and every row's terminator is consumed with the row: see `Loader::row_line`.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(NewlineTerminated::new(input));
    let mut record = csv::ByteRecord::new();
    let mut loader = Loader::new(path);
    let header = loop {
        if !loader.read(&mut reader, &mut record)? {
            return Err(ReplayError::Empty { path: path.to_path_buf() });
        }
        if !is_blank(&record) {
            break header_names(&record);
        }
    };
    let Some(layout) = detect_layout(&header) else {
        return Err(ReplayError::UnknownFormat { path: path.to_path_buf(), header });
    };
    loader.header = header;
    let (format, ticks) = match layout {
        Layout::Ticks(columns) => (FileFormat::Ticks, loader.read_ticks(&mut reader, &mut record, &columns)?),
        Layout::LongPrices(columns) => (FileFormat::LongPrices, loader.read_ticks(&mut reader, &mut record, &columns)?),
        Layout::Bars(columns) => {
            let symbol = bar_symbol(path, options)?;
            (FileFormat::Bars, loader.read_bars(&mut reader, &mut record, &columns, symbol, options)?)
        }
    };
    loader.finish(format, ticks)
}

type CsvReader<R> = csv::Reader<NewlineTerminated<R>>;

/// A reader that adds a final `\n` to input that lacks one, so that the last row of a file is
/// terminated like every other and its line number is computed the same way.
struct NewlineTerminated<R> {
    inner: R,
    last: Option<u8>,
    finished: bool,
}

impl<R: Read> NewlineTerminated<R> {
    fn new(inner: R) -> NewlineTerminated<R> {
        NewlineTerminated { inner, last: None, finished: false }
    }
}

impl<R: Read> Read for NewlineTerminated<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        let read = self.inner.read(buf)?;
        if read > 0 {
            self.last = Some(buf[read - 1]);
            return Ok(read);
        }
        self.finished = true;
        match self.last {
            Some(b'\n') | None => Ok(0),
            Some(_) => {
                buf[0] = b'\n';
                Ok(1)
            }
        }
    }
}

/// Header cells as written (trimmed, BOM removed), for messages.
fn header_names(record: &csv::ByteRecord) -> Vec<String> {
    record
        .iter()
        .enumerate()
        .map(|(index, cell)| {
            let cell = if index == 0 { cell.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(cell) } else { cell };
            String::from_utf8_lossy(cell).trim().to_string()
        })
        .collect()
}

/// A header name reduced for matching: `Adj Close`, `adj_close` and `ADJCLOSE` are one name.
fn normalise_name(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, ' ' | '_' | '-')).flat_map(char::to_lowercase).collect()
}

fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(|field| field.is_empty())
}

/// Column indices of a tick or long-prices file.
#[derive(Debug, Clone, PartialEq)]
struct TickColumns {
    ts: usize,
    symbol: usize,
    price: usize,
    size: Option<usize>,
    bid: Option<usize>,
    ask: Option<usize>,
    volume: Option<usize>,
}

/// Column indices of a bar file.
#[derive(Debug, Clone, PartialEq)]
struct BarColumns {
    ts: usize,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Layout {
    Ticks(TickColumns),
    LongPrices(TickColumns),
    Bars(BarColumns),
}

/// Recognises the layout from the header. Ticks win over long prices when a file has both a
/// timestamp-like column and `date`, and both win over bars; the first of duplicate names is
/// used.
fn detect_layout(header: &[String]) -> Option<Layout> {
    let names: Vec<String> = header.iter().map(|name| normalise_name(name)).collect();
    // Candidates in order of preference: the first candidate present wins.
    let find = |candidates: &[&str]| candidates.iter().find_map(|c| names.iter().position(|name| name == c));
    let tick_columns = |ts| {
        Some(TickColumns { ts, symbol: find(&["symbol"])?, price: find(&["price"])?, size: find(&["size"]), bid: find(&["bid"]), ask: find(&["ask"]), volume: find(&["volume"]) })
    };
    if let Some(ts) = find(&["timestamp", "datetime", "time"])
        && let Some(columns) = tick_columns(ts)
    {
        return Some(Layout::Ticks(columns));
    }
    if let Some(ts) = find(&["date"])
        && let Some(columns) = tick_columns(ts)
    {
        return Some(Layout::LongPrices(columns));
    }
    let unnamed_first = names.first().filter(|name| name.is_empty()).map(|_| 0);
    Some(Layout::Bars(BarColumns {
        ts: find(&["timestamp", "datetime", "date", "time"]).or(unnamed_first)?,
        open: find(&["open"])?,
        high: find(&["high"])?,
        low: find(&["low"])?,
        close: find(&["close"])?,
        volume: find(&["volume"]),
    }))
}

/// Checks symbol syntax (1–16 of letters, digits, `.`, `-`, `^`, `=`) and upper-cases it.
fn normalise_symbol(text: &str) -> Result<Cow<'_, str>, String> {
    if check_symbol(text).is_err() {
        return Err(format!("'{text}' is not a valid symbol (1-{MAX_SYMBOL_LEN} letters, digits, '.', '-', '^', '=')"));
    }
    if text.bytes().any(|b| b.is_ascii_lowercase()) { Ok(Cow::Owned(text.to_ascii_uppercase())) } else { Ok(Cow::Borrowed(text)) }
}

/// The symbol of a bar file: from the options, else the file stem made into a valid symbol.
fn bar_symbol(path: &Path, options: &FileOptions) -> Result<Arc<str>, ReplayError> {
    let invalid = |symbol: &str, reason: String| ReplayError::InvalidSymbol { path: path.to_path_buf(), symbol: symbol.to_string(), reason };
    if let Some(symbol) = &options.symbol {
        let symbol = symbol.trim();
        return normalise_symbol(symbol).map(|s| Arc::from(s.as_ref())).map_err(|reason| invalid(symbol, reason));
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
    let derived: String = stem.chars().filter(|c| is_symbol_char(*c)).take(MAX_SYMBOL_LEN).collect::<String>().to_ascii_uppercase();
    if derived.is_empty() {
        return Err(invalid(&stem, "no symbol can be derived from the file name; configure one".to_string()));
    }
    Ok(derived.into())
}

/// Digits after the decimal point as written (`1455.219971` → 6), exponents accounted for,
/// capped at [`MAX_DECIMALS`].
fn decimals_in(text: &str) -> u8 {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let fraction = mantissa.split_once('.').map_or(0, |(_, fraction)| fraction.len() as i64);
    (fraction - exponent).clamp(0, i64::from(MAX_DECIMALS)) as u8
}

/// A price: a finite number above zero.
fn parse_price(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        Ok(_) => Err(format!("'{text}' is not a positive finite price")),
        Err(_) => Err(format!("'{text}' is not a number")),
    }
}

/// A size or volume: a non-negative number; fractional quantities are rounded to whole units
/// because quotes carry integer sizes.
fn parse_quantity(text: &str) -> Result<u64, String> {
    if let Ok(value) = text.parse::<u64>() {
        return Ok(value);
    }
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 && value < u64::MAX as f64 => Ok(value.round() as u64),
        Ok(_) => Err(format!("'{text}' is not a non-negative quantity")),
        Err(_) => Err(format!("'{text}' is not a number")),
    }
}

/// A bar as read, before expansion into ticks.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    line: u64,
    ts: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: Option<u64>,
    decimals: u8,
}

/// Per-file loading state: counters, the skipped-row report and the symbol table.
struct Loader<'p> {
    path: &'p Path,
    header: Vec<String>,
    rows_read: u64,
    rows_skipped: u64,
    skipped: Vec<SkippedRow>,
    /// Interned symbols and the decimals seen for each; one lookup per row.
    symbol_index: HashMap<Arc<str>, usize>,
    symbols: Vec<(Arc<str>, u8)>,
}

impl<'p> Loader<'p> {
    fn new(path: &'p Path) -> Loader<'p> {
        Loader { path, header: Vec::new(), rows_read: 0, rows_skipped: 0, skipped: Vec::new(), symbol_index: HashMap::new(), symbols: Vec::new() }
    }

    /// Reads the next record; `false` at the end of the file.
    fn read<R: Read>(&self, reader: &mut CsvReader<R>, record: &mut csv::ByteRecord) -> Result<bool, ReplayError> {
        reader.read_byte_record(record).map_err(|err| {
            let line = err.position().map_or(0, |p| p.line());
            match err.into_kind() {
                csv::ErrorKind::Io(source) => ReplayError::Io { path: self.path.to_path_buf(), source },
                other => ReplayError::Csv { path: self.path.to_path_buf(), line, message: format!("{other:?}") },
            }
        })
    }

    /// Reads the next data row, skipping blank lines and counting it; `None` at the end.
    fn next_row<R: Read>(&mut self, reader: &mut CsvReader<R>, record: &mut csv::ByteRecord) -> Result<Option<u64>, ReplayError> {
        loop {
            if !self.read(reader, record)? {
                return Ok(None);
            }
            if is_blank(record) {
                continue;
            }
            self.rows_read += 1;
            return Ok(Some(Self::row_line(reader, record)));
        }
    }

    /// The 1-based line a row starts on. The reader's own record positions count from where
    /// reading resumed, i.e. before any blank lines it skipped, so the line is worked back
    /// from the end instead: every row ends with a consumed `\n` (see [`NewlineTerminated`]),
    /// and newlines inside quoted fields are still in the record.
    fn row_line<R: Read>(reader: &CsvReader<R>, record: &csv::ByteRecord) -> u64 {
        let embedded = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        reader.position().line().saturating_sub(1 + embedded).max(1)
    }

    fn skip(&mut self, line: u64, reason: String) {
        self.rows_skipped += 1;
        if self.rows_skipped <= MAX_SKIPPED_LOGGED {
            tracing::warn!("replay file {}, line {line}: row skipped: {reason}", self.path.display());
        }
        if self.skipped.len() < MAX_SKIPPED_KEPT {
            self.skipped.push(SkippedRow { line, reason });
        }
    }

    /// The trimmed text of column `index`, with the column's name in any error.
    fn field<'r>(&self, record: &'r csv::ByteRecord, index: usize) -> Result<&'r str, String> {
        std::str::from_utf8(&record[index]).map_err(|_| format!("column '{}': not valid UTF-8", self.header[index]))
    }

    fn with_column<T>(&self, index: usize, result: Result<T, String>) -> Result<T, String> {
        result.map_err(|reason| format!("column '{}': {reason}", self.header[index]))
    }

    fn check_width(&self, record: &csv::ByteRecord) -> Result<(), String> {
        if record.len() == self.header.len() { Ok(()) } else { Err(format!("expected {} fields as in the header, found {}", self.header.len(), record.len())) }
    }

    /// A price column, with the decimals written in it.
    fn price(&self, record: &csv::ByteRecord, index: usize) -> Result<(f64, u8), String> {
        let text = self.field(record, index)?;
        let price = self.with_column(index, parse_price(text))?;
        Ok((price, decimals_in(text)))
    }

    /// An optional price column: absent or empty is `None`.
    fn optional_price(&self, record: &csv::ByteRecord, index: Option<usize>) -> Result<Option<(f64, u8)>, String> {
        match index {
            Some(index) if !record[index].is_empty() => self.price(record, index).map(Some),
            _ => Ok(None),
        }
    }

    fn optional_quantity(&self, record: &csv::ByteRecord, index: Option<usize>) -> Result<Option<u64>, String> {
        match index {
            Some(index) if !record[index].is_empty() => {
                let text = self.field(record, index)?;
                self.with_column(index, parse_quantity(text)).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn timestamp(&self, record: &csv::ByteRecord, index: usize) -> Result<i64, String> {
        let text = self.field(record, index)?;
        self.with_column(index, parse_timestamp(text).map_err(|err| err.to_string()))
    }

    /// The interned symbol, its decimals raised to at least `decimals`.
    fn intern(&mut self, symbol: &str, decimals: u8) -> Arc<str> {
        let index = match self.symbol_index.get(symbol) {
            Some(&index) => index,
            None => {
                let symbol: Arc<str> = symbol.into();
                self.symbols.push((symbol.clone(), 0));
                self.symbol_index.insert(symbol, self.symbols.len() - 1);
                self.symbols.len() - 1
            }
        };
        let entry = &mut self.symbols[index];
        entry.1 = entry.1.max(decimals);
        entry.0.clone()
    }

    fn read_ticks<R: Read>(&mut self, reader: &mut CsvReader<R>, record: &mut csv::ByteRecord, columns: &TickColumns) -> Result<Vec<ReplayTick>, ReplayError> {
        let mut ticks = Vec::new();
        while let Some(line) = self.next_row(reader, record)? {
            match self.parse_tick(record, columns, line) {
                Ok(tick) => ticks.push(tick),
                Err(reason) => self.skip(line, reason),
            }
        }
        // Stable: rows at the same time keep their file order.
        ticks.sort_by_key(|tick| tick.ts);
        Ok(ticks)
    }

    fn parse_tick(&mut self, record: &csv::ByteRecord, columns: &TickColumns, line: u64) -> Result<ReplayTick, String> {
        self.check_width(record)?;
        let ts = self.timestamp(record, columns.ts)?;
        let symbol_text = self.field(record, columns.symbol)?;
        let symbol = self.with_column(columns.symbol, normalise_symbol(symbol_text))?;
        let (price, mut decimals) = self.price(record, columns.price)?;
        let size = self.optional_quantity(record, columns.size)?;
        let bid = self.optional_price(record, columns.bid)?;
        let ask = self.optional_price(record, columns.ask)?;
        let volume = self.optional_quantity(record, columns.volume)?;
        if let (Some((bid, _)), Some((ask, _))) = (bid, ask)
            && bid >= ask
        {
            return Err(format!("bid {bid} is not below ask {ask}"));
        }
        for (_, quote_decimals) in bid.iter().chain(ask.iter()) {
            decimals = decimals.max(*quote_decimals);
        }
        let symbol = self.intern(&symbol, decimals);
        Ok(ReplayTick { ts, symbol, price, size, bid: bid.map(|(bid, _)| bid), ask: ask.map(|(ask, _)| ask), volume, line })
    }

    fn parse_bar(&self, record: &csv::ByteRecord, columns: &BarColumns, line: u64) -> Result<Bar, String> {
        self.check_width(record)?;
        let ts = self.timestamp(record, columns.ts)?;
        let (open, open_decimals) = self.price(record, columns.open)?;
        let (high, high_decimals) = self.price(record, columns.high)?;
        let (low, low_decimals) = self.price(record, columns.low)?;
        let (close, close_decimals) = self.price(record, columns.close)?;
        let volume = self.optional_quantity(record, columns.volume)?;
        if high < low {
            return Err(format!("high {high} is below low {low}"));
        }
        for (name, value) in [("open", open), ("close", close)] {
            if value < low || value > high {
                return Err(format!("{name} {value} is outside the bar's range [{low}, {high}]"));
            }
        }
        let decimals = open_decimals.max(high_decimals).max(low_decimals).max(close_decimals);
        Ok(Bar { line, ts, open, high, low, close, volume, decimals })
    }

    fn read_bars<R: Read>(
        &mut self,
        reader: &mut CsvReader<R>,
        record: &mut csv::ByteRecord,
        columns: &BarColumns,
        symbol: Arc<str>,
        options: &FileOptions,
    ) -> Result<Vec<ReplayTick>, ReplayError> {
        let mut bars = Vec::new();
        while let Some(line) = self.next_row(reader, record)? {
            match self.parse_bar(record, columns, line) {
                Ok(bar) => bars.push(bar),
                Err(reason) => self.skip(line, reason),
            }
        }
        bars.sort_by_key(|bar| bar.ts);
        // Two bars at one time leave the first no interval to spread its ticks over.
        let mut unique: Vec<Bar> = Vec::with_capacity(bars.len());
        for bar in bars {
            match unique.last() {
                Some(previous) if previous.ts == bar.ts => {
                    let reason = format!("duplicate bar time: line {} has the same time", previous.line);
                    self.skip(bar.line, reason);
                }
                _ => unique.push(bar),
            }
        }
        let decimals = unique.iter().map(|bar| bar.decimals).max().unwrap_or(0);
        if !unique.is_empty() {
            self.intern(&symbol, decimals);
        }
        Ok(expand_bars(&unique, &symbol, decimals, options))
    }

    fn finish(self, format: FileFormat, ticks: Vec<ReplayTick>) -> Result<LoadedFile, ReplayError> {
        if self.rows_skipped > MAX_SKIPPED_LOGGED {
            tracing::warn!("replay file {}: {} rows skipped in total (only the first {MAX_SKIPPED_LOGGED} logged)", self.path.display(), self.rows_skipped);
        }
        if ticks.is_empty() {
            return Err(ReplayError::NoUsableRows {
                path: self.path.to_path_buf(),
                rows_read: self.rows_read,
                rows_skipped: self.rows_skipped,
                first: self.skipped.first().cloned(),
            });
        }
        tracing::debug!("replay file {}: {format} format, {} rows read, {} skipped, {} ticks", self.path.display(), self.rows_read, self.rows_skipped, ticks.len());
        Ok(LoadedFile { format, ticks, decimals: self.symbols.into_iter().collect(), rows_read: self.rows_read, rows_skipped: self.rows_skipped, skipped: self.skipped })
    }
}

/// The interval of the last bar, which has no successor to end it: the file's median interval.
fn last_bar_interval(bars: &[Bar]) -> i64 {
    let mut intervals: Vec<i64> = bars.windows(2).map(|pair| pair[1].ts - pair[0].ts).collect();
    if intervals.is_empty() {
        return DAY_MS;
    }
    intervals.sort_unstable();
    intervals[intervals.len() / 2]
}

/// A well-spread 64-bit hash (SplitMix64's finaliser), so that neighbouring bar indices and
/// seeds give unrelated RNG streams.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of one bar: depends only on the file's seed and the bar's index, so a bar's path
/// does not change when other files are added to the replay.
fn bar_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(mix64(seed ^ mix64(index as u64)))
}

/// Splits `volume` into `parts` sizes of uneven (but seeded) weight that sum exactly to it.
fn split_volume(volume: u64, parts: usize, rng: &mut StdRng) -> Vec<u64> {
    let weights: Vec<u128> = (0..parts).map(|_| rng.random_range(50..=150)).collect();
    let total: u128 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights.iter().map(|w| (u128::from(volume) * w / total) as u64).collect();
    // Integer division leaves less than one unit per part; hand it out from the start.
    let remainder = volume - sizes.iter().sum::<u64>();
    for size in sizes.iter_mut().take(remainder as usize) {
        *size += 1;
    }
    sizes
}

/// Turns sorted, time-unique bars into ticks: each bar's path spread evenly from the bar's
/// time up to (excluding) the next bar's. Tick times are whole milliseconds, so they are
/// strictly increasing only when a bar lasts at least as many milliseconds as it has ticks
/// (always, for real data); shorter bars get repeated times rather than overlapping the next.
fn expand_bars(bars: &[Bar], symbol: &Arc<str>, decimals: u8, options: &FileOptions) -> Vec<ReplayTick> {
    let last_interval = last_bar_interval(bars);
    let mut ticks = Vec::with_capacity(bars.len() * options.ticks_per_bar.max(super::intrabar::MIN_TICKS));
    for (index, bar) in bars.iter().enumerate() {
        let end = bars.get(index + 1).map_or(bar.ts.saturating_add(last_interval), |next| next.ts);
        let interval = i128::from(end - bar.ts);
        let mut rng = bar_rng(options.seed, index);
        let path = intrabar_path(bar.open, bar.high, bar.low, bar.close, options.ticks_per_bar, &mut rng);
        let count = path.len();
        let sizes = bar.volume.map(|volume| split_volume(volume, count, &mut rng));
        for (step, price) in path.into_iter().enumerate() {
            let is_anchor = price == bar.open || price == bar.high || price == bar.low || price == bar.close;
            // Anchors are the file's own prices; rounding could only disturb their last bit.
            let price = if is_anchor { price } else { round_to(price, decimals).max(bar.low).min(bar.high) };
            ticks.push(ReplayTick {
                ts: bar.ts + (interval * step as i128 / count as i128) as i64,
                symbol: symbol.clone(),
                price,
                size: sizes.as_ref().map(|sizes| sizes[step]),
                bid: None,
                ask: None,
                volume: None,
                line: bar.line,
            });
        }
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_file(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
        let path = dir.path().join(name);
        let mut file = File::create(&path).unwrap();
        file.write_all(content.as_bytes()).unwrap();
        path
    }

    fn load(name: &str, content: &str, options: &FileOptions) -> Result<LoadedFile, ReplayError> {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, name, content);
        load_file(&path, options)
    }

    fn load_ok(name: &str, content: &str) -> LoadedFile {
        load(name, content, &FileOptions::default()).unwrap_or_else(|err| panic!("{err}"))
    }

    fn repo_file(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }

    fn spx_options() -> FileOptions {
        FileOptions { symbol: Some("SPX".into()), seed: 7, ticks_per_bar: 12 }
    }

    #[test]
    fn detects_ticks_from_an_untidy_header() {
        let file = load_ok("t.csv", " Price ,SYMBOL,  TimeStamp ,Size,BID,Ask , Volume\n1.08437,eurusd,2008-09-15T14:30:00Z,1000,1.08430,1.08440,5000\n");
        assert_eq!(file.format, FileFormat::Ticks);
        let tick = &file.ticks[0];
        assert_eq!(&*tick.symbol, "EURUSD");
        assert_eq!(tick.ts, 1_221_489_000_000);
        assert_eq!((tick.price, tick.size, tick.bid, tick.ask, tick.volume), (1.08437, Some(1000), Some(1.0843), Some(1.0844), Some(5000)));
        assert_eq!(tick.line, 2);
        assert_eq!(file.decimals[&Arc::<str>::from("EURUSD")], 5);
    }

    #[test]
    fn time_and_datetime_name_the_tick_timestamp_column() {
        for name in ["time", "DateTime", "date_time"] {
            let file = load_ok("t.csv", &format!("symbol,{name},price\nAAPL,2008-09-15,1.5\n"));
            assert_eq!(file.format, FileFormat::Ticks, "{name}");
        }
    }

    #[test]
    fn detects_long_prices_and_bars() {
        let long = load_ok("l.csv", "  Symbol, DATE ,price \nmsft,Jan 1 2000,39.81\n");
        assert_eq!(long.format, FileFormat::LongPrices);
        assert_eq!(long.ticks[0].ts, 946_684_800_000);
        let bars = load_ok("spy.csv", "DATE , Open,HIGH,low,Close,Adj Close,VOLUME\n2000-01-03,10,12,9,11,11,1200\n");
        assert_eq!(bars.format, FileFormat::Bars);
        assert_eq!(&*bars.ticks[0].symbol, "SPY");
    }

    #[test]
    fn unknown_header_lists_what_it_saw_and_what_is_accepted() {
        let err = load("x.csv", "when,what,how much\n1,2,3\n", &FileOptions::default()).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ReplayError::UnknownFormat { .. }));
        assert!(message.contains("x.csv") && message.contains("[when, what, how much]"), "{message}");
        assert!(message.contains("ticks (") && message.contains("long prices (") && message.contains("bars ("), "{message}");
        // Bar columns without a time column are not a format either.
        assert!(matches!(load("y.csv", "open,high,low,close\n1,2,1,2\n", &FileOptions::default()), Err(ReplayError::UnknownFormat { .. })));
    }

    #[test]
    fn every_timestamp_style_loads_in_a_file() {
        let file = load_ok(
            "styles.csv",
            "timestamp,symbol,price\n\
             2008-09-15,A,1\n\
             2008-09-15T00:00:01,A,1\n\
             2008-09-15 00:00:02.500Z,A,1\n\
             2008-09-15T02:00:03+02:00,A,1\n\
             2008-09-15T00:04,A,1\n\
             \"Sep 15, 2008\",A,1\n\
             September 15 2008,A,1\n\
             2008/09/15,A,1\n\
             1221436805,A,1\n\
             1221436806000,A,1\n\
             1221436807.25,A,1\n",
        );
        assert_eq!(file.rows_skipped, 0, "{:?}", file.skipped);
        let day = 1_221_436_800_000;
        let times: Vec<i64> = file.ticks.iter().map(|t| t.ts - day).collect();
        assert_eq!(times, vec![0, 0, 0, 0, 1000, 2500, 3000, 5000, 6000, 7250, 240_000]);
    }

    #[test]
    fn demo_stocks_file_loads_cleanly() {
        let file = load_file(&repo_file("feeds/stocks.csv"), &FileOptions::default()).unwrap();
        assert_eq!(file.format, FileFormat::LongPrices);
        assert_eq!((file.rows_read, file.rows_skipped, file.ticks.len()), (560, 0, 560));
        let mut symbols: Vec<&str> = file.decimals.keys().map(|s| &**s).collect();
        symbols.sort_unstable();
        assert_eq!(symbols, ["AAPL", "AMZN", "GOOG", "IBM", "MSFT"]);
        assert!(file.decimals.values().all(|&d| d == 2), "{:?}", file.decimals);
        assert!(file.ticks.windows(2).all(|pair| pair[0].ts <= pair[1].ts));
    }

    #[test]
    fn demo_bar_file_loads_cleanly() {
        let file = load_file(&repo_file("feeds/sp500-2000.csv"), &spx_options()).unwrap();
        assert_eq!(file.format, FileFormat::Bars);
        // 5105 bars: 5106 lines, the last without a trailing newline.
        assert_eq!((file.rows_read, file.rows_skipped), (5105, 0));
        assert_eq!(file.ticks.len(), 5105 * 12);
        assert!(file.ticks.iter().all(|t| &*t.symbol == "SPX"));
        assert_eq!(file.decimals[&Arc::<str>::from("SPX")], 6);
        assert_eq!(file.ticks[0].price, 1469.25);
        assert_eq!(file.ticks[11].price, 1455.219971);
        assert!(file.ticks.windows(2).all(|pair| pair[0].ts < pair[1].ts));
    }

    #[test]
    fn bar_symbol_comes_from_the_options_or_the_file_stem() {
        let content = "date,open,high,low,close\n2000-01-03,10,12,9,11\n";
        let named = load("x.csv", content, &FileOptions { symbol: Some(" spx ".into()), ..FileOptions::default() }).unwrap();
        assert_eq!(&*named.ticks[0].symbol, "SPX");
        assert_eq!(&*load_ok("^gspc daily (copy) of a very long name.csv", content).ticks[0].symbol, "^GSPCDAILYCOPYOF");
        let bad = load("x.csv", content, &FileOptions { symbol: Some("S P X".into()), ..FileOptions::default() }).unwrap_err();
        assert!(matches!(bad, ReplayError::InvalidSymbol { .. }), "{bad}");
        assert!(bad.to_string().contains("x.csv"));
        assert!(matches!(load("###.csv", content, &FileOptions::default()), Err(ReplayError::InvalidSymbol { .. })));
    }

    #[test]
    fn bar_ticks_stay_inside_their_bar_in_price_and_time() {
        let file = load_file(&repo_file("feeds/sp500-2000.csv"), &spx_options()).unwrap();
        let rows: Vec<Vec<String>> =
            std::fs::read_to_string(repo_file("feeds/sp500-2000.csv")).unwrap().lines().skip(1).map(|line| line.split(',').map(str::to_string).collect()).collect();
        let day = 86_400_000;
        for (index, (row, ticks)) in rows.iter().zip(file.ticks.chunks(12)).enumerate() {
            let [open, high, low, close]: [f64; 4] = std::array::from_fn(|i| row[i + 1].parse().unwrap());
            let start = parse_timestamp(&row[0]).unwrap();
            let end = rows.get(index + 1).map_or(start + day, |next| parse_timestamp(&next[0]).unwrap());
            assert_eq!(ticks[0].price, open);
            assert_eq!(ticks[11].price, close);
            assert!(ticks.iter().any(|t| t.price == high) && ticks.iter().any(|t| t.price == low), "{row:?}");
            assert!(ticks.iter().all(|t| low <= t.price && t.price <= high), "{row:?}");
            assert!(ticks.iter().all(|t| start <= t.ts && t.ts < end), "{row:?}");
            assert!(ticks.windows(2).all(|pair| pair[0].ts < pair[1].ts));
            assert_eq!(ticks[0].ts, start);
            assert!(ticks.iter().all(|t| t.line == index as u64 + 2 && t.volume.is_none()));
            let volume: u64 = row[6].parse().unwrap();
            assert_eq!(ticks.iter().map(|t| t.size.unwrap()).sum::<u64>(), volume);
            // Intrabar prices are rounded to the file's precision.
            assert!(ticks.iter().all(|t| round_to(t.price, 6) == t.price));
        }
    }

    #[test]
    fn bar_paths_are_seeded() {
        let path = repo_file("feeds/sp500-2000.csv");
        let prices = |seed| -> Vec<f64> {
            let options = FileOptions { seed, ..spx_options() };
            load_file(&path, &options).unwrap().ticks.iter().map(|t| t.price).collect()
        };
        assert_eq!(prices(1), prices(1));
        assert_ne!(prices(1), prices(2));
    }

    #[test]
    fn the_last_bar_lasts_the_median_interval() {
        let file = load_ok(
            "h.csv",
            "datetime,open,high,low,close\n\
             2000-01-03T10:00,10,12,9,11\n\
             2000-01-03T11:00,10,12,9,11\n\
             2000-01-03T13:00,10,12,9,11\n\
             2000-01-03T14:00,10,12,9,11\n",
        );
        let last_start = parse_timestamp("2000-01-03T14:00").unwrap();
        let last = file.ticks.last().unwrap().ts;
        assert!(last > last_start && last < last_start + 3_600_000);
        assert_eq!(last, last_start + 3_600_000 * 11 / 12);
        let single = load_ok("d.csv", "date,open,high,low,close\n2000-01-03,10,12,9,11\n");
        assert_eq!(single.ticks[11].ts, parse_timestamp("2000-01-03").unwrap() + 86_400_000 * 11 / 12);
    }

    #[test]
    fn pandas_unnamed_index_column_is_the_bar_time() {
        let file = load_ok(
            "eurusd.csv",
            ",open,high,low,close,volume\n\
             2024-01-02 00:00:00,1.10400,1.10452,1.10381,1.10437,1200\n\
             2024-01-02 01:00:00,1.10437,1.10511,1.10420,1.10490,800\n",
        );
        assert_eq!(file.format, FileFormat::Bars);
        assert_eq!(file.ticks.len(), 24);
        assert_eq!(file.decimals[&Arc::<str>::from("EURUSD")], 5);
        assert!(file.ticks.iter().all(|t| round_to(t.price, 5) == t.price), "prices keep 5 decimals");
        assert!(file.ticks.iter().any(|t| t.price.to_string().len() == "1.10437".len() && t.price != 1.10437 && t.price != 1.104));
        assert_eq!(file.ticks[..12].iter().map(|t| t.size.unwrap()).sum::<u64>(), 1200);
    }

    #[test]
    fn five_decimal_ticks_keep_their_precision() {
        let file = load_ok("fx.csv", "time,symbol,price\n1221436800000,EURUSD,1.08437\n1221436800500,EURUSD,1.0844\n");
        assert_eq!(file.decimals[&Arc::<str>::from("EURUSD")], 5);
        assert_eq!(file.ticks[0].price, 1.08437);
    }

    #[test]
    fn decimals_are_counted_as_written_and_capped() {
        assert_eq!(decimals_in("1.08437"), 5);
        assert_eq!(decimals_in("39.81"), 2);
        assert_eq!(decimals_in("1455.219971"), 6);
        assert_eq!(decimals_in("1469.250000"), 6);
        assert_eq!(decimals_in("100"), 0);
        assert_eq!(decimals_in("0.123456789012"), 8);
        assert_eq!(decimals_in("1.5e-3"), 4);
        assert_eq!(decimals_in("1.25E2"), 0);
        let file = load_ok("d.csv", "timestamp,symbol,price,bid,ask\n0,X,10,9.995,10.005\n1,X,10.5,,\n2,Y,3,,\n");
        assert_eq!(file.decimals[&Arc::<str>::from("X")], 3, "bid/ask digits count");
        assert_eq!(file.decimals[&Arc::<str>::from("Y")], 0);
    }

    #[test]
    fn bad_tick_rows_are_skipped_with_their_lines() {
        let content = "timestamp,symbol,price,size,bid,ask\n\
            2008-09-15,AAPL,10,100,9.9,10.1\n\
            2008-09-15,AAPL,10\n\
            2008-09-15,AAPL,abc,100,,\n\
            yesterday,AAPL,10,100,,\n\
            2008-09-15,AAPL,-1,100,,\n\
            2008-09-15,AAPL,0,100,,\n\
            2008-09-15,AAPL,inf,100,,\n\
            2008-09-15,AAPL,NaN,100,,\n\
            2008-09-15,AAPL,10,100,10.1,10.1\n\
            2008-09-15,AA PL,10,100,,\n\
            2008-09-15,ABCDEFGHIJKLMNOPQ,10,100,,\n\
            2008-09-15,AAPL,10,-5,,\n\
            2001-02-30,AAPL,10,100,,\n\
            \n\
            2008-09-16,aapl,11,,,\n";
        let file = load_ok("bad.csv", content);
        let lines: Vec<u64> = file.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!((file.rows_read, file.rows_skipped), (14, 12));
        assert_eq!(file.ticks.iter().map(|t| t.line).collect::<Vec<_>>(), vec![2, 16]);
        let reason = |line: u64| file.skipped.iter().find(|s| s.line == line).unwrap().reason.clone();
        assert!(reason(3).contains("expected 6 fields") && reason(3).contains("found 3"), "{}", reason(3));
        assert!(reason(4).contains("column 'price'") && reason(4).contains("abc"), "{}", reason(4));
        assert!(reason(5).contains("column 'timestamp'") && reason(5).contains("yesterday"), "{}", reason(5));
        assert!(reason(6).contains("positive"), "{}", reason(6));
        assert!(reason(10).contains("bid 10.1 is not below ask 10.1"), "{}", reason(10));
        assert!(reason(11).contains("column 'symbol'") && reason(11).contains("AA PL"), "{}", reason(11));
        assert!(reason(13).contains("column 'size'"), "{}", reason(13));
        assert!(reason(14).contains("out of range"), "{}", reason(14));
        assert_eq!(file.decimals.len(), 1, "symbols of bad rows are not registered");
    }

    #[test]
    fn bad_bar_rows_are_skipped_with_their_lines() {
        let content = "date,open,high,low,close,volume\n\
            2000-01-03,10,12,9,11,100\n\
            2000-01-04,10,8,9,9,100\n\
            2000-01-05,13,12,9,11,100\n\
            2000-01-06,10,12,9,8.5,100\n\
            2000-01-07,10,12,9,11,lots\n\
            2000-01-08,10,12,9\n\
            2000-01-03,10,12,9,11,100\n\
            2000-01-10,10,12,9,11,\n";
        let file = load_ok("bars.csv", content);
        let lines: Vec<u64> = file.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8]);
        assert!(file.skipped[0].reason.contains("high 8 is below low 9"), "{:?}", file.skipped[0]);
        assert!(file.skipped[1].reason.contains("open 13"), "{:?}", file.skipped[1]);
        assert!(file.skipped[2].reason.contains("close 8.5"), "{:?}", file.skipped[2]);
        assert!(file.skipped[5].reason.contains("duplicate") && file.skipped[5].reason.contains("line 2"), "{:?}", file.skipped[5]);
        assert_eq!(file.ticks.len(), 24);
        assert!(file.ticks[12..].iter().all(|t| t.size.is_none()), "empty volume gives no sizes");
    }

    #[test]
    fn skipped_report_is_bounded() {
        let mut content = String::from("timestamp,symbol,price\n2008-09-15,A,1\n");
        for _ in 0..250 {
            content.push_str("2008-09-15,A,bad\n");
        }
        let file = load_ok("many.csv", &content);
        assert_eq!((file.rows_read, file.rows_skipped, file.skipped.len()), (251, 250, MAX_SKIPPED_KEPT));
        assert_eq!(file.skipped[0].line, 3);
    }

    #[test]
    fn unsorted_rows_are_sorted_stably() {
        let file = load_ok("u.csv", "timestamp,symbol,price\n3000,B,1\n1000,A,1\n3000,A,2\n2000,C,1\n3000,C,3\n");
        let order: Vec<(i64, u64)> = file.ticks.iter().map(|t| (t.ts, t.line)).collect();
        assert_eq!(order, vec![(1_000_000, 3), (2_000_000, 5), (3_000_000, 2), (3_000_000, 4), (3_000_000, 6)]);
    }

    #[test]
    fn missing_file_names_the_path_and_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere.csv");
        let err = load_file(&path, &FileOptions::default()).unwrap_err();
        assert!(matches!(err, ReplayError::Io { .. }));
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.to_lowercase().contains("no such file"), "{message}");
    }

    #[test]
    fn file_without_usable_rows_names_the_path_and_the_first_reason() {
        let err = load("allbad.csv", "timestamp,symbol,price\nx,A,1\n2008-09-15,A,-2\n", &FileOptions::default()).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ReplayError::NoUsableRows { rows_read: 2, rows_skipped: 2, .. }), "{message}");
        assert!(message.contains("allbad.csv") && message.contains("2 skipped") && message.contains("line 2"), "{message}");
        let header_only = load("h.csv", "timestamp,symbol,price\n", &FileOptions::default()).unwrap_err();
        assert!(matches!(header_only, ReplayError::NoUsableRows { rows_read: 0, .. }), "{header_only}");
        let empty = load("e.csv", "\n\n", &FileOptions::default()).unwrap_err();
        assert!(matches!(empty, ReplayError::Empty { .. }), "{empty}");
        assert!(empty.to_string().contains("e.csv"));
    }

    #[test]
    fn byte_order_mark_and_crlf_are_tolerated() {
        let file = load_ok("bom.csv", "\u{feff}timestamp,symbol,price\r\n2008-09-15,A,1\r\n");
        assert_eq!((file.format, file.ticks.len()), (FileFormat::Ticks, 1));
    }

    #[test]
    fn line_numbers_survive_blank_lines_crlf_quotes_and_a_missing_final_newline() {
        let lines = |content: &str| -> Vec<u64> { load_ok("l.csv", content).ticks.iter().map(|t| t.line).collect() };
        assert_eq!(lines("timestamp,symbol,price\n1,A,1\n\n\n2,A,1\n3,A,1"), vec![2, 5, 6]);
        assert_eq!(lines("timestamp,symbol,price\r\n1,A,1\r\n\r\n2,A,1\r\n3,A,1"), vec![2, 4, 5]);
        assert_eq!(lines("\ntimestamp,symbol,price,note\n1,\"A\",1,\n2,A,1,\"two\nlines\"\n3,A,1,\n"), vec![3, 4, 6]);
    }

    #[test]
    fn invalid_utf8_is_a_bad_row_not_a_failed_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.csv");
        std::fs::write(&path, b"timestamp,symbol,price\n2008-09-15,A\xE9,1\n2008-09-15,B,2\n").unwrap();
        let file = load_file(&path, &FileOptions::default()).unwrap();
        assert_eq!((file.rows_skipped, file.ticks.len()), (1, 1));
        assert!(file.skipped[0].reason.contains("UTF-8"));
    }

    #[test]
    fn volume_split_is_exact() {
        let mut rng = bar_rng(1, 2);
        for volume in [0, 1, 11, 12, 13, 931_800_000, u64::MAX] {
            let sizes = split_volume(volume, 12, &mut rng);
            assert_eq!(sizes.len(), 12);
            assert_eq!(sizes.iter().map(|&s| u128::from(s)).sum::<u128>(), u128::from(volume));
        }
    }

    #[test]
    fn repository_fixtures_load() {
        for (name, format, symbol, decimals) in
            [("tests/fixtures/replay/eurusd-ticks.csv", FileFormat::Ticks, "EURUSD", 5), ("tests/fixtures/replay/eurusd-h1-pandas.csv", FileFormat::Bars, "EURUSD-H1-PANDAS", 5)]
        {
            let file = load_file(&repo_file(name), &FileOptions::default()).unwrap();
            assert_eq!((file.format, file.rows_skipped), (format, 0), "{name}: {:?}", file.skipped);
            assert_eq!(file.decimals[&Arc::<str>::from(symbol)], decimals, "{name}");
        }
    }
}

/// The loader's invariants, checked on any input: by the property tests below and by the fuzz
/// target `replay_csv` (through `crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use super::*;

    /// Loads `input` as the file `fuzz.csv` and asserts what the module promises, whatever the
    /// bytes: no panic; a refusal names the file; a load has only usable ticks — sorted by time,
    /// each price finite and above zero, a bid below its ask, a valid upper-case symbol whose
    /// decimals are known and at most [`MAX_DECIMALS`], a line within the input — and its
    /// counts add up (every tick row read is loaded or skipped; the skipped report is bounded).
    pub(crate) fn check_any_file(input: &[u8]) -> Option<LoadedFile> {
        let path = Path::new("fuzz.csv");
        let options = FileOptions { ticks_per_bar: 4, ..FileOptions::default() };
        let file = match load_from(input, path, &options) {
            Ok(file) => file,
            Err(error) => {
                assert!(error.to_string().contains("fuzz.csv"), "the error names the file: {error}");
                return None;
            }
        };
        let lines = input.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        assert!(!file.ticks.is_empty(), "a load has ticks");
        assert!(file.ticks.windows(2).all(|pair| pair[0].ts <= pair[1].ts), "ticks are sorted by time");
        for tick in &file.ticks {
            assert!(tick.price.is_finite() && tick.price > 0.0, "price {} at line {}", tick.price, tick.line);
            for quote in [tick.bid, tick.ask].into_iter().flatten() {
                assert!(quote.is_finite() && quote > 0.0, "bid/ask {quote} at line {}", tick.line);
            }
            if let (Some(bid), Some(ask)) = (tick.bid, tick.ask) {
                assert!(bid < ask, "bid {bid} not below ask {ask} at line {}", tick.line);
            }
            assert!(check_symbol(&tick.symbol).is_ok() && !tick.symbol.bytes().any(|b| b.is_ascii_lowercase()), "symbol {:?}", tick.symbol);
            assert!(file.decimals.get(&tick.symbol).is_some_and(|&d| d <= MAX_DECIMALS), "decimals of {}", tick.symbol);
            assert!((1..=lines).contains(&tick.line), "line {} of {lines}", tick.line);
        }
        assert!(file.rows_skipped <= file.rows_read);
        assert_eq!(file.skipped.len() as u64, file.rows_skipped.min(MAX_SKIPPED_KEPT as u64));
        if file.format != FileFormat::Bars {
            assert_eq!(file.ticks.len() as u64, file.rows_read - file.rows_skipped, "each row read is a tick or a skipped row");
        }
        Some(file)
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;
        use crate::test_support::proptest_config;

        /// A cell's text and, when the row may load with it, the value it must give.
        type Cell<T> = (String, Option<T>);

        fn timestamp() -> impl Strategy<Value = Cell<i64>> {
            // 1900 to 2100.
            let valid = (-2_208_988_800_000i64..4_102_444_800_000, 0..4).prop_map(|(ms, style)| {
                let time = chrono::DateTime::from_timestamp_millis(ms).expect("in range");
                match style {
                    0 => (time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(), Some(ms)),
                    1 => (time.format("%Y-%m-%d").to_string(), Some(ms.div_euclid(86_400_000) * 86_400_000)),
                    2 if ms.abs() >= 100_000_000_000 => (ms.to_string(), Some(ms)),
                    _ => (ms.div_euclid(1000).to_string(), Some(ms.div_euclid(1000) * 1000)),
                }
            });
            let invalid = prop::sample::select(vec!["", "2008-13-01", "2008-02-30", "yesterday", "2008-09-15T25:00", "12:30"]).prop_map(|t| (t.to_string(), None));
            prop_oneof![6 => valid, 1 => invalid]
        }

        fn symbol() -> impl Strategy<Value = Cell<String>> {
            let valid = "[A-Za-z0-9.^=-]{1,16}".prop_map(|s| (format!(" {s}"), Some(s.to_ascii_uppercase())));
            let invalid = prop_oneof![Just(String::new()), "[A-Z]{17,20}", "[A-Z]{1,3}[!é/ ][A-Z]{1,3}"].prop_map(|s| (s, None));
            prop_oneof![6 => valid, 1 => invalid]
        }

        fn price() -> impl Strategy<Value = Cell<f64>> {
            let valid = (1u32..10_000_000, 0usize..7).prop_map(|(units, decimals)| {
                let text = if decimals == 0 { units.to_string() } else { format!("{}.{:0width$}", units / 1000, units % 1000, width = decimals) };
                let value: f64 = text.parse().expect("a number");
                if value > 0.0 { (text, Some(value)) } else { (text, None) }
            });
            let invalid = prop::sample::select(vec!["0", "-1.5", "abc", "inf", "NaN", "1e999", ""]).prop_map(|t| (t.to_string(), None));
            prop_oneof![6 => valid, 1 => invalid]
        }

        fn optional<T: std::fmt::Debug + Clone + 'static>(cell: impl Strategy<Value = Cell<T>>) -> impl Strategy<Value = Cell<Option<T>>> {
            // An empty cell is an absent value, whatever the column would refuse.
            prop_oneof![Just((String::new(), Some(None))), cell.prop_map(|(text, value)| if text.is_empty() { (text, Some(None)) } else { (text, value.map(Some)) })]
        }

        fn size() -> impl Strategy<Value = Cell<u64>> {
            prop_oneof![4 => any::<u32>().prop_map(|n| (n.to_string(), Some(u64::from(n)))), 1 => prop::sample::select(vec!["-3", "x"]).prop_map(|t| (t.to_string(), None))]
        }

        #[derive(Debug, Clone)]
        struct Row {
            cells: [String; 6],
            /// The tick it must load as (line aside), or none if it must be skipped.
            tick: Option<ReplayTick>,
            extra_field: bool,
            blank_lines_before: usize,
        }

        fn row() -> impl Strategy<Value = Row> {
            (timestamp(), symbol(), price(), optional(price()), optional(price()), optional(size()), prop::bool::weighted(0.05), 0usize..3).prop_map(
                |((ts, ts_ms), (sym, symbol), (price, price_value), (bid, bid_value), (ask, ask_value), (size, size_value), extra_field, blank)| {
                    let mut tick = match (ts_ms, symbol, price_value, bid_value, ask_value, size_value) {
                        (Some(ts), Some(symbol), Some(price), Some(bid), Some(ask), Some(size)) if !matches!((bid, ask), (Some(b), Some(a)) if b >= a) => {
                            Some(ReplayTick { ts, symbol: symbol.into(), price, size, bid, ask, volume: None, line: 0 })
                        }
                        _ => None,
                    };
                    if extra_field {
                        tick = None;
                    }
                    Row { cells: [ts, sym, price, bid, ask, size], tick, extra_field, blank_lines_before: blank % 3 / 2 }
                },
            )
        }

        /// A tick file: the six columns in any order, then the rows (some blank lines between,
        /// CRLF or LF), and the ticks it must give, in file order, with their lines.
        fn tick_file() -> impl Strategy<Value = (Vec<u8>, Vec<ReplayTick>, Vec<u64>)> {
            (Just([0usize, 1, 2, 3, 4, 5]).prop_shuffle(), prop::collection::vec(row(), 0..40), any::<bool>()).prop_map(|(order, rows, crlf)| {
                let names = ["timestamp", "Symbol", "price", "bid", "ask", "size"];
                let end = if crlf { "\r\n" } else { "\n" };
                let mut text = order.iter().map(|&i| names[i]).collect::<Vec<_>>().join(",") + end;
                let mut line = 1;
                let (mut ticks, mut skipped) = (Vec::new(), Vec::new());
                for row in rows {
                    for _ in 0..row.blank_lines_before {
                        text.push_str(end);
                        line += 1;
                    }
                    line += 1;
                    text.push_str(&order.iter().map(|&i| row.cells[i].as_str()).collect::<Vec<_>>().join(","));
                    if row.extra_field {
                        text.push_str(",extra");
                    }
                    text.push_str(end);
                    match row.tick {
                        Some(tick) => ticks.push(ReplayTick { line, ..tick }),
                        None => skipped.push(line),
                    }
                }
                ticks.sort_by_key(|tick| tick.ts);
                (text.into_bytes(), ticks, skipped)
            })
        }

        fn header() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["timestamp,symbol,price,size,bid,ask,volume\n", "symbol,date,price\n", "date,open,high,low,close,volume\n", ",open,high,low,close\n"])
        }

        proptest! {
            #![proptest_config(proptest_config(256, "target/proptest-regressions/feed-replay-format.txt"))]

            #[test]
            fn any_bytes_load_as_usable_ticks_or_fail_naming_the_file(input in prop::collection::vec(any::<u8>(), 0..512)) {
                check_any_file(&input);
            }

            #[test]
            fn any_rows_under_a_known_header_load_as_usable_ticks(header in header(), rows in "([0-9a-zA-Z.:,\"\\- \r\n]|é|\\x00){0,300}") {
                check_any_file(format!("{header}{rows}").as_bytes());
            }

            #[test]
            fn every_good_row_loads_and_every_bad_one_is_skipped_with_its_line((input, ticks, skipped) in tick_file()) {
                let loaded = check_any_file(&input);
                match loaded {
                    Some(file) => {
                        prop_assert_eq!(&file.ticks, &ticks);
                        prop_assert_eq!(file.skipped.iter().map(|row| row.line).collect::<Vec<_>>(), skipped.iter().copied().take(MAX_SKIPPED_KEPT).collect::<Vec<_>>());
                    }
                    None => prop_assert!(ticks.is_empty(), "nothing loaded from a file with {} good rows", ticks.len()),
                }
            }
        }
    }
}
