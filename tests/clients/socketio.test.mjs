// Socket.IO at /socket.io/ with the real client library, socket.io-client (the version pinned in
// package.json): each transport a browser or Node app may end up on (WebSocket only, polling
// only, polling upgraded to WebSocket) gets the welcome, subscribes with acks, receives snapshot
// then live quotes, and is told of its mistakes; on each, the trades and bars:1s channels
// stream every trade in seq order (no quotes) and bars that join them, and a new socket resumes
// with `since` from the next seq; the throttle holds; a client reconnects by itself after a
// server restart; /metrics counts each connection under its transport.
//
// Each test starts its own tickerfeed (TICKERFEED_BIN, default target/release/tickerfeed) on a
// free 127.0.0.1 port with --seed 7; its log goes to tests/artifacts/clients/. Every wait is
// bounded: an awaited event that does not come fails the test with what was received.
//   node --test --test-concurrency=1 socketio.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { io } from 'socket.io-client';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { BIN, freePort, root, startServer as start } from '../server.mjs';

const artifacts = join(root, 'tests/artifacts/clients');

// ---------------------------------------------------------------------------------------------
// Servers

/**
 * Starts tickerfeed with --seed 7 (log: tests/artifacts/clients/socketio-<name>-server.log) and
 * waits until it is ready and AAPL and MSFT have a price, so that a subscription's snapshot
 * carries them.
 */
function startServer(name, { port, args = [] } = {}) {
  const priced = async (url) => (await (await fetch(`${url}/api/quotes?symbols=AAPL,MSFT`)).json()).quotes.length === 2;
  return start({ name: `socketio-${name}`, logDir: artifacts, port, args: ['--seed', '7', ...args], ready: priced });
}

// ---------------------------------------------------------------------------------------------
// Clients

/** Resolves with the arguments of `emitter`'s next `name` event; rejects after `ms`. */
function nextEvent(emitter, name, ms = 10_000) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => { emitter.off(name, on); fail(new Error(`no '${name}' event within ${ms} ms`)); }, ms);
    const on = (...args) => { clearTimeout(timer); ok(args); };
    emitter.once(name, on);
  });
}

/**
 * A socket.io-client socket with a record of every event the server sent it (`onAny`) and of
 * its connects and disconnects, in arrival order, each with its arrival time.
 */
class Client {
  constructor(url, options = {}) {
    this.events = [];
    this.waiters = [];
    this.socket = io(url, { reconnection: false, forceNew: true, timeout: 5000, ...options });
    this.socket.onAny((name, ...args) => this.push(name, args));
    this.socket.on('connect', () => this.push('connect', []));
    this.socket.on('disconnect', (reason) => this.push('disconnect', [reason]));
    this.socket.on('connect_error', (error) => this.push('connect_error', [String(error?.message ?? error)]));
    // Where the record stood when the first engine upgraded to WebSocket.
    this.upgradedAt = null;
    this.socket.io.engine.once('upgrade', () => { this.upgradedAt = this.events.length; });
  }

  get engine() { return this.socket.io.engine; }
  get transport() { return this.socket.io.engine?.transport?.name; }

  push(name, args) {
    const event = { name, data: args[0], at: performance.now(), index: this.events.length };
    this.events.push(event);
    for (const waiter of [...this.waiters]) {
      if (event.index >= waiter.from && waiter.match(event)) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        clearTimeout(waiter.timer);
        waiter.ok(event);
      }
    }
  }

  /** Where the record ends now: a later `next(…, {from})` looks only at what comes after. */
  mark() { return this.events.length; }

  /** The first event named `name` (matching `match`) at or after index `from`. */
  next(name, { from = 0, match = () => true, ms = 10_000 } = {}) {
    const test = (e) => e.name === name && match(e.data, e);
    const seen = this.events.slice(from).find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((ok, fail) => {
      const waiter = { from, match: test, ok };
      waiter.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        fail(new Error(`no '${name}' event within ${ms} ms; received: ${this.summary(from)}`));
      }, ms);
      this.waiters.push(waiter);
    });
  }

  /** The `quotes` events from index `from` on, once `enough(list)` says so. */
  async quotes({ from = 0, enough, ms = 10_000 }) {
    const list = () => this.events.slice(from).filter((e) => e.name === 'quotes');
    const deadline = Date.now() + ms;
    for (;;) {
      if (enough(list())) return list();
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`not enough quotes within ${ms} ms; received: ${this.summary(from)}`);
      await this.next('quotes', { from: this.mark(), ms: left }).catch(() => {});
    }
  }

  /** An ack, 5 s at most. */
  call(name, ...args) {
    return this.socket.timeout(5000).emitWithAck(name, ...args);
  }

  summary(from = 0) {
    const names = this.events.slice(from).map((e) => (e.name === 'quotes' ? (e.data?.snapshot ? 'quotes(snapshot)' : 'quotes') : e.name));
    return JSON.stringify(names.slice(0, 40));
  }

  close() { this.socket.disconnect(); }
}

const WELCOME_FIELDS = ['protocol', 'server', 'instance', 'session', 'throttle_ms', 'min_throttle_ms', 'max_symbols', 'max_frame_bytes'];

function assertWelcome(welcome) {
  assert.deepEqual(Object.keys(welcome), WELCOME_FIELDS, 'welcome carries the v1 fields, without type');
  assert.equal(welcome.protocol, 1);
  assert.match(welcome.server, /^tickerfeed \d+\.\d+\.\d+/);
  assert.match(welcome.instance, /^\S{4,}$/);
  assert.equal(welcome.throttle_ms, 250);
  assert.equal(welcome.min_throttle_ms, 0);
  assert.equal(welcome.max_symbols, 1000);
  assert.equal(welcome.max_frame_bytes, 16384);
}

/** A quote as on /ws. */
function assertQuote(q) {
  for (const field of ['symbol', 'seq', 'ts', 'pt', 'last', 'bid', 'ask']) assert.ok(field in q, `quote has ${field}: ${JSON.stringify(q)}`);
  assert.ok(Number.isInteger(q.seq) && q.seq > 0, `seq ${q.seq}`);
  assert.ok(q.bid < q.ask, `bid ${q.bid} < ask ${q.ask}`);
  assert.ok(Math.abs(q.ts - Date.now()) < 60_000, `ts ${q.ts} is now`);
}

/** Checks that every symbol's seq rises strictly across `batches`; returns the count per symbol. */
function assertSeqRising(batches, start = {}) {
  const last = { ...start };
  const count = {};
  for (const batch of batches) {
    for (const q of batch.data.quotes) {
      assertQuote(q);
      if (q.symbol in last) assert.ok(q.seq > last[q.symbol], `${q.symbol}: seq ${q.seq} after ${last[q.symbol]}`);
      last[q.symbol] = q.seq;
      count[q.symbol] = (count[q.symbol] ?? 0) + 1;
    }
  }
  return count;
}

function symbolsOf(batch) {
  return batch.data.quotes.map((q) => q.symbol).sort();
}

// ---------------------------------------------------------------------------------------------
// Each transport: the whole event mapping

const MODES = [
  { name: 'websocket only', transports: ['websocket'], ends: 'websocket', upgrades: false },
  { name: 'polling only', transports: ['polling'], ends: 'polling', upgrades: false },
  { name: 'default (polling, then upgraded to websocket)', transports: undefined, ends: 'websocket', upgrades: true },
];

let server;
before(async () => { server = await startServer('main'); });
after(async () => { await server?.stop(); });

for (const mode of MODES) {
  const options = mode.transports ? { transports: mode.transports } : {};

  test(`${mode.name}: welcome, subscribe/unsubscribe/list/ping acks, snapshot then live quotes, errors, events without ack`, async () => {
    const client = new Client(server.url, options);
    const upgraded = mode.upgrades ? nextEvent(client.engine, 'upgrade') : null;
    try {
      const connected = await client.next('connect');
      const welcome = await client.next('welcome');
      assert.equal(connected.index, 0, `connect first: ${client.summary()}`);
      assert.equal(welcome.index, 1, `welcome right after connect: ${client.summary()}`);
      assertWelcome(welcome.data);
      if (mode.upgrades) {
        const [transport] = await upgraded;
        assert.equal(transport.name, 'websocket', 'the engine upgraded to websocket');
      }
      assert.equal(client.transport, mode.ends);

      // subscribe with an ack: the whole set, the rejected symbol named; then the snapshot.
      let from = client.mark();
      const subscribed = await client.call('subscribe', { symbols: ['AAPL', 'msft', 'NOPE'], throttle_ms: 100 });
      assert.deepEqual(subscribed, { throttle_ms: 100, align: false, symbols: ['AAPL', 'MSFT'], rejected: [{ symbol: 'NOPE', code: 'unknown_symbol' }], channels: { quotes: ['AAPL', 'MSFT'] } });
      const batches = await client.quotes({ from, enough: (list) => {
        const live = list.slice(1);
        const count = {};
        for (const b of live) for (const q of b.data.quotes) count[q.symbol] = (count[q.symbol] ?? 0) + 1;
        return (count.AAPL ?? 0) >= 3 && (count.MSFT ?? 0) >= 3;
      } });
      assert.equal(batches[0].data.snapshot, true, `the first quotes event is the snapshot: ${client.summary(from)}`);
      assert.deepEqual(Object.keys(batches[0].data), ['snapshot', 'quotes']);
      assert.deepEqual(symbolsOf(batches[0]), ['AAPL', 'MSFT'], 'the snapshot has each subscribed symbol once');
      for (const live of batches.slice(1)) {
        assert.deepEqual(Object.keys(live.data), ['quotes'], 'live quotes carry no snapshot flag');
        for (const q of live.data.quotes) assert.ok(['AAPL', 'MSFT'].includes(q.symbol), q.symbol);
      }
      assertSeqRising(batches);
      assert.ok(client.events.slice(from).every((e) => e.name === 'quotes'), `nothing but quotes after the ack: ${client.summary(from)}`);

      // unsubscribe with an ack: what is left; nothing of MSFT after it.
      const unsubscribed = await client.call('unsubscribe', ['MSFT']);
      assert.deepEqual(unsubscribed, { symbols: ['AAPL'] });
      from = client.mark();
      const after = await client.quotes({ from, enough: (list) => list.length >= 2 });
      for (const batch of after) assert.deepEqual(symbolsOf(batch), ['AAPL'], 'no MSFT after unsubscribing');

      // list and ping; requests in flight together (over polling, several packets in one POST).
      const lists = await Promise.all(Array.from({ length: 10 }, () => client.call('list')));
      assert.deepEqual(lists, Array(10).fill({ symbols: ['AAPL'] }), 'ten acks in flight at once');
      assert.deepEqual(await client.call('list', {}), { symbols: ['AAPL'] }, 'an argument to list is ignored');
      const pong = await client.call('ping');
      assert.deepEqual(Object.keys(pong), ['ts']);
      assert.ok(Math.abs(pong.ts - Date.now()) < 5000, `ping ts ${pong.ts} is the server time`);

      // A bad argument: its ack is an error, and nothing changes.
      const bad = await client.call('subscribe', 5);
      assert.deepEqual(Object.keys(bad), ['error']);
      assert.equal(bad.error.code, 'bad_request');
      assert.match(bad.error.message, /not a number/);
      const badThrottle = await client.call('subscribe', { symbols: ['MSFT'], throttle_ms: 'fast' });
      assert.equal(badThrottle.error?.code, 'bad_request');
      assert.match(badThrottle.error.message, /throttle_ms/);
      const badField = await client.call('unsubscribe', { symbols: 'AAPL', op: 'x' });
      assert.equal(badField.error?.code, 'bad_request');
      assert.match(badField.error.message, /unknown field 'op'/);
      const binary = await client.call('subscribe', new Uint8Array([1, 2, 3]));
      assert.equal(binary.error?.code, 'bad_request', 'a binary argument (a BINARY_EVENT and its attachment) gets an error ack');
      assert.match(binary.error.message, /binary events are not supported/);
      const unknownAcked = await client.call('dance');
      assert.equal(unknownAcked.error?.code, 'unknown_op', 'an unknown event with an ack gets an error ack');
      assert.deepEqual(await client.call('list'), { symbols: ['AAPL'] }, 'failed requests change nothing');

      // An unknown event without an ack: an error event.
      from = client.mark();
      client.socket.emit('dance', { steps: 3 });
      const error = await client.next('error', { from });
      assert.deepEqual(Object.keys(error.data), ['code', 'message']);
      assert.equal(error.data.code, 'unknown_op');
      assert.match(error.data.message, /unknown event 'dance'; expected one of: subscribe, unsubscribe, list, ping/);
      // A bad argument without an ack: an error event too.
      from = client.mark();
      client.socket.emit('subscribe', true);
      const badEvent = await client.next('error', { from });
      assert.equal(badEvent.data.code, 'bad_request');

      // Requests without an ack are answered with events named by the v1 reply.
      from = client.mark();
      client.socket.emit('subscribe', 'MSFT, NOPE');
      const subscribedEvent = await client.next('subscribed', { from });
      assert.deepEqual(subscribedEvent.data, { throttle_ms: 250, align: false, symbols: ['AAPL', 'MSFT'], rejected: [{ symbol: 'NOPE', code: 'unknown_symbol' }], channels: { quotes: ['AAPL', 'MSFT'] } });
      const snapshot = await client.next('quotes', { from: subscribedEvent.index, match: (d) => d.snapshot === true });
      assert.deepEqual(symbolsOf(snapshot), ['MSFT'], 'the snapshot of the newly subscribed symbol only');
      from = client.mark();
      client.socket.emit('list');
      assert.deepEqual((await client.next('subscriptions', { from })).data, { symbols: ['AAPL', 'MSFT'] });
      from = client.mark();
      client.socket.emit('unsubscribe', { symbols: ['AAPL', 'MSFT'] });
      assert.deepEqual((await client.next('unsubscribed', { from })).data, { symbols: [] });
      from = client.mark();
      client.socket.emit('ping');
      const pongEvent = await client.next('pong', { from });
      assert.ok(Number.isInteger(pongEvent.data.ts), JSON.stringify(pongEvent.data));

      // Still the one connection on the transport it ended on; nothing unexpected came.
      assert.ok(client.socket.connected);
      assert.equal(client.transport, mode.ends);
      const names = new Set(client.events.map((e) => e.name));
      for (const name of names) assert.ok(['connect', 'welcome', 'quotes', 'error', 'subscribed', 'subscriptions', 'unsubscribed', 'pong'].includes(name), `unexpected event '${name}'`);
      assert.equal(client.events.filter((e) => e.name === 'connect').length, 1, 'connected once');
    } finally {
      client.close();
    }
    assert.equal(client.events.at(-1).name, 'disconnect');
    assert.equal(client.events.at(-1).data, 'io client disconnect');
  });

  test(`${mode.name}: the URL query subscribes at connect (subscribed after welcome, then the snapshot)`, async () => {
    const client = new Client(server.url, { ...options, query: { symbols: 'AAPL,MSFT,NOPE', throttle_ms: 500 } });
    const upgraded = mode.upgrades ? nextEvent(client.engine, 'upgrade') : null;
    try {
      const snapshot = await client.next('quotes');
      const names = client.events.map((e) => e.name);
      assert.deepEqual(names.slice(0, 4), ['connect', 'welcome', 'subscribed', 'quotes'], client.summary());
      assertWelcome(client.events[1].data);
      assert.deepEqual(client.events[2].data, { throttle_ms: 500, align: false, symbols: ['AAPL', 'MSFT'], rejected: [{ symbol: 'NOPE', code: 'unknown_symbol' }], channels: { quotes: ['AAPL', 'MSFT'] } });
      assert.equal(snapshot.data.snapshot, true);
      assert.deepEqual(symbolsOf(snapshot), ['AAPL', 'MSFT']);
      const batches = await client.quotes({ from: snapshot.index, enough: (list) => list.length >= 3 });
      assertSeqRising(batches);
      assert.deepEqual(await client.call('list'), { symbols: ['AAPL', 'MSFT'] });
      if (mode.upgrades) await upgraded;
      assert.equal(client.transport, mode.ends);
    } finally {
      client.close();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Channels: trades, bars, resume (docs/PROTOCOL.md, "Channels: trades and bars")

/** A trade as on /ws. */
function assertTrade(t, symbol) {
  assert.deepEqual(Object.keys(t).sort(), ['price', 'pt', 'seq', 'size', 'symbol', 'ts'], `trade fields: ${JSON.stringify(t)}`);
  assert.equal(t.symbol, symbol);
  assert.ok(Number.isInteger(t.seq) && t.seq > 0, `seq ${t.seq}`);
  assert.ok(t.price > 0 && t.size > 0, `price and size: ${JSON.stringify(t)}`);
  assert.ok(Math.abs(t.ts - Date.now()) < 60_000, `ts ${t.ts} is now`);
}

/**
 * What a trades subscriber was told of one symbol, in arrival order: its trades and the gaps
 * (seqs told lost). `accounted` is every seq received or told lost, which must run without a
 * hole or a repeat.
 */
class Tape {
  constructor(symbol, events = []) {
    this.symbol = symbol;
    this.trades = [];
    this.gaps = [];
    this.accounted = [];
    for (const e of events) this.take(e);
  }

  take(event) {
    if (event.name === 'trades') {
      for (const t of event.data.trades) {
        assertTrade(t, this.symbol);
        this.trades.push(t);
        this.accounted.push(t.seq);
      }
    } else if (event.name === 'gap' && event.data.symbol === this.symbol) {
      const { channel, from_seq: from, to_seq: to } = event.data;
      assert.equal(channel, 'trades', JSON.stringify(event.data));
      assert.ok(Number.isInteger(from) && Number.isInteger(to) && from <= to, `gap ${JSON.stringify(event.data)}`);
      this.gaps.push([from, to]);
      for (let s = from; s <= to; s++) this.accounted.push(s);
    }
  }

  get lastTrade() { return this.trades.at(-1)?.seq ?? 0; }
  get last() { return this.accounted.at(-1) ?? 0; }

  assertContiguous() {
    assert.ok(this.accounted.length > 0, 'some trades');
    const first = this.accounted[0];
    this.accounted.forEach((seq, i) => assert.equal(seq, first + i, `seq #${i} of the tape is ${seq}, expected ${first + i} (gaps ${JSON.stringify(this.gaps)})`));
  }
}

/** A bar as /api/history serves it. */
function assertBar(b, symbol) {
  for (const field of ['symbol', 't', 'open', 'high', 'low', 'close', 'volume', 'seq', 'final']) assert.ok(field in b, `bar has ${field}: ${JSON.stringify(b)}`);
  assert.equal(b.symbol, symbol);
  assert.equal(b.t % 1000, 0, `a 1 s bar starts on a second: ${b.t}`);
  assert.ok(b.low <= Math.min(b.open, b.close) && Math.max(b.open, b.close) <= b.high, `low ≤ open, close ≤ high: ${JSON.stringify(b)}`);
  assert.ok(b.volume > 0 && Number.isInteger(b.seq) && typeof b.final === 'boolean', JSON.stringify(b));
}

/** The events from index `from` on, once `enough(list)` says so (`ms` at most). */
async function eventsUntil(client, { from = 0, enough, ms = 10_000, what = 'enough events' }) {
  const deadline = Date.now() + ms;
  for (;;) {
    const list = client.events.slice(from);
    if (enough(list)) return list;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`${what}: not within ${ms} ms; received: ${client.summary(from)}`);
    // Any next event (every event has a name; the match accepts all).
    await new Promise((ok) => {
      const waiter = { from: client.mark(), match: () => true, ok };
      waiter.timer = setTimeout(() => { client.waiters.splice(client.waiters.indexOf(waiter), 1); ok(); }, left);
      client.waiters.push(waiter);
    });
  }
}

/** AAPL's newest seq, from GET /api/quotes. */
async function publishedSeq(url, symbol) {
  const { quotes } = await (await fetch(`${url}/api/quotes?symbols=${symbol}`)).json();
  return quotes.find((q) => q.symbol === symbol)?.seq ?? 0;
}

for (const mode of MODES) {
  const options = mode.transports ? { transports: mode.transports } : {};

  test(`${mode.name}: channels trades and bars:1s (every seq, no quotes), resume with since, an unknown channel named`, async (t) => {
    const CHANNEL_EVENTS = ['trades', 'gap', 'bars'];
    const client = new Client(server.url, options);
    let resumed;
    try {
      const welcome = (await client.next('welcome')).data;
      assertWelcome(welcome);
      assert.match(welcome.session, /^\S+$/, 'welcome carries the session id');

      // An unknown channel: an error ack naming it; nothing subscribed.
      const bad = await client.call('subscribe', { symbols: ['AAPL'], channels: ['nope'] });
      assert.deepEqual(Object.keys(bad), ['error'], JSON.stringify(bad));
      assert.equal(bad.error.code, 'bad_request');
      assert.match(bad.error.message, /'nope'/, 'the error names the channel');
      assert.deepEqual(await client.call('list'), { symbols: [] }, 'a failed subscribe changes nothing');

      let from = client.mark();
      const ack = await client.call('subscribe', { symbols: ['AAPL'], throttle_ms: 0, channels: ['trades', 'bars:1s'] });
      assert.deepEqual(ack, { throttle_ms: 0, align: false, symbols: ['AAPL'], rejected: [], channels: { trades: ['AAPL'], 'bars:1s': ['AAPL'] } });

      // 20 trades (about 2 s of AAPL at the default rate) and a bar that closed after the
      // first trade received (its last trade, then, one this client has).
      const closedBar = (list) => {
        const first = new Tape('AAPL', list).accounted[0];
        return list.filter((e) => e.name === 'bars').flatMap((e) => e.data.bars).find((b) => b.final && b.seq >= first);
      };
      let events = await eventsUntil(client, {
        from, ms: 15_000, what: '20 AAPL trades and a 1 s bar closed after them',
        enough: (list) => new Tape('AAPL', list).trades.length >= 20 && closedBar(list),
      });
      const names = new Set(events.map((e) => e.name));
      for (const name of names) assert.ok(CHANNEL_EVENTS.includes(name), `only trades, gap and bars for a trades and bars:1s subscription, got '${name}': ${client.summary(from)}`);
      let tape = new Tape('AAPL', events);
      tape.assertContiguous();
      assert.ok(events.filter((e) => e.name === 'trades').every((e) => !('recovered' in e.data)), 'live trades carry no recovered flag');
      for (const e of events.filter((e) => e.name === 'trades')) assert.deepEqual(Object.keys(e.data), ['trades'], 'a trades event is {trades}');
      const bars = events.filter((e) => e.name === 'bars');
      for (const e of bars) {
        assert.deepEqual(Object.keys(e.data), ['resolution', 'bars'], 'a bars event is {resolution, bars}');
        assert.equal(e.data.resolution, '1s');
        for (const b of e.data.bars) assertBar(b, 'AAPL');
      }
      // A bar joins the trades: its seq is that of its last trade, its close that trade's price.
      const closed = closedBar(events);
      events = await eventsUntil(client, { from, what: `the trade of the closed bar's seq ${closed.seq}`, enough: (list) => new Tape('AAPL', list).last >= closed.seq });
      tape = new Tape('AAPL', events);
      tape.assertContiguous();
      const trade = tape.trades.find((tr) => tr.seq === closed.seq);
      // (Unless the trades channel itself reported that seq lost.)
      if (!tape.gaps.some(([a, b]) => a <= closed.seq && closed.seq <= b)) {
        assert.ok(trade, `the closed bar's seq ${closed.seq} is a trade received`);
        assert.equal(closed.close, trade.price, `the closed bar's close is the price of trade ${closed.seq}: ${JSON.stringify(closed)}`);
        assert.ok(closed.low <= trade.price && trade.price <= closed.high);
      }
      t.diagnostic(`${tape.trades.length} trades ${tape.accounted[0]}..${tape.last}, ${tape.gaps.length} gaps, ${bars.length} bars events; closed bar ${closed.t} seq ${closed.seq}, close ${closed.close} = trade ${trade?.price}`);

      // Resume: a new socket, subscribing with the last seq seen.
      client.close();
      const gone = new Tape('AAPL', client.events.slice(from));
      gone.assertContiguous();
      const lastSeq = gone.lastTrade;
      // Trades go on while it is away: 10 more at least.
      const deadline = Date.now() + 10_000;
      while ((await publishedSeq(server.url, 'AAPL')) < lastSeq + 10) {
        assert.ok(Date.now() < deadline, `AAPL passes seq ${lastSeq + 10} within 10 s`);
        await sleep(50);
      }
      resumed = new Client(server.url, options);
      const welcome2 = (await resumed.next('welcome')).data;
      assert.notEqual(welcome2.session, welcome.session, 'a new session');
      assert.equal(welcome2.instance, welcome.instance, 'the same run of the server: seqs go on');
      from = resumed.mark();
      const ack2 = await resumed.call('subscribe', { symbols: ['AAPL'], throttle_ms: 0, channels: ['trades'], since: { AAPL: lastSeq } });
      assert.deepEqual(ack2, { throttle_ms: 0, align: false, symbols: ['AAPL'], rejected: [], channels: { trades: ['AAPL'] } });
      const first = await resumed.next('trades', { from });
      assert.equal(first.data.recovered, true, `the first trades event is the recovered backlog: ${JSON.stringify(first.data).slice(0, 300)}`);
      assert.ok(first.data.trades.length > 0, 'the backlog holds the trades published while away');
      assert.equal(first.data.trades[0].seq, lastSeq + 1, `the backlog starts right after since (${lastSeq})`);
      // Then live trades: the whole resumed tape, backlog and live, without a hole.
      events = await eventsUntil(resumed, {
        from, what: 'the backlog and 10 live trades',
        enough: (list) => list.filter((e) => e.name === 'trades' && !e.data.recovered).reduce((n, e) => n + e.data.trades.length, 0) >= 10,
      });
      for (const e of events) assert.ok(['trades', 'gap'].includes(e.name), `only trades after a trades subscription: ${resumed.summary(from)}`);
      assert.ok(!events.some((e) => e.name === 'gap'), `nothing lost within the ring: ${resumed.summary(from)}`);
      const backlog = events.filter((e) => e.name === 'trades' && e.data.recovered === true);
      const live = events.filter((e) => e.name === 'trades' && !e.data.recovered);
      assert.ok(events.indexOf(backlog.at(-1)) < events.indexOf(live[0]), 'the backlog comes before live trades');
      assert.ok(backlog.reduce((n, e) => n + e.data.trades.length, 0) >= 10, 'the backlog holds the 10 and more trades published while away');
      const again = new Tape('AAPL', events);
      again.assertContiguous();
      assert.equal(again.accounted[0], lastSeq + 1);
      t.diagnostic(`resumed after ${lastSeq}: ${backlog.length} recovered event(s), then live to ${again.last}`);
    } finally {
      client.close();
      resumed?.close();
    }
  });
}

test('another namespace is refused with connect_error; an auth payload is accepted (no tokens required)', async () => {
  const other = new Client(`${server.url}/admin`, { transports: ['websocket'] });
  try {
    const refused = await other.next('connect_error');
    assert.equal(refused.data, 'Invalid namespace');
    assert.ok(!other.events.some((e) => e.name === 'connect'));
  } finally {
    other.close();
  }
  const withAuth = new Client(server.url, { auth: { token: 'abc' } });
  try {
    assertWelcome((await withAuth.next('welcome')).data);
  } finally {
    withAuth.close();
  }
});

test('tokens: no token or a bad one is a connect_error with its code; auth.token connects to its symbols; expiry closes the transport', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tickerfeed-sio-auth-'));
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'socket.io-client-secret-of-at-least-32-bytes\n');
  const token = (symbols, ttl) => {
    const run = spawnSync(BIN, ['token', '--secret-file', secret, '--sub', 'sio', '--symbols', symbols, '--ttl', String(ttl)], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    return run.stdout.trim();
  };
  const secured = await start({ name: 'socketio-auth', logDir: artifacts, args: ['--seed', '7', '--auth-secret-file', secret] });
  try {
    for (const auth of [undefined, { token: 'not-a-token' }]) {
      const client = new Client(secured.url, { transports: ['websocket'], ...(auth ? { auth } : {}) });
      try {
        const refused = await client.next('connect_error');
        assert.match(refused.data, /token/, 'the message says what is wrong with the token');
        assert.equal(client.socket.connected, false);
      } finally {
        client.close();
      }
    }
    // The error's data carries the code a program branches on.
    const data = await new Promise((ok) => {
      const socket = io(secured.url, { reconnection: false, forceNew: true, auth: { token: 'x.y.z' } });
      socket.on('connect_error', (e) => { socket.close(); ok(e.data); });
    });
    assert.deepEqual(data, { code: 'unauthorized' });
    const client = new Client(secured.url, { auth: { token: token('AAPL', 3) } });
    try {
      assertWelcome((await client.next('welcome')).data);
      const ack = await client.call('subscribe', { symbols: ['AAPL', 'MSFT'] });
      assert.deepEqual(ack.symbols, ['AAPL']);
      assert.deepEqual(ack.rejected, [{ symbol: 'MSFT', code: 'not_entitled' }]);
      // Within 3 s the token expires: an error event, then the transport closes (the client
      // would reconnect, and be refused until it has a new token).
      const expired = await client.next('error', { match: (e) => e?.code === 'token_expired', ms: 5000 });
      const gone = await client.next('disconnect', { from: expired.index });
      assert.equal(gone.data, 'transport close');
    } finally {
      client.close();
    }
  } finally {
    await secured.stop();
  }
});

test('default transports under load: quotes flow across the upgrade in order (symbols=*, throttle 0)', async (t) => {
  const client = new Client(server.url, { query: { symbols: '*', throttle_ms: 0 } });
  const upgraded = nextEvent(client.engine, 'upgrade');
  try {
    await upgraded;
    const at = client.upgradedAt;
    // A second of quotes on the WebSocket after the upgrade.
    const until = performance.now() + 1000;
    const batches = await client.quotes({ enough: (list) => list.length > 0 && list.at(-1).at >= until });
    assert.equal(batches[0].data.snapshot, true);
    const count = assertSeqRising(batches);
    assert.ok(Object.keys(count).length >= 50, `quotes for ${Object.keys(count).length} symbols`);
    const polled = batches.filter((b) => b.index < at).length;
    t.diagnostic(`${polled} quotes events over polling, ${batches.length - polled} over the WebSocket`);
    assert.ok(batches.length - polled > 10, 'quotes kept coming after the upgrade');
    assert.equal(client.transport, 'websocket');
    assert.ok(client.socket.connected);
  } finally {
    client.close();
  }
});

test('heartbeat: with a 200 ms ping interval every transport answers pings and stays connected', async () => {
  const quick = await startServer('heartbeat', { args: ['--socketio-ping-interval-ms', '200', '--socketio-ping-timeout-ms', '300'] });
  const clients = MODES.map((mode) => new Client(quick.url, mode.transports ? { transports: mode.transports } : {}));
  try {
    await Promise.all(clients.map((c) => c.next('welcome')));
    // Five pings each, a second or so: a client that missed a ping would drop the connection
    // ('ping timeout'), a server that missed a pong would close it.
    await Promise.all(clients.map(async (c) => { for (let i = 0; i < 5; i++) await nextEvent(c.engine, 'ping', 2000); }));
    for (const c of clients) {
      assert.ok(c.socket.connected, `still connected: ${c.summary()}`);
      assert.ok(!c.events.some((e) => e.name === 'disconnect'), c.summary());
      assert.deepEqual(await c.call('list'), { symbols: [] });
    }
    assert.deepEqual(clients.map((c) => c.transport), MODES.map((m) => m.ends));
    const text = await (await fetch(`${quick.url}/metrics`)).text();
    assert.match(text, /^tickerfeed_disconnects_total\{reason="idle_timeout"\} 0$/m);
  } finally {
    for (const c of clients) c.close();
    await quick.stop();
  }
});

// ---------------------------------------------------------------------------------------------
// Throttle

for (const transport of ['websocket', 'polling']) {
  test(`throttle over ${transport}: no two deliveries of a symbol closer than its 500 ms throttle`, async () => {
    const client = new Client(server.url, { transports: [transport] });
    try {
      await client.next('welcome');
      const from = client.mark();
      const ack = await client.call('subscribe', { symbols: ['AAPL'], throttle_ms: 500 });
      assert.equal(ack.throttle_ms, 500);
      // The snapshot and six more deliveries: three seconds and more.
      const batches = await client.quotes({ from, enough: (list) => list.length >= 7 });
      assert.equal(batches[0].data.snapshot, true);
      assertSeqRising(batches);
      let merged = 0;
      for (let i = 1; i < batches.length; i++) {
        const gap = batches[i].at - batches[i - 1].at;
        // Receive times carry scheduling jitter; the server throttles exactly (tests/ws.rs
        // allows 30 ms on 200 ms): 60 ms here.
        assert.ok(gap >= 440, `AAPL delivered twice ${gap.toFixed(0)} ms apart with a 500 ms throttle`);
        assert.equal(batches[i].data.quotes.length, 1, 'one AAPL quote per delivery');
        if (batches[i].data.quotes[0].seq - batches[i - 1].data.quotes[0].seq > 1) merged += 1;
      }
      assert.ok(merged > 0, 'the feed publishes AAPL faster than every 500 ms: updates were merged');
    } finally {
      client.close();
    }
  });
}

test('every session on the main server so far ended as a client close (none as a protocol error)', async () => {
  const metric = (text, key) => Number(text.split('\n').find((l) => l.startsWith(`${key} `))?.split(' ').at(-1));
  const open = (text) => metric(text, 'tickerfeed_connections{transport="socketio_polling"}') + metric(text, 'tickerfeed_connections{transport="socketio_websocket"}');
  const deadline = Date.now() + 5000;
  let text;
  for (;;) {
    text = await (await fetch(`${server.url}/metrics`)).text();
    if (open(text) === 0 || Date.now() > deadline) break;
    await sleep(50);
  }
  assert.equal(metric(text, 'tickerfeed_connections{transport="socketio_polling"}'), 0, 'no polling session open');
  assert.equal(metric(text, 'tickerfeed_connections{transport="socketio_websocket"}'), 0, 'no WebSocket session open');
  const opened = metric(text, 'tickerfeed_connections_opened_total{transport="socketio_polling"}') + metric(text, 'tickerfeed_connections_opened_total{transport="socketio_websocket"}');
  assert.ok(opened >= 10, `${opened} sessions opened`);
  assert.equal(metric(text, 'tickerfeed_disconnects_total{reason="protocol_error"}'), 0, 'no protocol error');
  assert.equal(metric(text, 'tickerfeed_disconnects_total{reason="idle_timeout"}'), 0);
  assert.equal(metric(text, 'tickerfeed_disconnects_total{reason="client_close"}'), opened, `all ${opened} sessions ended as client closes`);
});

// ---------------------------------------------------------------------------------------------
// Restart and reconnection

test('restart: clients see a transport close, reconnect by themselves and get fresh snapshots (resubscribing, or by their URL query)', async () => {
  const port = await freePort();
  const first = await startServer('restart', { port });
  let second;
  const reconnecting = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0, timeout: 2000 };
  // Default transports (upgraded by the time of the restart), (re)subscribing on every connect,
  // as a real app does.
  const client = new Client(first.url, reconnecting);
  const acks = [];
  client.socket.on('connect', () => {
    client.socket.timeout(5000).emit('subscribe', { symbols: ['AAPL', 'MSFT'] }, (err, ack) => acks.push(err ? { failed: String(err) } : ack));
  });
  // Polling only, subscribed by its URL query: again at every reconnection, by itself.
  const polling = new Client(first.url, { ...reconnecting, transports: ['polling'], query: { symbols: 'MSFT', throttle_ms: 300 } });
  const clients = [client, polling];
  try {
    const welcome1 = await client.next('welcome');
    assertWelcome(welcome1.data);
    const snapshot1 = await client.next('quotes', { match: (d) => d.snapshot === true });
    assert.deepEqual(symbolsOf(snapshot1), ['AAPL', 'MSFT']);
    await client.quotes({ from: snapshot1.index, enough: (list) => list.length >= 2 });
    // Let it upgrade first, as a browser's would have long before a restart.
    if (client.transport !== 'websocket') await nextEvent(client.engine, 'upgrade');
    await polling.next('quotes', { match: (d) => d.snapshot === true });
    assert.equal(polling.transport, 'polling');

    const stopped = first.stop();
    for (const c of clients) {
      const gone = await c.next('disconnect');
      assert.equal(gone.data, 'transport close', `${c === polling ? 'polling' : 'websocket'}: a shutdown closes the transport (no Socket.IO DISCONNECT, which would stop reconnection)`);
    }
    assert.equal(await stopped, 0, 'the server exits 0 on SIGTERM');
    // They keep trying while nothing listens.
    await Promise.all(clients.map((c) => c.next('connect_error', { from: c.events.findIndex((e) => e.name === 'disconnect') })));

    second = await startServer('restart', { port });
    for (const c of clients) {
      const gone = c.events.findIndex((e) => e.name === 'disconnect');
      const connect2 = await c.next('connect', { from: gone, ms: 15_000 });
      const welcome2 = await c.next('welcome', { from: connect2.index });
      assertWelcome(welcome2.data);
      assert.notEqual(welcome2.data.instance, welcome1.data.instance, 'a new server instance');
      const snapshot2 = await c.next('quotes', { from: welcome2.index, match: (d) => d.snapshot === true });
      assert.deepEqual(symbolsOf(snapshot2), c === polling ? ['MSFT'] : ['AAPL', 'MSFT'], 'fresh snapshots after the reconnection');
      const batches = await c.quotes({ from: snapshot2.index, enough: (list) => list.length >= 3 });
      assertSeqRising(batches);
      assert.equal(c.events.filter((e) => e.name === 'disconnect').length, 1, 'one disconnect');
    }
    const resubscribed = polling.events.filter((e) => e.name === 'subscribed').map((e) => e.data);
    assert.deepEqual(resubscribed, Array(2).fill({ throttle_ms: 300, align: false, symbols: ['MSFT'], rejected: [], channels: { quotes: ['MSFT'] } }), 'the URL query subscribes again at the reconnection');
    assert.deepEqual(acks.map((a) => a.symbols), [['AAPL', 'MSFT'], ['AAPL', 'MSFT']], `acks: ${JSON.stringify(acks)}`);
    assert.equal(polling.transport, 'polling');
  } finally {
    for (const c of clients) c.close();
    await second?.stop();
    await first.stop();
  }
});

// ---------------------------------------------------------------------------------------------
// Metrics

async function connectionMetrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (name, transport) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{transport="${transport}"} `));
    assert.ok(line, `/metrics has ${name}{transport="${transport}"}`);
    return Number(line.split(' ').at(-1));
  };
  return {
    open: { polling: read('tickerfeed_connections', 'socketio_polling'), websocket: read('tickerfeed_connections', 'socketio_websocket') },
    opened: { polling: read('tickerfeed_connections_opened_total', 'socketio_polling'), websocket: read('tickerfeed_connections_opened_total', 'socketio_websocket') },
  };
}

/** Polls /metrics until `expected` (5 s at most); asserts it. */
async function expectMetrics(url, expected, what) {
  const deadline = Date.now() + 5000;
  let seen;
  for (;;) {
    seen = await connectionMetrics(url);
    if (JSON.stringify(seen) === JSON.stringify(expected) || Date.now() > deadline) break;
    await sleep(50);
  }
  assert.deepEqual(seen, expected, what);
}

test('metrics: Socket.IO connections counted by transport, an upgrade moving to socketio_websocket', async () => {
  const metricsServer = await startServer('metrics');
  const clients = [];
  try {
    await expectMetrics(metricsServer.url, { open: { polling: 0, websocket: 0 }, opened: { polling: 0, websocket: 0 } }, 'nothing yet');
    const polling = new Client(metricsServer.url, { transports: ['polling'] });
    const websocket = new Client(metricsServer.url, { transports: ['websocket'] });
    clients.push(polling, websocket);
    await Promise.all([polling.next('welcome'), websocket.next('welcome')]);
    await expectMetrics(metricsServer.url, { open: { polling: 1, websocket: 1 }, opened: { polling: 1, websocket: 1 } }, 'one polling, one websocket client');

    const upgrading = new Client(metricsServer.url);
    clients.push(upgrading);
    const upgraded = nextEvent(upgrading.engine, 'upgrade');
    await upgrading.next('welcome');
    await upgraded;
    assert.equal(upgrading.transport, 'websocket');
    await expectMetrics(metricsServer.url, { open: { polling: 1, websocket: 2 }, opened: { polling: 2, websocket: 1 } }, 'the upgraded client counts as socketio_websocket (opened as polling)');

    polling.close();
    await expectMetrics(metricsServer.url, { open: { polling: 0, websocket: 2 }, opened: { polling: 2, websocket: 1 } }, 'the polling client left');
    websocket.close();
    upgrading.close();
    await expectMetrics(metricsServer.url, { open: { polling: 0, websocket: 0 }, opened: { polling: 2, websocket: 1 } }, 'all left');
  } finally {
    for (const c of clients) c.close();
    await metricsServer.stop();
  }
});

test('an event over the message limit sent with an ack gets its error as the ack', async () => {
  const client = new Client(server.url, { transports: ['websocket'] });
  try {
    await client.next('welcome');
    const symbols = Array.from({ length: 900 }, (_, i) => `S${i}`);
    const ack = await client.call('subscribe', { symbols });
    assert.equal(ack.error?.code, 'bad_request');
    assert.match(ack.error.message, /the limit is 4096/);
  } finally {
    client.close();
  }
});
