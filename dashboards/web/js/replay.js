// Controls of the replay feeds: the replay clock (`clock_iso`), pause/resume, speed and seek,
// through `POST /api/feeds/{name}/control`. One group per replay feed; feed status comes from
// `GET /api/feeds` (polled by the app while connected) and from pushed `feed` messages.

import { authFetch } from './auth.js';
import * as fmt from './format.js';

const SPEEDS = [
  [3600, '1 hour/s'],
  [21600, '6 hours/s'],
  [86400, '1 day/s'],
  [604800, '1 week/s'],
  [2592000, '30 days/s'],
];

export class ReplayPanel {
  /**
   * @param {HTMLElement} section  container, hidden while no replay feed exists
   * @param {{onStatus(status: object): void, announce(text: string): void}} handlers
   */
  constructor(section, { onStatus, announce }) {
    this.section = section;
    this.onStatus = onStatus;
    this.announce = announce;
    this.groups = new Map();   // feed name -> {el, refs, status}
  }

  /** Feed statuses (any kind; only replays get controls). */
  update(statuses) {
    for (const s of statuses) if (s.kind === 'replay') this.#render(s);
    this.section.hidden = this.groups.size === 0;
  }

  get names() { return [...this.groups.keys()]; }

  #render(status) {
    let g = this.groups.get(status.name);
    if (!g) {
      g = this.#create(status.name);
      this.groups.set(status.name, g);
      this.section.append(g.el);
    }
    g.status = status;
    const r = g.refs;
    r.el.dataset.state = status.state;
    r.state.textContent = status.state;
    const clockText = status.clock_iso ? status.clock_iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '–';
    if (r.clock.textContent !== clockText) r.clock.textContent = clockText;
    if (status.clock_iso) r.clock.dateTime = status.clock_iso;
    const paused = status.state === 'paused';
    r.toggle.textContent = paused ? '▶ Resume' : '❚❚ Pause';
    r.toggle.setAttribute('aria-label', `${paused ? 'Resume' : 'Pause'} replay ${status.name}`);
    r.toggle.dataset.action = paused ? 'resume' : 'pause';
    r.toggle.disabled = status.state === 'starting';
    // Offer the feed's current speed even when it is not one of the presets.
    const speed = String(status.speed);
    if (![...r.speed.options].some((o) => o.value === speed)) {
      r.speed.add(new Option(`${status.speed}×`, speed));
    }
    if (document.activeElement !== r.speed) r.speed.value = speed;
    if (status.clock && !r.seek.value) r.seek.value = fmt.isoDate(status.clock);
    const info = `${status.symbols ?? '?'} symbols · ${(status.quotes_published ?? 0).toLocaleString('en-US')} quotes`;
    if (r.info.textContent !== info) r.info.textContent = info;
  }

  #create(name) {
    const el = document.createElement('div');
    el.className = 'replay-group';
    el.dataset.feed = name;
    const id = (part) => `replay-${name}-${part}`;
    el.innerHTML = `
      <span class="replay-title">Replay <strong></strong></span>
      <span class="replay-state badge" aria-live="polite"></span>
      <span class="replay-clock-wrap">clock <time class="replay-clock" aria-live="off"></time></span>
      <button type="button" class="replay-toggle"></button>
      <label class="inline" for="${id('speed')}">Speed <select id="${id('speed')}" class="replay-speed"></select></label>
      <form class="replay-seek">
        <label class="inline" for="${id('seek')}">Seek to <input type="date" id="${id('seek')}" class="replay-date" required></label>
        <button type="submit">Go</button>
      </form>
      <span class="replay-info muted"></span>`;
    el.querySelector('strong').textContent = name;
    const refs = {
      el,
      state: el.querySelector('.replay-state'),
      clock: el.querySelector('.replay-clock'),
      toggle: el.querySelector('.replay-toggle'),
      speed: el.querySelector('.replay-speed'),
      seek: el.querySelector('.replay-date'),
      info: el.querySelector('.replay-info'),
    };
    for (const [value, label] of SPEEDS) refs.speed.add(new Option(label, String(value)));
    refs.toggle.addEventListener('click', () => this.#control(name, { action: refs.toggle.dataset.action }));
    refs.speed.addEventListener('change', () => this.#control(name, { action: 'speed', value: Number(refs.speed.value) }));
    el.querySelector('.replay-seek').addEventListener('submit', (e) => {
      e.preventDefault();
      if (refs.seek.value) this.#control(name, { action: 'seek', to: refs.seek.value });
    });
    return { el, refs, status: null };
  }

  async #control(name, body) {
    try {
      const res = await authFetch(`/api/feeds/${encodeURIComponent(name)}/control`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const answer = await res.json();
      if (!res.ok) {
        this.announce(`Replay ${name}: ${answer.message ?? answer.error ?? res.status}`);
        return;
      }
      this.#render(answer);
      this.onStatus(answer, body);
      this.announce(`Replay ${name}: ${body.action === 'seek' ? `sought to ${body.to}` : answer.state}`);
    } catch {
      this.announce(`Replay ${name}: the server did not answer`);
    }
  }
}
