// Shared core of the benchmark peers: CLI, tick CSV loading, the replay clock, per-symbol
// latest quotes (serialised once), and per-client subscriptions with throttling and
// conflation. Each server only adapts a transport to the `Session` below.
//
// Throttle rules per client and symbol (the same as tickerfeed's):
// - at most one delivery per throttle interval (a snapshot counts as one);
// - the first change after a quiet period goes out at once;
// - the latest value always goes out eventually (a timer at the end of the interval);
// - seq only increases; a client holds no quotes, only `lastSentSeq` per symbol, and reads the
//   symbol's latest quote when it builds a frame: that is the conflation;
// - everything due for a client at one moment goes in one frame (split at maxFrameBytes);
// - aligned (`"align": true`, issue 16): deliveries fall on a grid of the throttle anchored at
//   the session's first subscribe — a change goes out at the first tick at or after it, once
//   per tick; snapshots are immediate and do not move the grid;
// - a backed-up socket gets nothing; its symbols stay dirty and are retried later.

import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';

export const LIMITS = Object.freeze({
  defaultThrottleMs: 250,
  minThrottleMs: 0,
  maxThrottleMs: 60_000,
  maxSymbols: 1000,
  maxFrameBytes: 16 * 1024,
  backpressureBytes: 64 * 1024,
  retryMs: 5,
});

const QUOTES_PREFIX = '{"type":"quotes","quotes":[';
const SNAPSHOT_PREFIX = '{"type":"quotes","snapshot":true,"quotes":[';
const FRAME_SUFFIX = ']}';
const SYMBOL_SYNTAX = /^[A-Z0-9.\-^=]{1,16}$/;

// `pt` is on the wall clock, as tickerfeed's: the load generator compares it with its own wall
// clock. performance.now() is monotonic with sub-millisecond steps, but `performance.timeOrigin
// + performance.now()` does not follow the wall clock once the process has started (a bench run
// saw every peer's latencies 57–70 ms high for minutes while tickerfeed's, read from the wall
// clock, were not); Date.now() follows it in 1 ms steps. So the monotonic reading is re-anchored
// to the wall clock every second, on the largest Date.now() − performance.now() seen in the
// second before (Date.now() truncates: the largest is the closest).
const clock = { base: Date.now() - performance.now(), max: -Infinity, at: performance.now() };

/** Wall-clock microseconds since the epoch at `at` (a performance.now() reading). */
export function nowMicros(at = performance.now()) {
  const sample = Date.now() - performance.now();
  if (sample > clock.max) clock.max = sample;
  if (at - clock.at >= 1000) {
    clock.base = clock.max;
    clock.max = -Infinity;
    clock.at = at;
  }
  return Math.round((clock.base + at) * 1000);
}

/** `--port 9001 --file ticks.csv --rate 5000 [--paused] [--host 0.0.0.0]` plus peer extras. */
export function parseArgs(argv = process.argv.slice(2), extra = {}) {
  const opts = { port: 9001, host: '0.0.0.0', file: null, rate: 5000, paused: false, ...extra };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) die(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--port': opts.port = Number(value()); break;
      case '--host': opts.host = value(); break;
      case '--file': opts.file = value(); break;
      case '--rate': opts.rate = Number(value()); break;
      case '--paused': opts.paused = true; break;
      default: {
        const key = arg.startsWith('--') ? arg.slice(2).replace(/-(\w)/g, (_, c) => c.toUpperCase()) : null;
        if (key && key in extra) {
          opts[key] = typeof extra[key] === 'boolean' ? true : value();
        } else {
          die(`unknown argument ${arg}`);
        }
      }
    }
  }
  if (!opts.file) die('--file is required');
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) die('--port must be 0..65535');
  if (!Number.isFinite(opts.rate) || opts.rate < 0) die('--rate must be a number >= 0');
  return opts;
}

export function die(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

export function randomInstance() {
  return randomBytes(8).toString('hex');
}

export function welcomeMessage(server, instance) {
  return {
    type: 'welcome',
    protocol: 1,
    server,
    instance,
    throttle_ms: LIMITS.defaultThrottleMs,
    min_throttle_ms: LIMITS.minThrottleMs,
    max_symbols: LIMITS.maxSymbols,
    max_frame_bytes: LIMITS.maxFrameBytes,
  };
}

/**
 * Loads the whole tick CSV (`timestamp,symbol,price,size,bid,ask,volume`, columns in any
 * order) into column arrays.
 */
export function loadTicks(path) {
  const text = readFileSync(path, 'utf8');
  const lines = text.split(/\r?\n/);
  const header = lines[0].split(',').map((h) => h.trim().toLowerCase());
  const col = {};
  for (const name of ['timestamp', 'symbol', 'price', 'size', 'bid', 'ask', 'volume']) {
    col[name] = header.indexOf(name);
    if (col[name] < 0) throw new Error(`${path}: header lacks column '${name}'`);
  }
  const capacity = lines.length;
  const symIdx = new Uint32Array(capacity);
  const ts = new Float64Array(capacity);
  const price = new Float64Array(capacity);
  const size = new Float64Array(capacity);
  const bid = new Float64Array(capacity);
  const ask = new Float64Array(capacity);
  const volume = new Float64Array(capacity);
  const symbols = [];
  const index = new Map();
  let n = 0;
  let skipped = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line.length === 0) continue;
    const f = line.split(',');
    const sym = (f[col.symbol] ?? '').trim().toUpperCase();
    const row = [Number(f[col.timestamp]), Number(f[col.price]), Number(f[col.size]), Number(f[col.bid]), Number(f[col.ask]), Number(f[col.volume])];
    if (!SYMBOL_SYNTAX.test(sym) || row.some((v) => !Number.isFinite(v))) {
      skipped++;
      continue;
    }
    let s = index.get(sym);
    if (s === undefined) {
      s = symbols.length;
      symbols.push(sym);
      index.set(sym, s);
    }
    symIdx[n] = s;
    [ts[n], price[n], size[n], bid[n], ask[n], volume[n]] = row;
    n++;
  }
  if (skipped > 0) process.stderr.write(`warning: ${path}: skipped ${skipped} malformed rows\n`);
  if (n === 0) throw new Error(`${path}: no rows`);
  return { count: n, symbols, index, symIdx, ts, price, size, bid, ask, volume };
}

/**
 * Replays the ticks at `rate` rows per second of wall clock, looping, from one timer loop that
 * publishes every row due since the start in one batch. Keeps per symbol the latest quote (as a
 * JSON string, and as an object when `keepObjects`) and its seq. `paused` (--paused) holds it
 * until `resume()`: the bench connects its clients to a quiet server, then starts the feed.
 */
export class Feed {
  constructor(ticks, { rate, paused = false, keepObjects = false }) {
    this.ticks = ticks;
    this.rate = rate;
    this.paused = paused;
    this.keepObjects = keepObjects;
    const n = ticks.symbols.length;
    this.symbols = ticks.symbols;
    this.index = ticks.index;
    this.seq = new Float64Array(n);
    this.json = new Array(n).fill(null);
    this.objects = keepObjects ? new Array(n).fill(null) : null;
    this.jsonHead = ticks.symbols.map((s) => `{"symbol":${JSON.stringify(s)},"seq":`);
    this.stamp = new Uint32Array(n); // batch number that last touched a symbol
    this.batch = 0;
    this.published = 0;
    this.startedAt = 0;
    this.timer = null;
    this.onBatch = () => {};
    this.tick = this.tick.bind(this);
  }

  start() {
    if (this.rate <= 0 || this.paused || this.timer !== null) return;
    // Anchored so that the rows already published count as done: a resume carries on from
    // where the pause stopped, at the same rate, without a catch-up burst.
    this.startedAt = performance.now() - (this.published * 1000) / this.rate;
    this.timer = setTimeout(this.tick, 0);
  }

  pause() {
    this.paused = true;
    this.stop();
  }

  resume() {
    this.paused = false;
    this.start();
  }

  get state() {
    return this.rate > 0 && !this.paused ? 'running' : 'paused';
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  tick() {
    const now = performance.now();
    const due = Math.floor(((now - this.startedAt) * this.rate) / 1000);
    if (due > this.published) {
      const t = this.ticks;
      const pt = nowMicros(now);
      const batch = ++this.batch;
      const changed = [];
      for (let i = this.published; i < due; i++) {
        const r = i % t.count;
        const s = t.symIdx[r];
        const seq = ++this.seq[s];
        const json = `${this.jsonHead[s]}${seq},"ts":${t.ts[r]},"pt":${pt},"last":${t.price[r]},"bid":${t.bid[r]},"ask":${t.ask[r]},"size":${t.size[r]},"volume":${t.volume[r]}}`;
        this.json[s] = json;
        if (this.keepObjects) {
          this.objects[s] = { symbol: this.symbols[s], seq, ts: t.ts[r], pt, last: t.price[r], bid: t.bid[r], ask: t.ask[r], size: t.size[r], volume: t.volume[r] };
        }
        if (this.stamp[s] !== batch) {
          this.stamp[s] = batch;
          changed.push(s);
        }
      }
      this.published = due;
      this.onBatch(changed, now);
    }
    // Sleep until the next row is due (timers have 1 ms granularity; a batch takes all due).
    const nextAt = this.startedAt + ((this.published + 1) * 1000) / this.rate;
    this.timer = setTimeout(this.tick, Math.max(0, nextAt - performance.now()));
  }
}

/**
 * Builds `quotes` frames by splicing pre-serialised quotes, splitting before a frame would pass
 * `maxFrameBytes` (a single oversized quote still goes alone). Calls `emit(frame, quotes)` where
 * `quotes` are the symbol indexes in the frame.
 */
class FrameBuilder {
  constructor(prefix, maxBytes, emit) {
    this.prefix = prefix;
    this.maxBytes = maxBytes;
    this.emit = emit;
    this.parts = [];
    this.syms = [];
    this.length = prefix.length + FRAME_SUFFIX.length;
  }

  add(json, sym) {
    if (this.parts.length > 0 && this.length + 1 + json.length > this.maxBytes) this.finish();
    this.parts.push(json);
    this.syms.push(sym);
    this.length += json.length + (this.parts.length > 1 ? 1 : 0);
  }

  finish() {
    if (this.parts.length === 0) return;
    this.emit(this.prefix + this.parts.join(',') + FRAME_SUFFIX, this.syms);
    this.parts = [];
    this.syms = [];
    this.length = this.prefix.length + FRAME_SUFFIX.length;
  }
}

/**
 * Fan-out: per symbol the sessions subscribed to it; on each published batch, marks the symbols
 * dirty for those sessions and schedules one flush per event-loop turn.
 */
/** The first grid instant at or after `t` (ms): anchor + k·period, k ≥ 0. */
function gridCeil(anchor, period, t) {
  return t <= anchor ? anchor : anchor + Math.ceil((t - anchor) / period) * period;
}

/** The last grid instant at or before `t`. */
function gridFloor(anchor, period, t) {
  return t <= anchor ? anchor : anchor + Math.floor((t - anchor) / period) * period;
}

export class Hub {
  constructor(feed) {
    this.feed = feed;
    this.subscribers = feed.symbols.map(() => new Map()); // symbol → Map<Session, Subscription>
    this.due = new Set();
    this.flushScheduled = false;
    this.sessions = new Set();
    this.flushAll = this.flushAll.bind(this);
    feed.onBatch = (changed, now) => this.onBatch(changed, now);
  }

  onBatch(changed, now) {
    for (const s of changed) {
      for (const [session, sub] of this.subscribers[s]) {
        if (sub.align && sub.throttle > 0 && !session.dirty.has(s)) {
          // A first change since the last delivery: due at the first tick from now.
          sub.nextAllowed = Math.max(sub.nextAllowed, gridCeil(session.anchor, sub.throttle, now));
        }
        session.dirty.add(s);
        if (now >= sub.nextAllowed) {
          this.due.add(session);
        } else {
          session.armTimer(sub.nextAllowed, now);
        }
      }
    }
    if (this.due.size > 0) this.scheduleFlush();
  }

  scheduleFlush() {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flushAll);
  }

  flushAll() {
    this.flushScheduled = false;
    const now = performance.now();
    const due = this.due;
    this.due = new Set();
    for (const session of due) session.flush(now);
  }

  /** Called by a transport when a socket's send buffer drained. */
  wake(session) {
    if (session.dirty.size > 0 && !session.closed) {
      this.due.add(session);
      this.scheduleFlush();
    }
  }
}

/**
 * One client connection. The transport provides:
 *   send(msg)            a control message object ({type:...})
 *   sendQuotes(frame, syms, snapshot)  a pre-built v1 quotes frame (JSON string)
 *   bufferedAmount()     bytes queued on the socket
 *   cork(fn)             optional: run fn with the socket corked
 *   quotesPrefix, snapshotPrefix  optional: how a quotes frame's JSON starts, live and
 *                        snapshot (default: v1's `{"type":"quotes",...`; the Socket.IO peer's
 *                        payloads have no `type`)
 */
export class Session {
  constructor(hub, transport) {
    this.hub = hub;
    this.feed = hub.feed;
    this.t = transport;
    this.quotesPrefix = transport.quotesPrefix ?? QUOTES_PREFIX;
    this.snapshotPrefix = transport.snapshotPrefix ?? SNAPSHOT_PREFIX;
    this.subs = new Map(); // symbol index → { throttle, align, lastSentSeq, nextAllowed }
    this.anchor = undefined; // the aligned grids' anchor: the first subscribe (performance.now())
    this.dirty = new Set();
    this.timer = null;
    this.timerAt = Infinity;
    this.closed = false;
    this.onTimer = this.onTimer.bind(this);
    hub.sessions.add(this);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = null;
    for (const s of this.subs.keys()) this.hub.subscribers[s].delete(this);
    this.subs.clear();
    this.dirty.clear();
    this.hub.due.delete(this);
    this.hub.sessions.delete(this);
  }

  armTimer(at, now) {
    if (this.timer !== null && this.timerAt <= at) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(at - now)));
  }

  onTimer() {
    this.timer = null;
    this.timerAt = Infinity;
    if (!this.closed) this.flush(performance.now());
  }

  /** Sends one frame (or a few, when over maxFrameBytes) of every dirty symbol that is due. */
  flush(now) {
    if (this.closed || this.dirty.size === 0) return;
    if (this.t.bufferedAmount() > LIMITS.backpressureBytes) {
      // Backed up: keep conflating; retry on drain, on the next publish, or after retryMs.
      this.armTimer(now + LIMITS.retryMs, now);
      return;
    }
    if (this.t.cork) {
      this.t.cork(() => this.build(now));
    } else {
      this.build(now);
    }
  }

  build(now) {
    const feed = this.feed;
    const frames = new FrameBuilder(this.quotesPrefix, LIMITS.maxFrameBytes, (frame, syms) => this.t.sendQuotes(frame, syms, false));
    let wakeAt = Infinity;
    for (const s of this.dirty) {
      const sub = this.subs.get(s);
      const seq = feed.seq[s];
      if (sub === undefined || seq <= sub.lastSentSeq) {
        this.dirty.delete(s);
        continue;
      }
      if (now < sub.nextAllowed) {
        if (sub.nextAllowed < wakeAt) wakeAt = sub.nextAllowed;
        continue;
      }
      frames.add(feed.json[s], s);
      sub.lastSentSeq = seq;
      sub.nextAllowed = this.nextAfter(sub, now);
      this.dirty.delete(s);
    }
    frames.finish();
    if (wakeAt !== Infinity) this.armTimer(wakeAt, now);
  }

  /** When a symbol delivered at `now` may go out next: a throttle later, or the next tick. */
  nextAfter(sub, now) {
    return sub.align && sub.throttle > 0 ? gridFloor(this.anchor, sub.throttle, now) + sub.throttle : now + sub.throttle;
  }

  /** Handles one client message, already parsed (ws, uWS) or rebuilt from an event (Socket.IO). */
  handle(msg) {
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      return this.error(undefined, 'bad_request', 'a message must be a JSON object');
    }
    const id = msg.id === null ? undefined : msg.id;
    if (id !== undefined && typeof id !== 'number' && !(typeof id === 'string' && id.length <= 64)) {
      return this.error(undefined, 'bad_request', "field 'id' must be a number or a string of at most 64 characters");
    }
    switch (msg.op) {
      case 'subscribe': return this.subscribe(id, msg);
      case 'unsubscribe': return this.unsubscribe(id, msg);
      case 'list': return this.t.send(withId({ type: 'subscriptions' }, id, { symbols: this.symbolList() }));
      case 'ping': return this.t.send(withId({ type: 'pong' }, id, { ts: Date.now() }));
      case undefined: return this.error(id, 'bad_request', "missing field 'op'");
      default:
        return this.error(id, 'bad_request', `unknown op '${String(msg.op).slice(0, 32)}'; expected one of: subscribe, unsubscribe, list, ping`);
    }
  }

  handleText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      return this.error(undefined, 'bad_request', `malformed JSON: ${e.message}`);
    }
    this.handle(msg);
  }

  error(id, code, message) {
    this.t.send(withId({ type: 'error' }, id, { code, message }));
  }

  symbolList() {
    return Array.from(this.subs.keys(), (s) => this.feed.symbols[s]);
  }

  subscribe(id, msg) {
    const symbols = msg.symbols;
    if (!Array.isArray(symbols) || symbols.some((s) => typeof s !== 'string')) {
      return this.error(id, 'bad_request', "op 'subscribe': field 'symbols' must be an array of strings");
    }
    let throttle = LIMITS.defaultThrottleMs;
    if (msg.throttle_ms !== undefined && msg.throttle_ms !== null) {
      if (!Number.isInteger(msg.throttle_ms) || msg.throttle_ms < 0) {
        return this.error(id, 'bad_request', "op 'subscribe': field 'throttle_ms' must be a non-negative integer (milliseconds)");
      }
      throttle = Math.min(Math.max(msg.throttle_ms, LIMITS.minThrottleMs), LIMITS.maxThrottleMs);
    }
    let snapshot = true;
    if (msg.snapshot !== undefined && msg.snapshot !== null) {
      if (typeof msg.snapshot !== 'boolean') return this.error(id, 'bad_request', "op 'subscribe': field 'snapshot' must be true or false");
      snapshot = msg.snapshot;
    }
    let align = false;
    if (msg.align !== undefined && msg.align !== null) {
      if (typeof msg.align !== 'boolean') return this.error(id, 'bad_request', "op 'subscribe': field 'align' must be true or false");
      align = msg.align;
    }
    const rejected = [];
    const wanted = [];
    for (const raw of symbols) {
      const sym = raw.trim().toUpperCase();
      const s = this.feed.index.get(sym);
      if (s !== undefined) {
        if (!wanted.includes(s)) wanted.push(s);
      } else if (!rejected.some((r) => r.symbol === sym)) {
        rejected.push({ symbol: sym.slice(0, 32), code: SYMBOL_SYNTAX.test(sym) ? 'unknown_symbol' : 'invalid_symbol' });
      }
    }
    const added = wanted.filter((s) => !this.subs.has(s));
    if (this.subs.size + added.length > LIMITS.maxSymbols) {
      return this.error(id, 'too_many_symbols', `subscribing would make ${this.subs.size + added.length} symbols; the limit is ${LIMITS.maxSymbols} per session`);
    }
    const now = performance.now();
    if (this.anchor === undefined) this.anchor = now;
    const snap = [];
    for (const s of wanted) {
      const existing = this.subs.get(s);
      if (existing) {
        existing.throttle = throttle; // applies from the next delivery on
        existing.align = align;
        continue;
      }
      const current = this.feed.seq[s];
      const sub = { throttle, align, lastSentSeq: snapshot ? 0 : current, nextAllowed: now };
      this.subs.set(s, sub);
      this.hub.subscribers[s].set(this, sub);
      if (snapshot && current > 0) {
        snap.push(s);
        sub.lastSentSeq = current;
        sub.nextAllowed = this.nextAfter(sub, now); // the snapshot counts as a delivery
      }
    }
    this.t.send(withId({ type: 'subscribed' }, id, { throttle_ms: throttle, align, symbols: this.symbolList(), rejected }));
    if (snapshot) {
      const frames = new FrameBuilder(this.snapshotPrefix, LIMITS.maxFrameBytes, (frame, syms) => this.t.sendQuotes(frame, syms, true));
      for (const s of snap) frames.add(this.feed.json[s], s);
      if (snap.length === 0) {
        this.t.sendQuotes(this.snapshotPrefix + FRAME_SUFFIX, [], true);
      } else {
        frames.finish();
      }
    }
  }

  unsubscribe(id, msg) {
    const symbols = msg.symbols;
    if (!Array.isArray(symbols) || symbols.some((s) => typeof s !== 'string')) {
      return this.error(id, 'bad_request', "op 'unsubscribe': field 'symbols' must be an array of strings");
    }
    for (const raw of symbols) {
      const s = this.feed.index.get(raw.trim().toUpperCase());
      if (s === undefined || !this.subs.has(s)) continue;
      this.subs.delete(s);
      this.dirty.delete(s);
      this.hub.subscribers[s].delete(this);
    }
    this.t.send(withId({ type: 'unsubscribed' }, id, { symbols: this.symbolList() }));
  }
}

function withId(head, id, rest) {
  if (id !== undefined) head.id = id;
  return Object.assign(head, rest);
}

/** Prints `listening <port>` and wires SIGTERM/SIGINT to `shutdown`. */
/** The path of tickerfeed's replay feed control, which the bench posts to every server. */
export const CONTROL_PATH = '/api/feeds/replay/control';

/**
 * The subset of tickerfeed's `POST /api/feeds/{name}/control` the bench uses:
 * `{"action":"pause"}` and `{"action":"resume"}`. Returns [HTTP status, JSON body].
 */
export function feedControl(feed, text) {
  let action;
  try {
    action = JSON.parse(text)?.action;
  } catch {
    return [400, { error: 'bad_request', message: 'the body must be a JSON object' }];
  }
  if (action === 'pause') feed.pause();
  else if (action === 'resume') feed.resume();
  else return [400, { error: 'bad_request', message: "'action' must be 'pause' or 'resume' (this peer supports no other)" }];
  return [200, { name: 'replay', kind: 'replay', state: feed.state, quotes_published: feed.published }];
}

/** A `node:http` request handler: the feed control, 404 for anything else. */
export function httpHandler(feed) {
  return (req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.url !== CONTROL_PATH) return reply(404, { error: 'not_found' });
    if (req.method !== 'POST') return reply(405, { error: 'method_not_allowed' });
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      text += chunk;
    });
    req.on('end', () => reply(...feedControl(feed, text)));
  };
}

export function announce(port, shutdown) {
  process.stdout.write(`listening ${port}\n`);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    Promise.resolve()
      .then(shutdown)
      .catch((e) => process.stderr.write(`shutdown: ${e?.stack ?? e}\n`))
      .finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
