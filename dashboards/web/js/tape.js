// Time and sales: the charted symbol's trades (the `trades` channel), newest first.
//
// - Trades are never conflated, so at full rate a busy symbol prints many per second: they are
//   buffered and written once per animation frame, one fragment prepended, and only the rows
//   that can stay are built.
// - A `gap` (trades lost: the page fell behind, or the server's ring did not reach back far
//   enough on a resume) becomes a row of its own in the stream, so a reader sees where prints
//   are missing instead of a silent jump in seq. The newest gap row is never aged out by the
//   row bound: a resume that lost trades comes with a backlog of up to the server's whole ring,
//   longer than the tape, which would otherwise push the notice out before anyone saw it.
// - Rows from a resume backlog (a frame with `recovered`) are marked: they arrived late, after
//   a reconnection, not as they happened.
// - The tick colour follows the tick test: up when the price rose from the previous trade,
//   down when it fell; an unchanged price keeps the direction of the last move.
//
// `data-symbol` and `data-last-seq` on the table say what it shows (for tests and the curious).

import * as fmt from './format.js';

// The bound: at most 200 rows (trades and gap rows together) stay in the table, plus the newest
// gap row when it would age out (it then stays at the bottom); older rows are dropped as new
// ones come, so the DOM stays the same size whatever the trade rate.
const MAX_ROWS = 200;

export class Tape {
  /**
   * @param {HTMLTableElement} table  with one <tbody>
   * @param {HTMLElement} empty  shown while there is no row
   */
  constructor(table, empty) {
    this.table = table;
    this.tbody = table.tBodies[0];
    this.empty = empty;
    this.symbol = null;
    this.pending = [];       // rows to write on the next frame, oldest first
    this.frame = 0;
    this.#resetSeries();
  }

  /** Shows `symbol`'s trades from now on (the same symbol again keeps its rows). */
  show(symbol) {
    if (symbol === this.symbol) return;
    this.symbol = symbol;
    this.table.dataset.symbol = symbol ?? '';
    this.clear();
  }

  /** Empties the tape (a new symbol, or a server restart: its seqs started again). */
  clear() {
    this.pending = [];
    this.tbody.replaceChildren();
    this.#resetSeries();
    delete this.table.dataset.lastSeq;
    this.empty.hidden = false;
  }

  /**
   * Trades of a `trades` message, in seq order (already de-duplicated by the connection).
   * @param {Array<{symbol: string, seq: number, ts: number, price: number, size: number}>} trades
   * @param {boolean|undefined} recovered  set only on a resume backlog
   */
  onTrades(trades, recovered) {
    for (const t of trades) {
      if (t.symbol !== this.symbol) continue;
      // The tick is decided here, in seq order, even for trades a busy frame will not show.
      const tick = this.lastPrice === null ? 'flat' : t.price > this.lastPrice ? 'up' : t.price < this.lastPrice ? 'down' : this.lastTick;
      this.lastPrice = t.price;
      this.lastTick = tick;
      this.decimals = Math.max(this.decimals, fmt.decimalsOf(t.price));
      this.pending.push({ trade: t, tick, recovered });
    }
    this.#schedule();
  }

  /** A `gap` message of the trades channel. */
  onGap(gap) {
    if (gap.symbol !== this.symbol) return;
    this.pending.push({ gap });
    this.#schedule();
  }

  #resetSeries() {
    this.lastPrice = null;
    this.lastTick = 'flat';
    this.decimals = 2;
  }

  #schedule() {
    if (this.frame || !this.pending.length) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.#flush(); });
  }

  #flush() {
    // Only the rows that can stay are built; a gap among the others is kept (see the bound).
    let rows = this.pending;
    this.pending = [];
    if (!rows.length) return;
    const cut = rows.length - MAX_ROWS;
    if (cut > 0) {
      const gap = rows.slice(0, cut).findLast((r) => r.gap);
      rows = rows.slice(cut);
      if (gap) rows.unshift(gap);
    }
    const fragment = document.createDocumentFragment();
    for (let i = rows.length - 1; i >= 0; i--) fragment.append(this.#row(rows[i]));
    this.tbody.prepend(fragment);
    const keep = this.tbody.querySelector('tr.gap');   // the newest gap row
    while (this.tbody.rows.length > MAX_ROWS + (keep ? 1 : 0)) {
      const oldest = this.tbody.lastElementChild;
      (oldest === keep ? oldest.previousElementSibling : oldest).remove();
    }
    const newest = rows.findLast((r) => r.trade);
    if (newest) this.table.dataset.lastSeq = String(newest.trade.seq);
    this.empty.hidden = true;
  }

  #row({ trade, tick, recovered, gap }) {
    const tr = document.createElement('tr');
    if (gap) {
      const lost = gap.to_seq - gap.from_seq + 1;
      tr.className = 'gap';
      tr.dataset.from = String(gap.from_seq);
      tr.dataset.to = String(gap.to_seq);
      const td = tr.insertCell();
      td.colSpan = 3;
      td.textContent = lost === 1
        ? `1 trade lost: seq ${gap.from_seq}`
        : `${lost.toLocaleString('en-US')} trades lost: seq ${gap.from_seq}–${gap.to_seq}`;
      return tr;
    }
    tr.className = 'trade';
    tr.dataset.seq = String(trade.seq);
    tr.dataset.tick = tick;
    if (recovered !== undefined) {
      tr.classList.add('backlog');
      tr.dataset.recovered = String(recovered);
      tr.title = 'received late, from the server\'s backlog after a reconnection';
    }
    const time = tr.insertCell();
    time.className = 't-time';
    time.textContent = fmt.tradeTime(trade.ts);
    time.title = new Date(trade.ts).toISOString();
    const price = tr.insertCell();
    price.className = 't-price';
    price.textContent = fmt.price(trade.price, this.decimals);
    const size = tr.insertCell();
    size.className = 't-size';
    size.textContent = trade.size.toLocaleString('en-US');
    return tr;
  }
}
