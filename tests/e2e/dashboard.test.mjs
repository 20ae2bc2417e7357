// The dashboard against the default server (simulated feed): clean load, live prices, the
// watchlist's add/remove/persistence, and the chart.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, consoleErrors, waitConnected, cell, rowSymbols, until } from './helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer({ name: 'dashboard' });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  const code = await server?.stop();
  assert.equal(code, 0, 'the server exits 0 on SIGTERM');
});

test('loads with no console error and no failed request; prices change within 2 s', async () => {
  const { context, page } = await openPage(browser);
  try {
    const favicon = page.waitForResponse((r) => r.url().endsWith('/favicon.svg'));
    await page.goto(server.url, { waitUntil: 'load' });
    assert.equal((await favicon).status(), 200, 'favicon served');
    await waitConnected(page);
    // First visit: the default watchlist (what this server has of it).
    assert.deepEqual(await rowSymbols(page), ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'JPM']);
    // Wait for every row to show a price, then for a change within 2 s.
    await page.waitForFunction(() => [...document.querySelectorAll('#watchlist td.c-last')].every((td) => /\d/.test(td.textContent)));
    const prices = await page.$$eval('#watchlist td.c-last', (tds) => tds.map((td) => td.textContent));
    const t0 = Date.now();
    await page.waitForFunction(
      (old) => [...document.querySelectorAll('#watchlist td.c-last')].some((td, i) => td.textContent !== old[i]),
      prices, { timeout: 2000, polling: 50 },
    );
    const changedAfter = Date.now() - t0;
    // The status bar: message rate and a fresh newest quote.
    await page.waitForFunction(() => Number(document.getElementById('msg-rate').textContent.replace(/,/g, '')) > 0);
    const age = await page.textContent('#quote-age');
    assert.match(age, /^\d+ ms$|^[0-4]\.\d s$/, `newest quote is fresh (${age})`);
    const names = await page.textContent('#watchlist tr[data-symbol="AAPL"] td.c-name');
    assert.equal(names, 'Apple Inc.');
    console.log(`first price change after ${changedAfter} ms; newest quote age ${age}`);
    assert.deepEqual(consoleErrors(page.log), [], 'no console error');
    assert.deepEqual(page.log.failed, [], 'no failed request');
  } finally {
    await context.close();
  }
});

test('every column the watchlist shows is wide enough to read, at common screen widths', async () => {
  // Columns are dropped as the screen narrows; one left with no room shows its header over
  // its neighbour's (a 1280-px laptop once got a name column 0 px wide).
  const problems = [];
  for (const width of [1920, 1600, 1440, 1366, 1280, 1200, 1100, 1024, 900, 768, 390]) {
    const { context, page } = await openPage(browser, { viewport: { width, height: 900 } });
    try {
      await page.goto(server.url);
      await waitConnected(page);
      await page.waitForFunction(() => document.querySelector('#watchlist tr[data-symbol="AAPL"] td.c-name')?.textContent === 'Apple Inc.');
      const columns = await page.$$eval('#watchlist thead th', (ths) => ths
        .filter((th) => getComputedStyle(th).display !== 'none')
        .map((th) => ({ name: th.className, text: th.textContent.trim(), width: th.clientWidth, needs: th.scrollWidth })));
      for (const c of columns) {
        if (c.needs > c.width + 1) problems.push(`${width} px: column ${c.name} ("${c.text}") is ${c.width} px, its header needs ${c.needs}`);
        if (c.name === 'c-name' && c.width < 72) problems.push(`${width} px: the name column is ${c.width} px (< 72)`);
      }
    } finally {
      await context.close();
    }
  }
  assert.deepEqual(problems, []);
});

test('adds and removes symbols; the watchlist survives a reload', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(server.url);
    await waitConnected(page);
    // Add with the form (the input has a datalist of the server's symbols).
    assert.ok(await page.$eval('#symbol-list', (d) => [...d.options].some((o) => o.value === 'NFLX')), 'autocomplete lists NFLX');
    await page.getByLabel('Add symbol').fill('nflx');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#watchlist tr[data-symbol="NFLX"]:not(.waiting)');
    await page.waitForFunction(() => /\d/.test(document.querySelector('#watchlist tr[data-symbol="NFLX"] td.c-last').textContent));
    // An unknown symbol is refused with a message, not added.
    await page.getByLabel('Add symbol').fill('ZZZZ9');
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    await page.waitForFunction(() => document.getElementById('add-message').textContent.includes('not a symbol'));
    assert.equal(await page.$('#watchlist tr[data-symbol="ZZZZ9"]'), null);
    // Remove with the row's button, and another with the keyboard (Delete on the symbol).
    await page.getByRole('button', { name: 'Remove MSFT' }).click();
    await page.waitForSelector('#watchlist tr[data-symbol="MSFT"]', { state: 'detached' });
    await page.getByRole('button', { name: 'JPM: show chart' }).focus();
    await page.keyboard.press('Delete');
    await page.waitForSelector('#watchlist tr[data-symbol="JPM"]', { state: 'detached' });
    const expected = ['AAPL', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'NFLX'];
    assert.deepEqual(await rowSymbols(page), expected);
    // The server no longer sends the removed symbols.
    await page.waitForFunction(() => !window.tickerfeed.conn.symbols.has('MSFT'));

    await page.reload();
    await waitConnected(page);
    assert.deepEqual(await rowSymbols(page), expected, 'same watchlist after reload');
    await page.waitForFunction(() => /\d/.test(document.querySelector('#watchlist tr[data-symbol="NFLX"] td.c-last').textContent));
    assert.deepEqual(consoleErrors(page.log), []);
    assert.deepEqual(page.log.failed, []);
  } finally {
    await context.close();
  }
});

/** Pixels of the chart canvas: how many differ from the background, and a hash of all. */
function chartPixels(page) {
  return page.evaluate(() => {
    const canvas = document.getElementById('chart');
    const ctx = canvas.getContext('2d');
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const [r0, g0, b0] = data;   // the top-left pixel is background
    let ink = 0, hash = 0;
    const colors = new Set();
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - r0) + Math.abs(data[i + 1] - g0) + Math.abs(data[i + 2] - b0) > 30) ink++;
      if (i % 64 === 0) colors.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      hash = (hash * 31 + data[i] + data[i + 1] * 7 + data[i + 2] * 13) | 0;
    }
    return { ink, hash, colors: colors.size, width: canvas.width, height: canvas.height };
  });
}

test('the chart draws the selected symbol and follows new quotes', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(server.url);
    await waitConnected(page);
    await page.click('#watchlist tr[data-symbol="NVDA"] td.c-last');
    await page.waitForFunction(() => document.getElementById('chart-symbol').textContent === 'NVDA');
    assert.equal(await page.getAttribute('#watchlist tr[data-symbol="NVDA"]', 'aria-current'), 'true');
    // Candles drawn: some bars and real ink on the canvas.
    await page.waitForFunction(() => window.tickerfeed.chart.bars.length >= 1 && /C \d/.test(document.getElementById('chart-readout').textContent));
    const first = await chartPixels(page);
    assert.ok(first.width > 300 && first.height > 200, `canvas sized (${first.width}×${first.height})`);
    assert.ok(first.ink > 2000, `canvas not blank (${first.ink} inked pixels)`);
    assert.ok(first.colors >= 4, `candles, grid and labels (${first.colors} colours)`);
    // It follows live quotes: the readout (OHLC of the last bar) changes and tracks the row.
    const readout = await page.textContent('#chart-readout');
    await page.waitForFunction((old) => document.getElementById('chart-readout').textContent !== old, readout, { timeout: 5000 });
    await page.waitForFunction(() => {
      const close = /C ([\d,.]+)/.exec(document.getElementById('chart-readout').textContent)?.[1];
      return close && close === document.querySelector('#watchlist tr[data-symbol="NVDA"] td.c-last').textContent;
    }, null, { timeout: 5000 });
    await page.waitForFunction((h) => {
      const c = document.getElementById('chart');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let hash = 0;
      for (let i = 0; i < d.length; i += 4) hash = (hash * 31 + d[i] + d[i + 1] * 7 + d[i + 2] * 13) | 0;
      return hash !== h;
    }, first.hash, { timeout: 5000 });
    // Hover: the crosshair changes the picture.
    const box = await page.locator('#chart').boundingBox();
    const before = (await chartPixels(page)).hash;
    await page.mouse.move(box.x + box.width * 0.4, box.y + box.height * 0.5);
    await page.waitForFunction((h) => {
      const c = document.getElementById('chart');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let hash = 0;
      for (let i = 0; i < d.length; i += 4) hash = (hash * 31 + d[i] + d[i + 1] * 7 + d[i + 2] * 13) | 0;
      return hash !== h;
    }, before);
    // Backfill and live join: bars strictly increasing in time, none duplicated.
    const ordered = await page.evaluate(() => window.tickerfeed.chart.bars.every((b, i, a) => i === 0 || b.t > a[i - 1].t));
    assert.ok(ordered, 'bars in strictly increasing time');
    assert.deepEqual(consoleErrors(page.log), []);
    assert.deepEqual(page.log.failed, []);
  } finally {
    await context.close();
  }
});

test('the throttle selector re-subscribes; the theme toggles and persists', async () => {
  const { context, page } = await openPage(browser);
  try {
    // Watch what the page sends on its WebSocket.
    const sent = [];
    const received = [];
    page.on('websocket', (ws) => {
      ws.on('framesent', (frame) => {
        try { sent.push(JSON.parse(frame.payload)); } catch { /* not JSON */ }
      });
      ws.on('framereceived', (frame) => {
        try { received.push(JSON.parse(frame.payload)); } catch { /* not JSON */ }
      });
    });
    await page.goto(server.url);
    await waitConnected(page);
    await page.selectOption('#throttle', '5000');
    await until(
      () => sent.some((m) => m.op === 'subscribe' && m.throttle_ms === 5000 && m.symbols.length >= 5),
      { message: 'a subscribe with throttle_ms 5000 for the watchlist' },
    );
    // The watchlist comes aligned (one frame per tick), the charted symbol at throttle 0 not.
    const subscribes = sent.filter((m) => m.op === 'subscribe');
    assert.ok(subscribes.filter((m) => m.throttle_ms > 0).every((m) => m.align === true), 'the watchlist subscribes aligned');
    assert.ok(subscribes.some((m) => m.throttle_ms === 0 && m.align === false), 'the charted symbol at throttle 0, unaligned');
    await until(
      () => received.some((m) => m.type === 'subscribed' && m.throttle_ms === 5000 && m.align === true),
      { message: 'the server confirms the aligned subscription' },
    );
    // Light theme, kept across a reload.
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark', 'dark by default');
    await page.click('#theme-toggle');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
    assert.equal(await page.getAttribute('#theme-toggle', 'aria-pressed'), 'true');
    await page.reload();
    await waitConnected(page);
    assert.equal(await page.getAttribute('html', 'data-theme'), 'light', 'the theme survives a reload');
    assert.equal(await page.$eval('#throttle', (s) => s.value), '5000', 'the throttle survives a reload');
    assert.deepEqual(consoleErrors(page.log), [], 'no console error');
  } finally {
    await context.close();
  }
});
