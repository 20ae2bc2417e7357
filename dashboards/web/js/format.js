// Number and time formatting shared by the watchlist and the chart. Formatters are built once:
// `Intl.NumberFormat` construction is slow, formatting with a built one is fast.

const priceFormats = new Map();

/**
 * Decimals to show for a price: what it carries (replayed FX keeps 5, stocks use cents), at
 * least 2, and no more than its size warrants (an index at 1,440 needs no 5 decimals).
 */
export function decimalsOf(value) {
  if (!Number.isFinite(value)) return 2;
  const a = Math.abs(value);
  const cap = a >= 100 ? 2 : a >= 10 ? 3 : 5;
  for (let d = 2; d < cap; d++) {
    if (Math.abs(Math.round(value * 10 ** d) - value * 10 ** d) < 1e-6) return d;
  }
  return cap;
}

export function price(value, decimals = 2) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  let f = priceFormats.get(decimals);
  if (!f) {
    f = new Intl.NumberFormat('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    priceFormats.set(decimals, f);
  }
  return f.format(value);
}

export function signedPrice(value, decimals = 2) {
  if (!Number.isFinite(value)) return '–';
  return (value > 0 ? '+' : value < 0 ? '−' : '') + price(Math.abs(value), decimals);
}

export function percent(value) {
  if (!Number.isFinite(value)) return '–';
  return (value > 0 ? '+' : value < 0 ? '−' : '') + Math.abs(value).toFixed(2) + '%';
}

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 2 });
export function volume(value) {
  return Number.isFinite(value) ? compact.format(value) : '–';
}

const pad = (n) => String(n).padStart(2, '0');

/** HH:MM:SS in local time. */
export function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/**
 * A trade's time: HH:MM:SS.mmm in local time for live trades (several print within a second);
 * YYYY-MM-DD HH:MM in UTC for replayed history, whose days matter more than its milliseconds.
 */
export function tradeTime(ms, nowMs = Date.now()) {
  if (Math.abs(nowMs - ms) > 36 * 3600_000) return new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
  return `${clock(ms)}.${String(new Date(ms).getMilliseconds()).padStart(3, '0')}`;
}

/** YYYY-MM-DD in UTC (replayed sessions are UTC calendar days). */
export function isoDate(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

/** A quote's event time: the time of day for live quotes, the date for replayed history. */
export function eventTime(ms, nowMs = Date.now()) {
  return Math.abs(nowMs - ms) > 36 * 3600_000 ? isoDate(ms) : clock(ms);
}

/** A duration for the status bar: 120 ms, 3.4 s, 2 min. */
export function age(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 3600_000)} h`;
}
