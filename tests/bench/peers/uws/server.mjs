// Benchmark peer: uWebSockets.js (the unofficial npm build of v20.30) speaking tickerfeed
// protocol v1 at /ws.
//
// Per-socket sends, not pub/sub: every client has its own throttle and subscription set, so
// frames differ per client and a topic broadcast cannot carry them. Sends made outside uWS
// callbacks are corked (one syscall per client flush), as the uWS docs recommend; backpressure
// is read with getBufferedAmount() and the `drain` handler wakes a backed-up client.
import { createRequire } from 'node:module';
import { CONTROL_PATH, Feed, Hub, Session, announce, feedControl, loadTicks, parseArgs, randomInstance, welcomeMessage } from '../common.mjs';

// Load the native addon itself: the package's entry silently falls back to a slow pure-JS
// implementation when the binary does not load, which would make the benchmark meaningless.
const require = createRequire(import.meta.url);
const binary = `@trufflesuite/uws-js-unofficial/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
let uWS;
try {
  uWS = require(binary);
} catch (e) {
  process.stderr.write(`error: cannot load the native uWebSockets.js addon (${binary}): ${e.message}\n`);
  process.exit(1);
}

const opts = parseArgs();
const feed = new Feed(loadTicks(opts.file), { rate: opts.rate, paused: opts.paused });
const hub = new Hub(feed);
const welcome = JSON.stringify(welcomeMessage('uws', randomInstance()));
const decoder = new TextDecoder();
const open = new Set();
let listenSocket = null;

const app = uWS.App();
app.ws('/ws', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  // Above this the socket still takes sends (returning 0); the core stops sending at 64 KiB
  // on its own, so this only caps control replies to a stalled client.
  maxBackpressure: 1024 * 1024,
  closeOnBackpressureLimit: false,
  idleTimeout: 120,
  sendPingsAutomatically: true,
  open: (ws) => {
    const data = ws.getUserData();
    data.session = new Session(hub, {
      send: (msg) => ws.send(JSON.stringify(msg), false),
      sendQuotes: (frame) => ws.send(frame, false),
      bufferedAmount: () => ws.getBufferedAmount(),
      cork: (fn) => ws.cork(fn),
    });
    open.add(ws);
    ws.send(welcome, false);
  },
  message: (ws, message, isBinary) => {
    const { session } = ws.getUserData();
    if (isBinary) return session.error(undefined, 'bad_request', 'binary frames are not supported');
    // The ArrayBuffer is only valid during this call: decode it now.
    session.handleText(decoder.decode(message));
  },
  drain: (ws) => hub.wake(ws.getUserData().session),
  close: (ws) => {
    open.delete(ws);
    ws.getUserData().session.close();
  },
});
app.post(CONTROL_PATH, (res) => {
  let text = '';
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    // The chunk is only valid during this call: copy it into a string now.
    text += Buffer.from(chunk).toString('utf8');
    if (!isLast || aborted) return;
    const [status, body] = feedControl(feed, text);
    res.cork(() => {
      res.writeStatus(status === 200 ? '200 OK' : '400 Bad Request')
        .writeHeader('content-type', 'application/json')
        .end(JSON.stringify(body));
    });
  });
});
app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end('not found\n');
});

app.listen(opts.host, opts.port, (socket) => {
  if (!socket) {
    process.stderr.write(`error: cannot listen on ${opts.host}:${opts.port}\n`);
    process.exit(1);
  }
  listenSocket = socket;
  feed.start();
  announce(uWS.us_socket_local_port(socket), () => {
    feed.stop();
    uWS.us_listen_socket_close(listenSocket);
    for (const ws of open) ws.close();
  });
});
