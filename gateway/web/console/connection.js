// The console's side of docs/sessions.md §4: one WebSocket to the clerk's own gateway,
// resumed from the last seen seq after a drop or a reload, with every unacknowledged
// message resent under its cid (the gateway applies a cid once). No DOM here: the UI
// subscribes to `state` and calls `send`.

const STORE_PREFIX = 'tongban.console.';
const MAX_KEPT_EVENTS = 5000; // a clerk's day; past it a reload replays from the gateway
const FATAL_CLOSE = new Set([4401, 4403]); // §2: bad token / another window's session

export function readClaims(token) {
  // The join token's payload, read (not verified: the gateway verifies) for the session id
  // that keys sessionStorage before `welcome` arrives.
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(part + '='.repeat((4 - (part.length % 4)) % 4));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

export function newCid() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  const rand = Array.from(bytes, (b) => b.toString(36).padStart(2, '0')).join('');
  return `${Date.now().toString(36)}-${rand}`; // [A-Za-z0-9-], < 64 (§4)
}

function backoff(attempt) {
  const base = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

function applyEvent(form, ev) {
  // A form event newer than what `welcome` said wins; replays of older ones change nothing.
  if (ev.type !== 'form') return form;
  const cur = form[ev.field];
  if (cur && cur.version >= ev.version) return form;
  return { ...form, [ev.field]: { value: ev.value, version: ev.version } };
}

export class SessionClient {
  constructor({ token, wsUrl, storage = window.sessionStorage }) {
    this.token = token;
    this.wsUrl = wsUrl;
    this.storage = storage;
    this.claims = readClaims(token) || {};
    this.key = `${STORE_PREFIX}${this.claims.ses || 'unknown'}.${this.claims.sid || ''}.${this.claims.sub || ''}`;
    this.listeners = new Set();
    this.rtcListeners = new Set();
    this.ws = null;
    this.timer = null;
    this.ackTimer = null;
    this.saveTimer = null;
    const saved = this.load();
    this.state = {
      conn: 'connecting', // connecting | open | reconnecting | refused | ended
      attempt: 0,
      retryAt: null,
      fatal: null,
      session: this.claims.ses || '',
      case: this.claims.cas ?? '',
      side: this.claims.sid || '',
      clerk: this.claims.sub || '',
      name: this.claims.name || '',
      seq: saved.seq,
      events: saved.events,
      form: {},
      peer: null,
      presence: { origin: null, remote: null },
      link: null,
      pending: saved.pending,
      notices: [],
      conflicts: {},
      returned: {}, // field → {value, base}: a refused edit, handed back to its input
      noDelegation: null,
      closed: null,
    };
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onRtc(fn) {
    this.rtcListeners.add(fn);
    return () => this.rtcListeners.delete(fn);
  }

  set(patch) {
    this.state = { ...this.state, ...patch };
    for (const fn of this.listeners) fn(this.state);
  }

  load() {
    try {
      const raw = JSON.parse(this.storage.getItem(this.key) || 'null');
      if (raw && Number.isInteger(raw.seq) && Array.isArray(raw.events)) {
        return { seq: raw.seq, events: raw.events, pending: raw.pending || [] };
      }
    } catch { /* a damaged entry: start from the gateway's copy */ }
    return { seq: 0, events: [], pending: [] };
  }

  save() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const { seq, events, pending } = this.state;
    try {
      this.storage.setItem(this.key, JSON.stringify({ seq, events, pending }));
    } catch {
      // Storage full: forget the copy so a reload replays everything from seq 0.
      try { this.storage.setItem(this.key, JSON.stringify({ seq: 0, events: [], pending })); } catch { /* nothing kept */ }
    }
  }

  saveSoon() {
    if (!this.saveTimer) this.saveTimer = setTimeout(() => this.save(), 200);
  }

  start() {
    window.addEventListener('online', () => this.reconnectNow());
    window.addEventListener('offline', () => this.wentOffline());
    window.addEventListener('pagehide', () => this.save());
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.set({ conn: this.state.attempt ? 'reconnecting' : 'connecting', retryAt: null });
    const ws = new WebSocket(this.wsUrl);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', token: this.token, after: this.state.seq }));
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      this.receive(msg);
    };
    ws.onclose = (e) => { if (this.ws === ws) this.dropped(e.code); };
  }

  reconnectNow() {
    if (this.state.conn === 'reconnecting' && !this.ws) this.connect();
  }

  wentOffline() {
    // The network is gone: a socket can linger for minutes before TCP notices (browsers
    // do not ping), so drop it now: the banner shows, messages stay pending, and `online`
    // reconnects at once.
    const ws = this.ws;
    if (!ws || this.state.fatal || this.state.closed) return;
    this.ws = null;
    ws.close(1000, 'offline');
    this.dropped(1006);
  }

  dropped(code) {
    this.ws = null;
    if (this.state.fatal || FATAL_CLOSE.has(code)) {
      this.set({ conn: 'refused', fatal: this.state.fatal || { reason: 'TOKEN', message: '登录凭证无效或已过期，请重新从业务系统进入' } });
      return;
    }
    if (this.state.closed) {
      this.set({ conn: 'ended' });
      return;
    }
    const attempt = this.state.attempt + 1;
    const delay = backoff(attempt);
    this.set({ conn: 'reconnecting', attempt, retryAt: Date.now() + delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  raw(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state.conn === 'open') {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  send(type, members = {}) {
    const msg = { type, cid: newCid(), ...members };
    this.set({ pending: [...this.state.pending, msg] });
    this.saveSoon();
    this.raw(msg);
    return msg.cid;
  }

  sendRtc(kind, data) {
    // Signalling is not sequenced (§4): lost with a drop, and video.js starts over.
    return this.raw({ type: 'rtc', kind, data });
  }

  dismiss(id) {
    this.set({ notices: this.state.notices.filter((n) => n.id !== id) });
  }

  takeReturned(field) {
    const returned = { ...this.state.returned };
    delete returned[field];
    this.set({ returned });
  }

  resolveConflict(field) {
    const conflicts = { ...this.state.conflicts };
    delete conflicts[field];
    this.set({ conflicts });
  }

  receive(msg) {
    const handler = {
      welcome: () => this.welcome(msg),
      event: () => this.event(msg.event ?? msg),
      presence: () => this.presence(msg),
      refused: () => this.refused(msg),
      rtc: () => { for (const fn of this.rtcListeners) fn(msg); },
    }[msg.type];
    if (handler) handler();
  }

  welcome(msg) {
    let { seq, events } = this.state;
    if (msg.seq < seq) {
      // The gateway knows fewer events than this tab kept: trust the gateway.
      events = events.filter((e) => e.seq <= msg.seq);
      seq = msg.seq;
    }
    const form = msg.form || {};
    const closedEvent = events.find((e) => e.type === 'closed');
    this.set({
      conn: 'open', attempt: 0, retryAt: null, session: msg.session, case: msg.case ?? '',
      side: msg.side, clerk: msg.clerk, peer: msg.peer, form, seq, events,
      closed: msg.closed ? (closedEvent || this.state.closed || { head: '' }) : null,
    });
    for (const m of this.state.pending) this.raw(m); // same cid: applied once (§4)
  }

  event(ev) {
    const { seq } = this.state;
    if (!Number.isInteger(ev.seq) || ev.seq <= seq) return; // already shown
    if (ev.seq > seq + 1) {
      // A gap: ask again from what we have rather than show events out of order.
      if (this.ws) this.ws.close(1000, 'gap');
      return;
    }
    const mine = ev.side === this.state.side && ev.clerk === this.state.clerk;
    const patch = {
      seq: ev.seq,
      events: [...this.state.events, ev].slice(-MAX_KEPT_EVENTS),
      form: applyEvent(this.state.form, ev),
      pending: mine && ev.cid ? this.state.pending.filter((m) => m.cid !== ev.cid) : this.state.pending,
    };
    if (ev.type === 'closed') patch.closed = ev;
    if (ev.type === 'delegate') patch.noDelegation = null;
    if (ev.type === 'refused' && ev.reason === 'NO_DELEGATION') {
      // §3/§4: the sequenced refusal, so the origin clerk also sees why (and asks the citizen)
      patch.noDelegation = { message: ev.message, field: ev.field, mine, at: Date.now() };
    }
    this.set(patch);
    this.saveSoon();
    this.ackSoon();
  }

  ackSoon() {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.raw({ type: 'ack', seq: this.state.seq });
    }, 1000);
  }

  presence(msg) {
    const presence = { ...this.state.presence, [msg.side]: { clerks: msg.clerks || [], link: msg.link } };
    const patch = { presence, link: msg.link ?? this.state.link };
    if (msg.side !== this.state.side) patch.peer = (msg.clerks || []).length ? 'online' : 'offline';
    this.set(patch);
  }

  refused(msg) {
    const sent = msg.cid ? this.state.pending.find((m) => m.cid === msg.cid) : null;
    if (!msg.cid && (msg.reason === 'TOKEN' || msg.reason === 'FORBIDDEN')) {
      this.set({ fatal: { reason: msg.reason, message: msg.message || '无权进入该会话' } });
      return;
    }
    if (sent && msg.reason === 'RATE') {
      setTimeout(() => this.raw(sent), 1500); // kept pending: sent again, same cid
      this.notice(msg, sent);
      return;
    }
    const patch = { pending: sent ? this.state.pending.filter((m) => m !== sent) : this.state.pending };
    if (msg.reason === 'CONFLICT' && sent) {
      const field = msg.field ?? sent.field;
      patch.conflicts = { ...this.state.conflicts, [field]: { field, mine: sent.value, value: msg.value ?? '', version: msg.version ?? 0 } };
    } else if (msg.reason === 'NO_DELEGATION') {
      patch.noDelegation = { message: msg.message, field: msg.field ?? sent?.field, mine: Boolean(sent), at: Date.now() };
    } else {
      this.notice(msg, sent);
    }
    if (sent?.type === 'form' && msg.reason !== 'CONFLICT') {
      // Not lost: the clerk's value goes back into the field, to save again later.
      patch.returned = { ...this.state.returned, [sent.field]: { value: sent.value, base: sent.base } };
    }
    this.set(patch);
    this.saveSoon();
  }

  notice(msg, sent) {
    const id = newCid();
    const notice = { id, reason: msg.reason, message: msg.message || msg.reason, about: sent?.type };
    this.set({ notices: [...this.state.notices.slice(-4), notice] });
    setTimeout(() => this.dismiss(id), 8000);
  }
}

export async function authorisedFetch(client, path, init = {}) {
  // §5: materials need the join token as a bearer; the URL never carries it.
  const headers = { ...(init.headers || {}), Authorization: `Bearer ${client.token}` };
  const res = await fetch(path, { ...init, headers });
  if (!res.ok) throw new Error(`${res.status} ${await res.text().catch(() => '')}`.trim());
  return res;
}
