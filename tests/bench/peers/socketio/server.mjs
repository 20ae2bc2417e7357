// Benchmark peer: Socket.IO 4 server (Engine.IO v4, websocket transport only) speaking
// tickerfeed protocol v1 in tickerfeed's own Socket.IO mapping (its /socket.io/ endpoint), so
// both servers are measured on the same wire: default namespace, path /socket.io/.
//
//   server → client: an event named after what it carries, its one argument the v1 object's
//                    fields without `type` (and `id`):
//                    42["welcome",{"protocol":1,...}]  42["quotes",{"quotes":[...]}]
//                    42["quotes",{"snapshot":true,"quotes":[...]}]  42["error",{"code":...}]
//   client → server: an event named after the op, its argument without `op`, `type` or `id`:
//                    42<n>["subscribe",{"symbols":["AAPL"],"throttle_ms":0,"snapshot":true,"align":false}]
//                    (or an array of symbols, or a comma-separated string); `unsubscribe`
//                    likewise; `list` and `ping` without argument.
//   replies:         with an ack id, the ack: 43<n>[{"throttle_ms":0,"symbols":[...],"rejected":[...]}],
//                    43<n>[{"error":{"code":...,"message":...}}]; without one, an event:
//                    subscribed, unsubscribed, subscriptions, pong, error.
//   at connect:      ?symbols=AAPL,MSFT&throttle_ms=500 in the URL subscribes, answered by a
//                    `subscribed` event after `welcome`.
//   ping/pong:       Engine.IO's own (2 / 3).
//
// Quote frames: by default (`--emit raw`) the Socket.IO EVENT packet is spliced around the
// pre-built frame and written to the Engine.IO socket (`socket.conn.write`), which is what
// Socket.IO itself does for broadcasts (encode once, write the encoded packet to every engine
// socket). `--emit object` uses the plain `socket.emit('quotes', object)` of a typical app
// instead (quote objects are built once per publish; the parser stringifies per client).
// Backpressure: a client is skipped while the engine's write buffer is non-empty (a frame is
// already waiting for the previous write) or the underlying ws has more than 64 KiB buffered;
// the engine's `drain` event wakes it.
import http from 'node:http';
import { Server } from 'socket.io';
import { Feed, Hub, Session, announce, die, httpHandler, loadTicks, parseArgs, randomInstance, welcomeMessage } from '../common.mjs';

const opts = parseArgs(undefined, { emit: 'raw' });
if (opts.emit !== 'raw' && opts.emit !== 'object') die('--emit must be raw or object');
const objectMode = opts.emit === 'object';
const feed = new Feed(loadTicks(opts.file), { rate: opts.rate, paused: opts.paused, keepObjects: objectMode });
const hub = new Hub(feed);
const { type: _welcomeType, ...welcome } = welcomeMessage('socket.io', randomInstance());
const OPS = ['subscribe', 'unsubscribe', 'list', 'ping'];

// Socket.IO takes /socket.io/ requests; the rest reach the feed control (or a 404).
const server = http.createServer(httpHandler(feed));
const io = new Server(server, {
  path: '/socket.io/',
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});

/** A symbols argument as the v1 op wants it: an array; a comma-separated string is split. */
function symbolList(value) {
  if (typeof value !== 'string') return value;
  return value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

/** The v1 op for event `op` with argument `arg` (an object, an array or a comma string). */
function opOf(op, arg) {
  if (op !== 'subscribe' && op !== 'unsubscribe') return { op };
  if (Array.isArray(arg) || typeof arg === 'string') return { op, symbols: symbolList(arg) };
  if (arg === null || typeof arg !== 'object') return { op, symbols: undefined };
  return { op, symbols: symbolList(arg.symbols), throttle_ms: arg.throttle_ms, snapshot: arg.snapshot, align: arg.align };
}

io.on('connection', (socket) => {
  const conn = socket.conn;
  // The ack of the request being handled, if it came with one: the session's reply goes there.
  let ack = null;
  const sendQuotes = objectMode
    ? (frame, syms, snapshot) => {
        const quotes = syms.map((s) => feed.objects[s]);
        socket.emit('quotes', snapshot ? { snapshot: true, quotes } : { quotes });
      }
    : (frame) => conn.write(`2["quotes",${frame}]`);
  const session = new Session(hub, {
    send: (msg) => {
      const { type, id: _id, ...rest } = msg;
      if (ack !== null) {
        const reply = ack;
        ack = null;
        return reply(type === 'error' ? { error: rest } : rest);
      }
      socket.emit(type, rest);
    },
    sendQuotes,
    quotesPrefix: '{"quotes":[',
    snapshotPrefix: '{"snapshot":true,"quotes":[',
    bufferedAmount: () => {
      if (conn.writeBuffer.length > 0) return Infinity;
      return conn.transport?.socket?.bufferedAmount ?? 0;
    },
  });
  socket.emit('welcome', welcome);
  const { symbols, throttle_ms: throttle, align } = socket.handshake.query;
  if (symbols !== undefined) {
    const t = throttle === undefined ? undefined : /^\d+$/.test(throttle) ? Number(throttle) : throttle;
    const aligned = align === undefined ? undefined : align === '1' || align === 'true';
    session.handle({ op: 'subscribe', symbols: symbolList(String(symbols)), throttle_ms: t, align: aligned });
  }
  socket.onAny((event, ...args) => {
    ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    try {
      if (!OPS.includes(event)) {
        return session.error(undefined, 'bad_request', `unknown event '${String(event).slice(0, 32)}'; expected one of: ${OPS.join(', ')}`);
      }
      session.handle(opOf(event, args[0]));
    } finally {
      ack = null;
    }
  });
  // A client's event named `error` reaches onAny above; without a listener Node would throw.
  socket.on('error', () => {});
  conn.on('drain', () => hub.wake(session));
  socket.on('disconnect', () => session.close());
});

server.listen(opts.port, opts.host, () => {
  feed.start();
  announce(server.address().port, () => new Promise((resolve) => {
    feed.stop();
    io.close(() => resolve());
  }));
});
