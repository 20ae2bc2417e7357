// With the demo replay beside the simulation (feeds/demo-replay.toml): the replay controls
// pause, resume, seek and change speed through the control API, the replay clock moves, a
// paused feed is shown as paused (not as a dead connection). Then the screenshots.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer, launchBrowser, openPage, consoleErrors, waitConnected, until, artifacts, root } from './helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer({ name: 'replay', args: ['--config', join(root, 'feeds/demo-replay.toml')] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const SPX = '#watchlist tr[data-symbol="SPX.H"]';
const group = '.replay-group[data-feed="history"]';
const feedStatus = async () => (await (await fetch(`${server.url}/api/feeds`)).json()).find((f) => f.name === 'history');

test('pause stops a replayed symbol, resume restarts it, the replay clock moves', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(server.url);
    await waitConnected(page);
    // The default watchlist includes SPX.H when the server replays it.
    await page.waitForSelector(`${SPX}:not(.waiting)`);
    await page.waitForSelector(`${group}[data-state="running"]`);
    const clock1 = await page.textContent(`${group} .replay-clock`);
    assert.match(clock1, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
    await page.waitForFunction((c) => document.querySelector('.replay-group .replay-clock').textContent !== c, clock1, { timeout: 5000 });

    // Pause (keyboard: focus the button and press Enter).
    await page.getByRole('button', { name: 'Pause replay history' }).focus();
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${group}[data-state="paused"]`);
    assert.equal((await feedStatus()).state, 'paused', 'the server feed is paused');
    await page.waitForSelector(`${SPX}.paused`);
    await page.waitForFunction(() => /history paused/.test(document.getElementById('status-text').textContent));
    assert.equal(await page.getAttribute('#status', 'data-state'), 'connected', 'paused is not a dead connection');
    // Nothing moves while paused. (Asserting an absence needs a time window: 0.5 s for a
    // quote already in flight to land, then 2 s in which neither seq nor clock may move.)
    await sleep(500);
    const frozen = await page.evaluate(() => ({
      seq: window.tickerfeed.conn.lastSeq.get('SPX.H'),
      time: document.querySelector('#watchlist tr[data-symbol="SPX.H"] td.c-time').textContent,
      clock: document.querySelector('.replay-group .replay-clock').textContent,
    }));
    await sleep(2000);
    const still = await page.evaluate(() => ({
      seq: window.tickerfeed.conn.lastSeq.get('SPX.H'),
      time: document.querySelector('#watchlist tr[data-symbol="SPX.H"] td.c-time').textContent,
      clock: document.querySelector('.replay-group .replay-clock').textContent,
    }));
    assert.deepEqual(still, frozen, 'no SPX.H update and a still clock while paused');
    // The simulation keeps going meanwhile.
    const aapl = await page.evaluate(() => window.tickerfeed.conn.lastSeq.get('AAPL'));
    await page.waitForFunction((s) => window.tickerfeed.conn.lastSeq.get('AAPL') > s, aapl);

    // Resume: updates and the clock start again.
    await page.getByRole('button', { name: 'Resume replay history' }).click();
    await page.waitForSelector(`${group}[data-state="running"]`);
    await page.waitForFunction((s) => window.tickerfeed.conn.lastSeq.get('SPX.H') > s, frozen.seq, { timeout: 5000 });
    await page.waitForFunction((t) => document.querySelector('#watchlist tr[data-symbol="SPX.H"] td.c-time').textContent !== t, frozen.time, { timeout: 5000 });
    await page.waitForFunction((c) => document.querySelector('.replay-group .replay-clock').textContent !== c, frozen.clock, { timeout: 5000 });
    await page.waitForSelector(`${SPX}:not(.paused)`);

    // Seek with the date input, and change the speed.
    await page.fill(`${group} input[type="date"]`, '2008-09-15');
    await page.click(`${group} .replay-seek button`);
    await page.waitForFunction(() => /^2008-09-(1[5-9]|2\d)/.test(document.querySelector('.replay-group .replay-clock').textContent), null, { timeout: 5000 });
    await page.selectOption(`${group} select.replay-speed`, '604800');
    await until(async () => (await feedStatus()).speed === 604800, { message: 'speed 604800 on the server' });
    await page.selectOption(`${group} select.replay-speed`, '86400');

    assert.deepEqual(consoleErrors(page.log), []);
    assert.deepEqual(page.log.failed, []);
  } finally {
    await context.close();
  }
});

const control = (body) => fetch(`${server.url}/api/feeds/history/control`, { method: 'POST', body: JSON.stringify(body) });

test('screenshots at desktop and phone width', async () => {
  // Something to look at: the autumn of 2008, a week of history per second.
  assert.equal((await control({ action: 'seek', to: '2008-08-01' })).status, 200);
  assert.equal((await control({ action: 'speed', value: 604800 })).status, 200);
  assert.equal((await control({ action: 'resume' })).status, 200);
  for (const [name, viewport] of [['desktop', { width: 1440, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
    const { context, page } = await openPage(browser, { viewport, storage: { 'tickerfeed.selected': '"SPX.H"' } });
    try {
      await page.goto(server.url);
      await waitConnected(page);
      // Let the sparklines and the chart fill: every row priced, a few chart bars.
      await page.waitForFunction(() => [...document.querySelectorAll('#watchlist td.c-last')].every((td) => /\d/.test(td.textContent)));
      await page.waitForFunction(() => window.tickerfeed.chart.bars.length >= 25 && window.tickerfeed.watchlist.rows.get('AAPL').points.length >= 5
        // every sparkline drawn (some ink on each canvas)
        && [...document.querySelectorAll('#watchlist canvas.spark')].every((c) => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          for (let i = 3; i < d.length; i += 4) if (d[i]) return true;
          return false;
        }), null, { timeout: 15_000 });
      assert.equal(await page.inputValue('#chart-interval'), '86400000', 'a replayed symbol opens with daily bars');
      // Low-value columns are hidden on a phone; no horizontal scrolling of the page.
      const visible = await page.isVisible('#watchlist thead th.c-vol');
      assert.equal(visible, name === 'desktop', `volume column ${name === 'desktop' ? 'shown' : 'hidden'}`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `no horizontal page scroll (${overflow}px too wide)`);
      const file = join(artifacts, `dashboard-${name}.png`);
      await page.screenshot({ path: file, fullPage: name === 'phone' });
      if (name === 'desktop' && process.env.UPDATE_README_SCREENSHOT === '1') copyFileSync(file, join(root, 'dashboards/screenshot.png'));
      assert.deepEqual(consoleErrors(page.log), []);
      assert.deepEqual(page.log.failed, []);
    } finally {
      await context.close();
    }
  }
});
