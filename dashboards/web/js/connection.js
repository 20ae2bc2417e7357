// The WebSocket side of the tickerfeed protocol (v1), as a reusable client.
//
// - One socket at ws(s)://<page host>/ws; JSON text frames.
// - Reconnects after any drop with exponential backoff and full jitter (0.5 s doubling to 8 s),
//   and resubscribes every wanted symbol at the wanted throttle and channels once `welcome`
//   arrives.
// - One throttle for every symbol (the selector), and per-symbol overrides of the throttle and
//   the channels (the charted symbol: throttle 0, `quotes`, `trades` and `bars:1s|1m`); each
//   distinct (throttle, channels) pair is one `subscribe`, since re-subscribing changes them.
//   Channels are always named, so a symbol leaving the chart goes back to quotes only. With
//   `align`, the symbols at a throttle above 0 are delivered together on the session's grid
//   (protocol "align": one frame per tick instead of one per symbol that changed).
// - Trades are never conflated, so their seqs can be resumed: the last trade seq seen per
//   symbol goes out as `since` whenever a symbol with the `trades` channel is (re)subscribed,
//   and the server sends the backlog (`recovered`) or a `gap` saying which seqs are lost. Trades
//   at or below that seq are dropped (a backlog overlapping what already arrived).
// - Tracks the server `instance` from `welcome`: a new instance means the server restarted and
//   every symbol's `seq` starts again at 1, so per-symbol seq tracking is reset (event `instance`)
//   and no `since` is sent: the old instance's trade seqs mean nothing to the new one.
// - Drops quotes whose seq is not above the last one seen for that symbol (duplicates after a
//   resubscribe snapshot); gaps are normal (the server merges updates under throttling).
// - Heartbeat: an application `ping` every 10 s; no message for 25 s closes the socket so a
//   half-open connection is noticed. A paused feed sends no quotes but the pongs still flow, so
//   it is never mistaken for a dead connection.
// - Estimates the server-clock offset from ping/pong so "age of the newest quote" (from `pt`,
//   µs of server publish time) is right even when the two clocks differ.
//
// Events (EventTarget, `event.detail`):
//   state     {state: 'connecting'|'connected'|'reconnecting'|'offline', retryIn?: ms}
//   welcome   the welcome message
//   instance  {instance, previous}   (the server restarted; fired before `welcome`)
//   quotes    {quotes: Quote[], snapshot: boolean}   (already de-duplicated by seq)
//   trades    {trades: Trade[], recovered?: boolean}   (de-duplicated by seq; `recovered` only on
//             a resume backlog: true when it is complete, false when a `gap` came before it)
//   gap       the server's gap message, narrowed to the seqs not already seen
//   bars      the server's bars message (the chart joins them to its backfill by t and seq)
//   feed      a feed status message
//   subscribed / unsubscribed / error   the server messages

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8000;
const PING_EVERY_MS = 10_000;
const SILENCE_LIMIT_MS = 25_000;
const DEFAULT_CHANNELS = ['quotes'];

export class Connection extends EventTarget {
  /** @param {{url?: string, throttleMs?: number, align?: boolean}} options */
  constructor({ url, throttleMs = 250, align = false } = {}) {
    super();
    this.url = url ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    this.throttleMs = throttleMs;
    this.align = align;
    this.symbols = new Set();      // what the page wants, whatever the connection state
    this.overrides = new Map();    // symbol -> {throttleMs?, channels?} of its own (the charted one)
    this.lastSeq = new Map();      // symbol -> last quote seq applied (for this server instance)
    this.lastTradeSeq = new Map(); // symbol -> last trade seq seen (this instance): the resume point
    this.instance = null;          // server instance of the current seq numbering
    this.welcome = null;
    this.state = 'connecting';
    this.ws = null;
    this.attempt = 0;              // consecutive failed attempts, for the backoff
    this.retryTimer = 0;
    this.pingTimer = 0;
    this.nextId = 1;
    this.pings = new Map();        // ping id -> performance.now() when sent
    this.clockOffsetMs = 0;        // server clock - local clock, from ping/pong
    this.lastMessageAt = 0;
    // Counters for the status bar (read and reset by the app once per second).
    this.stats = { messages: 0, quotes: 0, bytes: 0, totalMessages: 0, totalQuotes: 0, totalTrades: 0, dropped: 0, newestPt: 0 };
    addEventListener('online', () => { if (this.state !== 'connected') this.connectNow(); });
    addEventListener('offline', () => this.#setState('offline'));
  }

  /** Opens the socket (call once). */
  start() { this.#open(); }

  /** Subscribes to more symbols (additive); sent at once when connected, else on connect. */
  subscribe(symbols) {
    const fresh = symbols.filter((s) => !this.symbols.has(s));
    fresh.forEach((s) => this.symbols.add(s));
    this.#subscribe(fresh, true);
  }

  unsubscribe(symbols) {
    const known = symbols.filter((s) => this.symbols.delete(s));
    known.forEach((s) => { this.lastSeq.delete(s); this.lastTradeSeq.delete(s); this.overrides.delete(s); });
    if (known.length) this.#send({ op: 'unsubscribe', symbols: known, id: this.nextId++ });
  }

  /** Changes the throttle of every subscription: re-subscribing changes it server-side. */
  setThrottle(ms) {
    this.throttleMs = ms;
    this.#subscribe([...this.symbols].filter((s) => this.overrides.get(s)?.throttleMs === undefined), false);
  }

  /**
   * Gives one symbol its own throttle and channels (`null`: back to the common throttle and
   * quotes only). The dashboard charts its selected symbol at throttle 0 with its trades and
   * bars. A symbol that loses the `trades` channel forgets its resume point: whoever wants its
   * trades again starts from the live stream.
   * @param {string} symbol
   * @param {{throttleMs?: number, channels?: string[]} | null} options
   */
  setSymbolOptions(symbol, options) {
    if (options === null) this.overrides.delete(symbol); else this.overrides.set(symbol, options);
    if (!this.channelsOf(symbol).includes('trades')) this.lastTradeSeq.delete(symbol);
    if (this.symbols.has(symbol)) this.#subscribe([symbol], false);
  }

  throttleOf(symbol) { return this.overrides.get(symbol)?.throttleMs ?? this.throttleMs; }
  channelsOf(symbol) { return this.overrides.get(symbol)?.channels ?? DEFAULT_CHANNELS; }

  /** One `subscribe` per distinct (throttle, channels) among `symbols`, with `since` for trades. */
  #subscribe(symbols, snapshot) {
    const groups = new Map();
    for (const s of symbols) {
      const ms = this.throttleOf(s);
      const channels = this.channelsOf(s);
      const key = `${ms} ${channels.join(',')}`;
      if (!groups.has(key)) groups.set(key, { ms, channels, list: [] });
      groups.get(key).list.push(s);
    }
    for (const { ms, channels, list } of groups.values()) {
      const align = this.align && ms > 0;
      const msg = { op: 'subscribe', symbols: list, throttle_ms: ms, snapshot, align, channels, id: this.nextId++ };
      if (channels.includes('trades')) {
        const since = {};
        for (const s of list) if (this.lastTradeSeq.has(s)) since[s] = this.lastTradeSeq.get(s);
        if (Object.keys(since).length) msg.since = since;
      }
      this.#send(msg);
    }
  }

  /** Skips the backoff wait (e.g. the browser came back online). */
  connectNow() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    clearTimeout(this.retryTimer);
    this.#open();
  }

  get connected() { return this.ws?.readyState === WebSocket.OPEN && this.welcome !== null; }

  /** The server's clock now (ms since the epoch), from the ping/pong offset. */
  serverNow() { return Date.now() + this.clockOffsetMs; }

  #open() {
    this.welcome = null;
    this.#setState(this.attempt === 0 && !this.instance ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.#scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      this.welcome = null;
      this.#scheduleRetry();
    };
    // Errors are always followed by close; the browser itself logs the failed connection.
    ws.onerror = () => {};
  }

  #scheduleRetry() {
    // Full jitter: a random wait in [0, min(max, min * 2^attempt)], at least 250 ms, so a
    // restarted server is not hit by every dashboard in the same millisecond.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const wait = Math.max(250, Math.random() * cap);
    this.attempt++;
    this.retryAt = performance.now() + wait;
    this.#setState(navigator.onLine === false ? 'offline' : 'reconnecting', { retryIn: wait });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.#open(), wait);
  }

  #onMessage(text) {
    this.lastMessageAt = performance.now();
    this.stats.messages++;
    this.stats.totalMessages++;
    this.stats.bytes += text.length;
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    switch (msg.type) {
      case 'quotes': return this.#onQuotes(msg);
      case 'trades': return this.#onTrades(msg);
      case 'gap': return this.#onGap(msg);
      case 'bars': return this.#emit('bars', msg);
      case 'welcome': return this.#onWelcome(msg);
      case 'pong': return this.#onPong(msg);
      case 'feed': return this.#emit('feed', msg);
      case 'subscribed':
      case 'unsubscribed':
      case 'subscriptions':
      case 'error':
        return this.#emit(msg.type, msg);
    }
  }

  #onWelcome(msg) {
    if (msg.instance !== this.instance) {
      const previous = this.instance;
      this.instance = msg.instance;
      this.lastSeq.clear();
      this.lastTradeSeq.clear();
      this.#emit('instance', { instance: msg.instance, previous });
    }
    this.welcome = msg;
    this.attempt = 0;
    this.#setState('connected');
    this.#subscribe([...this.symbols], true);
    this.#ping();
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (performance.now() - this.lastMessageAt > SILENCE_LIMIT_MS) this.ws?.close(4000, 'silent');
      else this.#ping();
    }, PING_EVERY_MS);
    this.#emit('welcome', msg);
  }

  #ping() {
    const id = this.nextId++;
    this.pings.set(id, performance.now());
    this.#send({ op: 'ping', id });
  }

  #onPong(msg) {
    const sent = this.pings.get(msg.id);
    if (sent === undefined) return;
    this.pings.delete(msg.id);
    const now = performance.now();
    // The server read its clock about halfway through the round trip.
    const localAtPong = Date.now() - (now - sent) / 2;
    this.clockOffsetMs = msg.ts - localAtPong;
    this.rttMs = now - sent;
  }

  #onQuotes(msg) {
    const fresh = [];
    for (const q of msg.quotes) {
      const last = this.lastSeq.get(q.symbol) ?? 0;
      if (q.seq <= last) { this.stats.dropped++; continue; }
      this.lastSeq.set(q.symbol, q.seq);
      if (q.pt > this.stats.newestPt) this.stats.newestPt = q.pt;
      fresh.push(q);
    }
    this.stats.quotes += fresh.length;
    this.stats.totalQuotes += fresh.length;
    if (fresh.length) this.#emit('quotes', { quotes: fresh, snapshot: msg.snapshot === true });
  }

  #onTrades(msg) {
    const fresh = [];
    for (const t of msg.trades) {
      // Trades of a symbol no longer followed for them (a frame in flight) start no resume point.
      if (!this.symbols.has(t.symbol) || !this.channelsOf(t.symbol).includes('trades')) continue;
      if (t.seq <= (this.lastTradeSeq.get(t.symbol) ?? 0)) continue;
      this.lastTradeSeq.set(t.symbol, t.seq);
      fresh.push(t);
    }
    this.stats.totalTrades += fresh.length;
    if (fresh.length) this.#emit('trades', { trades: fresh, recovered: msg.recovered });
  }

  #onGap(msg) {
    if (msg.channel !== 'trades') return this.#emit('gap', msg);
    if (!this.symbols.has(msg.symbol) || !this.channelsOf(msg.symbol).includes('trades')) return;
    const last = this.lastTradeSeq.get(msg.symbol) ?? 0;
    // Only what was not seen is lost; the stream goes on after `to_seq`.
    const from = Math.max(msg.from_seq, last + 1);
    if (from > msg.to_seq) return;
    this.lastTradeSeq.set(msg.symbol, msg.to_seq);
    this.#emit('gap', { ...msg, from_seq: from });
  }

  #send(msg) {
    // While disconnected nothing is queued: `welcome` triggers a full resubscribe.
    if (this.ws?.readyState === WebSocket.OPEN && this.welcome) this.ws.send(JSON.stringify(msg));
  }

  #setState(state, extra = {}) {
    this.state = state;
    this.#emit('state', { state, ...extra });
  }

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
