// GET /sse in a real browser: the EventSource API of Chromium subscribes with a URL, gets
// welcome, subscribed and quotes (snapshot first, seqs rising, throttled), and reconnects by
// itself after the server restarts, getting snapshots again.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, consoleErrors, checkThrottledBatches } from './helpers.mjs';

const FAST = ['--sim-rate', '20000'];
let server, browser;
before(async () => {
  // A fast simulation: every symbol has a price within milliseconds of the start, so each
  // (re)connection's snapshot carries the symbols it asks for.
  server = await startServer({ name: 'sse', args: FAST });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('an EventSource subscribes by URL and gets throttled quotes, snapshot first', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(server.url);
    await page.waitForFunction(async () => (await (await fetch('/api/quotes?symbols=AAPL,MSFT')).json()).quotes.length === 2);
    const seen = await page.evaluate(() => new Promise((resolve, reject) => {
      const out = { welcome: null, subscribed: null, batches: [] };
      const source = new EventSource('/sse?symbols=AAPL,MSFT,NOPE&throttle_ms=300');
      const timer = setTimeout(() => { source.close(); reject(new Error(`timed out: ${JSON.stringify(out).slice(0, 300)}`)); }, 15000);
      source.addEventListener('welcome', (e) => { out.welcome = JSON.parse(e.data); });
      source.addEventListener('subscribed', (e) => { out.subscribed = JSON.parse(e.data); });
      source.addEventListener('quotes', (e) => {
        out.batches.push({ at: performance.now(), data: JSON.parse(e.data) });
        if (out.batches.length === 10) { clearTimeout(timer); source.close(); resolve(out); }
      });
    }));
    assert.equal(seen.welcome.protocol, 1);
    assert.deepEqual(seen.subscribed.symbols, ['AAPL', 'MSFT']);
    assert.deepEqual(seen.subscribed.rejected, [{ symbol: 'NOPE', code: 'unknown_symbol' }]);
    checkThrottledBatches(seen.batches, { symbols: ['AAPL', 'MSFT'], throttleMs: 300 });
    assert.deepEqual(consoleErrors(page.log), []);
  } finally {
    await context.close();
  }
});

test('an EventSource reconnects by itself after a restart and gets snapshots again', async () => {
  const first = await startServer({ name: 'sse-restart-1', args: FAST });
  let second;
  const { context, page } = await openPage(browser);
  try {
    await page.goto(first.url);
    // The page keeps its own record: welcomes (one per connection) and snapshot batches.
    await page.evaluate(() => {
      window.sseLog = { welcomes: [], snapshots: 0, errors: 0 };
      const source = new EventSource('/sse?symbols=AAPL');
      source.addEventListener('welcome', (e) => window.sseLog.welcomes.push(JSON.parse(e.data).instance));
      source.addEventListener('quotes', (e) => { if (JSON.parse(e.data).snapshot) window.sseLog.snapshots += 1; });
      source.addEventListener('error', () => { window.sseLog.errors += 1; });
    });
    await page.waitForFunction(() => window.sseLog.snapshots === 1, null, { timeout: 10000 });
    assert.equal(await first.stop(), 0, 'server exits 0 on SIGTERM');
    // The stream's end is an error event to an EventSource, which then retries on its own.
    await page.waitForFunction(() => window.sseLog.errors >= 1, null, { timeout: 10000 });
    second = await startServer({ name: 'sse-restart-2', port: first.port, args: FAST });
    await page.waitForFunction(() => window.sseLog.welcomes.length === 2 && window.sseLog.snapshots === 2, null, { timeout: 15000 });
    const instances = await page.evaluate(() => window.sseLog.welcomes);
    assert.notEqual(instances[0], instances[1], 'the second welcome comes from the new instance');
  } finally {
    await context.close();
    await second?.stop();
  }
});
