// The dashboard on the channels beyond quotes: the time and sales fills from `trades` with
// consecutive seqs, the chart's last candle follows `bars`, a reconnection resumes the trades
// from `since` (a server restart does not: its seqs began again), and the fault banner shows
// what a server started with --faults injects, polling /api/faults only on such a server.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, consoleErrors, waitConnected, until } from './helpers.mjs';

// About 40 trades a second on AAPL (4,000 quotes/s over the ~100 simulated symbols): a
// reconnection of a quarter second misses some, so its resume has a backlog to send.
const SIM_RATE = ['--sim-rate', '4000'];

let browser;
const servers = [];
before(async () => { browser = await launchBrowser(); });
after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});

async function serve(name, args = []) {
  const server = await startServer({ name, args });
  servers.push(server);
  return server;
}

/** Every WebSocket the page opens, with the JSON it sent and received (one entry per socket). */
function recordSockets(page) {
  const sockets = [];
  page.on('websocket', (ws) => {
    const socket = { sent: [], received: [] };
    sockets.push(socket);
    const parse = (list) => (frame) => { try { list.push(JSON.parse(frame.payload)); } catch { /* not JSON */ } };
    ws.on('framesent', parse(socket.sent));
    ws.on('framereceived', parse(socket.received));
  });
  return sockets;
}

const all = (sockets, side) => sockets.flatMap((s) => s[side]);
const tradesOf = (messages, symbol) => messages.filter((m) => m.type === 'trades').flatMap((m) => m.trades).filter((t) => t.symbol === symbol);
const barsOf = (messages, symbol, resolution) => messages.filter((m) => m.type === 'bars' && m.resolution === resolution)
  .flatMap((m) => m.bars).filter((b) => b.symbol === symbol);

/** The tape's trade rows, newest first: seq, price text, tick, backlog flag. */
function tapeRows(page) {
  return page.$$eval('#tape tbody tr.trade', (rows) => rows.map((r) => ({
    seq: Number(r.dataset.seq),
    price: r.querySelector('.t-price').textContent,
    tick: r.dataset.tick,
    recovered: r.dataset.recovered ?? null,
  })));
}

/** Consecutive seqs, newest first: the simulation prints a trade with every quote. */
function assertConsecutive(rows, what) {
  for (let i = 1; i < rows.length; i++) {
    assert.equal(rows[i - 1].seq, rows[i].seq + 1, `${what}: seq ${rows[i - 1].seq} above ${rows[i].seq}`);
  }
}

test('the tape fills with AAPL trades in seq order; the chart\'s last candle follows the bars', async () => {
  const server = await serve('channels', SIM_RATE);
  const { context, page } = await openPage(browser, { storage: { 'tickerfeed.selected': '"AAPL"' } });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  const sockets = recordSockets(page);
  try {
    await page.goto(server.url);
    await waitConnected(page);
    // The charted symbol: throttle 0, its trades and its 1 s bars (the chart opens with 5 s candles).
    await until(() => all(sockets, 'sent').some((m) => m.op === 'subscribe' && m.symbols.includes('AAPL') && m.throttle_ms === 0
      && m.channels?.includes('trades') && m.channels.includes('bars:1s')), { message: 'AAPL subscribed with trades and bars:1s' });
    await until(() => all(sockets, 'received').some((m) => m.type === 'subscribed' && m.channels?.trades?.includes('AAPL')
      && m.channels['bars:1s']?.includes('AAPL')), { message: 'the server confirms the channels' });
    // Only the charted symbol has trades: the rest of the watchlist is quotes only.
    const confirmed = all(sockets, 'received').filter((m) => m.type === 'subscribed').at(-1);
    assert.deepEqual(confirmed.channels.trades, ['AAPL']);

    // The tape: newest first, consecutive seqs, each row a trade the server sent.
    await page.waitForFunction(() => document.querySelectorAll('#tape tbody tr.trade').length >= 30, null, { timeout: 10_000 });
    assert.equal(await page.getAttribute('#tape', 'data-symbol'), 'AAPL');
    const rows = await tapeRows(page);
    assertConsecutive(rows, 'tape');
    assert.equal(await page.locator('#tape tr.gap').count(), 0, 'no trade lost');
    assert.ok(rows.every((r) => r.recovered === null), 'nothing from a backlog');
    const sent = new Map(tradesOf(all(sockets, 'received'), 'AAPL').map((t) => [t.seq, t]));
    for (const r of rows) {
      const t = sent.get(r.seq);
      assert.ok(t, `trade ${r.seq} was sent`);
      assert.equal(Number(r.price.replace(/,/g, '')), t.price, `trade ${r.seq}'s price`);
    }
    // Tick colours: up or down by the previous (older) trade's price; unchanged keeps the move.
    for (let i = 0; i < rows.length - 1; i++) {
      const [now, prev] = [sent.get(rows[i].seq).price, sent.get(rows[i + 1].seq).price];
      if (now !== prev) assert.equal(rows[i].tick, now > prev ? 'up' : 'down', `trade ${rows[i].seq}'s tick`);
      else assert.equal(rows[i].tick, rows[i + 1].tick, `trade ${rows[i].seq} keeps the tick`);
    }
    // It keeps filling, and stays bounded.
    await page.waitForFunction((s) => Number(document.getElementById('tape').dataset.lastSeq) > s + 20, rows[0].seq, { timeout: 5000 });
    await page.waitForFunction(() => document.querySelectorAll('#tape tbody tr').length === 200, null, { timeout: 15_000 });

    // The chart: its newest seq moves, and its last candle is the newest streamed bar's.
    const candle = async (resolution, widthMs) => {
      const s0 = Number(await page.getAttribute('#chart', 'data-last-seq'));
      await page.waitForFunction((s) => Number(document.getElementById('chart').dataset.lastSeq) > s, s0, { timeout: 5000 });
      const snap = await page.evaluate(() => ({
        seq: Number(document.getElementById('chart').dataset.lastSeq),
        bars: window.tickerfeed.chart.bars.map(({ t, open, high, low, close, volume }) => ({ t, open, high, low, close, volume })),
        readout: document.getElementById('chart-readout').textContent,
      }));
      await until(() => barsOf(all(sockets, 'received'), 'AAPL', resolution).some((b) => b.seq === snap.seq),
        { message: `a ${resolution} bar with seq ${snap.seq} received` });
      const bar = barsOf(all(sockets, 'received'), 'AAPL', resolution).findLast((b) => b.seq === snap.seq);
      const last = snap.bars.at(-1);
      assert.equal(last.t, Math.floor(bar.t / widthMs) * widthMs, 'the bar is in the last candle');
      assert.equal(last.close, bar.close, 'the last candle closes at the bar\'s close');
      assert.ok(last.high >= bar.high && last.low <= bar.low, 'the candle spans the bar');
      assert.ok(snap.bars.every((b, i, a) => i === 0 || b.t > a[i - 1].t), 'candles in strictly increasing time, none twice');
      assert.match(snap.readout, /C \d/);
      return snap;
    };
    const five = await candle('1s', 5000);
    assert.ok(five.bars.length >= 2, `backfilled candles (${five.bars.length})`);

    // One-minute candles read the 1 m bars: another channel.
    await page.selectOption('#chart-interval', '60000');
    await until(() => all(sockets, 'sent').some((m) => m.op === 'subscribe' && m.symbols.includes('AAPL') && m.channels?.includes('bars:1m')),
      { message: 'AAPL subscribed with bars:1m' });
    await candle('1m', 60_000);

    assert.ok(!requests.some((u) => u.includes('/api/faults')), 'no /api/faults request on a server without --faults');
    assert.deepEqual(consoleErrors(page.log), [], 'no console error');
    assert.deepEqual(page.log.failed, [], 'no failed request');
  } finally {
    await context.close();
  }
});

test('a reconnection resumes the trades from since: the backlog joins with no gap and no duplicate', async () => {
  const server = await serve('channels-resume', SIM_RATE);
  const { context, page } = await openPage(browser, { storage: { 'tickerfeed.selected': '"AAPL"' } });
  const sockets = recordSockets(page);
  try {
    await page.goto(server.url);
    await waitConnected(page);
    await page.waitForFunction(() => document.querySelectorAll('#tape tbody tr.trade').length >= 10, null, { timeout: 10_000 });
    // Drop the socket (the same server stays up): the page reconnects within 0.25–0.5 s.
    const last = await page.evaluate(() => {
      const { conn } = window.tickerfeed;
      conn.ws.close();
      return conn.lastTradeSeq.get('AAPL');
    });
    await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 5000 });
    await waitConnected(page);
    await until(() => sockets.length === 2, { message: 'a second socket' });
    // The resubscribe asks for the trades after the last one seen.
    await until(() => sockets[1].sent.some((m) => m.op === 'subscribe' && m.since), { message: 'a subscribe with since' });
    const resubscribe = sockets[1].sent.find((m) => m.op === 'subscribe' && m.since);
    assert.deepEqual(resubscribe.since, { AAPL: last });
    assert.ok(resubscribe.channels.includes('trades'));
    // The backlog: the trades printed while away (at ~40 a second, some), marked, complete.
    await until(() => sockets[1].received.some((m) => m.type === 'trades' && m.recovered === true), { message: 'a recovered backlog' });
    const backlog = sockets[1].received.filter((m) => m.type === 'trades' && m.recovered !== undefined).flatMap((m) => m.trades);
    assert.ok(backlog.length > 0, 'trades printed while the page was away');
    assert.equal(backlog[0].seq, last + 1, 'the backlog starts right after since');
    await page.waitForFunction((s) => Number(document.getElementById('tape').dataset.lastSeq) > s, backlog.at(-1).seq + 3, { timeout: 5000 });
    const rows = await tapeRows(page);
    // The rows from before the drop are still there; the whole tape is one run of seqs.
    assert.ok(rows.some((r) => r.seq === last), `trade ${last} (before the drop) still shown`);
    assertConsecutive(rows, 'tape across the reconnection');
    assert.equal(await page.locator('#tape tr.gap').count(), 0, 'no trade lost');
    const marked = rows.filter((r) => r.recovered === 'true').map((r) => r.seq);
    assert.deepEqual(marked, backlog.map((t) => t.seq).reverse(), 'exactly the backlog rows are marked');
    // The chart backfilled again (bars closed while away never stream again) and goes on.
    const s0 = Number(await page.getAttribute('#chart', 'data-last-seq'));
    await page.waitForFunction((s) => Number(document.getElementById('chart').dataset.lastSeq) > s, s0, { timeout: 5000 });
    assert.deepEqual(consoleErrors(page.log), [], 'no console error');
    assert.deepEqual(page.log.failed, [], 'no failed request');
  } finally {
    await context.close();
  }
});

test('after a server restart the tape starts again: no since for the old numbering', async () => {
  const first = await serve('channels-restart-1', SIM_RATE);
  const { context, page } = await openPage(browser, { storage: { 'tickerfeed.selected': '"AAPL"' } });
  const sockets = recordSockets(page);
  try {
    await page.goto(first.url);
    await waitConnected(page);
    await page.waitForFunction(() => document.querySelectorAll('#tape tbody tr.trade').length >= 10, null, { timeout: 10_000 });
    const instance1 = await page.evaluate(() => window.tickerfeed.conn.instance);
    const stoppedAt = Date.now();
    assert.equal(await first.stop(), 0);
    await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 5000 });
    const second = await startServer({ name: 'channels-restart-2', port: first.port, args: SIM_RATE });
    servers.push(second);
    await waitConnected(page, 15_000);
    assert.notEqual(await page.evaluate(() => window.tickerfeed.conn.instance), instance1, 'a new instance');
    const now = sockets.at(-1);
    await until(() => now.sent.some((m) => m.op === 'subscribe' && m.channels?.includes('trades')), { message: 'trades subscribed again' });
    assert.ok(now.sent.every((m) => m.since === undefined), 'no since sent to the new instance');
    await page.waitForFunction(() => document.querySelectorAll('#tape tbody tr.trade').length >= 5, null, { timeout: 10_000 });
    // Every row is the new instance's: the old ones were cleared.
    const fresh = new Set(tradesOf(now.received, 'AAPL').map((t) => t.seq));
    const rows = await tapeRows(page);
    assert.ok(rows.every((r) => fresh.has(r.seq)), 'only trades of the new instance');
    assertConsecutive(rows, 'tape after the restart');
    const errors = consoleErrors(page.log, stoppedAt).filter((e) => !/^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/.test(e));
    assert.deepEqual(errors, [], 'only WebSocket connection failures after the stop');
  } finally {
    await context.close();
  }
});

test('with --faults, the banner lists an injected fault and goes when it is removed', async () => {
  const server = await serve('channels-faults', ['--faults']);
  const { context, page } = await openPage(browser);
  const polls = [];
  page.on('request', (r) => { if (r.url().endsWith('/api/faults')) polls.push(Date.now()); });
  const sockets = recordSockets(page);
  try {
    await page.goto(server.url);
    await waitConnected(page);
    await until(() => all(sockets, 'received').some((m) => m.type === 'welcome' && m.faults === true), { message: 'welcome with faults' });
    // Polled every 2 s; nothing active yet, so no banner.
    await until(() => polls.length >= 2, { timeout: 6000, message: 'two polls of /api/faults' });
    assert.ok(polls[1] - polls[0] >= 1500, `polled every 2 s (${polls[1] - polls[0]} ms apart)`);
    assert.equal(await page.isVisible('#fault-banner'), false, 'no banner while no fault is active');

    // A recurring stall (a one-shot fault leaves the list as soon as it has fired): this page's
    // session stalls 3 s now and every minute, and the fault stays listed until deleted.
    const post = await fetch(`${server.url}/api/faults`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'stall', ms: 3000, every: '60s' }),
    });
    assert.ok(post.ok, `POST /api/faults: ${post.status} ${await post.text()}`);
    await page.waitForSelector('#fault-banner:not([hidden])', { timeout: 5000 });
    assert.equal(await page.textContent('#fault-banner li'), 'stall · every session (ms 3000, every 60s)');
    assert.equal(await page.getAttribute('#fault-banner', 'data-count'), '1');

    const del = await fetch(`${server.url}/api/faults`, { method: 'DELETE' });
    assert.ok(del.ok, `DELETE /api/faults: ${del.status}`);
    await page.waitForSelector('#fault-banner', { state: 'hidden', timeout: 5000 });
    assert.deepEqual(consoleErrors(page.log), [], 'no console error');
    assert.deepEqual(page.log.failed, [], 'no failed request');
  } finally {
    await context.close();
  }
});
