// Virtual log viewer: fixed-height unwrapped rows, so the position of line
// n is n * H. Only the visible rows exist in the DOM; rows come from the
// server in windows (`/t/<id>/lines`) and live over the page's websocket.
const H = 18;                 // px per row, as in sai.css
const MAX_PX = 8_000_000;     // keep the scroll height below browser limits
const CACHE = 6000;           // rows kept in memory at most
const OVERSCAN = 40;

export class LogView {
  constructor(el) {
    this.el = el;
    this.task = el.dataset.task;
    this.spacer = el.querySelector('.spacer');
    this.rowsEl = el.querySelector('.rows');
    this.status = document.getElementById('log-status');
    this.followBox = document.getElementById('follow');
    this.total = 0;
    this.complete = 0;        // newline-terminated lines known
    this.rows = new Map();
    this.inflight = null;
    this.hit = -1;
    this.frame = 0;
    this.programmatic = false;
    el.addEventListener('scroll', () => this.onScroll());
    window.addEventListener('resize', () => this.paint());
    document.getElementById('first-error')?.addEventListener('click', () => this.find({ error: 1 }, 0));
    const search = document.getElementById('search');
    const next = () => this.find({ q: search.value }, this.hit >= 0 ? this.hit + 1 : this.firstVisible());
    document.getElementById('search-next')?.addEventListener('click', next);
    search?.addEventListener('keydown', (e) => { if (e.key === 'Enter') next(); });
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Home') { this.scrollToLine(0); e.preventDefault(); }
      if (e.key === 'End') { this.scrollToEnd(); e.preventDefault(); }
    });
  }

  get follow() { return !this.followBox || this.followBox.checked; }

  async init() {
    const r = await this.fetchJson(`/t/${this.task}/lines?tail=200`);
    if (!r) return;
    this.addRows(r.rows);
    this.complete = r.complete_lines;
    this.setTotal(r.lines);
    this.scrollToEnd();
  }

  reset() {
    this.rows.clear();
    this.total = 0;
    this.complete = 0;
    this.setTotal(0);
    this.init();
  }

  async fetchJson(url) {
    try {
      const resp = await fetch(url, { credentials: 'same-origin' });
      if (!resp.ok) { this.setStatus(`log: ${resp.status}`); return null; }
      return await resp.json();
    } catch (e) {
      this.setStatus('log: unreachable');
      return null;
    }
  }

  setStatus(s) { if (this.status) this.status.textContent = s; }

  setTotal(n) {
    this.total = Math.max(n, 0);
    const px = this.total * H;
    this.scaled = px > MAX_PX;
    this.spacer.style.height = `${Math.min(px, MAX_PX)}px`;
    this.el.dataset.lines = String(this.total);
    this.setStatus(`${this.total.toLocaleString()} lines`);
  }

  addRows(rows) {
    for (const r of rows) this.rows.set(r.n - 1, r);
    if (this.rows.size > CACHE) {
      const keepFrom = this.firstVisible() - CACHE / 2;
      const keepTo = this.firstVisible() + CACHE / 2;
      for (const k of this.rows.keys()) {
        if (k < keepFrom || k > keepTo) this.rows.delete(k);
      }
    }
  }

  visibleCount() { return Math.ceil(this.el.clientHeight / H) + 1; }

  firstVisible() {
    const vis = this.visibleCount();
    if (!this.scaled) return Math.floor(this.el.scrollTop / H);
    const max = this.el.scrollHeight - this.el.clientHeight;
    const frac = max > 0 ? this.el.scrollTop / max : 0;
    return Math.floor(frac * Math.max(0, this.total - vis + 1));
  }

  atBottom() { return this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - 2; }

  onScroll() {
    if (!this.programmatic && this.followBox && !this.atBottom()) this.followBox.checked = false;
    this.programmatic = false;
    this.paint();
  }

  scrollToEnd() {
    this.programmatic = true;
    this.el.scrollTop = this.el.scrollHeight;
    this.paint();
  }

  scrollToLine(n) {
    this.programmatic = true;
    if (this.followBox) this.followBox.checked = false;
    const vis = this.visibleCount();
    const target = Math.max(0, n - Math.floor(vis / 3));
    if (this.scaled) {
      const max = this.el.scrollHeight - this.el.clientHeight;
      this.el.scrollTop = max * target / Math.max(1, this.total - vis + 1);
    } else {
      this.el.scrollTop = target * H;
    }
    this.paint();
  }

  paint() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  render() {
    const first = this.firstVisible();
    const count = Math.min(this.visibleCount(), Math.max(0, this.total - first));
    const top = this.scaled ? this.el.scrollTop : first * H;
    this.rowsEl.style.transform = `translateY(${top}px)`;
    const frag = document.createDocumentFragment();
    let missing = -1;
    for (let i = first; i < first + count; i++) {
      const r = this.rows.get(i);
      if (!r && missing < 0) missing = i;
      frag.appendChild(this.rowEl(i, r));
    }
    this.rowsEl.replaceChildren(frag);
    if (missing >= 0) this.load(Math.max(0, missing - OVERSCAN), count + 2 * OVERSCAN);
  }

  rowEl(i, r) {
    const div = document.createElement('div');
    div.className = r ? `row ch${r.c}` : 'row pending';
    if (i === this.hit) div.classList.add('hit');
    div.dataset.n = String(i + 1);
    const ln = document.createElement('span');
    ln.className = 'ln';
    ln.textContent = String(i + 1);
    const ts = document.createElement('span');
    ts.className = 'ts';
    ts.textContent = r ? r.t.toFixed(3) : '';
    const tx = document.createElement('span');
    tx.className = 'tx';
    // Server-rendered, escaped HTML of the line (spans with classes only).
    if (r) tx.innerHTML = r.h;
    div.append(ln, ts, tx);
    return div;
  }

  async load(from, count) {
    if (this.inflight) return;
    this.inflight = this.fetchJson(`/t/${this.task}/lines?from=${from}&count=${count}`);
    const r = await this.inflight;
    this.inflight = null;
    if (!r) return;
    this.addRows(r.rows);
    if (r.lines > this.total) this.setTotal(r.lines);
    this.paint();
  }

  live(rows, lines) {
    this.addRows(rows);
    this.complete = Math.max(this.complete, lines);
    if (lines > this.total) this.setTotal(lines);
    if (this.follow) this.scrollToEnd(); else this.paint();
  }

  async find(params, from) {
    const q = new URLSearchParams({ ...params, from: String(from) });
    this.setStatus('searching…');
    const r = await this.fetchJson(`/t/${this.task}/search?${q}`);
    if (!r) return;
    if (r.line === null) { this.setStatus('not found'); return; }
    this.hit = r.line;
    this.setStatus(`line ${r.line + 1}`);
    this.scrollToLine(r.line);
  }
}
