// A server restart: the page shows the drop, reconnects on its own to the new instance on the
// same port, and updates resume with no click. After the deliberate stop the only console
// errors allowed are the browser's own "WebSocket connection … failed" lines.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, consoleErrors, waitConnected } from './helpers.mjs';

let browser;
const servers = [];
before(async () => { browser = await launchBrowser(); });
after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});

test('reconnects after the server restarts on the same port', async () => {
  const first = await startServer({ name: 'reconnect-1' });
  servers.push(first);
  const { context, page } = await openPage(browser);
  try {
    await page.goto(first.url);
    await waitConnected(page);
    await page.waitForFunction(() => window.tickerfeed.conn.stats.totalQuotes > 20);
    const instance1 = await page.evaluate(() => window.tickerfeed.conn.instance);
    assert.deepEqual(consoleErrors(page.log), [], 'clean before the stop');

    const stoppedAt = Date.now();
    assert.equal(await first.stop(), 0, 'server exits 0 on SIGTERM');
    await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 5000 });
    const dropShownAfter = Date.now() - stoppedAt;
    assert.match(await page.textContent('#status-text'), /connection lost/);
    // While the server is down the page keeps trying (several attempts, backoff growing).
    await page.waitForFunction(() => window.tickerfeed.conn.attempt >= 2, null, { timeout: 8000 });

    const second = await startServer({ name: 'reconnect-2', port: first.port });
    servers.push(second);
    const restartedAt = Date.now();
    await waitConnected(page, 15_000);
    const reconnectedAfter = Date.now() - restartedAt;
    const instance2 = await page.evaluate(() => window.tickerfeed.conn.instance);
    assert.notEqual(instance2, instance1, 'a new server instance');
    // Updates resume: new quotes counted and a price cell rewritten, seq tracking restarted.
    const quotes = await page.evaluate(() => window.tickerfeed.conn.stats.totalQuotes);
    const aaplTime = await page.textContent('#watchlist tr[data-symbol="AAPL"] td.c-time');
    await page.waitForFunction((q) => window.tickerfeed.conn.stats.totalQuotes > q + 20, quotes, { timeout: 5000 });
    await page.waitForFunction(
      (t) => document.querySelector('#watchlist tr[data-symbol="AAPL"] td.c-time').textContent !== t, aaplTime, { timeout: 5000 });
    const seq = await page.evaluate(() => window.tickerfeed.conn.lastSeq.get('AAPL'));
    assert.ok(seq > 0, 'AAPL quotes of the new instance applied');
    console.log(`drop shown after ${dropShownAfter} ms; reconnected ${reconnectedAfter} ms after the restart`);

    const errors = consoleErrors(page.log, stoppedAt);
    const other = errors.filter((e) => !/^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/.test(e));
    assert.deepEqual(other, [], 'only WebSocket connection failures after the stop');
    assert.deepEqual(page.log.failed, [], 'no failed HTTP request');
  } finally {
    await context.close();
  }
});
