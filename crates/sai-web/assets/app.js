// Sai web UI: keeps a server-rendered page live over one websocket.
// Messages are applied at most once per animation frame.
import { LogView } from './logview.js';

const body = document.body;
const page = body.dataset.page;
const attrs = Object.fromEntries(new URLSearchParams(body.dataset.attrs || ''));
const conn = document.getElementById('conn');

function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}
function elapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}
function tickAges() {
  const now = Date.now();
  for (const t of document.querySelectorAll('time.age')) {
    const ms = Number(t.getAttribute('datetime'));
    if (ms) t.textContent = age(now - ms);
  }
  for (const t of document.querySelectorAll('time.elapsed')) {
    const ms = Number(t.getAttribute('datetime'));
    if (ms) t.textContent = elapsed(now - ms);
  }
}
setInterval(tickAges, 1000);

const expiry = document.getElementById('expiry');
if (expiry) {
  const d = new Date(expiry.getAttribute('datetime'));
  if (!isNaN(d)) expiry.textContent = d.toLocaleString();
}

// Batched DOM work: the newest fragment per id, cell changes, log rows.
const pending = { html: new Map(), cells: new Map(), frame: 0 };
function schedule() {
  if (!pending.frame) pending.frame = requestAnimationFrame(flush);
}
function flush() {
  pending.frame = 0;
  for (const [id, html] of pending.html) {
    const el = document.getElementById(id);
    if (!el) continue;
    const tpl = document.createElement('template');
    tpl.innerHTML = html;
    const next = tpl.content.firstElementChild;
    if (next) el.replaceWith(next);
  }
  pending.html.clear();
  for (const [id, [state, title, glyph]] of pending.cells) {
    const a = document.getElementById('c-' + id);
    if (!a) continue;
    a.className = 'cell s-' + state;
    a.dataset.state = state;
    a.title = title;
    a.textContent = glyph;
  }
  pending.cells.clear();
  tickAges();
}

const logEl = document.getElementById('log');
const log = logEl ? new LogView(logEl) : null;

function setConn(state, text) {
  body.dataset.live = state;
  if (!conn) return;
  conn.hidden = state === 'connected';
  conn.textContent = text || '';
  conn.classList.toggle('down', state === 'upstream-down');
}

function topic() {
  if (page === 'event') return { watch: 'event', id: attrs.event };
  if (page === 'task') return { watch: 'task', id: attrs.task, lines: log ? log.complete : 0 };
  if (page === 'builders') return { watch: 'builders' };
  if (page === 'overview') return { watch: 'overview' };
  return null;
}

let delay = 250;
function connect() {
  const t = topic();
  if (!t) return;
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.onopen = () => {
    // Ask for what the page shows; a reconnect gets the full current state.
    ws.send(JSON.stringify(topic()));
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    // Message counts by type: for tests and for the curious in devtools.
    window.__saiMsgs = window.__saiMsgs || {};
    window.__saiMsgs[m.t] = (window.__saiMsgs[m.t] || 0) + 1;
    switch (m.t) {
      case 'hello': delay = 250; setConn('connected'); break;
      case 'upstream':
        if (m.ok) setConn('connected');
        else setConn('upstream-down', 'sai-server unreachable, reconnecting…');
        break;
      case 'html': pending.html.set(m.id, m.html); schedule(); break;
      case 'cells': for (const c of m.cells) pending.cells.set(c[0], c.slice(1)); schedule(); break;
      case 'rows': if (log) log.live(m.rows, m.lines); break;
      case 'logreset': if (log) log.reset(); break;
      case 'gone': setConn('gone', 'this page no longer exists'); break;
    }
  };
  ws.onclose = () => {
    setConn('reconnecting', 'reconnecting…');
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 4000);
  };
}

async function start() {
  if (log) await log.init();
  connect();
}
start();
