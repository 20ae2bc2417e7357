// The tickerfeed process of the Node test suites (tests/e2e/, tests/clients/): a free loopback
// port, the release binary started on it with its log in an artifacts folder, ready when
// /readyz answers (and a suite's own condition holds), stopped with SIGTERM. No dependencies.

import { spawn } from 'node:child_process';
import { get as httpsGet } from 'node:https';
import { createServer } from 'node:net';
import { createWriteStream, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BIN = process.env.TICKERFEED_BIN ? resolve(process.env.TICKERFEED_BIN) : join(root, 'target/release/tickerfeed');

/** A port nobody listens on right now (127.0.0.1). */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** The status of GET `url` over https, trusting only the PEM certificate `ca`. */
function httpsStatus(url, ca) {
  return new Promise((ok, fail) => {
    httpsGet(url, { ca }, (res) => { res.resume(); ok(res.statusCode); }).on('error', fail);
  });
}

/**
 * Starts tickerfeed on 127.0.0.1:port (a free one if none is given), its output in
 * `${logDir}/${name}-server.log`, and waits (10 s at most) until /readyz answers 200 and
 * `ready(url)` (if given) resolves true. With `tls: {cert, key, ca}` (PEM file paths, and the
 * CA's PEM text, the certificate naming 127.0.0.1) it serves https and `url` is https://…
 * @returns {Promise<{port: number, url: string, proc: import('node:child_process').ChildProcess, stop(): Promise<number|string|null>}>}
 */
export async function startServer({ name, logDir, port, args = [], ready = null, tls = null }) {
  port ??= await freePort();
  mkdirSync(logDir, { recursive: true });
  const logName = `${name}-server.log`;
  const log = createWriteStream(join(logDir, logName), { flags: 'a' });
  const tlsArgs = tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : [];
  const proc = spawn(BIN, ['--bind', `127.0.0.1:${port}`, ...tlsArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.pipe(log, { end: false });
  proc.stderr.pipe(log, { end: false });
  const exited = new Promise((ok) => proc.once('exit', (code, signal) => ok(code ?? signal)));
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`tickerfeed exited with ${proc.exitCode}; see ${logName}`);
    try {
      const ok = tls ? (await httpsStatus(`${url}/readyz`, tls.ca)) === 200 : (await fetch(`${url}/readyz`)).ok;
      if (ok && (!ready || (await ready(url)))) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`tickerfeed not ready within 10 s; see ${logName}`);
    }
    await sleep(50);
  }
  return {
    port, url, proc,
    /** SIGTERM, then wait for the exit (SIGKILL after 8 s). Resolves to the exit code. */
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 8000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
