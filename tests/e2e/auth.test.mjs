// The dashboard against a server that requires tokens: it asks for one (the form), takes one
// from the URL (and removes it from the address bar), shows only the token's symbols, and asks
// again when the token expires during the session.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startServer, launchBrowser, openPage, consoleErrors, waitConnected, rowSymbols } from './helpers.mjs';

const secret = join(mkdtempSync(join(tmpdir(), 'tickerfeed-auth-')), 'secret');
writeFileSync(secret, 'e2e-secret-of-at-least-thirty-two-bytes-0123\n');

/** A token from `tickerfeed token`, as a user makes one. */
function token(symbols, ttl = 600) {
  const run = spawnSync(BIN, ['token', '--secret-file', secret, '--sub', 'e2e', '--symbols', symbols, '--ttl', String(ttl)], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim();
}

let server, browser;
before(async () => {
  server = await startServer({ name: 'auth', args: ['--auth-secret-file', secret, '--sim-rate', '5000'] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('without a token the dashboard asks for one; the token entered there connects it to its symbols', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(server.url);
    await page.waitForSelector('#token-dialog[open]');
    assert.match(await page.textContent('#token-reason'), /token is required/);
    await page.fill('#token-input', token('AAPL,MSFT,M*'));
    await Promise.all([page.waitForNavigation(), page.click('#token-form button[type="submit"]')]);
    await waitConnected(page);
    // First visit: the defaults this token may read, nothing else.
    assert.deepEqual(await rowSymbols(page), ['AAPL', 'MSFT', 'META']);
    await page.waitForFunction(() => [...document.querySelectorAll('#watchlist td.c-last')].every((td) => /\d/.test(td.textContent)));
    assert.equal(await page.$('#token-dialog[open]'), null, 'no form once connected');
    // The only failures were the first, tokenless requests.
    assert.ok(page.log.failed.every((f) => f.status === 401), JSON.stringify(page.log.failed));
  } finally {
    await context.close();
  }
});

test('a token in the URL is used, kept for the tab and removed from the address bar', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(`${server.url}/?token=${token('AAPL')}`);
    await waitConnected(page);
    assert.equal(new URL(page.url()).search, '', 'the token left the address bar');
    assert.deepEqual(await rowSymbols(page), ['AAPL']);
    await page.waitForFunction(() => /\d/.test(document.querySelector('#watchlist tr[data-symbol="AAPL"] td.c-last')?.textContent ?? ''));
    // Charts and history go through the token too.
    const reloading = Date.now();
    await page.reload();
    const reloaded = Date.now();
    await waitConnected(page);
    assert.deepEqual(consoleErrors(page.log), [], 'no console error');
    // A request of the old page still in flight (the feeds' poll) is aborted by the reload
    // itself: that is the navigation, not a failure.
    const failed = page.log.failed.filter((f) => !(f.error === 'net::ERR_ABORTED' && f.at >= reloading && f.at <= reloaded));
    assert.deepEqual(failed, [], 'no failed request');
  } finally {
    await context.close();
  }
});

test('when the token expires during the session the dashboard asks for a new one', async () => {
  const { context, page } = await openPage(browser);
  try {
    await page.goto(`${server.url}/?token=${token('AAPL', 3)}`);
    await waitConnected(page);
    await page.waitForSelector('#token-dialog[open]', { timeout: 10_000 });
    assert.match(await page.textContent('#token-reason'), /expired/);
  } finally {
    await context.close();
  }
});
