// Shared plumbing of the end-to-end tests: free loopback ports, tickerfeed servers started and
// stopped per test file, a headless Chromium (system package, driven by playwright-core), one
// fresh browser context per test with console and network failures recorded.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { BIN, freePort, startServer as start } from '../server.mjs';

export { BIN, freePort };

export const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '../..');
export const artifacts = join(root, 'tests/artifacts/e2e');
mkdirSync(artifacts, { recursive: true });

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/**
 * Starts tickerfeed on 127.0.0.1:port and waits until /readyz answers 200 (10 s at most); its
 * log is tests/artifacts/e2e/<name>-server.log.
 */
export function startServer({ name, port, args = [], tls = null }) {
  return start({ name, port, args, tls, logDir: artifacts });
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
}

/**
 * A page in a new browser context, with every console message, page error, failed request and
 * HTTP error response recorded (`page.log`).
 */
export async function openPage(browser, { viewport = { width: 1440, height: 900 }, storage } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  context.setDefaultTimeout(10_000);
  if (storage) {
    // Seeds localStorage before the page's scripts run (first navigation only).
    await context.addInitScript((entries) => {
      if (sessionStorage.getItem('e2e-seeded')) return;
      sessionStorage.setItem('e2e-seeded', '1');
      for (const [k, v] of Object.entries(entries)) localStorage.setItem(k, v);
    }, storage);
  }
  const page = await context.newPage();
  const log = { console: [], errors: [], failed: [] };
  page.on('console', (m) => log.console.push({ type: m.type(), text: m.text(), at: Date.now() }));
  page.on('pageerror', (e) => log.errors.push({ text: String(e), at: Date.now() }));
  page.on('requestfailed', (r) => log.failed.push({ url: r.url(), error: r.failure()?.errorText, at: Date.now() }));
  page.on('response', (r) => { if (r.status() >= 400) log.failed.push({ url: r.url(), status: r.status(), at: Date.now() }); });
  page.log = log;
  return { context, page };
}

/** Console errors and page errors, as text lines. */
export function consoleErrors(log, since = 0) {
  return [
    ...log.console.filter((m) => m.type === 'error' && m.at >= since).map((m) => m.text),
    ...log.errors.filter((e) => e.at >= since).map((e) => `pageerror: ${e.text}`),
  ];
}

/** Waits until the dashboard says connected. */
export async function waitConnected(page, timeout = 10_000) {
  await page.waitForSelector('#status[data-state="connected"]', { timeout });
}

/** The text of one cell of a watchlist row (`cls` like 'c-last'). */
export function cell(page, symbol, cls) {
  return page.locator(`#watchlist tbody tr[data-symbol="${symbol}"] td.${cls}`);
}

/** Symbols of the watchlist rows, in order. */
export function rowSymbols(page) {
  return page.$$eval('#watchlist tbody tr', (rows) => rows.map((r) => r.dataset.symbol));
}

/** Polls an async predicate (Node side) until it holds; throws after `timeout` ms. */
export async function until(predicate, { timeout = 5000, interval = 50, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}`);
    await sleep(interval);
  }
}

/**
 * Checks batches of quotes received in a page (`{at, data}`, `at` from performance.now()): the
 * first is the snapshot, the rest live; only `symbols`; each symbol's seq rises; quotes kept
 * coming; and at most a quarter of a symbol's gaps are shorter than `throttleMs` less 50 ms
 * (timer and delivery jitter in a page).
 */
export function checkThrottledBatches(batches, { symbols, throttleMs }) {
  assert.equal(batches[0].data.snapshot, true, 'the first batch is the snapshot');
  const last = {};
  let gaps = 0;
  let short = 0;
  for (const { at, data } of batches.slice(1)) {
    assert.equal(data.snapshot, undefined);
    for (const q of data.quotes) {
      assert.ok(symbols.includes(q.symbol), q.symbol);
      const prev = last[q.symbol];
      if (prev) {
        assert.ok(q.seq > prev.seq, `${q.symbol} seq ${q.seq} after ${prev.seq}`);
        gaps += 1;
        if (at - prev.at < throttleMs - 50) short += 1;
      }
      last[q.symbol] = { seq: q.seq, at };
    }
  }
  assert.ok(gaps >= 6, `quotes kept coming (${gaps} gaps)`);
  assert.ok(short * 4 <= gaps, `${short} of ${gaps} gaps under the ${throttleMs} ms throttle`);
}
