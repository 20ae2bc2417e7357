// Candlestick chart of one symbol on a canvas: price axis on the right, time axis below, a
// dashed line at the last price, volume bars at the bottom, and a crosshair with an OHLC
// readout on hover (or with ←/→ when the canvas has focus).
//
// Data: the server's bars, never quotes. The chart reads bars of one resolution (`1s`, or
// `1m` when the chosen width is whole minutes: `resolution`), the app subscribes the symbol to
// that `bars:*` channel, and each displayed candle aggregates the resolution bars ("parts") of
// its bucket. `show(symbol)` backfills from `/api/history/{symbol}`; streamed bars that arrive
// meanwhile are buffered, then applied. Backfill and stream are the same bars, so they join
// by key: a bar with the same `t` replaces the one held unless its `seq` is lower (an older
// state of it: the history already had more), a bar with a new `t` is added — no gap, no
// duplicate, whichever comes first. `data-last-seq` on the canvas is the newest seq drawn.

import { authFetch } from './auth.js';
import * as fmt from './format.js';

const AXIS_W = 72;      // price labels on the right
const AXIS_H = 24;      // time labels below
const PAD_TOP = 12;
const MAX_BARS = 1500;

/** The history and channel resolution for a candle width: 1 min bars when it is whole minutes. */
export function resolutionFor(intervalMs) {
  return intervalMs >= 60_000 && intervalMs % 60_000 === 0 ? '1m' : '1s';
}

const TIME_STEPS = [1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3,
  7200e3, 4 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3, 7 * 86400e3, 14 * 86400e3,
  30 * 86400e3, 91 * 86400e3, 182 * 86400e3, 365 * 86400e3, 730 * 86400e3, 1826 * 86400e3];

export class Chart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {HTMLElement} readout  text line under the title: OHLC of the hovered or last bar
   */
  constructor(canvas, readout) {
    this.canvas = canvas;
    this.readout = readout;
    this.symbol = null;
    this.intervalMs = 5000;
    this.bars = [];            // candles, oldest first, at most MAX_BARS
    this.parts = new Map();    // t -> resolution bar, for the last two candles (late updates)
    this.seq = 0;              // newest seq applied
    this.loading = null;       // {buffer: Bar[]} while backfilling
    this.decimals = 2;
    this.hover = null;         // {x, y} in CSS px, or null
    this.keyIndex = null;      // bar index chosen with the keyboard
    this.dirty = true;
    this.generation = 0;       // invalidates an in-flight backfill when the symbol changes
    this.readColors();
    new ResizeObserver(() => this.invalidate()).observe(canvas);
    canvas.tabIndex = 0;
    canvas.addEventListener('pointermove', (e) => {
      const r = canvas.getBoundingClientRect();
      this.hover = { x: e.clientX - r.left, y: e.clientY - r.top };
      this.keyIndex = null;
      this.invalidate();
    });
    canvas.addEventListener('pointerleave', () => { this.hover = null; this.invalidate(); });
    canvas.addEventListener('keydown', (e) => this.#onKey(e));
    canvas.addEventListener('blur', () => { this.keyIndex = null; this.invalidate(); });
  }

  /** `1s` or `1m`: the resolution of the bars this chart reads (history and channel). */
  get resolution() { return resolutionFor(this.intervalMs); }

  /**
   * Shows `symbol`, backfilled from the history API.
   * @param {string} symbol
   * @param {{intervalMs?: number}} options
   */
  async show(symbol, { intervalMs = this.intervalMs } = {}) {
    this.symbol = symbol;
    this.intervalMs = intervalMs;
    this.#reset();
    this.decimals = 2;
    this.hover = null;
    this.keyIndex = null;
    this.canvas.setAttribute('aria-label', `Price chart of ${symbol}`);
    const generation = ++this.generation;
    const loading = { buffer: [] };
    this.loading = loading;
    this.invalidate();
    const resolution = this.resolution;
    const limit = resolution === '1s' ? 900 : 600;
    let history = null;
    try {
      const res = await authFetch(`/api/history/${encodeURIComponent(symbol)}?resolution=${resolution}&limit=${limit}`);
      if (res.ok) history = await res.json();
    } catch {
      // Offline: the chart fills from streamed bars once the connection is back.
    }
    if (generation !== this.generation) return;   // another symbol or width was chosen meanwhile
    // The bars, as an array or under `bars` (both shapes are accepted).
    const backfill = Array.isArray(history) ? history : history?.bars ?? [];
    // In publish order (seq), so that a replay that was sought or looped, leaving bars of the
    // old timeline in the history, starts again where time jumps.
    for (const b of [...backfill].sort((a, b) => a.seq - b.seq)) this.#apply(b, false);
    this.loading = null;
    for (const b of loading.buffer) this.#apply(b, true);
    this.invalidate();
  }

  /** Reloads the current symbol (after a reconnection, a server restart or a replay seek). */
  reload() { if (this.symbol) this.show(this.symbol); }

  /** Clears the chart (no symbol selected). */
  clear() {
    this.symbol = null;
    this.#reset();
    this.generation++;
    this.invalidate();
  }

  /** A `bars` message (any symbol or resolution; only this chart's are used). */
  onBars(msg) {
    if (msg.resolution !== this.resolution) return;
    let changed = false;
    for (const b of msg.bars) {
      if (b.symbol !== this.symbol) continue;
      if (this.loading) this.loading.buffer.push(b);
      else changed = this.#apply(b, true) || changed;
    }
    if (changed) this.invalidate();
  }

  #reset() {
    this.bars = [];
    this.parts.clear();
    this.seq = 0;
    delete this.canvas.dataset.lastSeq;
  }

  /**
   * Applies one resolution bar (backfilled or streamed) to its candle; false when it changed
   * nothing (an older state of a bar, or a bar before the candles still open to updates).
   */
  #apply(b, live) {
    const bucket = Math.floor(b.t / this.intervalMs) * this.intervalMs;
    const last = this.bars[this.bars.length - 1];
    // Newer than everything yet at another time: a replay was sought or looped, a new
    // timeline starts here. Live, the history is asked again (at most every 2 s) for what the
    // server has of it.
    if (last && b.seq > this.seq && this.#jumped(last.t, bucket)) {
      this.#reset();
      if (live && !(performance.now() - this.lastReload < 2000)) {
        this.lastReload = performance.now();
        const symbol = this.symbol;
        setTimeout(() => { if (this.symbol === symbol) this.reload(); }, 500);
      }
    }
    const held = this.parts.get(b.t);
    if (held && held.seq > b.seq) return false;
    let index = this.bars.length - 1;
    while (index >= 0 && this.bars[index].t > bucket) index--;
    const found = index >= 0 && this.bars[index].t === bucket;
    // Only the last two candles take updates (a final bar may trail the next bar's first).
    if (!found && index < this.bars.length - 1) return false;
    if (found && !held && index < this.bars.length - 2) return false;
    this.parts.set(b.t, b);
    const candle = this.#aggregate(bucket);
    if (found) {
      this.bars[index] = candle;
    } else {
      this.bars.push(candle);
      if (this.bars.length > MAX_BARS) this.bars.shift();
      this.#pruneParts();
    }
    if (b.seq > this.seq) {
      this.seq = b.seq;
      this.canvas.dataset.lastSeq = String(b.seq);
    }
    this.decimals = Math.max(this.decimals, fmt.decimalsOf(b.close));
    return true;
  }

  /** The candle of `bucket`, from the parts held for it. */
  #aggregate(bucket) {
    let first = null, last = null, high = -Infinity, low = Infinity, volume = 0;
    for (const p of this.parts.values()) {
      if (p.t < bucket || p.t >= bucket + this.intervalMs) continue;
      if (!first || p.t < first.t) first = p;
      if (!last || p.t > last.t) last = p;
      if (p.high > high) high = p.high;
      if (p.low < low) low = p.low;
      volume += p.volume;
    }
    return { t: bucket, open: first.open, high, low, close: last.close, volume, seq: last.seq };
  }

  /** Drops the parts of candles no longer open to updates (all but the last two). */
  #pruneParts() {
    const keepFrom = this.bars[Math.max(0, this.bars.length - 2)].t;
    for (const t of this.parts.keys()) if (t < keepFrom) this.parts.delete(t);
  }

  /** Whether event time jumped between two candles: back, or forward by over 200 candles. */
  #jumped(from, to) {
    return to < from || to - from > 200 * this.intervalMs;
  }

  invalidate() {
    if (this.dirty && this.frame) return;
    this.dirty = true;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  readColors() {
    const css = getComputedStyle(document.documentElement);
    const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    this.colors = {
      bg: v('--chart-bg', '#0d131a'), grid: v('--chart-grid', 'rgba(255,255,255,.06)'),
      text: v('--muted', '#8a99a8'), fg: v('--fg', '#e6edf3'), up: v('--up', '#26a69a'),
      down: v('--down', '#ef5350'), cross: v('--chart-cross', 'rgba(255,255,255,.35)'),
      labelBg: v('--chart-label-bg', '#2b3440'), accent: v('--accent', '#f5b942'),
    };
    this.invalidate();
  }

  /** Which bars fit, and the geometry to place them. */
  #layout(w, h) {
    const plotW = Math.max(10, w - AXIS_W);
    const plotH = Math.max(10, h - AXIS_H - PAD_TOP);
    const spacing = Math.max(3, Math.min(14, plotW / Math.max(this.bars.length, 40)));
    const count = Math.min(this.bars.length, Math.floor(plotW / spacing));
    const first = this.bars.length - count;
    return { plotW, plotH, spacing, count, first };
  }

  draw() {
    this.dirty = false;
    const canvas = this.canvas;
    const dpr = devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    const c = this.colors;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = c.bg;
    ctx.fillRect(0, 0, w, h);
    ctx.font = '11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';
    ctx.textBaseline = 'middle';

    const { plotW, plotH, spacing, count, first } = this.#layout(w, h);
    const bars = this.bars.slice(first);
    if (!bars.length) {
      ctx.fillStyle = c.text;
      ctx.textAlign = 'center';
      ctx.fillText(this.symbol ? (this.loading ? 'loading…' : 'waiting for bars…') : 'select a symbol', plotW / 2, h / 2);
      this.#readoutFor(null);
      return;
    }

    // Price scale with 8% headroom, nice round grid steps.
    let lo = Infinity, hi = -Infinity, vmax = 0;
    for (const b of bars) { if (b.low < lo) lo = b.low; if (b.high > hi) hi = b.high; if (b.volume > vmax) vmax = b.volume; }
    if (hi === lo) { hi += hi * 0.001 || 1; lo -= lo * 0.001 || 1; }
    const padP = (hi - lo) * 0.08;
    lo -= padP; hi += padP;
    const y = (p) => PAD_TOP + (1 - (p - lo) / (hi - lo)) * plotH;
    const xOf = (i) => plotW - (count - i - 0.5) * spacing;   // centre of visible bar i

    // Grid and price labels.
    const step = niceStep((hi - lo) / Math.max(2, Math.floor(plotH / 48)));
    const decimals = Math.max(this.decimals, step < 0.01 ? 4 : step < 1 ? 2 : 0);
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = c.text;
    ctx.textAlign = 'left';
    ctx.beginPath();
    const yLastLabel = y(bars[bars.length - 1].close);
    for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
      const yy = Math.round(y(p)) + 0.5;
      ctx.moveTo(0, yy); ctx.lineTo(plotW, yy);
      // (no grid label under the last-price label)
      if (Math.abs(yy - yLastLabel) > 14) ctx.fillText(fmt.price(p, Math.min(decimals, 5)), plotW + 8, yy);
    }
    // Time grid and labels: the smallest round step leaving 90 px between labels.
    const msPerPx = this.intervalMs / spacing;
    const tStep = TIME_STEPS.find((s) => s / msPerPx >= 90) ?? TIME_STEPS[TIME_STEPS.length - 1];
    const daily = tStep >= 86400e3 || this.intervalMs >= 86400e3;
    // A label at the first bar of each new time step, at least 90 px apart (bars are placed
    // by index, so gaps in time, e.g. nights or a paused feed, take no room).
    ctx.textAlign = 'center';
    let lastLabelX = -Infinity;
    for (let i = 1; i < bars.length; i++) {
      if (Math.floor(bars[i].t / tStep) === Math.floor(bars[i - 1].t / tStep)) continue;
      const xx = Math.round(xOf(i)) + 0.5;
      if (xx - lastLabelX < 90 || xx < 40 || xx > plotW - 40) continue;   // a label must fit
      lastLabelX = xx;
      ctx.moveTo(xx, PAD_TOP); ctx.lineTo(xx, PAD_TOP + plotH);
      const t = bars[i].t;
      ctx.fillText(daily ? fmt.isoDate(t) : tStep >= 60e3 ? fmt.clock(t).slice(0, 5) : fmt.clock(t), xx, h - AXIS_H / 2);
    }
    ctx.stroke();

    // Volume: faint bars in the lowest fifth.
    if (vmax > 0) {
      ctx.globalAlpha = 0.22;
      const bw = Math.max(1, spacing * 0.7);
      for (let i = 0; i < bars.length; i++) {
        const b = bars[i];
        const vh = (b.volume / vmax) * plotH * 0.2;
        ctx.fillStyle = b.close >= b.open ? c.up : c.down;
        ctx.fillRect(xOf(i) - bw / 2, PAD_TOP + plotH - vh, bw, vh);
      }
      ctx.globalAlpha = 1;
    }

    // Candles: wick, then body (at least 1 px tall).
    const bodyW = Math.max(1, Math.floor(spacing * 0.7));
    for (let i = 0; i < bars.length; i++) {
      const b = bars[i];
      const x = Math.round(xOf(i));
      const color = b.close >= b.open ? c.up : c.down;
      ctx.fillStyle = color;
      const yh = y(b.high), yl = y(b.low);
      ctx.fillRect(x, yh, 1, Math.max(1, yl - yh));
      const yo = y(b.open), yc = y(b.close);
      const top = Math.min(yo, yc);
      ctx.fillRect(x - Math.floor(bodyW / 2), top, bodyW, Math.max(1, Math.abs(yc - yo)));
    }

    // Last price: dashed line and a label on the axis.
    const lastBar = bars[bars.length - 1];
    const yLast = Math.round(y(lastBar.close)) + 0.5;
    const lastColor = lastBar.close >= lastBar.open ? c.up : c.down;
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = lastColor;
    ctx.beginPath(); ctx.moveTo(0, yLast); ctx.lineTo(plotW, yLast); ctx.stroke();
    ctx.setLineDash([]);
    this.#axisLabel(ctx, fmt.price(lastBar.close, this.decimals), plotW, yLast, lastColor, '#fff');

    // Crosshair (mouse) or the keyboard-chosen bar.
    let index = null;
    if (this.keyIndex !== null) index = Math.min(this.keyIndex, this.bars.length - 1);
    else if (this.hover && this.hover.x < plotW && this.hover.y < PAD_TOP + plotH) {
      const i = Math.round((this.hover.x - xOf(0)) / spacing);
      if (i >= 0 && i < bars.length) index = first + i;
    }
    if (index !== null && index >= first) {
      const b = this.bars[index];
      const xx = Math.round(xOf(index - first)) + 0.5;
      const yy = this.hover && this.keyIndex === null ? this.hover.y : y(b.close);
      ctx.strokeStyle = c.cross;
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(xx, PAD_TOP); ctx.lineTo(xx, PAD_TOP + plotH);
      ctx.moveTo(0, Math.round(yy) + 0.5); ctx.lineTo(plotW, Math.round(yy) + 0.5);
      ctx.stroke();
      ctx.setLineDash([]);
      const p = lo + (1 - (yy - PAD_TOP) / plotH) * (hi - lo);
      this.#axisLabel(ctx, fmt.price(p, this.decimals), plotW, yy, c.labelBg, c.fg);
      const label = daily ? fmt.isoDate(b.t) : `${fmt.clock(b.t)}`;
      ctx.font = '11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';
      const tw = ctx.measureText(label).width + 12;
      const lx = Math.min(Math.max(xx - tw / 2, 0), plotW - tw);
      ctx.fillStyle = c.labelBg;
      ctx.fillRect(lx, h - AXIS_H + 2, tw, AXIS_H - 4);
      ctx.fillStyle = c.fg;
      ctx.textAlign = 'center';
      ctx.fillText(label, lx + tw / 2, h - AXIS_H / 2);
      this.#readoutFor(b, daily);
    } else {
      this.#readoutFor(lastBar, daily);
    }
  }

  #axisLabel(ctx, text, plotW, yy, bg, fg) {
    ctx.fillStyle = bg;
    ctx.fillRect(plotW + 2, yy - 9, AXIS_W - 4, 18);
    ctx.fillStyle = fg;
    ctx.textAlign = 'left';
    ctx.fillText(text, plotW + 8, yy);
  }

  /** The text readout: OHLC and volume of a bar (the hovered one, else the last). */
  #readoutFor(b, daily) {
    let text = '';
    if (b) {
      const d = this.decimals;
      const when = daily ? fmt.isoDate(b.t) : fmt.clock(b.t);
      const chg = b.close - b.open;
      text = `${when}  O ${fmt.price(b.open, d)}  H ${fmt.price(b.high, d)}  L ${fmt.price(b.low, d)}  C ${fmt.price(b.close, d)}  ${fmt.signedPrice(chg, d)}  Vol ${fmt.volume(b.volume)}`;
      this.readout.dataset.sign = chg >= 0 ? 'up' : 'down';
    }
    if (this.readout.textContent !== text) this.readout.textContent = text;
  }

  #onKey(e) {
    if (!this.bars.length) return;
    const lastIndex = this.bars.length - 1;
    const cur = this.keyIndex ?? lastIndex;
    if (e.key === 'ArrowLeft') this.keyIndex = Math.max(0, cur - 1);
    else if (e.key === 'ArrowRight') this.keyIndex = Math.min(lastIndex, cur + 1);
    else if (e.key === 'Escape' || e.key === 'End') this.keyIndex = null;
    else return;
    e.preventDefault();
    this.invalidate();
  }
}

/** 1, 2 or 5 times a power of ten, at least `raw`. */
function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}
