// The fault-injection banner. A server started with `--faults` says so in its `welcome`
// (`"faults": true`); only then does the page ask `GET /api/faults`, every 2 s while it is
// connected and visible, and list the active faults (kind and target) in a banner, hidden
// again when the list is empty. Any other server is never asked: its answer would be a 403,
// and a dashboard of a production server has no business polling a test hook.

const POLL_MS = 2000;

// What a listed fault does besides its kind (GET /api/faults also lists `id`, `fired`,
// `added_at` and `expires_at`: bookkeeping, not shown).
const PARAMS = ['ms', 'code', 'count', 'every', 'for', 'remaining'];

export class FaultBanner {
  /**
   * @param {HTMLElement} el  the banner (hidden while no fault is active)
   * @param {{fetchJSON(path: string): Promise<any>, canPoll(): boolean, session(): string|null}} deps
   *   `fetchJSON` rejects with `{status}` on an error status; `canPoll` says the socket is up;
   *   `session` is this page's session id (`welcome.session`), so a fault aimed at it says so
   */
  constructor(el, { fetchJSON, canPoll, session }) {
    this.el = el;
    this.list = el.querySelector('ul');
    this.fetchJSON = fetchJSON;
    this.canPoll = canPoll;
    this.session = session;
    this.timer = 0;
    this.inFlight = false;
    this.text = '';
  }

  get enabled() { return this.timer !== 0; }

  /** From each `welcome`: polls while the server injects faults, else stops and hides. */
  setEnabled(on) {
    if (on && !this.timer) {
      this.timer = setInterval(() => this.#poll(), POLL_MS);
      this.#poll();
    } else if (!on && this.timer) {
      clearInterval(this.timer);
      this.timer = 0;
      this.#render([]);
    }
  }

  async #poll() {
    if (this.inFlight || !this.canPoll() || document.hidden) return;
    this.inFlight = true;
    try {
      const answer = await this.fetchJSON('/api/faults');
      if (this.timer) this.#render(Array.isArray(answer?.faults) ? answer.faults : []);
    } catch (e) {
      // The server turned out to have no fault injection after all: stop asking.
      if (e.status === 403) this.setEnabled(false);
      // Otherwise (the server going away): the next poll, or the next welcome, decides.
    } finally {
      this.inFlight = false;
    }
  }

  #render(faults) {
    const lines = faults.map((f) => describeFault(f, this.session()));
    const text = lines.join('\n');
    if (text === this.text) return;   // polled every 2 s: announce only a change
    this.text = text;
    this.list.replaceChildren(...lines.map((line, i) => {
      const li = document.createElement('li');
      li.textContent = line;
      li.dataset.kind = String(faults[i].kind);
      return li;
    }));
    this.el.dataset.count = String(faults.length);
    this.el.hidden = faults.length === 0;
  }
}

/**
 * "stall · every session (ms 3000)": a fault's kind, its target (a session, a share of the
 * sessions, a symbol, a feed; by default what its kind acts on) and its parameters.
 */
export function describeFault(fault, ownSession = null) {
  const targets = [];
  if (fault.session != null) {
    targets.push(String(fault.session) === ownSession ? `session ${fault.session} (this page)` : `session ${fault.session}`);
  }
  if (fault.fraction != null) targets.push(`${+(fault.fraction * 100).toFixed(1)}% of sessions`);
  if (fault.feed != null) targets.push(`feed ${fault.feed}`);
  if (fault.symbol != null) targets.push(fault.symbol);
  if (!targets.length) {
    targets.push(fault.kind === 'reject_connect' ? 'new connections' : fault.kind === 'feed_stall' ? 'every feed' : 'every session');
  }
  const params = PARAMS.filter((k) => fault[k] !== undefined && fault[k] !== null).map((k) => `${k} ${fault[k]}`);
  return `${fault.kind ?? 'fault'} · ${targets.join(', ')}${params.length ? ` (${params.join(', ')})` : ''}`;
}
