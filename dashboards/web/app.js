// tickerfeed dashboard: wires the protocol client (js/connection.js) to the watchlist table
// (js/watchlist.js), the chart (js/chart.js), the time and sales (js/tape.js), the replay
// controls (js/replay.js) and the fault banner (js/faults.js).
//
// The charted symbol is subscribed at throttle 0 with the channels `quotes`, `trades` (the
// tape) and `bars:1s` or `bars:1m` (the chart, by its bar width); every other symbol with
// quotes only.
//
// State kept in localStorage: the watchlist, the selected symbol, the throttle, the chart bar
// widths and the theme (and `align`, only read: false turns the aligned watchlist off). Every
// REST request is made only while the WebSocket is up, so a server
// restart shows up in the console as WebSocket connection failures and nothing else.

import { Connection } from '/web/js/connection.js';
import { Watchlist } from '/web/js/watchlist.js';
import { Chart, resolutionFor } from '/web/js/chart.js';
import { Tape } from '/web/js/tape.js';
import { FaultBanner } from '/web/js/faults.js';
import { ReplayPanel } from '/web/js/replay.js';
import * as fmt from '/web/js/format.js';
import { askForToken, authFetch, withToken } from '/web/js/auth.js';

const DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'JPM', 'SPX.H'];
const THROTTLES = [100, 250, 1000, 5000];
const FEEDS_POLL_MS = 1000;

const $ = (id) => document.getElementById(id);

// --- preferences -------------------------------------------------------------------------------

const store = {
  get(key, fallback) {
    try { const v = localStorage.getItem(`tickerfeed.${key}`); return v === null ? fallback : JSON.parse(v); }
    catch { return fallback; }
  },
  set(key, value) {
    try { localStorage.setItem(`tickerfeed.${key}`, JSON.stringify(value)); } catch { /* private mode */ }
  },
};

const storedThrottle = store.get('throttle', 250);
const throttleMs = THROTTLES.includes(storedThrottle) ? storedThrottle : 250;

// --- components --------------------------------------------------------------------------------

const wsUrl = withToken(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
// The watchlist on the session's grid: one frame per tick (see docs/PROTOCOL.md, "Aligned
// delivery"); `tickerfeed.align` = false in localStorage turns it off.
const conn = new Connection({ throttleMs, url: wsUrl, align: store.get('align', true) !== false });
const watchlist = new Watchlist(document.querySelector('#watchlist tbody'), {
  onSelect: (symbol) => select(symbol),
  onRemove: (symbol) => removeSymbol(symbol),
});
const chart = new Chart($('chart'), $('chart-readout'));
const tape = new Tape($('tape'), $('tape-empty'));
const replay = new ReplayPanel($('replay'), {
  onStatus: (status, command) => {
    setFeed(status);
    // After a seek the event time jumps: the chart starts again from the history.
    if (command.action === 'seek' && symbolFeed(chart.symbol) === status.name) setTimeout(() => chart.reload(), 300);
  },
  announce: (text) => say(text),
});

const faults = new FaultBanner($('fault-banner'), {
  fetchJSON: (path) => getJSON(path),
  canPoll: () => conn.connected,
  session: () => conn.welcome?.session ?? null,
});

let knownSymbols = null;               // Map symbol -> {name, sector, feed, ...} from /api/symbols
const feeds = new Map();               // feed name -> last status

// --- helpers -----------------------------------------------------------------------------------

async function getJSON(path) {
  const res = await authFetch(path);
  if (!res.ok) {
    const answer = await res.json().catch(() => ({}));
    throw Object.assign(new Error(`${path}: ${res.status}`), { status: res.status, answer });
  }
  return res.json();
}

/** Polite announcement for screen readers (and a visible message under the add form). */
function say(text) {
  $('add-message').textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { $('add-message').textContent = ''; }, 5000);
}

function symbolFeed(symbol) { return knownSymbols?.get(symbol)?.feed ?? null; }
function isReplaySymbol(symbol) { return feeds.get(symbolFeed(symbol))?.kind === 'replay'; }

function persistWatchlist() { store.set('watchlist', watchlist.symbols); }

function updateCount() {
  const n = watchlist.symbols.length;
  $('watch-count').textContent = `(${n})`;
  $('empty').hidden = n > 0;
}

// --- symbols: add, remove, select ------------------------------------------------------------------

function addSymbols(symbols, { persist = true } = {}) {
  const added = symbols.filter((s) => watchlist.add(s));
  if (!added.length) return added;
  conn.subscribe(added);
  if (conn.connected) added.forEach(backfillSparkline);
  if (persist) persistWatchlist();
  updateCount();
  return added;
}

function removeSymbol(symbol) {
  if (!watchlist.remove(symbol)) return;
  conn.unsubscribe([symbol]);
  persistWatchlist();
  updateCount();
  say(`Removed ${symbol}`);
  if (chart.symbol === symbol) {
    const next = watchlist.symbols[0];
    if (next) select(next);
    else { chart.clear(); tape.show(null); $('chart-symbol').textContent = '–'; $('chart-name').textContent = ''; $('tape-symbol').textContent = ''; }
  }
}

function chartInterval(symbol) {
  return isReplaySymbol(symbol) ? store.get('interval.replay', 86_400_000) : store.get('interval.live', 5000);
}

/** The channels of the charted symbol: its bars at the chart's resolution, and its trades. */
function chartedChannels(intervalMs) {
  return ['quotes', 'trades', `bars:${resolutionFor(intervalMs)}`];
}

function select(symbol) {
  if (!watchlist.has(symbol)) return;
  // The charted symbol comes at full rate (throttle 0): its row, candle and tape move with
  // every change. The one charted before goes back to the common throttle and quotes only.
  if (chart.symbol && chart.symbol !== symbol && watchlist.has(chart.symbol)) conn.setSymbolOptions(chart.symbol, null);
  const intervalMs = chartInterval(symbol);
  conn.setSymbolOptions(symbol, { throttleMs: 0, channels: chartedChannels(intervalMs) });
  watchlist.select(symbol);
  store.set('selected', symbol);
  $('chart-interval').value = String(intervalMs);
  $('chart-symbol').textContent = symbol;
  $('tape-symbol').textContent = symbol;
  $('chart-name').textContent = knownSymbols?.get(symbol)?.name ?? '';
  chart.show(symbol, { intervalMs });
  tape.show(symbol);
}

async function backfillSparkline(symbol) {
  if (knownSymbols && !knownSymbols.has(symbol)) return;   // would be a 404
  try {
    const h = await getJSON(`/api/history/${encodeURIComponent(symbol)}?resolution=1s&limit=120`);
    watchlist.seedSparkline(symbol, h.bars.map((b) => b.close));
  } catch { /* the sparkline fills from live quotes */ }
}

async function loadSymbols() {
  const list = await getJSON('/api/symbols');
  knownSymbols = new Map(list.map((s) => [s.symbol, s]));
  watchlist.setMeta(list);
  const datalist = $('symbol-list');
  datalist.replaceChildren(...list.map((s) => new Option(s.name ? `${s.name} · ${s.feed}` : s.feed, s.symbol)));
  if (chart.symbol) $('chart-name').textContent = knownSymbols.get(chart.symbol)?.name ?? '';
  return list;
}

// --- feeds ---------------------------------------------------------------------------------------

function setFeed(status) {
  const before = feeds.get(status.name);
  feeds.set(status.name, status);
  watchlist.setFeedState(status.name, status.state);
  if (status.kind === 'replay') replay.update([status]);
  if (!before || before.state !== status.state) renderFeedBadges();
}

function renderFeedBadges() {
  const el = $('feed-badges');
  el.replaceChildren(...[...feeds.values()].map((f) => {
    const b = document.createElement('span');
    b.className = 'badge feed-badge';
    b.dataset.state = f.state;
    b.dataset.feed = f.name;
    b.textContent = `${f.name} ${f.state}`;
    b.title = `feed ${f.name} (${f.kind}): ${f.state}`;
    return b;
  }));
}

async function refreshFeeds() {
  try {
    const list = await getJSON('/api/feeds');
    list.forEach(setFeed);
  } catch { /* next poll */ }
}

// Replay clocks move continuously but `feed` messages only come on state changes: poll while
// there is a replay feed, the socket is up and the page is visible.
setInterval(() => {
  if (conn.connected && replay.names.length && !document.hidden) refreshFeeds();
}, FEEDS_POLL_MS);

// --- connection events ---------------------------------------------------------------------------

let firstWelcome = true;

conn.addEventListener('instance', (e) => {
  if (e.detail.previous) {
    // The server restarted: seq numbering starts again, and its history too. The tape's
    // trades are of the old numbering (the connection sends no `since` for them).
    watchlist.resetSeries();
    tape.clear();
    say('The server restarted: data reloaded');
  }
});

conn.addEventListener('welcome', async (e) => {
  const w = e.detail;
  $('server-info').textContent = `${w.server} · protocol ${w.protocol} · instance ${w.instance}${w.session ? ` · session ${w.session}` : ''}`;
  faults.setEnabled(w.faults === true);
  const restarted = !firstWelcome && conn.welcomeInstance !== w.instance;
  conn.welcomeInstance = w.instance;
  const wasFirst = firstWelcome;
  firstWelcome = false;
  await refreshFeeds();
  if (restarted) {
    try { await loadSymbols(); } catch { /* keep the old list */ }
  }
  if (wasFirst || restarted) watchlist.symbols.forEach(backfillSparkline);
  // Bars that closed while the socket was down never stream again: backfill once more. (The
  // tape needs nothing: its trades resume from `since`.)
  if (!wasFirst) chart.reload();
});

conn.addEventListener('quotes', (e) => watchlist.push(e.detail.quotes));
conn.addEventListener('bars', (e) => chart.onBars(e.detail));
conn.addEventListener('trades', (e) => tape.onTrades(e.detail.trades, e.detail.recovered));
conn.addEventListener('gap', (e) => { if (e.detail.channel === 'trades') tape.onGap(e.detail); });

conn.addEventListener('subscribed', (e) => {
  for (const r of e.detail.rejected ?? []) watchlist.markUnavailable(r.symbol, r.code);
});

conn.addEventListener('feed', (e) => setFeed(e.detail));

conn.addEventListener('error', (e) => {
  if (e.detail.code === 'token_expired') askForToken('Your token expired: paste a new one.');
  say(`Server: ${e.detail.message}`);
});

conn.addEventListener('state', () => renderStatus());

// --- status bar ----------------------------------------------------------------------------------

function renderStatus() {
  const el = $('status');
  const state = conn.state;
  el.dataset.state = state;
  let text;
  if (state === 'connected') {
    const paused = [...feeds.values()].filter((f) => f.state === 'paused').map((f) => f.name);
    text = paused.length ? `connected · ${paused.join(', ')} paused` : 'connected';
  } else if (state === 'reconnecting') {
    const wait = conn.retryAt ? Math.max(0, conn.retryAt - performance.now()) : 0;
    text = wait > 300 ? `connection lost · retrying in ${Math.ceil(wait / 1000)} s` : 'connection lost · reconnecting…';
  } else if (state === 'offline') {
    text = 'offline';
  } else {
    text = 'connecting…';
  }
  const t = $('status-text');
  if (t.textContent !== text) t.textContent = text;
}

let lastTick = performance.now();
setInterval(() => {
  const now = performance.now();
  const secs = (now - lastTick) / 1000;
  lastTick = now;
  $('msg-rate').textContent = Math.round(conn.stats.messages / secs).toLocaleString('en-US');
  $('quote-rate').textContent = Math.round(conn.stats.quotes / secs).toLocaleString('en-US');
  conn.stats.messages = 0;
  conn.stats.quotes = 0;
  renderStatus();
  // Tab title: the charted symbol and its price.
  const q = watchlist.rows.get(chart.symbol)?.quote;
  document.title = q ? `${chart.symbol} ${fmt.price(q.last, watchlist.rows.get(chart.symbol).decimals)} · tickerfeed` : 'tickerfeed';
}, 1000);

// Age of the newest quote, from its server publish time `pt` (µs) and the server clock.
setInterval(() => {
  const pt = conn.stats.newestPt;
  const el = $('quote-age');
  if (!pt) { el.textContent = '–'; return; }
  const ageMs = conn.serverNow() - pt / 1000;
  el.textContent = fmt.age(ageMs);
  el.dataset.stale = ageMs > 5000 ? 'true' : 'false';
}, 250);

// --- controls ------------------------------------------------------------------------------------

$('throttle').value = String(throttleMs);
$('throttle').addEventListener('change', (e) => {
  const ms = Number(e.target.value);
  conn.setThrottle(ms);
  store.set('throttle', ms);
  say(`Throttle ${e.target.selectedOptions[0].textContent}`);
});

$('chart-interval').addEventListener('change', (e) => {
  const ms = Number(e.target.value);
  if (!chart.symbol) return;
  store.set(isReplaySymbol(chart.symbol) ? 'interval.replay' : 'interval.live', ms);
  // Another resolution (1 s ↔ 1 min bars) means another bars channel.
  if (resolutionFor(ms) !== chart.resolution) conn.setSymbolOptions(chart.symbol, { throttleMs: 0, channels: chartedChannels(ms) });
  chart.show(chart.symbol, { intervalMs: ms });
});

$('add-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('add-symbol');
  const symbol = input.value.trim().toUpperCase();
  if (!symbol) return;
  if (knownSymbols && !knownSymbols.has(symbol)) {
    say(`${symbol} is not a symbol of this server`);
    return;
  }
  if (watchlist.has(symbol)) {
    say(`${symbol} is already in the watchlist`);
    watchlist.focus(symbol);
    return;
  }
  addSymbols([symbol]);
  input.value = '';
  say(`Added ${symbol}`);
  if (!chart.symbol) select(symbol);
});

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $('theme-toggle').setAttribute('aria-pressed', String(theme === 'light'));
  watchlist.themeChanged();
  chart.readColors();
}
$('theme-toggle').addEventListener('click', () => {
  const theme = document.documentElement.dataset.theme === 'light' ? 'dark' : 'light';
  store.set('theme', theme);
  localStorage.setItem('tickerfeed.theme', theme);   // read raw by the inline script in <head>
  applyTheme(theme);
});
$('theme-toggle').setAttribute('aria-pressed', String(document.documentElement.dataset.theme === 'light'));

// --- start ---------------------------------------------------------------------------------------

async function start() {
  const saved = store.get('watchlist', null);
  let list = null;
  try {
    list = await loadSymbols();
  } catch (e) {
    // A server that requires a token: nothing can be read without one.
    if (e.status === 401) {
      askForToken(e.answer?.message ?? 'Sign in with a token.');
      return;
    }
    /* server down: the connection retries */
  }
  let initial;
  if (Array.isArray(saved)) {
    initial = saved.filter((s) => typeof s === 'string');
  } else {
    // First visit: the defaults this server has.
    initial = list ? DEFAULT_SYMBOLS.filter((s) => knownSymbols.has(s)) : DEFAULT_SYMBOLS.slice(0, -1);
    if (list && !initial.length) initial = list.slice(0, 8).map((s) => s.symbol);
  }
  addSymbols(initial, { persist: Array.isArray(saved) });
  if (list) for (const s of initial) if (!knownSymbols.has(s)) watchlist.markUnavailable(s, 'unknown_symbol');
  updateCount();
  if (list) await refreshFeeds();   // so a replayed symbol opens with daily bars
  const selected = store.get('selected', null);
  const first = watchlist.has(selected) ? selected : watchlist.symbols[0];
  if (first) select(first);
  conn.start();
}

start();

// For the curious (and the end-to-end tests): the live objects.
window.tickerfeed = { conn, watchlist, chart, tape, faults, replay, feeds };
