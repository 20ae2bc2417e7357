// Under load: 200 symbols at 10 updates/s each (a 200-symbol universe at --sim-rate 2000,
// everything in the watchlist at the 100 ms throttle). The page must absorb every quote the
// server sends, keep the newest quote fresh, and keep the frame rate: no falling behind.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openPage, consoleErrors, waitConnected, artifacts } from './helpers.mjs';

const SYMBOLS = Array.from({ length: 200 }, (_, i) => `L${String(i + 1).padStart(3, '0')}`);
let server, browser;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tickerfeed-e2e-'));
  const universe = join(dir, 'universe.csv');
  writeFileSync(universe, ['symbol,name,sector,price,volatility,drift,tick_size',
    ...SYMBOLS.map((s, i) => `${s},Load test ${i + 1},Test,${(20 + i * 3.7).toFixed(2)},0.4,0.05,0.01`)].join('\n') + '\n');
  server = await startServer({ name: 'load', args: ['--universe', universe, '--sim-rate', '2000'] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('200 symbols at 10 updates/s: no falling behind', async () => {
  const { context, page } = await openPage(browser, {
    storage: { 'tickerfeed.watchlist': JSON.stringify(SYMBOLS), 'tickerfeed.throttle': '100', 'tickerfeed.selected': '"L001"' },
  });
  try {
    await page.goto(server.url);
    await waitConnected(page);
    // Every row has its quote (rows off screen keep it without writing the DOM).
    await page.waitForFunction((n) => {
      const rows = [...window.tickerfeed.watchlist.rows.values()];
      return rows.length === n && rows.every((r) => r.quote);
    }, SYMBOLS.length, { timeout: 10_000 });
    // Measure 5 s: frame intervals (requestAnimationFrame), quotes received and applied, the
    // watchlist's work per frame, and the age of the newest quote at the end.
    const m = await page.evaluate(async () => {
      const { conn, watchlist } = window.tickerfeed;
      const q0 = conn.stats.totalQuotes, m0 = conn.stats.totalMessages, a0 = watchlist.stats.applied;
      const f0 = watchlist.stats.frames, w0 = watchlist.stats.workMs;
      watchlist.stats.maxWorkMs = 0;
      const gaps = [];
      const t0 = performance.now();
      await new Promise((done) => {
        let last = t0;
        const frame = (now) => {
          gaps.push(now - last);
          last = now;
          if (now - t0 < 5000) requestAnimationFrame(frame); else done();
        };
        requestAnimationFrame(frame);
      });
      const secs = (performance.now() - t0) / 1000;
      gaps.sort((a, b) => a - b);
      const pct = (p) => gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * p))];
      const frames = watchlist.stats.frames - f0;
      return {
        seconds: secs,
        fps: gaps.length / secs,
        frameP50: pct(0.5), frameP95: pct(0.95), frameMax: gaps[gaps.length - 1],
        quotesPerSecond: (conn.stats.totalQuotes - q0) / secs,
        messagesPerSecond: (conn.stats.totalMessages - m0) / secs,
        appliedPerSecond: (watchlist.stats.applied - a0) / secs,
        frames,
        workPerFrameMs: frames ? (watchlist.stats.workMs - w0) / frames : 0,
        maxWorkMs: watchlist.stats.maxWorkMs,
        pending: watchlist.pending.size,
        newestAgeMs: conn.serverNow() - conn.stats.newestPt / 1000,
        dropped: conn.stats.dropped,
      };
    });
    const r = (x) => Math.round(x * 10) / 10;
    const figures = Object.fromEntries(Object.entries(m).map(([k, v]) => [k, r(v)]));
    console.log('load figures:', JSON.stringify(figures));
    writeFileSync(join(artifacts, 'load-figures.json'), JSON.stringify(figures, null, 2) + '\n');
    // 200 symbols × 10/s = 2000 quotes/s offered. The watchlist is aligned at 100 ms: a symbol
    // goes out at a tick when it changed since the last one, with probability 1 − e^−1, so the
    // server sends about 200 × 10 × 0.632 = 1,264 quotes/s (measured 1,266–1,274).
    assert.ok(m.quotesPerSecond > 1000, `the page absorbs the stream (${r(m.quotesPerSecond)} quotes/s)`);
    assert.ok(m.appliedPerSecond > 0.95 * m.quotesPerSecond, `every quote received is applied (${r(m.appliedPerSecond)} of ${r(m.quotesPerSecond)}/s)`);
    assert.ok(m.newestAgeMs < 1000, `the newest quote is fresh (${r(m.newestAgeMs)} ms)`);
    // Headless Chromium here renders in software (--disable-gpu) on a shared CPU, so the frame
    // rate and frame intervals describe the machine's load as much as the page: they are
    // logged and kept in load-figures.json, not asserted (a busy CI machine measured 14 fps).
    // What the page controls is its own work per frame, and that is bounded.
    assert.ok(m.workPerFrameMs < 8, `watchlist work per frame (${r(m.workPerFrameMs)} ms)`);
    assert.ok(m.frames > 0, 'the watchlist rendered while the stream ran');
    assert.ok(m.pending <= SYMBOLS.length, 'the buffer holds at most one quote per symbol');
    // A row scrolled into view shows its current price at once.
    await page.locator('#watchlist tr[data-symbol="L200"]').scrollIntoViewIfNeeded();
    await page.waitForFunction(() => {
      const row = window.tickerfeed.watchlist.rows.get('L200');
      return /\d/.test(row.cells.last.textContent) && row.cells.last.textContent === row.cells.last.textContent
        && Math.abs(Number(row.cells.last.textContent.replace(/,/g, '')) - row.quote.last) < 1e-9;
    });
    assert.deepEqual(consoleErrors(page.log), []);
    assert.deepEqual(page.log.failed, []);
  } finally {
    await context.close();
  }
});
