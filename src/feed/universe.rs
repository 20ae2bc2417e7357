//! The instrument universe of the simulation: symbol, name, sector, start price, annual
//! volatility and drift, tick size — read from `feeds/universe.csv`, which is also embedded in
//! the binary as the default so the server needs no file to start.
//!
//! Owned here: the [`Instrument`] record, the CSV format and its validation. The format is a
//! header row (column names case-insensitive, any order) naming `symbol`, `name`, `sector`,
//! `price` and `volatility`, and optionally `drift` (default [`DEFAULT_DRIFT`]) and `tick_size`
//! (default [`DEFAULT_TICK_SIZE`]); volatility and drift are annual fractions (0.30 = 30 %).
//!
//! Unlike a replay file, where a bad row is data to skip and count, the universe is
//! configuration: any bad row, unknown column or duplicate symbol fails the load, and the error
//! names the origin, the line and the field so the operator can fix it.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::quote::normalise_symbol;

/// Annual drift of an instrument whose row leaves `drift` out or empty.
pub(crate) const DEFAULT_DRIFT: f64 = 0.05;
/// Tick size of an instrument whose row leaves `tick_size` out or empty.
pub(crate) const DEFAULT_TICK_SIZE: f64 = 0.01;

/// Volatility and drift above this are almost certainly percentages typed as fractions
/// (30 instead of 0.30); a 500 % annual volatility is not a stock anyone means to simulate.
const MAX_ANNUAL_FRACTION: f64 = 5.0;

/// The universe shipped with the server, embedded at compile time.
const DEFAULT_UNIVERSE_CSV: &str = include_str!("../../feeds/universe.csv");
const DEFAULT_UNIVERSE_ORIGIN: &str = "feeds/universe.csv (built in)";

/// One simulated instrument.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instrument {
    /// Upper case: letters, digits and `.`, `-`, `^`, `=`; at most [`crate::quote::MAX_SYMBOL_LEN`] characters.
    pub symbol: String,
    pub name: String,
    /// Instruments of one sector share the simulation's sector factor.
    pub sector: String,
    /// Start price, > 0 and at least one tick.
    pub price: f64,
    /// Annual volatility as a fraction, > 0.
    pub volatility: f64,
    /// Annual drift as a fraction (may be negative).
    pub drift: f64,
    /// Price increment, > 0.
    pub tick_size: f64,
}

/// Why a universe could not be loaded. Every variant names the file (or other origin).
#[derive(Debug, thiserror::Error)]
pub enum UniverseError {
    #[error("cannot read universe file {origin}: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not well-formed CSV, or a row has the wrong number of fields.
    #[error("{origin} line {line}: {message}")]
    Syntax { origin: String, line: u64, message: String },
    /// The header row is missing a required column, repeats one or names an unknown one.
    #[error("{origin} line {line} (header): {message}")]
    Header { origin: String, line: u64, message: String },
    /// A field of a data row is missing or out of range.
    #[error("{origin} line {line}: {field} '{value}' {reason}")]
    Field { origin: String, line: u64, field: &'static str, value: String, reason: String },
    #[error("{origin} line {line}: symbol '{symbol}' is already defined on line {first_line}")]
    DuplicateSymbol { origin: String, symbol: String, first_line: u64, line: u64 },
    #[error("{origin}: no instruments (a header row and at least one data row are required)")]
    Empty { origin: String },
}

/// Reads and validates a universe file.
pub(crate) fn load_universe(path: &Path) -> Result<Vec<Instrument>, UniverseError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| UniverseError::Io { origin: origin.clone(), source })?;
    parse_universe(&text, &origin)
}

/// The built-in universe (`feeds/universe.csv` at build time).
pub(crate) fn default_universe() -> Vec<Instrument> {
    // The embedded file is checked by a unit test, so this cannot fail in a tested build.
    parse_universe(DEFAULT_UNIVERSE_CSV, DEFAULT_UNIVERSE_ORIGIN).expect("the built-in universe parses")
}

/// The columns of the format; the discriminant indexes [`Layout::positions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Column {
    Symbol,
    Name,
    Sector,
    Price,
    Volatility,
    Drift,
    TickSize,
}

impl Column {
    const ALL: [Column; 7] = [Column::Symbol, Column::Name, Column::Sector, Column::Price, Column::Volatility, Column::Drift, Column::TickSize];

    fn name(self) -> &'static str {
        match self {
            Column::Symbol => "symbol",
            Column::Name => "name",
            Column::Sector => "sector",
            Column::Price => "price",
            Column::Volatility => "volatility",
            Column::Drift => "drift",
            Column::TickSize => "tick_size",
        }
    }

    fn required(self) -> bool {
        !matches!(self, Column::Drift | Column::TickSize)
    }
}

/// Where each column sits in a row, from the header.
#[derive(Debug)]
struct Layout {
    positions: [Option<usize>; 7],
    width: usize,
}

impl Layout {
    /// The trimmed cell of `column` in `record`; empty when the column is absent.
    fn cell<'r>(&self, record: &'r csv::StringRecord, column: Column) -> &'r str {
        self.positions[column as usize].and_then(|at| record.get(at)).unwrap_or("")
    }
}

/// Parses universe CSV text. `origin` names the source in errors (a path, or "built in").
pub(crate) fn parse_universe(text: &str, origin: &str) -> Result<Vec<Instrument>, UniverseError> {
    // Spreadsheet exports often start with a byte-order mark; it is not part of the header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true) // field counts are checked here, with a better message
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());

    let mut layout: Option<Layout> = None;
    let mut instruments = Vec::new();
    // Upper-cased symbol -> line it was first defined on.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut lines = LineCounter::new(text);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(err) => {
                let line = err.position().map_or(0, |p| lines.line_at(p.byte()));
                return Err(UniverseError::Syntax { origin: origin.to_string(), line, message: err.to_string() });
            }
        }
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        let Some(layout) = &layout else {
            layout = Some(parse_header(&record, origin, line)?);
            continue;
        };
        if record.len() != layout.width {
            return Err(UniverseError::Syntax { origin: origin.to_string(), line, message: format!("{} fields, but the header has {}", record.len(), layout.width) });
        }
        let instrument = parse_row(layout, &record, origin, line)?;
        if let Some(&first_line) = seen.get(&instrument.symbol) {
            return Err(UniverseError::DuplicateSymbol { origin: origin.to_string(), symbol: instrument.symbol, first_line, line });
        }
        seen.insert(instrument.symbol.clone(), line);
        instruments.push(instrument);
    }
    if instruments.is_empty() {
        return Err(UniverseError::Empty { origin: origin.to_string() });
    }
    Ok(instruments)
}

/// Line numbers from byte offsets. The csv reader's own line count leaves out the blank lines
/// it skips, which would send the operator to the wrong line; counting newlines does not.
/// Offsets only grow while reading, so each byte is scanned once.
struct LineCounter<'t> {
    text: &'t [u8],
    offset: usize,
    line: u64,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t str) -> LineCounter<'t> {
        LineCounter { text: text.as_bytes(), offset: 0, line: 1 }
    }

    /// The 1-based line of the record the reader says starts at byte `offset`. That offset is
    /// the end of the previous record, before any blank lines the reader skipped, so line
    /// terminators after it are stepped over. Offsets must not decrease between calls.
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut offset = usize::try_from(offset).unwrap_or(usize::MAX).min(self.text.len());
        while matches!(self.text.get(offset), Some(b'\n' | b'\r')) {
            offset += 1;
        }
        if offset > self.offset {
            self.line += self.text[self.offset..offset].iter().filter(|&&b| b == b'\n').count() as u64;
            self.offset = offset;
        }
        self.line
    }
}

fn parse_header(record: &csv::StringRecord, origin: &str, line: u64) -> Result<Layout, UniverseError> {
    let header_error = |message: String| UniverseError::Header { origin: origin.to_string(), line, message };
    let mut positions = [None; 7];
    for (at, raw) in record.iter().enumerate() {
        let name = raw.to_ascii_lowercase();
        let Some(column) = Column::ALL.into_iter().find(|c| c.name() == name) else {
            // Strict on purpose: a misspelt optional column ("tick size") would otherwise be
            // ignored silently and its default used.
            let known: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
            return Err(header_error(format!("unknown column '{raw}' (known: {})", known.join(", "))));
        };
        if positions[column as usize].replace(at).is_some() {
            return Err(header_error(format!("column '{}' appears twice", column.name())));
        }
    }
    if let Some(missing) = Column::ALL.into_iter().find(|c| c.required() && positions[*c as usize].is_none()) {
        return Err(header_error(format!("required column '{}' is missing", missing.name())));
    }
    Ok(Layout { positions, width: record.len() })
}

fn parse_row(layout: &Layout, record: &csv::StringRecord, origin: &str, line: u64) -> Result<Instrument, UniverseError> {
    let field_error = |column: Column, reason: &str| UniverseError::Field {
        origin: origin.to_string(),
        line,
        field: column.name(),
        value: layout.cell(record, column).to_string(),
        reason: reason.to_string(),
    };
    let text = |column: Column| -> Result<String, UniverseError> {
        let value = layout.cell(record, column);
        if value.is_empty() { Err(field_error(column, "must not be empty")) } else { Ok(value.to_string()) }
    };
    let number = |column: Column, default: Option<f64>, check: fn(f64) -> Result<(), &'static str>| {
        let value = layout.cell(record, column);
        let parsed = match (value.is_empty(), default) {
            (true, Some(default)) => return Ok(default),
            (true, None) => return Err(field_error(column, "must not be empty")),
            (false, _) => value.parse::<f64>().map_err(|_| field_error(column, "is not a number"))?,
        };
        check(parsed).map_err(|reason| field_error(column, reason))?;
        Ok(parsed)
    };

    let symbol = normalise_symbol(layout.cell(record, Column::Symbol)).map_err(|reason| field_error(Column::Symbol, reason.reason()))?;
    let name = text(Column::Name)?;
    let sector = text(Column::Sector)?;
    let price = number(Column::Price, None, check_positive)?;
    let volatility = number(Column::Volatility, None, check_volatility)?;
    let drift = number(Column::Drift, Some(DEFAULT_DRIFT), check_drift)?;
    let tick_size = number(Column::TickSize, Some(DEFAULT_TICK_SIZE), check_positive)?;
    if price < tick_size {
        return Err(field_error(Column::Price, "is below the tick size"));
    }
    Ok(Instrument { symbol, name, sector, price, volatility, drift, tick_size })
}

fn check_positive(value: f64) -> Result<(), &'static str> {
    if value.is_finite() && value > 0.0 { Ok(()) } else { Err("must be a number > 0") }
}

fn check_volatility(value: f64) -> Result<(), &'static str> {
    check_positive(value)?;
    if value > MAX_ANNUAL_FRACTION {
        return Err("is an annual fraction (0.30 = 30%) and must be <= 5");
    }
    Ok(())
}

fn check_drift(value: f64) -> Result<(), &'static str> {
    if !value.is_finite() || value.abs() > MAX_ANNUAL_FRACTION {
        return Err("must be an annual fraction (0.05 = 5%) between -5 and 5");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "symbol,name,sector,price,volatility,drift,tick_size\n";

    fn parse(text: &str) -> Result<Vec<Instrument>, UniverseError> {
        parse_universe(text, "test.csv")
    }

    fn error_text(text: &str) -> String {
        parse(text).expect_err("should fail").to_string()
    }

    #[test]
    fn default_universe_parses_and_is_sensible() {
        let universe = default_universe();
        assert!(universe.len() >= 90, "{} instruments", universe.len());
        let sectors: std::collections::HashSet<&str> = universe.iter().map(|i| i.sector.as_str()).collect();
        assert!(sectors.len() >= 11, "{sectors:?}");
        for i in &universe {
            assert!((0.15..=0.70).contains(&i.volatility), "{}: volatility {}", i.symbol, i.volatility);
            assert!(i.price > 1.0 && i.tick_size == 0.01, "{}", i.symbol);
        }
        assert!(universe.iter().any(|i| i.symbol == "BRK.B"));
    }

    #[test]
    fn parses_a_minimal_file_with_defaults_and_any_header_case() {
        let text = "Symbol,NAME,Sector,Price,Volatility\n aapl , Apple Inc. ,Tech,271.5,0.26\n";
        let universe = parse(text).unwrap();
        assert_eq!(
            universe,
            vec![Instrument {
                symbol: "AAPL".into(),
                name: "Apple Inc.".into(),
                sector: "Tech".into(),
                price: 271.5,
                volatility: 0.26,
                drift: DEFAULT_DRIFT,
                tick_size: DEFAULT_TICK_SIZE,
            }]
        );
    }

    #[test]
    fn empty_optional_cells_take_defaults_and_quoted_names_keep_commas() {
        let text = format!("{HEADER}BRK.B,\"Berkshire Hathaway, Class B\",Financials,506,0.16,,\n");
        let universe = parse(&text).unwrap();
        assert_eq!(universe[0].name, "Berkshire Hathaway, Class B");
        assert_eq!((universe[0].drift, universe[0].tick_size), (DEFAULT_DRIFT, DEFAULT_TICK_SIZE));
    }

    #[test]
    fn blank_lines_and_a_byte_order_mark_are_tolerated() {
        let text = format!("\u{feff}{HEADER}\nA,A,S,1,0.2,0.05,0.01\n\nB,B,S,2,0.2,0.05,0.01\n");
        assert_eq!(parse(&text).unwrap().len(), 2);
        // Line numbers in errors count the blank lines, so they match the editor's.
        let text = format!("{HEADER}\nA,A,S,1,0.2,0.05,0.01\n\nB,B,S,-2,0.2,0.05,0.01\n");
        assert!(error_text(&text).starts_with("test.csv line 5: price '-2'"), "{}", error_text(&text));
        let text = "symbol,name,sector,price,volatility\r\nA,A,S,1,0.2\r\n\r\nB,B,S,1\r\n";
        assert_eq!(error_text(text), "test.csv line 4: 4 fields, but the header has 5");
    }

    #[test]
    fn line_counter_counts_newlines_up_to_an_offset() {
        let mut lines = LineCounter::new("a\n\nb\r\n\r\nc");
        assert_eq!(lines.line_at(0), 1);
        assert_eq!(lines.line_at(1), 3, "blank line 2 is skipped");
        assert_eq!(lines.line_at(4), 5);
        assert_eq!(lines.line_at(100), 5);
    }

    #[test]
    fn field_errors_name_origin_line_field_and_value() {
        let text = format!("{HEADER}A,A,S,1,0.2,0.05,0.01\nB,B,S,1,-0.2,0.05,0.01\n");
        assert_eq!(error_text(&text), "test.csv line 3: volatility '-0.2' must be a number > 0");
        let text = format!("{HEADER}A,A,S,abc,0.2,0.05,0.01\n");
        assert_eq!(error_text(&text), "test.csv line 2: price 'abc' is not a number");
        let text = format!("{HEADER}A,A,S,10,30,0.05,0.01\n");
        assert!(error_text(&text).contains("volatility '30' is an annual fraction"));
        let text = format!("{HEADER}A,,S,10,0.3,0.05,0.01\n");
        assert_eq!(error_text(&text), "test.csv line 2: name '' must not be empty");
        let text = format!("{HEADER}A,A,S,0.001,0.3,0.05,0.01\n");
        assert_eq!(error_text(&text), "test.csv line 2: price '0.001' is below the tick size");
        let text = format!("{HEADER}A,A,S,1,0.3,0.05,0\n");
        assert_eq!(error_text(&text), "test.csv line 2: tick_size '0' must be a number > 0");
        let text = format!("{HEADER}A,A,S,1,0.3,NaN,0.01\n");
        assert!(error_text(&text).starts_with("test.csv line 2: drift 'NaN' must be"));
    }

    #[test]
    fn symbols_are_uppercased_and_checked() {
        let ok = format!("{HEADER}brk-b,A,S,1,0.2,0.05,0.01\n^gspc,B,S,1,0.2,0.05,0.01\neurusd=x,C,S,1,0.2,0.05,0.01\n");
        let symbols: Vec<String> = parse(&ok).unwrap().into_iter().map(|i| i.symbol).collect();
        assert_eq!(symbols, ["BRK-B", "^GSPC", "EURUSD=X"]);
        let text = format!("{HEADER}AB CD,A,S,1,0.2,0.05,0.01\n");
        assert_eq!(error_text(&text), "test.csv line 2: symbol 'AB CD' may only contain letters, digits and . - ^ =");
        let text = format!("{HEADER}ABCDEFGHIJKLMNOPQ,A,S,1,0.2,0.05,0.01\n");
        assert!(error_text(&text).contains("longer than 16"));
    }

    #[test]
    fn duplicate_symbols_name_both_lines_regardless_of_case() {
        let text = format!("{HEADER}AAPL,A,S,1,0.2,0.05,0.01\nMSFT,B,S,1,0.2,0.05,0.01\naapl,C,S,1,0.2,0.05,0.01\n");
        assert_eq!(error_text(&text), "test.csv line 4: symbol 'AAPL' is already defined on line 2");
    }

    #[test]
    fn header_problems_are_reported() {
        assert_eq!(error_text("symbol,name,sector,price\nA,A,S,1\n"), "test.csv line 1 (header): required column 'volatility' is missing");
        assert!(error_text("symbol,name,sector,price,volatility,tick size\n").contains("unknown column 'tick size'"));
        assert!(error_text("symbol,name,sector,price,volatility,Price\n").contains("column 'price' appears twice"));
    }

    #[test]
    fn wrong_field_counts_and_empty_files_fail() {
        let text = format!("{HEADER}A,A,S,1,0.2\n");
        assert_eq!(error_text(&text), "test.csv line 2: 5 fields, but the header has 7");
        assert_eq!(error_text(HEADER), "test.csv: no instruments (a header row and at least one data row are required)");
        assert!(matches!(parse(""), Err(UniverseError::Empty { .. })));
    }

    #[test]
    fn load_universe_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.csv");
        std::fs::write(&path, format!("{HEADER}A,A,S,1,0,0.05,0.01\n")).unwrap();
        let message = load_universe(&path).unwrap_err().to_string();
        assert!(message.starts_with(&format!("{} line 2: volatility '0'", path.display())), "{message}");
        let missing = dir.path().join("missing.csv");
        assert!(load_universe(&missing).unwrap_err().to_string().contains("missing.csv"));
    }
}
