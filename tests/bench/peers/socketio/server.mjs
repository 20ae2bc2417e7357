// Benchmark peer: Socket.IO 4 server (Engine.IO v4, websocket transport only) speaking
// tickerfeed protocol v1 mapped onto events, default namespace, path /socket.io/.
//
//   server → client: event = the v1 message's `type`, payload = the v1 object
//                    42["welcome",{...}]  42["subscribed",{...}]  42["quotes",{"type":"quotes",...}]
//   client → server: event = the `op`, payload = the v1 object
//                    42["subscribe",{"op":"subscribe","symbols":["AAPL"],"throttle_ms":0}]
//   ping/pong:       Engine.IO's own (2 / 3)
//
// Quote frames: by default (`--emit raw`) the Socket.IO EVENT packet is spliced around the
// pre-built v1 frame and written to the Engine.IO socket (`socket.conn.write`), which is what
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
const welcome = welcomeMessage('socket.io', randomInstance());

// Socket.IO takes /socket.io/ requests; the rest reach the feed control (or a 404).
const server = http.createServer(httpHandler(feed));
const io = new Server(server, {
  path: '/socket.io/',
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});

io.on('connection', (socket) => {
  const conn = socket.conn;
  const sendQuotes = objectMode
    ? (frame, syms, snapshot) => {
        const quotes = syms.map((s) => feed.objects[s]);
        socket.emit('quotes', snapshot ? { type: 'quotes', snapshot: true, quotes } : { type: 'quotes', quotes });
      }
    : (frame) => conn.write(`2["quotes",${frame}]`);
  const session = new Session(hub, {
    send: (msg) => socket.emit(msg.type, msg),
    sendQuotes,
    bufferedAmount: () => {
      if (conn.writeBuffer.length > 0) return Infinity;
      return conn.transport?.socket?.bufferedAmount ?? 0;
    },
  });
  socket.emit('welcome', welcome);
  socket.onAny((event, payload) => {
    if (payload === undefined) return session.handle({ op: event }); // e.g. 42["ping"]
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      return session.handle(payload);
    }
    session.handle({ ...payload, op: event });
  });
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
