// /socket.io/ in a real browser: socket.io-client's own browser bundle in Chromium, as a web app
// would load it. Same origin with the default transports (HTTP long-polling, then the upgrade to
// WebSocket), and from a page on another origin over polling only (CORS, with and without
// credentials): subscribe with an ack, the snapshot first, then throttled live quotes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { here, startServer, launchBrowser, openPage, consoleErrors, checkThrottledBatches } from './helpers.mjs';

const BUNDLE = join(here, 'node_modules/socket.io-client/dist/socket.io.min.js');
const FAST = ['--sim-rate', '20000'];
let server, other, browser;
before(async () => {
  server = await startServer({ name: 'socketio', args: FAST });
  // Only a page origin: a second server's dashboard.
  other = await startServer({ name: 'socketio-other-origin' });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await other?.stop();
});

/** In the page: connects with `options`, subscribes to AAPL and MSFT at 300 ms, and collects. */
function subscribeInPage({ url, options }) {
  return new Promise((resolve, reject) => {
    const out = { transports: [], welcome: null, ack: null, batches: [], error: null };
    const socket = io(url, { reconnection: false, ...options });
    const timer = setTimeout(() => { socket.close(); reject(new Error(`timed out: ${JSON.stringify(out).slice(0, 400)}`)); }, 20000);
    socket.io.on('error', (e) => { out.error = String(e); });
    // The engine's first transport, taken when it opens: by Socket.IO's `connect` it may have
    // upgraded already.
    socket.io.on('open', () => {
      out.transports.push(socket.io.engine.transport.name);
      socket.io.engine.on('upgrade', (t) => out.transports.push(t.name));
    });
    socket.on('connect', async () => {
      out.ack = await socket.timeout(5000).emitWithAck('subscribe', { symbols: 'AAPL,MSFT,NOPE', throttle_ms: 300 });
    });
    socket.on('welcome', (w) => { out.welcome = w; });
    socket.on('quotes', (q) => {
      out.batches.push({ at: performance.now(), data: q });
      const upgradedIfAsked = !(options.transports ?? ['polling', 'websocket']).includes('websocket') || out.transports.includes('websocket');
      if (out.batches.length >= 10 && upgradedIfAsked) {
        clearTimeout(timer);
        out.final = socket.io.engine.transport.name;
        socket.close();
        resolve(out);
      }
    });
  });
}

function checkQuotes(seen) {
  assert.equal(seen.welcome.protocol, 1);
  assert.deepEqual(seen.ack, { throttle_ms: 300, align: false, symbols: ['AAPL', 'MSFT'], rejected: [{ symbol: 'NOPE', code: 'unknown_symbol' }], channels: { quotes: ['AAPL', 'MSFT'] } });
  assert.deepEqual(seen.batches[0].data.quotes.map((q) => q.symbol).sort(), ['AAPL', 'MSFT']);
  checkThrottledBatches(seen.batches, { symbols: ['AAPL', 'MSFT'], throttleMs: 300 });
}

test('socket.io-client in the browser polls, upgrades to WebSocket and gets throttled quotes', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(server.url);
    await page.addScriptTag({ path: BUNDLE });
    await page.waitForFunction(async () => (await (await fetch('/api/quotes?symbols=AAPL,MSFT')).json()).quotes.length === 2);
    const seen = await page.evaluate(subscribeInPage, { url: server.url, options: {} });
    assert.equal(seen.transports[0], 'polling', 'the default transports start with polling');
    assert.ok(seen.transports.includes('websocket'), `upgraded: ${seen.transports}`);
    assert.equal(seen.final, 'websocket');
    checkQuotes(seen);
    assert.deepEqual(consoleErrors(page.log), []);
  } finally {
    await context.close();
  }
});

test('a page on another origin subscribes over polling (CORS), with and without credentials', async () => {
  for (const withCredentials of [false, true]) {
    const { context, page } = await openPage(browser);
    try {
      await page.goto(other.url);
      await page.addScriptTag({ path: BUNDLE });
      const seen = await page.evaluate(subscribeInPage, { url: server.url, options: { transports: ['polling'], withCredentials } });
      assert.equal(seen.error, null);
      assert.deepEqual(seen.transports, ['polling']);
      checkQuotes(seen);
      assert.deepEqual(consoleErrors(page.log), [], `withCredentials ${withCredentials}`);
    } finally {
      await context.close();
    }
  }
});
