// What aligned delivery saves the dashboard (issue 16): the same page, watchlist aligned and
// not, side by side in one run — WebSocket messages and quotes per second, the renderer's
// main-thread busy time (Chrome DevTools Protocol `Performance.getMetrics`: TaskDuration and
// ScriptDuration) per second, and how old the newest quote on the page is (sampled every 50 ms).
// Two loads: the default page (the default watchlist at 250 ms, the default simulation) and the
// load test's (200 symbols at 10 updates/s, all in the watchlist at 100 ms). A measurement, not
// a test: run it by hand after `cargo build --release`.
//   node tests/e2e/measure-align.mjs [--rounds 2] [--seconds 8]

import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startServer, launchBrowser, openPage, waitConnected, freePort, artifacts } from './helpers.mjs';

const { values: opts } = parseArgs({ options: { rounds: { type: 'string', default: '2' }, seconds: { type: 'string', default: '8' } } });
const ROUNDS = Number(opts.rounds);
const SECONDS = Number(opts.seconds);

const LOAD_SYMBOLS = Array.from({ length: 200 }, (_, i) => `L${String(i + 1).padStart(3, '0')}`);

async function measure(browser, url, storage) {
  const { context, page } = await openPage(browser, { storage });
  try {
    await page.goto(url);
    await waitConnected(page);
    await page.waitForFunction(() => window.tickerfeed.conn.stats.totalQuotes > 0);
    // Let the snapshot and the first second settle before measuring.
    await page.waitForTimeout(1000);
    const cdp = await context.newCDPSession(page);
    await cdp.send('Performance.enable');
    const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
    const before = await metrics();
    const m = await page.evaluate(async (seconds) => {
      const { conn } = window.tickerfeed;
      const q0 = conn.stats.totalQuotes, m0 = conn.stats.totalMessages;
      const ages = [];
      const t0 = performance.now();
      while (performance.now() - t0 < seconds * 1000) {
        await new Promise((r) => setTimeout(r, 50));
        ages.push(conn.serverNow() - conn.stats.newestPt / 1000);
      }
      const secs = (performance.now() - t0) / 1000;
      ages.sort((a, b) => a - b);
      return {
        secs,
        messagesPerSecond: (conn.stats.totalMessages - m0) / secs,
        quotesPerSecond: (conn.stats.totalQuotes - q0) / secs,
        newestAgeMeanMs: ages.reduce((a, b) => a + b, 0) / ages.length,
        newestAgeP95Ms: ages[Math.floor(ages.length * 0.95)],
        aligned: conn.align,
      };
    }, SECONDS);
    const after = await metrics();
    return {
      ...m,
      busyMsPerSecond: (1000 * (after.TaskDuration - before.TaskDuration)) / m.secs,
      scriptMsPerSecond: (1000 * (after.ScriptDuration - before.ScriptDuration)) / m.secs,
    };
  } finally {
    await context.close();
  }
}

const dir = mkdtempSync(join(tmpdir(), 'tickerfeed-align-'));
const universe = join(dir, 'universe.csv');
writeFileSync(universe, ['symbol,name,sector,price,volatility,drift,tick_size',
  ...LOAD_SYMBOLS.map((s, i) => `${s},Load test ${i + 1},Test,${(20 + i * 3.7).toFixed(2)},0.4,0.05,0.01`)].join('\n') + '\n');
const servers = {
  default: await startServer({ name: 'align-default', port: await freePort() }),
  load: await startServer({ name: 'align-load', port: await freePort(), args: ['--universe', universe, '--sim-rate', '2000'] }),
};
const storageFor = {
  default: {},
  load: { 'tickerfeed.watchlist': JSON.stringify(LOAD_SYMBOLS), 'tickerfeed.throttle': '100', 'tickerfeed.selected': '"L001"' },
};
const browser = await launchBrowser();
const results = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const load of ['default', 'load']) {
      for (const align of [false, true]) {
        const figures = await measure(browser, servers[load].url, { ...storageFor[load], 'tickerfeed.align': JSON.stringify(align) });
        if (figures.aligned !== align) throw new Error(`the page ran with align ${figures.aligned}, not ${align}`);
        results.push({ round, load, align, ...figures });
        console.log(JSON.stringify(results.at(-1)));
      }
    }
  }
} finally {
  await browser.close();
  await Promise.all(Object.values(servers).map((s) => s.stop()));
}
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
const summary = [];
for (const load of ['default', 'load']) {
  for (const align of [false, true]) {
    const runs = results.filter((r) => r.load === load && r.align === align);
    const row = { load, align };
    for (const k of ['messagesPerSecond', 'quotesPerSecond', 'busyMsPerSecond', 'scriptMsPerSecond', 'newestAgeMeanMs', 'newestAgeP95Ms']) {
      row[k] = Math.round(median(runs.map((r) => r[k])) * 10) / 10;
    }
    summary.push(row);
  }
}
console.table(summary);
writeFileSync(join(artifacts, 'align-figures.json'), JSON.stringify({ results, summary }, null, 2) + '\n');
