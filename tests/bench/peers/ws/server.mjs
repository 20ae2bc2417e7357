// Benchmark peer: Node `ws` 8 server speaking tickerfeed protocol v1 at /ws.
// One http.Server carries the upgrade; per-socket sends of pre-built frames; backpressure is
// read from `bufferedAmount` (ws has no drain event on the WebSocket: the shared core retries).
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { Feed, Hub, Session, announce, httpHandler, loadTicks, parseArgs, randomInstance, welcomeMessage } from '../common.mjs';

const opts = parseArgs();
const feed = new Feed(loadTicks(opts.file), { rate: opts.rate, paused: opts.paused });
const hub = new Hub(feed);
const welcome = JSON.stringify(welcomeMessage('ws', randomInstance()));

// Plain HTTP: the feed control the bench uses (POST /api/feeds/replay/control), 404 otherwise.
const server = http.createServer(httpHandler(feed));
const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 64 * 1024, perMessageDeflate: false });

wss.on('connection', (ws) => {
  const session = new Session(hub, {
    send: (msg) => ws.send(JSON.stringify(msg)),
    sendQuotes: (frame) => ws.send(frame),
    bufferedAmount: () => ws.bufferedAmount,
  });
  ws.send(welcome);
  ws.on('message', (data, isBinary) => {
    if (isBinary) return session.error(undefined, 'bad_request', 'binary frames are not supported');
    session.handleText(data.toString());
  });
  ws.on('close', () => session.close());
  ws.on('error', () => session.close());
});

server.listen(opts.port, opts.host, () => {
  feed.start();
  announce(server.address().port, () => new Promise((resolve) => {
    feed.stop();
    for (const client of wss.clients) client.terminate();
    wss.close();
    server.close(() => resolve());
  }));
});
