// The watchlist table. Built for a high quote rate:
// - each row is created once, with references to its cells kept; a quote only writes the
//   `textContent` of cells whose text changed;
// - incoming quotes are buffered (latest per symbol) and applied once per animation frame, so
//   200 symbols at 10 updates/s cost one pass per frame, not 2000 DOM updates per second;
// - the flash on a change is a class switched on and off (two repaints, not one per frame);
// - sparklines are small canvases, redrawn at most twice a second and only when they moved;
// - rows off screen (IntersectionObserver) keep their latest quote and sparkline points but
//   write nothing to the DOM until they scroll into view.

import * as fmt from './format.js';

const SPARK_POINTS = 120;        // points kept per sparkline
const SPARK_SAMPLE_MS = 1000;    // a new point at most every second; between, the last point moves
const SPARK_REDRAW_MS = 500;
const FLASH_MS = 450;

export class Watchlist extends EventTarget {
  /**
   * @param {HTMLTableSectionElement} tbody
   * @param {{onSelect(symbol: string): void, onRemove(symbol: string): void}} handlers
   */
  constructor(tbody, { onSelect, onRemove }) {
    super();
    this.tbody = tbody;
    this.onSelect = onSelect;
    this.onRemove = onRemove;
    this.rows = new Map();          // symbol -> row state
    this.pending = new Map();       // symbol -> newest quote not yet shown
    this.meta = new Map();          // symbol -> {name, sector, feed}
    this.pausedFeeds = new Set();
    this.dirtySparks = new Set();
    this.flashing = new Map();      // cell -> time its flash ends
    this.lastSparkDraw = 0;
    this.frameRequested = false;
    this.selected = null;
    // Figures for the status bar and the load test.
    this.stats = { applied: 0, frames: 0, workMs: 0, maxWorkMs: 0 };
    this.#readColors();
    // No flashing for people who asked for reduced motion.
    const reduce = matchMedia('(prefers-reduced-motion: reduce)');
    this.motion = !reduce.matches;
    reduce.addEventListener('change', () => { this.motion = !reduce.matches; });
    // Sparkline canvas size, read once (reading layout in the frame loop would force a reflow).
    this.sparkSize = null;
    addEventListener('resize', () => { this.sparkSize = null; for (const s of this.rows.keys()) this.dirtySparks.add(s); this.#schedule(); });
    this.observer = new IntersectionObserver((entries) => this.#onIntersect(entries), { rootMargin: '200px 0px' });
    tbody.addEventListener('click', (e) => this.#onClick(e));
    tbody.addEventListener('keydown', (e) => this.#onKey(e));
  }

  get symbols() { return [...this.rows.keys()]; }
  has(symbol) { return this.rows.has(symbol); }

  /** Names, sectors and feeds from `/api/symbols`. */
  setMeta(list) {
    this.meta = new Map(list.map((s) => [s.symbol, s]));
    for (const [symbol, row] of this.rows) this.#fillMeta(symbol, row);
  }

  add(symbol) {
    if (this.rows.has(symbol)) return false;
    const row = this.#createRow(symbol);
    this.rows.set(symbol, row);
    this.tbody.append(row.tr);
    this.observer.observe(row.tr);
    this.#fillMeta(symbol, row);
    return true;
  }

  remove(symbol) {
    const row = this.rows.get(symbol);
    if (!row) return false;
    this.observer.unobserve(row.tr);
    row.tr.remove();
    this.rows.delete(symbol);
    this.pending.delete(symbol);
    this.dirtySparks.delete(symbol);
    if (this.selected === symbol) this.selected = null;
    return true;
  }

  /** Marks the selected row (the one in the chart). */
  select(symbol) {
    if (this.selected) this.rows.get(this.selected)?.tr.removeAttribute('aria-current');
    this.selected = symbol;
    const row = this.rows.get(symbol);
    if (row) {
      row.tr.setAttribute('aria-current', 'true');
    }
  }

  focus(symbol) { this.rows.get(symbol)?.symButton.focus(); }

  /** The server rejected the symbol (unknown or invalid): say so in the row. */
  markUnavailable(symbol, code) {
    const row = this.rows.get(symbol);
    if (!row) return;
    row.tr.classList.add('unavailable');
    row.cells.name.textContent = code === 'invalid_symbol' ? 'invalid symbol' : 'not on this server';
  }

  /** Rows of a paused feed are dimmed and say "paused": silence there is not a dead link. */
  setFeedState(feed, state) {
    const paused = state === 'paused' || state === 'finished';
    if (paused) this.pausedFeeds.add(feed); else this.pausedFeeds.delete(feed);
    for (const [symbol, row] of this.rows) {
      if (this.meta.get(symbol)?.feed === feed) row.tr.classList.toggle('paused', paused);
    }
  }

  /** The server restarted: prices may jump, so sparklines start over. */
  resetSeries() {
    for (const row of this.rows.values()) {
      row.points = [];
      row.lastSampleAt = 0;
      this.dirtySparks.add(row.symbol);
    }
  }

  /** Seeds a sparkline with recent closes (from `/api/history`). */
  seedSparkline(symbol, closes) {
    const row = this.rows.get(symbol);
    if (!row || row.points.length > closes.length) return;
    row.points = closes.slice(-SPARK_POINTS);
    row.lastSampleAt = performance.now();
    this.dirtySparks.add(symbol);
    this.lastSparkDraw = 0;   // draw on the next frame
    this.#schedule();
  }

  /** Buffers quotes; they reach the DOM on the next animation frame. */
  push(quotes) {
    for (const q of quotes) if (this.rows.has(q.symbol)) this.pending.set(q.symbol, q);
    this.#schedule();
  }

  /** Theme changed: re-read the sparkline colours and redraw them. */
  themeChanged() {
    this.#readColors();
    for (const symbol of this.rows.keys()) this.dirtySparks.add(symbol);
    this.#schedule();
  }

  #schedule() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => this.#flush());
  }

  #flush() {
    this.frameRequested = false;
    const start = performance.now();
    for (const q of this.pending.values()) this.#apply(q, start);
    this.stats.applied += this.pending.size;
    this.pending.clear();
    const flashing = this.#endFlashes(start);
    if (this.dirtySparks.size) {
      if (start - this.lastSparkDraw >= SPARK_REDRAW_MS) {
        this.lastSparkDraw = start;
        for (const symbol of this.dirtySparks) {
          const row = this.rows.get(symbol);
          if (row && row.visible) this.#drawSpark(row);
          else if (row) row.stale = true;
        }
        this.dirtySparks.clear();
      } else {
        this.#schedule();   // come back when the redraw interval is over
      }
    }
    if (flashing) this.#schedule();
    const work = performance.now() - start;
    this.stats.frames++;
    this.stats.workMs += work;
    if (work > this.stats.maxWorkMs) this.stats.maxWorkMs = work;
  }

  /** Folds a quote into its row; the DOM is written only for rows on screen. */
  #apply(q, now) {
    const row = this.rows.get(q.symbol);
    if (!row) return;
    const prev = row.quote;
    row.quote = q;
    row.decimals = Math.max(row.decimals, fmt.decimalsOf(q.last), fmt.decimalsOf(q.bid), fmt.decimalsOf(q.ask));
    // Sparkline: one point per sample interval; between samples the newest point follows.
    if (row.points.length === 0 || now - row.lastSampleAt >= SPARK_SAMPLE_MS) {
      row.points.push(q.last);
      if (row.points.length > SPARK_POINTS) row.points.shift();
      row.lastSampleAt = now;
    } else {
      row.points[row.points.length - 1] = q.last;
    }
    this.dirtySparks.add(q.symbol);
    if (row.visible) this.#render(row, prev);
    else row.stale = true;   // written when it scrolls into view
  }

  /** Writes a row's cells from its latest quote; flashes the price when it moved. */
  #render(row, prev = null) {
    const q = row.quote;
    if (!q) return;
    row.stale = false;
    const d = row.decimals;
    const c = row.cells;
    if (row.waiting) { row.waiting = false; row.tr.classList.remove('waiting'); }

    this.#set(c.last, fmt.price(q.last, d), prev && q.last !== prev.last ? (q.last > prev.last ? 1 : -1) : 0);
    this.#set(c.bid, fmt.price(q.bid, d));
    this.#set(c.ask, fmt.price(q.ask, d));
    this.#set(c.chg, fmt.signedPrice(q.change, d));
    this.#set(c.pct, fmt.percent(q.change_pct));
    this.#set(c.vol, fmt.volume(q.volume));
    this.#set(c.rangeText, `${fmt.price(q.low, d)} – ${fmt.price(q.high, d)}`);
    const span = q.high - q.low;
    const left = `${(span > 0 ? ((q.last - q.low) / span) * 100 : 50).toFixed(1)}%`;
    if (row.markLeft !== left) { row.markLeft = left; c.rangeMark.style.left = left; }
    const time = fmt.eventTime(q.ts);
    if (c.time.textContent !== time) {
      c.time.textContent = time;
      c.time.dateTime = new Date(q.ts).toISOString();
    }
    // Up/down colouring of the change columns follows the sign of the day's change.
    const sign = q.change > 0 ? 'up' : q.change < 0 ? 'down' : 'flat';
    if (row.sign !== sign) {
      row.sign = sign;
      row.tr.dataset.sign = sign;
    }
  }

  /** Rows entering or leaving the screen (with a margin): only visible rows touch the DOM. */
  #onIntersect(entries) {
    for (const e of entries) {
      const row = this.rows.get(e.target.dataset.symbol);
      if (!row) continue;
      row.visible = e.isIntersecting;
      if (row.visible && row.stale) {
        this.#render(row);
        this.dirtySparks.add(row.symbol);
        this.#schedule();
      }
    }
  }

  /** Writes a cell's text when it changed; flashes it green or red when `dir` says so. */
  #set(cell, text, dir = 0) {
    if (cell.textContent !== text) cell.textContent = text;
    if (dir !== 0 && this.motion) {
      // A discrete flash: a class on, then off after FLASH_MS (checked once per frame). Two
      // repaints per change, where a fading animation would repaint the cell every frame.
      const cls = dir > 0 ? 'flash-up' : 'flash-down';
      if (cell.flashClass !== cls) {
        if (cell.flashClass) cell.classList.remove(cell.flashClass);
        cell.classList.add(cls);
        cell.flashClass = cls;
      }
      this.flashing.set(cell, performance.now() + FLASH_MS);
    }
  }

  /** Ends the flashes that are over; true while some are still on. */
  #endFlashes(now) {
    for (const [cell, until] of this.flashing) {
      if (until <= now) {
        cell.classList.remove(cell.flashClass);
        cell.flashClass = null;
        this.flashing.delete(cell);
      }
    }
    return this.flashing.size > 0;
  }

  #drawSpark(row) {
    const canvas = row.spark;
    const dpr = devicePixelRatio || 1;
    if (!this.sparkSize || !this.sparkSize.w) this.sparkSize = { w: canvas.clientWidth, h: canvas.clientHeight };
    const w = this.sparkSize.w || 100;
    const h = this.sparkSize.h || 28;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pts = row.points;
    if (pts.length < 2) return;
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) { if (p < lo) lo = p; if (p > hi) hi = p; }
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    const pad = 2;
    // The whole series across the width, the newest point at the right edge.
    const step = (w - 4) / (pts.length - 1);
    const x = (i) => w - 2 - (pts.length - 1 - i) * step;
    const y = (p) => pad + (1 - (p - lo) / (hi - lo)) * (h - 2 * pad);
    const up = pts[pts.length - 1] >= pts[0];
    const color = up ? this.colors.up : this.colors.down;
    ctx.beginPath();
    ctx.moveTo(x(0), y(pts[0]));
    for (let i = 1; i < pts.length; i++) ctx.lineTo(x(i), y(pts[i]));
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.25;
    ctx.lineJoin = 'round';
    ctx.stroke();
    // A faint fill under the line.
    ctx.lineTo(x(pts.length - 1), h);
    ctx.lineTo(x(0), h);
    ctx.closePath();
    ctx.globalAlpha = 0.14;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
    // The newest point.
    ctx.beginPath();
    ctx.arc(x(pts.length - 1), y(pts[pts.length - 1]), 1.8, 0, Math.PI * 2);
    ctx.fillStyle = color;
    ctx.fill();
  }

  #readColors() {
    const css = getComputedStyle(document.documentElement);
    const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    this.colors = {
      up: v('--up', '#26a69a'),
      down: v('--down', '#ef5350'),
    };
  }

  #createRow(symbol) {
    const tr = document.createElement('tr');
    tr.dataset.symbol = symbol;
    tr.className = 'waiting';
    const td = (cls) => { const el = document.createElement('td'); el.className = cls; tr.append(el); return el; };

    const symCell = td('c-sym');
    const symButton = document.createElement('button');
    symButton.type = 'button';
    symButton.className = 'sym';
    symButton.textContent = symbol;
    symButton.setAttribute('aria-label', `${symbol}: show chart`);
    symCell.append(symButton);

    const name = td('c-name');
    const last = td('c-num c-last');
    const chg = td('c-num c-chg');
    const pct = td('c-num c-pct');
    const bid = td('c-num c-bid');
    const ask = td('c-num c-ask');
    const vol = td('c-num c-vol');
    const range = td('c-range');
    const rangeText = document.createElement('span');
    rangeText.className = 'range-text';
    const rangeBar = document.createElement('span');
    rangeBar.className = 'range-bar';
    rangeBar.setAttribute('aria-hidden', 'true');
    const rangeMark = document.createElement('span');
    rangeMark.className = 'range-mark';
    rangeBar.append(rangeMark);
    range.append(rangeText, rangeBar);
    const sparkCell = td('c-spark');
    const spark = document.createElement('canvas');
    spark.className = 'spark';
    spark.setAttribute('aria-hidden', 'true');
    sparkCell.append(spark);
    const timeCell = td('c-time');
    const time = document.createElement('time');
    timeCell.append(time);
    const act = td('c-act');
    const removeButton = document.createElement('button');
    removeButton.type = 'button';
    removeButton.className = 'remove';
    removeButton.textContent = '×';
    removeButton.setAttribute('aria-label', `Remove ${symbol}`);
    removeButton.title = `Remove ${symbol}`;
    act.append(removeButton);

    for (const cell of [last, chg, pct, bid, ask, vol, rangeText, time]) cell.textContent = '–';
    return {
      symbol, tr, symButton, spark, quote: null, decimals: 2, sign: null, points: [], lastSampleAt: 0,
      waiting: true, visible: true, stale: false, markLeft: null,
      cells: { name, last, chg, pct, bid, ask, vol, rangeText, rangeMark, time },
    };
  }

  #fillMeta(symbol, row) {
    const m = this.meta.get(symbol);
    if (!m) return;
    row.cells.name.textContent = m.name ?? '';
    row.cells.name.title = m.sector ? `${m.name} · ${m.sector}` : m.name ?? '';
    row.tr.classList.remove('unavailable');
    row.tr.classList.toggle('paused', this.pausedFeeds.has(m.feed));
  }

  #onClick(e) {
    const tr = e.target.closest('tr');
    if (!tr) return;
    const symbol = tr.dataset.symbol;
    if (e.target.closest('.remove')) this.onRemove(symbol);
    else this.onSelect(symbol);
  }

  #onKey(e) {
    const tr = e.target.closest('tr');
    if (!tr || !e.target.classList.contains('sym')) return;
    const symbol = tr.dataset.symbol;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const next = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
      if (next) { next.querySelector('.sym').focus(); e.preventDefault(); }
    } else if (e.key === 'Delete' || e.key === 'Backspace') {
      const next = tr.nextElementSibling ?? tr.previousElementSibling;
      this.onRemove(symbol);
      next?.querySelector('.sym')?.focus();
      e.preventDefault();
    }
  }
}
