// Smoke test of the three benchmark peers: `node smoke.mjs [ws|uws|socketio ...]`.
// Starts each server on a free 127.0.0.1 port with a small generated CSV and checks protocol v1
// and the throttle semantics from the client side. Exits non-zero on any failure.
//
// The Socket.IO peer is spoken to with a raw `ws` client using Engine.IO v4 / Socket.IO v5
// frames (`40` connect, `42<ack>[event,arg]`, `43<ack>[reply]`, `2`/`3` ping/pong), like the load
// generator, in tickerfeed's mapping (see peers/README.md): the client maps the v1 ops it is
// given onto events with ack ids and the answers back onto v1 objects, and checks that no
// payload carries `type`, `op` or `id`.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const HERE = fileURLToPath(new URL('.', import.meta.url));
// name → [server directory, extra arguments]
const VARIANTS = { ws: ['ws', []], uws: ['uws', []], socketio: ['socketio', []], 'socketio-object': ['socketio', ['--emit', 'object']] };
const PEERS = Object.keys(VARIANTS);
const RATE = 2000;
const COLLECT_MS = 1500;
const THROTTLE_MS = 100;
const ALIGN_MS = 200;

let failures = 0;
function check(ok, what) {
  if (!ok) {
    failures++;
    console.log(`  FAIL ${what}`);
  }
  return ok;
}

function writeCsv(dir) {
  const symbols = Array.from({ length: 20 }, (_, i) => `SYM${String.fromCharCode(65 + i)}`);
  const lines = ['timestamp,symbol,price,size,bid,ask,volume'];
  const t0 = 1_700_000_000_000;
  for (let i = 0; i < 2000; i++) {
    const price = 100 + (i % 97) * 0.05;
    lines.push(`${t0 + i * 5},${symbols[i % 20]},${price.toFixed(2)},${1 + (i % 9) * 100},${(price - 0.01).toFixed(2)},${(price + 0.01).toFixed(2)},${10_000 + i}`);
  }
  const path = join(dir, 'ticks.csv');
  writeFileSync(path, lines.join('\n') + '\n');
  return { path, symbols };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startServer(peer, csv, rate, more = []) {
  const port = await freePort();
  const [dir, extra] = VARIANTS[peer];
  const child = spawn(process.execPath, [join(HERE, dir, 'server.mjs'), ...extra, ...more, '--host', '127.0.0.1', '--port', String(port), '--file', csv, '--rate', String(rate)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${peer}: no 'listening' line within 10 s`)), 10_000);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (/^listening \d+$/m.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    exited.then(({ code }) => reject(new Error(`${peer}: exited early with ${code}`)));
  });
  return { port, child, exited };
}

// Socket.IO: the v1 type of the answer to each op sent with an ack id.
const REPLY = { subscribe: 'subscribed', unsubscribe: 'unsubscribed', list: 'subscriptions', ping: 'pong' };

/** A protocol-v1 client; for Socket.IO, maps v1 ops onto events and the answers back to v1. */
function connect(peer, port, query = '') {
  const sio = peer.startsWith('socketio');
  const url = sio ? `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket${query}` : `ws://127.0.0.1:${port}/ws`;
  const ws = new WebSocket(url);
  const acks = new Map(); // ack id → the op and the v1 id it stands for
  const rawAcks = new Set(); // ack ids of packets sent by sendRaw
  let lastAck = 100; // above the ids the tests send by hand
  const client = {
    messages: [], // { at, msg, bytes }
    waiters: [],
    frameErrors: [],
    raw: [], // Socket.IO: every packet received after the connect, as text
    send(obj) {
      if (!sio) return ws.send(JSON.stringify(obj));
      // v1 `{op, id, ...fields}` → `42<n>[op, fields]` (an ack id when the op has an id).
      const { op, id, ...fields } = obj;
      const args = Object.keys(fields).length > 0 ? [op, fields] : [op];
      let n = '';
      if (id !== undefined) {
        n = String(++lastAck);
        acks.set(n, { op, id });
      }
      ws.send(`42${n}${JSON.stringify(args)}`);
    },
    /** Socket.IO only: sends a packet as it is (its ack, if any, is read from `raw`). */
    sendRaw(text) {
      const id = /^42(\d+)\[/.exec(text)?.[1];
      if (id !== undefined) rawAcks.add(id);
      ws.send(text);
    },
    close() {
      ws.terminate();
    },
    /** Resolves with the first message (from index `from`) matching `pred`. */
    waitFor(pred, ms = 3000, from = 0) {
      const found = client.messages.slice(from).find((m) => pred(m.msg));
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const waiter = { pred, resolve };
        client.waiters.push(waiter);
        setTimeout(() => {
          client.waiters = client.waiters.filter((w) => w !== waiter);
          reject(new Error('timed out waiting for a message'));
        }, ms);
      });
    },
  };
  const deliver = (msg, bytes) => {
    const entry = { at: performance.now(), msg, bytes };
    client.messages.push(entry);
    for (const w of client.waiters.slice()) {
      if (w.pred(msg)) {
        client.waiters = client.waiters.filter((x) => x !== w);
        w.resolve(entry);
      }
    }
  };
  const noReservedFields = (what, payload) => {
    if (payload === null || typeof payload !== 'object') return client.frameErrors.push(`${what}: argument ${JSON.stringify(payload)} is not an object`);
    for (const f of ['type', 'op', 'id']) {
      if (f in payload) client.frameErrors.push(`${what} carries '${f}'`);
    }
  };
  ws.on('message', (data) => {
    const text = data.toString();
    if (!sio) return deliver(JSON.parse(text), Buffer.byteLength(text));
    // Engine.IO: 0 open, 2 ping, 4 message; Socket.IO inside: 0 connect, 2 event, 3 ack.
    if (text[0] === '0') return ws.send('40');
    if (text === '2') return ws.send('3');
    if (text.startsWith('40')) return;
    client.raw.push(text);
    const ack = /^43(\d+)\[/.exec(text);
    if (ack) {
      const args = JSON.parse(text.slice(2 + ack[1].length));
      if (rawAcks.delete(ack[1])) return;
      const pending = acks.get(ack[1]);
      if (!pending) return client.frameErrors.push(`an ack nobody asked for: ${text.slice(0, 40)}`);
      acks.delete(ack[1]);
      const [payload] = args;
      if (args.length !== 1) client.frameErrors.push(`ack ${ack[1]} has ${args.length} arguments`);
      noReservedFields(`ack of ${pending.op}`, payload);
      if (payload?.error) return deliver({ type: 'error', id: pending.id, ...payload.error }, Buffer.byteLength(text));
      return deliver({ type: REPLY[pending.op], id: pending.id, ...payload }, Buffer.byteLength(text));
    }
    if (text.startsWith('42[')) {
      const [event, payload, ...more] = JSON.parse(text.slice(2));
      if (more.length > 0) client.frameErrors.push(`event '${event}' has ${more.length + 1} arguments`);
      noReservedFields(`event '${event}'`, payload);
      // The bytes of the quotes object alone, as a /ws frame would carry it.
      return deliver({ type: event, ...payload }, Buffer.byteLength(text) - `42[${JSON.stringify(event)},`.length - 1);
    }
    client.frameErrors.push(`unexpected frame ${text.slice(0, 40)}`);
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.once('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function quotesOf(client, symbols) {
  const per = new Map(symbols.map((s) => [s, []]));
  for (const { at, msg } of client.messages) {
    if (msg.type !== 'quotes') continue;
    for (const q of msg.quotes) {
      if (!per.has(q.symbol)) per.set(q.symbol, []);
      per.get(q.symbol).push({ at, seq: q.seq, snapshot: msg.snapshot === true, q });
    }
  }
  return per;
}

function checkQuoteShape(q) {
  const keys = ['symbol', 'seq', 'ts', 'pt', 'last', 'bid', 'ask', 'size', 'volume'];
  const ok = keys.every((k) => k in q) && keys.slice(1).every((k) => typeof q[k] === 'number');
  const ptOk = Math.abs(q.pt / 1000 - Date.now()) < 10_000; // µs since the epoch
  return check(ok && ptOk, `quote shape/pt: ${JSON.stringify(q)}`);
}

async function testPeer(peer, csv) {
  console.log(`${peer}:`);
  const { port, child, exited } = await startServer(peer, csv.path, RATE);
  const started = performance.now();
  try {
    const throttled = await connect(peer, port);
    const fast = await connect(peer, port);
    const aligned = await connect(peer, port);
    const tSyms = csv.symbols.slice(0, 5);
    const fSyms = csv.symbols.slice(5, 8);
    const aSyms = csv.symbols.slice(8, 12);
    await throttled.waitFor((m) => m.type === 'welcome');
    await fast.waitFor((m) => m.type === 'welcome');
    await aligned.waitFor((m) => m.type === 'welcome');
    throttled.send({ op: 'subscribe', symbols: [...tSyms.map((s) => s.toLowerCase()), 'NOPE'], throttle_ms: THROTTLE_MS, snapshot: true, id: 1 });
    fast.send({ op: 'subscribe', symbols: fSyms, throttle_ms: 0, id: 'f' });
    aligned.send({ op: 'subscribe', symbols: aSyms, throttle_ms: ALIGN_MS, align: true, id: 'a' });
    await sleep(COLLECT_MS / 2);
    throttled.send({ op: 'ping', id: 7 });
    throttled.send({ op: 'frobnicate', id: 8 });
    await sleep(COLLECT_MS / 2);
    const endAt = performance.now();
    const pongAt = throttled.messages.length;
    throttled.send({ op: 'unsubscribe', symbols: [tSyms[0]], id: 9 });

    // Order: welcome, subscribed, snapshot.
    const [m0, m1, m2] = throttled.messages.map((m) => m.msg);
    if (check(m0?.type === 'welcome', `first message is welcome (got ${m0?.type})`)) {
      check(m0.protocol === 1 && m0.throttle_ms === 250 && m0.max_frame_bytes === 16384 && m0.max_symbols === 1000 && typeof m0.instance === 'string' && typeof m0.server === 'string', 'welcome fields');
    }
    if (check(m1?.type === 'subscribed', `second message is subscribed (got ${m1?.type})`)) {
      check(m1.id === 1 && m1.throttle_ms === THROTTLE_MS, 'subscribed echoes id and throttle');
      check(JSON.stringify([...m1.symbols].sort()) === JSON.stringify([...tSyms].sort()), `subscribed symbols ${JSON.stringify(m1.symbols)}`);
      check(m1.rejected?.length === 1 && m1.rejected[0].symbol === 'NOPE' && m1.rejected[0].code === 'unknown_symbol', `rejected ${JSON.stringify(m1.rejected)}`);
    }
    if (check(m2?.type === 'quotes' && m2.snapshot === true, `third message is the snapshot (got ${JSON.stringify(m2)?.slice(0, 80)})`)) {
      check(m2.quotes.length === 5 && m2.quotes.every((q) => tSyms.includes(q.symbol)), 'snapshot has the latest of each new symbol');
    }

    // Throttled client: per-symbol seq increasing, deliveries >= ~90 ms apart, >= 5 each, still coming.
    const per = quotesOf(throttled, tSyms);
    for (const s of tSyms) {
      const list = per.get(s).filter((d) => d.at <= endAt);
      check(list.length >= 5, `${s} @${THROTTLE_MS}ms: ${list.length} deliveries (want >= 5)`);
      // Gaps are measured at receive time: on a loaded machine the client (or kernel) can stall
      // and hand over two frames at once. A server that ignores the throttle makes every gap
      // short; so allow a quarter of them short (two short gaps of 85 and 89 ms in 14 were seen
      // while builds loaded both cores), and bound the count over the whole span, which is the
      // throttle's real promise.
      const gaps = [];
      for (let i = 1; i < list.length; i++) {
        if (!check(list[i].seq > list[i - 1].seq, `${s} seq increases (${list[i - 1].seq} then ${list[i].seq})`)) break;
        gaps.push(list[i].at - list[i - 1].at);
      }
      const short = gaps.filter((g) => g < THROTTLE_MS - 10);
      check(short.length <= Math.max(2, Math.floor(gaps.length / 4)), `${s}: deliveries at least ${THROTTLE_MS - 10} ms apart (short gaps: ${short.map((g) => g.toFixed(1)).join(', ')} ms)`);
      if (list.length > 1) {
        const span = list[list.length - 1].at - list[0].at;
        check(list.length - 1 <= Math.floor((span + 10) / THROTTLE_MS), `${s}: ${list.length} deliveries in ${span.toFixed(0)} ms is within one per ${THROTTLE_MS} ms`);
      }
      const last = list[list.length - 1];
      check(last && endAt - last.at < 3 * THROTTLE_MS, `${s}: quotes keep coming (last ${last ? (endAt - last.at).toFixed(0) : '-'} ms before the end)`);
      if (last) checkQuoteShape(last.q);
    }
    for (const { msg, bytes } of throttled.messages.concat(fast.messages)) {
      if (msg.type === 'quotes' && !check(bytes <= 16384, `frame within 16 KiB (${bytes} bytes)`)) break;
    }
    for (const { msg } of throttled.messages) {
      if (msg.type !== 'quotes') continue;
      if (!check(new Set(msg.quotes.map((q) => q.symbol)).size === msg.quotes.length, 'one quote per symbol per frame')) break;
    }
    const pong = throttled.messages.find((m) => m.msg.type === 'pong')?.msg;
    check(pong?.id === 7 && typeof pong.ts === 'number', `pong ${JSON.stringify(pong)}`);
    const err = throttled.messages.find((m) => m.msg.type === 'error')?.msg;
    check(err?.id === 8 && err.code === 'bad_request' && typeof err.message === 'string', `error for an unknown op ${JSON.stringify(err)}`);
    const unsub = (await throttled.waitFor((m) => m.type === 'unsubscribed', 2000, pongAt).catch(() => null))?.msg;
    check(unsub?.id === 9 && unsub.symbols.length === 4 && !unsub.symbols.includes(tSyms[0]), `unsubscribed ${JSON.stringify(unsub)}`);

    // Throttle-0 client: (almost) every seq of its symbols.
    const fastSub = fast.messages.find((m) => m.msg.type === 'subscribed')?.msg;
    check(fastSub?.id === 'f' && fastSub.throttle_ms === 0 && fastSub.align === false, 'throttle-0 subscribed, not aligned');
    // Aligned: the symbols' changes go out together on the ALIGN_MS grid from the subscribe —
    // live frames a whole number of ticks apart, several quotes each.
    const alignedSub = aligned.messages.find((m) => m.msg.type === 'subscribed')?.msg;
    check(alignedSub?.id === 'a' && alignedSub.align === true && alignedSub.throttle_ms === ALIGN_MS, `aligned subscribed ${JSON.stringify(alignedSub)}`);
    const alignedFrames = aligned.messages.filter((m) => m.msg.type === 'quotes' && !m.msg.snapshot);
    const alignedQuotes = alignedFrames.reduce((n, m) => n + m.msg.quotes.length, 0);
    check(alignedFrames.length >= 4 && alignedFrames.length <= Math.ceil(COLLECT_MS / ALIGN_MS) + 1, `aligned: ${alignedFrames.length} live frames in ${COLLECT_MS} ms at ${ALIGN_MS} ms`);
    check(alignedQuotes >= 2 * alignedFrames.length, `aligned: ${alignedQuotes} quotes in ${alignedFrames.length} frames (the changes of a tick together)`);
    for (let i = 1; i < alignedFrames.length; i++) {
      const off = (alignedFrames[i].at - alignedFrames[i - 1].at) % ALIGN_MS;
      if (!check(off <= 40 || off >= ALIGN_MS - 40, `aligned frames ${(alignedFrames[i].at - alignedFrames[i - 1].at).toFixed(1)} ms apart: a multiple of ${ALIGN_MS} ms (±40)`)) break;
    }
    const fper = quotesOf(fast, fSyms);
    let got = 0;
    let span = 0;
    for (const s of fSyms) {
      const list = fper.get(s);
      for (let i = 1; i < list.length; i++) {
        if (!check(list[i].seq > list[i - 1].seq, `${s} @0ms seq increases`)) break;
      }
      if (list.length > 0) {
        got += list.length;
        span += list[list.length - 1].seq - list[0].seq + 1;
      }
    }
    // The feed publishes everything due in one batch and keeps the latest quote per symbol, so a
    // stalled replay timer (a loaded machine) conflates a few seqs before any client sees them.
    check(span > 0 && got / span >= 0.85, `throttle 0: received ${got} of ${span} seqs (want >= 85%)`);
    check(throttled.frameErrors.length + fast.frameErrors.length === 0, `frames well formed ${[...throttled.frameErrors, ...fast.frameErrors].slice(0, 3)}`);
    console.log(`  throttled: ${tSyms.map((s) => per.get(s).length).join('/')} deliveries; throttle 0: ${got}/${span} seqs in ${((endAt - started) / 1000).toFixed(1)} s`);
    throttled.close();
    fast.close();
    aligned.close();
  } finally {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    const { code, signal } = await exited;
    clearTimeout(timer);
    check(code === 0, `${peer}: clean exit on SIGTERM (code ${code}, signal ${signal})`);
  }

  // Paused (--rate 0): welcome, empty snapshot, no live quotes.
  const paused = await startServer(peer, csv.path, 0);
  try {
    const c = await connect(peer, paused.port);
    await c.waitFor((m) => m.type === 'welcome');
    c.send({ op: 'subscribe', symbols: csv.symbols.slice(0, 3), throttle_ms: 0 });
    await c.waitFor((m) => m.type === 'quotes' && m.snapshot === true).catch(() => null);
    await sleep(300);
    const quotes = c.messages.filter((m) => m.msg.type === 'quotes');
    check(quotes.length === 1 && quotes[0].msg.snapshot === true && quotes[0].msg.quotes.length === 0, `paused: one empty snapshot, no quotes (got ${quotes.length} quote frames)`);
    c.close();
  } finally {
    paused.child.kill('SIGTERM');
    await paused.exited;
  }

  // --paused at a rate, then the feed control the bench uses: nothing until resume, quotes
  // after it, pause stops them again; anything else is a 400.
  const held = await startServer(peer, csv.path, RATE, ['--paused']);
  try {
    const control = async (body) => {
      const res = await fetch(`http://127.0.0.1:${held.port}/api/feeds/replay/control`, { method: 'POST', body });
      return { status: res.status, json: await res.json().catch(() => null) };
    };
    const c = await connect(peer, held.port);
    await c.waitFor((m) => m.type === 'welcome');
    c.send({ op: 'subscribe', symbols: csv.symbols.slice(0, 3), throttle_ms: 0 });
    await c.waitFor((m) => m.type === 'subscribed');
    await sleep(300);
    const live = () => c.messages.filter((m) => m.msg.type === 'quotes' && !m.msg.snapshot).length;
    check(live() === 0, `--paused: no live quotes before resume (got ${live()})`);
    const resumed = await control('{"action":"resume"}');
    check(resumed.status === 200 && resumed.json?.state === 'running', `resume answers 200 running (got ${resumed.status} ${JSON.stringify(resumed.json)})`);
    await c.waitFor((m) => m.type === 'quotes' && !m.snapshot, 2000).catch(() => null);
    check(live() > 0, 'quotes flow after resume');
    const pausedAgain = await control('{"action":"pause"}');
    check(pausedAgain.status === 200 && pausedAgain.json?.state === 'paused', `pause answers 200 paused (got ${pausedAgain.status})`);
    await sleep(100); // a batch already scheduled may still go out
    const before = live();
    await sleep(300);
    check(live() === before, `no quotes after pause (${live() - before} arrived)`);
    check((await control('{"action":"seek"}')).status === 400, 'an unsupported action is a 400');
    c.close();
  } finally {
    held.child.kill('SIGTERM');
    await held.exited;
  }

  if (peer.startsWith('socketio')) await testSocketioMapping(peer, csv);
}

/** tickerfeed's Socket.IO mapping beyond what the v1 checks above reach: the wire form of
 * acks and events, the argument shapes, the subscription in the URL, errors with and without
 * an ack id. */
async function testSocketioMapping(peer, csv) {
  const srv = await startServer(peer, csv.path, RATE);
  try {
    const [a, b, c] = csv.symbols;
    // The subscription in the URL: welcome, then a `subscribed` event, then the snapshot.
    const q = await connect(peer, srv.port, `&symbols=${a},${b.toLowerCase()}&throttle_ms=0`);
    await q.waitFor((m) => m.type === 'quotes' && m.snapshot === true);
    const [w, sub, snap] = q.messages.map((m) => m.msg);
    check(w.type === 'welcome' && w.protocol === 1, `URL subscription: welcome first (got ${w.type})`);
    check(sub.type === 'subscribed' && sub.id === undefined && sub.throttle_ms === 0 && JSON.stringify([...sub.symbols].sort()) === JSON.stringify([a, b]), `URL subscription: a subscribed event ${JSON.stringify(sub)}`);
    check(snap.type === 'quotes' && snap.quotes.length === 2, 'URL subscription: its snapshot');
    check(q.raw[0].startsWith('42["welcome",{') && q.raw[1].startsWith('42["subscribed",{'), `wire: ${q.raw.slice(0, 2).map((t) => t.slice(0, 30))}`);
    check(/^42\["quotes",\{"snapshot":true,"quotes":\[/.test(q.raw[2]), `wire: the snapshot event ${q.raw[2].slice(0, 40)}`);
    await q.waitFor((m) => m.type === 'quotes' && !m.snapshot);
    check(q.raw.some((t) => t.startsWith('42["quotes",{"quotes":[{"symbol":')), 'wire: live quotes as 42["quotes",{"quotes":[...]}]');
    q.close();

    const s = await connect(peer, srv.port);
    await s.waitFor((m) => m.type === 'welcome');
    // An array with an ack id: the ack is 43<n>[{throttle_ms, symbols, rejected}].
    s.sendRaw(`421${JSON.stringify(['subscribe', [a, 'NOPE']])}`);
    s.sendRaw(`422${JSON.stringify(['ping'])}`);
    await sleep(200);
    const ack1 = s.raw.find((t) => t.startsWith('431['));
    const v = ack1 && JSON.parse(ack1.slice(3))[0];
    check(v && v.throttle_ms === 250 && v.symbols.length === 1 && v.symbols[0] === a && v.rejected?.[0]?.symbol === 'NOPE' && v.rejected[0].code === 'unknown_symbol' && !('type' in v), `subscribe ack ${ack1}`);
    const ack2 = s.raw.find((t) => t.startsWith('432['));
    check(ack2 && typeof JSON.parse(ack2.slice(3))[0].ts === 'number', `ping ack ${ack2}`);
    // A comma string without an ack id: a `subscribed` event; `list` without one: `subscriptions`.
    s.send({ op: 'subscribe', symbols: `${b}, ${c}`, throttle_ms: 0, snapshot: false });
    const ev = (await s.waitFor((m) => m.type === 'subscribed', 2000).catch(() => null))?.msg;
    check(ev?.symbols?.length === 3 && ev.throttle_ms === 0, `comma string, no ack: subscribed event ${JSON.stringify(ev)}`);
    s.sendRaw(`42${JSON.stringify(['subscribe', `${b},${c}`])}`);
    await sleep(100);
    s.send({ op: 'list' });
    const list = (await s.waitFor((m) => m.type === 'subscriptions', 2000).catch(() => null))?.msg;
    check(list?.symbols?.length === 3, `list without ack: subscriptions event ${JSON.stringify(list)}`);
    s.send({ op: 'unsubscribe', symbols: [a], id: 5 });
    const unsub = (await s.waitFor((m) => m.type === 'unsubscribed', 2000).catch(() => null))?.msg;
    check(unsub?.id === 5 && unsub.symbols.length === 2 && !unsub.symbols.includes(a), `unsubscribe ack ${JSON.stringify(unsub)}`);
    // Errors: with an ack id in the ack, without one as an `error` event.
    s.sendRaw(`429${JSON.stringify(['frobnicate', {}])}`);
    s.sendRaw(`42${JSON.stringify(['subscribe', { symbols: 7 }])}`);
    await sleep(200);
    const errAck = s.raw.find((t) => t.startsWith('439['));
    const e = errAck && JSON.parse(errAck.slice(3))[0];
    check(e?.error?.code === 'bad_request' && typeof e.error.message === 'string', `unknown event with an ack id: ${errAck}`);
    const errEv = s.raw.find((t) => t.startsWith('42["error",'));
    const e2 = errEv && JSON.parse(errEv.slice(2))[1];
    check(e2?.code === 'bad_request' && typeof e2.message === 'string' && !('type' in e2), `bad subscribe without ack id: ${errEv}`);
    check(q.frameErrors.length + s.frameErrors.length === 0, `frames well formed ${[...q.frameErrors, ...s.frameErrors].slice(0, 3)}`);
    s.close();
  } finally {
    srv.child.kill('SIGTERM');
    await srv.exited;
  }
}

const which = process.argv.slice(2).length ? process.argv.slice(2) : PEERS;
const dir = mkdtempSync(join(tmpdir(), 'peers-smoke-'));
try {
  const csv = writeCsv(dir);
  for (const peer of which) {
    if (!PEERS.includes(peer)) throw new Error(`unknown peer ${peer}`);
    const before = failures;
    try {
      await testPeer(peer, csv);
    } catch (e) {
      check(false, `${peer}: ${e.stack ?? e}`);
    }
    console.log(`  ${failures === before ? 'ok' : 'FAILED'}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(failures === 0 ? 'smoke: all peers passed' : `smoke: ${failures} failure(s)`);
process.exit(failures === 0 ? 0 : 1);
