// The dashboard served over TLS (--tls-cert/--tls-key): the page loads over https, opens its
// WebSocket with wss: (a ws: socket from an https page would be blocked as mixed content), and
// prices move. The certificate is made by openssl for 127.0.0.1, signed by a test CA that the
// launcher trusts; the browser context ignores certificate errors (it cannot be given a CA).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { artifacts, startServer, launchBrowser, waitConnected } from './helpers.mjs';

const dir = join(artifacts, 'tls');

function makeCertificates() {
  mkdirSync(dir, { recursive: true });
  const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=tickerfeed e2e CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign',
    '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'));
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'server.csr'));
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', join(dir, 'server.csr'), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca.key'),
    '-CAcreateserial', '-days', '2', '-extfile', join(dir, 'server.ext'), '-out', join(dir, 'cert.pem'));
  return { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), ca: readFileSync(join(dir, 'ca.pem')) };
}

let server, browser;
before(async () => {
  server = await startServer({ name: 'tls', tls: makeCertificates() });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  const code = await server?.stop();
  assert.equal(code, 0, 'the server exits 0 on SIGTERM');
});

test('the dashboard over https connects with wss: and prices move', async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height: 900 } });
  context.setDefaultTimeout(10_000);
  try {
    const page = await context.newPage();
    const sockets = [];
    const errors = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    assert.match(server.url, /^https:\/\//);
    await page.goto(server.url, { waitUntil: 'load' });
    await waitConnected(page);
    await page.waitForFunction(() => [...document.querySelectorAll('#watchlist td.c-last')].every((td) => /\d/.test(td.textContent)));
    const prices = await page.$$eval('#watchlist td.c-last', (tds) => tds.map((td) => td.textContent));
    await page.waitForFunction(
      (old) => [...document.querySelectorAll('#watchlist td.c-last')].some((td, i) => td.textContent !== old[i]),
      prices, { timeout: 3000, polling: 50 },
    );
    assert.ok(sockets.length > 0 && sockets.every((url) => url.startsWith('wss://')), `WebSocket URLs: ${sockets.join(', ')}`);
    assert.deepEqual(errors, [], 'no console error');
    console.log(`dashboard over https: WebSocket ${sockets[0]}`);
  } finally {
    await context.close();
  }
});
