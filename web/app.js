// app.js: the Parley browser client (DOM, WebSocket, storage).
//
// The wire protocol is docs/protocol.md; the logic that needs neither the DOM
// nor the network (frame splitting, the per-room seq view, backoff, the
// outbox, validation, presence, typing, unread counts, latency) is in
// protocol.js and tested under Node.
//
// Security: the gateway's Content-Security-Policy forbids inline script and
// style, so this file is the only script and it never builds HTML from
// strings: everything a user wrote reaches the page through text nodes.

import {
  splitFrames, roomNameProblem, validRoom, nameProblem, textProblem, tidyText,
  utf8Length, MAX_TEXT_BYTES, newGuestKey, validKey, newClientMsgId,
  reconnectPlan, closeCodeText, RoomTimeline, Outbox, hueFor, initials,
  groupsWith, relativeTime, parseRooms, parsePresence, parseUser, RoomPresence, PresenceRun,
  TypingSender, TypingState, typingText, Unread, unreadLabel, LatencyMeter, LATENCY_REPORT_MS,
  formatMs, tokenInfo, tokenExpired, retryDelay,
} from './protocol.js';

// ------------------------------------------------------------ utilities

const fillRandom = (a) => crypto.getRandomValues(a);
/** now is the wall clock in milliseconds, finer than Date.now(). */
const now = () => performance.timeOrigin + performance.now();

/**
 * h creates an element. props: "class", "dataset" (object), attributes
 * otherwise. Children: nodes, or strings that become text nodes; null and
 * false are skipped.
 */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

function svgIcon(pathD) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('d', pathD);
  svg.append(p);
  return svg;
}

/** Storage that never throws (private modes and full quotas do). */
function makeStore(getArea) {
  const area = () => {
    try { return getArea(); } catch { return null; }
  };
  return {
    get(k) { try { return area()?.getItem(k) ?? null; } catch { return null; } },
    set(k, v) { try { area()?.setItem(k, v); } catch { /* not kept */ } },
    del(k) { try { area()?.removeItem(k); } catch { /* nothing */ } },
  };
}
const local = makeStore(() => window.localStorage);
const session = makeStore(() => window.sessionStorage);

const KEY = {
  name: 'parley.name', // display name last used
  // {"<name>": {"key": "<guest secret>", "user": "<user id>"}}: one guest
  // identity per display name, so that two names in one browser are two
  // users. The gateway derives the user id from the key.
  ids: 'parley.ids',
  rooms: 'parley.rooms', // joined rooms, in sidebar order
  current: 'parley.room', // room last open
  outbox: 'parley.outbox:', // + name: that identity's unacknowledged sends
  // The name this tab is signed in as: a reload stays signed in, as the same
  // person even when another tab has since signed in under another name.
  session: 'parley.session',
  // The token this tab connects with (token mode), from ?token=.
  token: 'parley.token',
  members: 'parley.members', // "hidden": the member column is folded away
};

function loadIds() {
  try {
    const v = JSON.parse(local.get(KEY.ids) || '{}');
    return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

/** identity returns the guest key of a display name, made once and kept. */
function identity(name) {
  const ids = loadIds();
  let rec = ids[name];
  if (!rec || typeof rec !== 'object' || !validKey(rec.key)) {
    rec = { key: newGuestKey(fillRandom), user: '' };
    ids[name] = rec;
    local.set(KEY.ids, JSON.stringify(ids));
  }
  return { key: rec.key, user: typeof rec.user === 'string' ? rec.user : '' };
}

function rememberUserId(name, id) {
  const ids = loadIds();
  if (ids[name] && ids[name].user !== id) {
    ids[name].user = id;
    local.set(KEY.ids, JSON.stringify(ids));
  }
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

function shortTime(t) {
  const d = new Date(t);
  return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dayTimeFmt.format(d);
}

// ----------------------------------------------------------------- state

/**
 * Room is one joined room: its timeline (protocol.js), the list element that
 * shows it, and its sidebar entry.
 */
class Room {
  constructor(name) {
    this.name = name;
    this.tl = new RoomTimeline(name);
    /** @type {Map<number, HTMLElement>} seq -> .msg element */
    this.els = new Map();
    /** @type {Map<string, HTMLElement>} client_msg_id -> unconfirmed .msg */
    this.pend = new Map();
    /** joined on the current connection */
    this.live = false;
    /** was scrolled to the bottom when last shown */
    this.stick = true;
    this.savedTop = 0;
    this.lastRejoin = 0;
    /** who is here (presence frames) */
    this.presence = new RoomPresence();
    /** the join/leave notice at the end of the timeline, while no message follows it */
    this.presenceNotice = null; // {el, run}
    /** who is typing */
    this.typing = new TypingState();
    /** joins in a row answered unavailable, and the timer of the next try */
    this.joinFailures = 0;
    this.joinTimer = 0;
    this.list = h('ol', { class: 'messages', tabindex: '0', 'aria-label': `Messages in ${name}` });
    this.list.addEventListener('scroll', () => onListScroll(this), { passive: true });
    this.startEl = h('li', { class: 'room-start', hidden: true },
      h('p', { class: 'room-start-title' }, h('span', { 'aria-hidden': 'true' }, '#'), name),
      h('p', { class: 'muted' }, 'This is the very beginning of the room.'));
    this.loadingEl = h('li', { class: 'history-loading', hidden: true, role: 'status' },
      h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Loading older messages…');
    this.list.append(this.startEl, this.loadingEl);
    this.li = h('li', { class: 'room', dataset: { room: name } },
      h('button', { type: 'button', class: 'room-btn', 'data-action': 'open' },
        h('span', { class: 'hash', 'aria-hidden': 'true' }, '#'),
        h('span', { class: 'room-label' }, name),
        h('span', { class: 'unread', hidden: true })),
      h('button', {
        type: 'button', class: 'room-leave', 'data-action': 'leave',
        'aria-label': `Leave ${name}`, title: 'Leave room',
      }, svgIcon('M6 6l12 12M18 6L6 18')));
  }
}

const S = {
  name: '',
  key: '',
  outboxKey: '', // localStorage key of this identity's outbox
  knownUserId: '', // from an earlier welcome, for messages drawn before this one
  me: null, // {id, name} from welcome
  guest: true,
  gateway: '',
  /** @type {Map<string, Room>} */
  rooms: new Map(),
  current: '',
  outbox: new Outbox(),
  retryTimers: new Set(),
  browse: { rooms: [], state: 'unknown', timer: 0 },
  // Token mode: the JWT this tab connects with, and what it says of itself.
  token: '',
  tokenInfo: null,
  tokenExpired: false, // the gateway said token_expired
  unread: new Unread(),
  typingOut: new TypingSender(),
  typingTimer: 0,
  latency: new LatencyMeter(),
  latencyTimer: 0,
};

/** C is the connection: one WebSocket at a time, and the reconnect plan. */
const C = {
  ws: null,
  id: 0, // increases per socket; outbox items remember which one they went on
  attempt: 0,
  openedAt: 0,
  welcomed: false,
  everConnected: false,
  stopped: true, // signed out: no reconnecting
  blocked: false, // closed with 1008: wait for the user
  state: 'offline',
  degraded: false, // the gateway's broker is down (status frame)
  retryAt: 0,
  timer: 0,
  tick: 0,
  watchdog: 0,
  failedOpens: 0, // sockets in a row that closed before the welcome
  // The page is in the back/forward cache: its socket is closed (so that the
  // user leaves the rooms' member lists) until it is shown again.
  paused: false,
};

// ---------------------------------------------------------------- elements

const E = {};
function grabElements() {
  for (const id of [
    'login-view', 'login-form', 'name', 'name-error', 'login-submit', 'app', 'sidebar', 'scrim',
    'nav-close', 'menu-btn', 'rooms', 'rooms-empty', 'room-form', 'room-name', 'room-error',
    'browse', 'browse-list', 'browse-refresh', 'me', 'me-avatar', 'guest-badge', 'gateway', 'signout',
    'room-title', 'conn-state', 'conn-text', 'reconnect-now', 'banner', 'banner-text',
    'banner-retry', 'message-pane', 'empty-state', 'jump', 'composer', 'text', 'send',
    'composer-status', 'toasts', 'announcer', 'members', 'member-count', 'members-note',
    'members-panel', 'members-toggle', 'members-toggle-count', 'members-close', 'typing', 'typing-text',
    'lag', 'lag-wrap',
  ]) {
    E[id] = document.getElementById(id);
  }
}

// ------------------------------------------------------------------ toasts

function toast(message, kind = 'error') {
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, String(message)),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss' }, svgIcon('M6 6l12 12M18 6L6 18')));
  const close = () => {
    el.classList.add('leaving');
    setTimeout(() => el.remove(), 200);
  };
  el.querySelector('button').addEventListener('click', close);
  E.toasts.append(el);
  while (E.toasts.children.length > 4) E.toasts.firstElementChild.remove();
  setTimeout(close, kind === 'error' ? 8000 : 5000);
}

function announce(text) {
  E.announcer.textContent = '';
  // A fresh text node after a tick makes screen readers speak it again.
  setTimeout(() => { E.announcer.textContent = text; }, 30);
}

// ------------------------------------------------------------- connection

function wsURL() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = S.token ? new URLSearchParams({ token: S.token }) : new URLSearchParams({ name: S.name, key: S.key });
  return `${scheme}//${location.host}/ws?${q}`;
}

function setConnState(state, text) {
  const changed = C.state !== state;
  C.state = state;
  E['conn-state'].dataset.state = state;
  E['conn-state'].title = state === 'degraded'
    ? 'The server\'s message broker is down: messages still arrive, a little later.' : '';
  const label = text || {
    connecting: 'Connecting…',
    connected: 'Connected',
    degraded: 'Connected (degraded)',
    reconnecting: 'Reconnecting…',
    offline: 'Offline',
  }[state];
  if (E['conn-text'].textContent !== label) E['conn-text'].textContent = label;
  // The 1008 banner has its own button; no need for two.
  E['reconnect-now'].hidden = !((state === 'reconnecting' && C.timer) || (state === 'offline' && !C.stopped && !C.blocked));
  updateComposerStatus();
  if (changed) {
    // "Sending…" or "Waiting for connection…" follows the connection.
    for (const room of S.rooms.values()) {
      for (const [cmid, el] of room.pend) {
        const it = S.outbox.get(cmid);
        if (it) updatePlaceholder(el, it);
      }
    }
  }
}

function clearConnTimers() {
  clearTimeout(C.timer);
  clearInterval(C.tick);
  clearTimeout(C.watchdog);
  C.timer = 0;
  C.tick = 0;
  C.watchdog = 0;
}

function connect() {
  clearConnTimers();
  if (C.stopped) return;
  C.blocked = false;
  if (!(S.token && C.failedOpens >= 3)) hideBanner();
  if (S.token && tokenExpired(S.tokenInfo, Date.now())) {
    // The gateway would refuse it; only the app that issued it can make a
    // new one.
    C.blocked = true;
    setConnState('offline', 'Session expired');
    showBanner(expiredText(), false);
    return;
  }
  if (navigator.onLine === false) {
    setConnState('offline', 'Offline: no network');
    return;
  }
  const id = ++C.id;
  setConnState(C.everConnected ? 'reconnecting' : 'connecting');
  let ws;
  try {
    ws = new WebSocket(wsURL());
  } catch (err) {
    C.ws = null;
    handleClose(1006, String(err && err.message || err), 0);
    return;
  }
  C.ws = ws;
  C.openedAt = 0;
  C.welcomed = false;
  // A socket that neither opens nor says welcome in time is given up on.
  C.watchdog = setTimeout(() => {
    if (C.ws === ws && !C.welcomed) dropSocket(1006, 'no answer from the server');
  }, 12000);
  ws.addEventListener('open', () => {
    if (C.ws === ws) C.openedAt = Date.now();
  });
  ws.addEventListener('message', (ev) => {
    if (C.ws !== ws || C.id !== id) return;
    if (typeof ev.data !== 'string') return;
    const { frames } = splitFrames(ev.data);
    for (const f of frames) {
      try {
        handleFrame(f);
      } catch (err) {
        console.error('parley: frame handler failed', f.type, err);
      }
    }
  });
  ws.addEventListener('close', (ev) => {
    if (C.ws !== ws) return;
    C.ws = null;
    const uptime = C.openedAt ? Date.now() - C.openedAt : 0;
    handleClose(ev.code, ev.reason, uptime);
  });
}

/**
 * dropSocket gives up on the current socket at once, as if it had closed with
 * code: its close event, whenever the handshake ends, is then ignored.
 */
function dropSocket(code, reason) {
  const ws = C.ws;
  if (!ws) return;
  C.ws = null;
  const uptime = C.openedAt ? Date.now() - C.openedAt : 0;
  try { ws.close(); } catch { /* already closing */ }
  handleClose(code, reason, uptime);
}

function handleClose(code, reason, uptime) {
  clearConnTimers();
  const welcomed = C.welcomed;
  C.welcomed = false;
  C.failedOpens = welcomed ? 0 : C.failedOpens + 1;
  // A connection whose joins all failed for want of history (the store was
  // down) is closed by the gateway as one that joined no room (1008): that
  // is worth another try, unlike a 1008 for the client's own doing.
  const rooms = [...S.rooms.values()];
  const joinTrouble = rooms.some((r) => r.joinFailures > 0) && !rooms.some((r) => r.live);
  for (const room of S.rooms.values()) {
    room.live = false;
    room.tl.connectionLost();
    room.loadingEl.hidden = true;
    // Nobody's typing notices reach us now; the member list is refreshed
    // by the presence frame that follows the next join.
    room.typing.reset();
    room.presence.rejoined();
  }
  S.outbox.connectionLost();
  S.typingOut.reset();
  renderTyping();
  renderMembers();
  if (C.stopped || C.paused) return;
  if (navigator.onLine === false) {
    setConnState('offline', 'Offline: no network');
    return;
  }
  const plan = reconnectPlan(code === 1008 && joinTrouble ? 1011 : code, { attempt: C.attempt, uptimeMs: uptime });
  C.attempt = plan.attempt;
  if (!plan.retry) {
    C.blocked = true;
    const why = reason || closeCodeText(code);
    setConnState('offline', 'Disconnected');
    if (S.tokenExpired || (S.token && tokenExpired(S.tokenInfo, Date.now()))) {
      showBanner(`Disconnected by the server: ${why}. ${expiredText()}`, false);
    } else {
      showBanner(`Disconnected by the server: ${why}.`);
    }
    return;
  }
  scheduleReconnect(plan.delay);
  if (S.token && C.failedOpens >= 3) {
    // A refused handshake looks like any dropped connection to a page; with
    // a token, the likeliest cause is the token.
    showBanner('Cannot connect. If this keeps happening, your sign-in link may be invalid or expired: open Parley again from your app.');
  }
}

function expiredText() {
  return 'Your session has expired. This page cannot renew it: open Parley again from your app to get a new link.';
}

function scheduleReconnect(delay) {
  clearConnTimers();
  C.retryAt = Date.now() + delay;
  C.timer = setTimeout(() => {
    C.timer = 0;
    connect();
  }, delay);
  const tick = () => {
    const secs = Math.max(0, Math.ceil((C.retryAt - Date.now()) / 1000));
    setConnState('reconnecting', secs > 0 ? `Reconnecting in ${secs}s` : 'Reconnecting…');
  };
  tick();
  C.tick = setInterval(tick, 250);
}

function reconnectNow() {
  if (C.stopped) return;
  if (C.ws) return;
  connect();
}

function showBanner(text, retry = true) {
  E['banner-text'].textContent = text;
  E['banner-retry'].hidden = !retry;
  E.banner.hidden = false;
}

function hideBanner() {
  E.banner.hidden = true;
}

/** sendFrame sends one object as one WebSocket message, if connected. */
function sendFrame(obj) {
  const ws = C.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || !C.welcomed) return false;
  try {
    ws.send(JSON.stringify(obj));
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- frames

function handleFrame(f) {
  switch (f.type) {
    case 'welcome': return onWelcome(f);
    case 'joined': return onJoined(f);
    case 'message': return onMessage(f);
    case 'ack': return onAck(f);
    case 'history': return onHistory(f);
    case 'error': return onError(f);
    case 'left': return undefined;
    case 'status': return onStatus(f);
    case 'gap': return onGap(f);
    case 'presence': return onPresence(f);
    case 'typing': return onTyping(f);
    default: return undefined; // frames this client does not know are ignored
  }
}

// The gateway says whether its broker works; while it does not, chat goes
// on through the store, a little slower, and the user is told so.
function onStatus(f) {
  C.degraded = f.degraded === true;
  if (isOnline()) setConnState(C.degraded ? 'degraded' : 'connected');
}

function isOnline() {
  return C.state === 'connected' || C.state === 'degraded';
}

function onWelcome(f) {
  const user = f.user && typeof f.user === 'object' ? f.user : {};
  S.me = { id: String(user.id || ''), name: String(user.name || S.name) };
  S.guest = f.guest !== false;
  S.gateway = typeof f.gateway === 'string' ? f.gateway : '';
  S.knownUserId = S.me.id;
  if (!S.token) rememberUserId(S.name, S.me.id);
  C.welcomed = true;
  C.failedOpens = 0;
  C.everConnected = true;
  clearTimeout(C.watchdog);
  C.watchdog = 0;
  renderMe();
  C.degraded = false; // a status frame follows the welcome when degraded
  setConnState('connected');
  hideBanner();
  for (const room of S.rooms.values()) {
    for (const el of room.pend.values()) el.dataset.userId = S.me.id;
    joinRoom(room);
  }
  refreshBrowse();
}

function joinRoom(room) {
  room.live = false;
  sendFrame(room.tl.joinFrame());
}

function onJoined(f) {
  const room = S.rooms.get(f.room);
  if (!room) return;
  const first = !room.tl.started;
  const ch = room.tl.applyJoined(f);
  room.live = true;
  room.joinFailures = 0;
  clearTimeout(room.joinTimer);
  room.presence.rejoined();
  applyChange(room, ch, { stick: first });
  if (!first) {
    // A resume brings what was missed while away: unread too.
    for (const m of ch.added) S.unread.message(room.name, { current: S.current, mine: isMine(m) });
    renderUnread(room);
  }
  if (room.name === S.current) renderMembers();
  flushRoom(room);
  if (room.name === S.current) fillViewport(room);
}

function onMessage(f) {
  const room = S.rooms.get(f.room);
  if (!room) return;
  const tRecv = now();
  const mine = isMine(f);
  const ts = Date.parse(f.ts);
  if (mine && typeof f.client_msg_id === 'string' && S.latency.own(f.client_msg_id, ts, tRecv) !== null) renderLag();
  const ch = room.tl.applyMessage(f);
  const wasBottom = room.name === S.current && atBottom(room.list);
  applyChange(room, ch, { stick: mine });
  const shown = ch.added.some((m) => m.seq === f.seq);
  const user = parseUser(f.user);
  // Their message is what they were typing.
  if (user && room.typing.clear(user.id) && room.name === S.current) renderTyping();
  if (!shown) return;
  S.latency.shown(ts, now());
  if (room.name === S.current && !mine) {
    const who = f.user && f.user.name ? f.user.name : 'Someone';
    announce(`${who}: ${String(f.text || '').slice(0, 200)}`);
    if (!wasBottom) E.jump.hidden = false;
  }
  S.unread.message(room.name, { current: S.current, mine });
  renderUnread(room);
}

// ------------------------------------------------------- presence, typing

/**
 * onPresence shows who is in the room, and who came and went as one small
 * notice: none for the list that follows our own join, none in big rooms,
 * and one notice for everything between two messages.
 */
function onPresence(f) {
  const p = parsePresence(f);
  const room = p && S.rooms.get(p.room);
  if (!room) return;
  const news = room.presence.apply(p, S.me ? S.me.id : '');
  if (news.joined.length || news.left.length) noteComings(room, news);
  // Someone who left is not typing any more.
  let typingChanged = false;
  for (const u of news.left) typingChanged = room.typing.clear(u.id) || typingChanged;
  if (room.name === S.current) {
    renderMembers();
    if (typingChanged) renderTyping();
  }
}

function noteComings(room, news) {
  let pn = room.presenceNotice;
  // Only a notice still at the end of the timeline grows; once a message
  // follows it, a new one starts.
  if (!pn || !pn.el.isConnected || pn.el.nextElementSibling !== tailRef(room)) {
    pn = { el: null, run: new PresenceRun() };
    room.presenceNotice = pn;
  }
  pn.run.add(news.joined, news.left);
  const text = pn.run.text();
  if (!pn.el) {
    if (!text) return;
    pn.el = h('li', { class: 'notice presence-notice', role: 'note' });
    withScroll(room, () => room.list.insertBefore(pn.el, tailRef(room)));
  }
  if (text) {
    pn.el.textContent = text;
  } else {
    // Everyone who came went again: nothing to say.
    pn.el.remove();
    room.presenceNotice = null;
  }
}

function onTyping(f) {
  const room = S.rooms.get(f.room);
  const user = parseUser(f.user);
  if (!room || !user || (S.me && user.id === S.me.id)) return;
  room.typing.seen(user, Date.now());
  if (room.name === S.current) renderTyping();
}

/** renderTyping shows who is typing in the open room, until it expires. */
function renderTyping() {
  clearTimeout(S.typingTimer);
  S.typingTimer = 0;
  const room = S.rooms.get(S.current);
  const names = room ? room.typing.names(Date.now()) : [];
  const text = typingText(names);
  if (E['typing-text'].textContent !== text) E['typing-text'].textContent = text;
  E.typing.classList.toggle('active', text !== '');
  const next = room ? room.typing.nextExpiry() : 0;
  if (next) S.typingTimer = setTimeout(renderTyping, Math.max(50, next - Date.now() + 20));
}

/** onComposerInput tells the room the user is typing, now and then. */
function onComposerInput() {
  const room = S.rooms.get(S.current);
  if (!room || !room.live) return;
  if (S.typingOut.input(room.name, E.text.value.trim() !== '', Date.now())) {
    sendFrame({ type: 'typing', room: room.name });
  }
}

/** renderMembers shows the open room's member list. */
function renderMembers() {
  const room = S.rooms.get(S.current);
  const pr = room ? room.presence : null;
  const known = !!(pr && pr.known);
  const count = known ? pr.count : 0;
  E['member-count'].textContent = known ? String(count) : '–';
  E['member-count'].setAttribute('aria-label', known ? `${count} online` : 'not known yet');
  E['members-toggle-count'].textContent = known ? String(count) : '';
  E['members-toggle'].setAttribute('aria-label', known ? `Members: ${count} online` : 'Members');
  const meId = S.me ? S.me.id : '';
  const items = known && pr.members ? pr.members.map((u) => {
    const me = u.id === meId;
    return h('li', { class: me ? 'member me' : 'member', dataset: { userId: u.id }, title: u.name },
      h('span', { class: 'presence-dot', 'aria-hidden': 'true' }),
      h('span', { class: `avatar avatar-xs hue-${hueFor(u.id)}`, 'aria-hidden': 'true' }, initials(u.name)),
      h('span', { class: 'member-name' }, u.name),
      me ? h('span', { class: 'member-you' }, '(you)') : null);
  }) : [];
  E.members.replaceChildren(...items);
  // Offline, the list is what it was: shown, but not as online.
  E['members-panel'].classList.toggle('stale', !!room && known && !room.live);
  let note = '';
  if (!room) note = '';
  else if (!known) note = room.live ? 'Waiting for the member list…' : 'Not connected.';
  else if (!room.live) note = 'Not connected: this list may be out of date.';
  else if (!pr.members) note = `${count.toLocaleString()} people are here: too many to list.`;
  E['members-note'].textContent = note;
  E['members-note'].hidden = note === '';
}

function renderUnread(room) {
  const n = S.unread.get(room.name);
  const badge = room.li.querySelector('.unread');
  const label = unreadLabel(n);
  badge.textContent = label;
  badge.hidden = label === '';
  badge.setAttribute('aria-label', `${n} unread`);
  room.li.classList.toggle('has-unread', label !== '');
  renderTitle();
}

function renderTitle() {
  const room = S.rooms.get(S.current);
  const n = S.unread.total();
  const base = room ? `#${room.name} · Parley` : 'Parley';
  document.title = n > 0 ? `(${n}) ${base}` : base;
}

// ----------------------------------------------------------------- latency

/** renderLag shows the user their own lag, small, next to the gateway. */
function renderLag() {
  const { rtt, delivery } = S.latency.lag();
  if (rtt === null && delivery === null) {
    E['lag-wrap'].hidden = true;
    return;
  }
  const shown = rtt !== null ? rtt : delivery;
  E.lag.textContent = formatMs(shown);
  E.lag.dataset.level = shown < 250 ? 'good' : shown < 1000 ? 'fair' : 'poor';
  const parts = [];
  if (rtt !== null) parts.push(`your messages take ${formatMs(rtt)} to come back`);
  if (delivery !== null) parts.push(`messages reach you ${formatMs(delivery)} after the server has them`);
  E['lag-wrap'].title = `Lag: ${parts.join('; ')} (median of the latest).`;
  E['lag-wrap'].hidden = false;
}

/** reportLatency sends what was measured to the gateway (for operators). */
function reportLatency() {
  if (!isOnline()) return;
  const f = S.latency.report();
  if (f) sendFrame(f);
}

// A gap frame: this client fell behind and the gateway replaced part of its
// backlog by a note of what to fetch.
function onGap(f) {
  const room = S.rooms.get(f.room);
  if (!room) return;
  applyChange(room, room.tl.applyGap(f), {});
}

function onAck(f) {
  const cmid = f.client_msg_id;
  if (typeof cmid !== 'string') return;
  if (S.outbox.settle(cmid)) saveOutbox();
  for (const room of S.rooms.values()) {
    const el = room.pend.get(cmid);
    if (!el) continue;
    if (room.tl.has(f.seq)) {
      dropPlaceholder(room, cmid);
    } else {
      // Stored; its message frame will take this element's place.
      if (Number.isSafeInteger(f.seq)) el.dataset.seq = String(f.seq);
      if (typeof f.id === 'string') el.dataset.id = f.id;
      setMsgState(el, 'sent');
    }
  }
}

function onHistory(f) {
  const room = S.rooms.get(f.room);
  if (!room) return;
  const ch = room.tl.applyHistory(f);
  applyChange(room, ch, {});
  room.loadingEl.hidden = !room.tl.loadingOlder;
  if (ch.rejoin) joinRoom(room);
  else if (room.name === S.current) fillViewport(room);
}

function onError(f) {
  const code = String(f.code || 'error');
  const text = typeof f.message === 'string' && f.message ? f.message : code.replace(/_/g, ' ');
  if (code === 'token_expired') {
    // Only the app that issued the token can issue another; the gateway
    // closes the connection soon.
    S.tokenExpired = true;
    showBanner(expiredText(), false);
    return;
  }
  if (typeof f.ref === 'string' && S.outbox.has(f.ref)) {
    const res = S.outbox.error(f.ref, code, text, Date.now());
    saveOutbox();
    const it = S.outbox.get(f.ref);
    const room = S.rooms.get(it.room);
    const el = room && room.pend.get(f.ref);
    if (el) updatePlaceholder(el, it);
    if (res && res.action === 'retry' && room) {
      const t = setTimeout(() => {
        S.retryTimers.delete(t);
        flushRoom(room);
      }, res.delay + 20);
      S.retryTimers.add(t);
    }
    return;
  }
  const room = typeof f.room === 'string' ? S.rooms.get(f.room) : null;
  if (room) {
    room.tl.requestFailed();
    room.loadingEl.hidden = true;
    if (!room.live && ['bad_room', 'too_many_rooms', 'forbidden'].includes(code)) {
      // The join was refused: take the room out of the list.
      removeRoom(room, false);
      toast(`Could not join #${room.name}: ${text}`);
      return;
    }
    if (code === 'not_joined' && Date.now() - room.lastRejoin > 5000) {
      room.lastRejoin = Date.now();
      joinRoom(room);
    }
    if (!room.live && (code === 'unavailable' || code === 'internal')) retryJoin(room);
  }
  toast(text);
}

/**
 * retryJoin joins a room again after its join was answered `unavailable`
 * (the gateway could not read its history), backing off like a refused
 * send: the room must not stay dead on a live connection.
 */
function retryJoin(room) {
  clearTimeout(room.joinTimer);
  const connId = C.id;
  const delay = retryDelay(room.joinFailures++);
  room.joinTimer = setTimeout(() => {
    room.joinTimer = 0;
    // A new connection joins every room by itself.
    if (C.id === connId && C.welcomed && !room.live && S.rooms.get(room.name) === room) joinRoom(room);
  }, delay);
}

function isMine(m) {
  if (m && typeof m.client_msg_id === 'string') {
    for (const room of S.rooms.values()) if (room.pend.has(m.client_msg_id)) return true;
    if (S.outbox.has(m.client_msg_id)) return true;
  }
  return !!(S.me && m && m.user && m.user.id === S.me.id);
}

// ----------------------------------------------------------------- outbox

function saveOutbox() {
  local.set(S.outboxKey, JSON.stringify(S.outbox.toJSON()));
}

/** flushRoom sends the room's pending messages that are due. */
function flushRoom(room) {
  if (!room.live) return;
  for (const it of S.outbox.due(room.name, C.id, Date.now())) {
    const ok = sendFrame({ type: 'send', room: it.room, text: it.text, client_msg_id: it.cmid });
    if (!ok) break;
    S.latency.sent(it.cmid, now());
    S.outbox.sent(it.cmid, C.id);
    const el = room.pend.get(it.cmid);
    if (el) updatePlaceholder(el, it);
  }
}

function sendMessage() {
  const room = S.rooms.get(S.current);
  if (!room) return;
  const text = tidyText(E.text.value);
  const problem = textProblem(text);
  if (problem) {
    if (text !== '') toast(problem);
    E.text.focus();
    return;
  }
  const it = S.outbox.add(room.name, text, newClientMsgId(fillRandom), Date.now());
  saveOutbox();
  S.typingOut.messageSent(room.name);
  E.text.value = '';
  autosize();
  updateComposerStatus();
  withScroll(room, () => addPlaceholder(room, it), { stick: true });
  flushRoom(room);
}

// --------------------------------------------------------------- rendering

function atBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
}

function isShown(room) {
  return room.name === S.current && room.list.isConnected;
}

/**
 * withScroll runs mutate on a room's list and keeps the reader's place: a
 * list scrolled to the bottom stays there (as does stick), otherwise the
 * first visible message stays where it was, so prepending history or
 * filling a hole above never makes the view jump.
 */
function withScroll(room, mutate, { stick = false } = {}) {
  const list = room.list;
  if (!isShown(room)) {
    mutate();
    if (stick) room.stick = true;
    return;
  }
  const bottom = atBottom(list);
  let anchor = null;
  let offset = 0;
  if (!bottom && !stick) {
    const top = list.getBoundingClientRect().top;
    for (const el of list.children) {
      // Only messages and notices anchor: the loading row stays at the top
      // while older messages go in below it.
      if (el.hidden || !(el.classList.contains('msg') || el.classList.contains('notice'))) continue;
      const r = el.getBoundingClientRect();
      if (r.bottom > top + 1) {
        anchor = el;
        offset = r.top - top;
        break;
      }
    }
  }
  mutate();
  if (bottom || stick) {
    list.scrollTop = list.scrollHeight;
    E.jump.hidden = true;
  } else if (anchor && anchor.isConnected) {
    const top = list.getBoundingClientRect().top;
    list.scrollTop += anchor.getBoundingClientRect().top - top - offset;
  }
}

const noticeText = {
  missed: 'Reconnected, but some messages were missed.',
  epoch: 'The history of this room was reset. Showing it from here on.',
};

/** applyChange draws what a timeline change says and sends its requests. */
function applyChange(room, ch, opts) {
  const touched = ch.reset || ch.notices.length || ch.added.length;
  if (touched) {
    withScroll(room, () => {
      if (ch.reset) clearRoomView(room);
      for (const n of ch.notices) addNotice(room, noticeText[n] || n);
      // Newest first, so that each message's successor is already drawn.
      for (let i = ch.added.length - 1; i >= 0; i--) addSeqMessage(room, ch.added[i]);
      room.startEl.hidden = !(room.tl.atStart && room.tl.started);
    }, opts);
  } else {
    room.startEl.hidden = !(room.tl.atStart && room.tl.started);
  }
  for (const req of ch.requests) sendFrame(req);
}

function clearRoomView(room) {
  for (const el of [...room.list.children]) {
    if (el === room.startEl || el === room.loadingEl) continue;
    if (el.classList.contains('placeholder')) continue;
    el.remove();
  }
  room.els.clear();
}

/** tailRef is where new seq messages and notices go: before unconfirmed sends. */
function tailRef(room) {
  for (const el of room.pend.values()) {
    // pend keeps insertion order; the first connected one is the boundary.
    if (el.isConnected) return el;
  }
  return null;
}

function addNotice(room, text) {
  room.list.insertBefore(h('li', { class: 'notice', role: 'note' }, text), tailRef(room));
}

function addSeqMessage(room, m) {
  const cmid = typeof m.client_msg_id === 'string' ? m.client_msg_id : '';
  if (cmid && room.pend.has(cmid)) dropPlaceholder(room, cmid);
  if (cmid && S.outbox.settle(cmid)) saveOutbox();
  const el = messageEl(m, 'sent');
  room.els.set(m.seq, el);
  let next = room.tl.nextSeqAfter(m.seq);
  while (next && !room.els.has(next)) next = room.tl.nextSeqAfter(next);
  const ref = (next && room.els.get(next)) || tailRef(room);
  room.list.insertBefore(el, ref);
  regroup(el);
  regroup(nextMsg(el));
}

function addPlaceholder(room, it) {
  const user = S.me || { id: S.knownUserId, name: S.name };
  const el = messageEl({
    user, text: it.text, ts: new Date(it.createdAt || Date.now()).toISOString(), client_msg_id: it.cmid,
  }, it.state);
  el.classList.add('placeholder');
  room.pend.set(it.cmid, el);
  room.list.append(el);
  updatePlaceholder(el, it);
  regroup(el);
}

function dropPlaceholder(room, cmid) {
  const el = room.pend.get(cmid);
  room.pend.delete(cmid);
  if (!el) return;
  const next = nextMsg(el);
  el.remove();
  regroup(next);
}

function setMsgState(el, state) {
  el.dataset.state = state;
  const status = el.querySelector('.msg-status');
  if (state === 'sent' && status) status.remove();
}

/** updatePlaceholder shows an unconfirmed message's state and actions. */
function updatePlaceholder(el, it) {
  el.dataset.state = it.state;
  let status = el.querySelector('.msg-status');
  if (!status) {
    status = h('div', { class: 'msg-status' });
    el.querySelector('.msg-body').append(status);
  }
  if (it.state === 'failed') {
    status.replaceChildren(
      h('span', { class: 'status-text' }, `Not sent: ${it.error || 'failed'}`),
      h('button', { type: 'button', class: 'link-btn', 'data-action': 'retry' }, 'Retry'),
      h('button', { type: 'button', class: 'link-btn danger', 'data-action': 'delete' }, 'Delete'),
    );
  } else {
    const waiting = it.retryAt > Date.now();
    const label = waiting ? 'Sending… (will retry)'
      : (isOnline() ? 'Sending…' : 'Waiting for connection…');
    status.replaceChildren(h('span', { class: 'status-text' }, label));
  }
}

function nextMsg(el) {
  let n = el.nextElementSibling;
  while (n && !n.classList.contains('msg') && !n.classList.contains('notice')) n = n.nextElementSibling;
  return n && n.classList.contains('msg') ? n : null;
}

const elTime = new WeakMap();

/** regroup folds a message into the one above when the same person wrote both just before. */
function regroup(el) {
  if (!el || !el.classList.contains('msg')) return;
  let prev = el.previousElementSibling;
  while (prev && prev.hidden) prev = prev.previousElementSibling;
  const info = (x) => (x && x.classList.contains('msg')
    ? { userId: x.dataset.userId, time: elTime.get(x) || 0 } : null);
  el.classList.toggle('cont', groupsWith(info(prev), info(el)));
}

function messageEl(m, state) {
  const user = m.user && typeof m.user === 'object' ? m.user : {};
  const uid = String(user.id || '');
  const name = String(user.name || uid || 'unknown');
  let t = Date.parse(m.ts);
  if (!Number.isFinite(t)) t = Date.now();
  const d = new Date(t);
  const mine = !!(S.me && uid && uid === S.me.id);
  const el = h('li', {
    class: mine ? 'msg mine' : 'msg',
    dataset: {
      seq: Number.isSafeInteger(m.seq) ? String(m.seq) : '',
      id: typeof m.id === 'string' ? m.id : '',
      clientMsgId: typeof m.client_msg_id === 'string' ? m.client_msg_id : '',
      userId: uid,
      state,
    },
  },
  h('div', { class: `avatar hue-${hueFor(uid || name)}`, 'aria-hidden': 'true' }, initials(name)),
  h('time', { class: 'msg-gutter-time', datetime: d.toISOString(), 'aria-hidden': 'true' }, timeFmt.format(d)),
  h('div', { class: 'msg-body' },
    h('div', { class: 'msg-head' },
      h('span', { class: 'msg-user' }, name),
      h('time', { class: 'msg-time', datetime: d.toISOString(), title: fullFmt.format(d) }, shortTime(t))),
    h('div', { class: 'msg-text' }, String(m.text ?? ''))));
  elTime.set(el, t);
  return el;
}

// ------------------------------------------------------------- scrolling

function onListScroll(room) {
  if (!isShown(room)) return;
  if (atBottom(room.list)) E.jump.hidden = true;
  if (room.list.scrollTop < 150) loadOlder(room);
}

function loadOlder(room) {
  if (!room.live) return;
  const req = room.tl.olderRequest();
  if (req) {
    if (sendFrame(req)) room.loadingEl.hidden = false;
    else room.tl.requestFailed();
  } else {
    room.startEl.hidden = !(room.tl.atStart && room.tl.started);
  }
}

/** fillViewport loads older pages until the list can scroll (or starts). */
function fillViewport(room) {
  requestAnimationFrame(() => {
    if (!isShown(room)) return;
    if (room.list.scrollHeight <= room.list.clientHeight + 150) loadOlder(room);
  });
}

// ------------------------------------------------------------------- rooms

function saveRooms() {
  local.set(KEY.rooms, JSON.stringify([...S.rooms.keys()]));
}

function addRoom(name) {
  let room = S.rooms.get(name);
  if (room) return room;
  room = new Room(name);
  S.rooms.set(name, room);
  E.rooms.append(room.li);
  for (const it of S.outbox.list(name)) addPlaceholder(room, it);
  E['rooms-empty'].hidden = true;
  saveRooms();
  renderBrowse();
  if (C.welcomed) joinRoom(room);
  return room;
}

function removeRoom(room, tellServer = true) {
  if (tellServer && room.live) sendFrame({ type: 'leave', room: room.name });
  room.live = false;
  clearTimeout(room.joinTimer);
  S.rooms.delete(room.name);
  S.unread.clear(room.name);
  renderTitle();
  room.li.remove();
  room.list.remove();
  if (S.outbox.list(room.name).length) {
    S.outbox.dropRoom(room.name);
    saveOutbox();
  }
  saveRooms();
  renderBrowse();
  if (S.current === room.name) {
    const next = S.rooms.keys().next();
    showRoom(next.done ? '' : next.value);
  }
  E['rooms-empty'].hidden = S.rooms.size > 0;
}

function showRoom(name) {
  const prev = S.rooms.get(S.current);
  if (prev && prev.list.isConnected) {
    prev.savedTop = prev.list.scrollTop;
    prev.stick = atBottom(prev.list);
    prev.list.removeAttribute('id');
    prev.list.remove();
  }
  const stale = document.getElementById('messages');
  if (stale) stale.remove();
  const room = S.rooms.get(name);
  S.current = room ? name : '';
  if (room) local.set(KEY.current, name);
  for (const r of S.rooms.values()) {
    const on = r === room;
    r.li.classList.toggle('active', on);
    const btn = r.li.querySelector('.room-btn');
    if (on) btn.setAttribute('aria-current', 'page');
    else btn.removeAttribute('aria-current');
  }
  E.jump.hidden = true;
  E['empty-state'].hidden = !!room;
  E.composer.classList.toggle('disabled', !room);
  E.text.disabled = !room;
  E.send.disabled = !room;
  if (room) {
    S.unread.clear(room.name);
    renderUnread(room);
  }
  renderTitle();
  renderMembers();
  renderTyping();
  if (!room) {
    E['room-title'].textContent = '';
    return;
  }
  room.list.id = 'messages';
  E['message-pane'].insertBefore(room.list, E['message-pane'].firstChild);
  if (room.stick) room.list.scrollTop = room.list.scrollHeight;
  else room.list.scrollTop = room.savedTop;
  E['room-title'].textContent = room.name;
  E.text.placeholder = `Message #${room.name}`;
  closeNav();
  fillViewport(room);
}

function onRoomFormSubmit() {
  const name = E['room-name'].value.trim();
  let problem = roomNameProblem(name);
  if (problem && name.startsWith('#') && validRoom(name.slice(1))) {
    problem = 'Leave out the "#": type just the name.';
  }
  if (problem) {
    showFieldError(E['room-name'], E['room-error'], problem);
    return;
  }
  clearFieldError(E['room-name'], E['room-error']);
  addRoom(name);
  showRoom(name);
  E['room-name'].value = '';
  E.text.focus();
}

function onRoomInput() {
  const name = E['room-name'].value.trim();
  if (name === '') {
    clearFieldError(E['room-name'], E['room-error']);
    return;
  }
  const problem = roomNameProblem(name);
  if (problem) showFieldError(E['room-name'], E['room-error'], problem);
  else clearFieldError(E['room-name'], E['room-error']);
}

function showFieldError(input, box, text) {
  box.textContent = text;
  box.hidden = false;
  input.setAttribute('aria-invalid', 'true');
}

function clearFieldError(input, box) {
  box.textContent = '';
  box.hidden = true;
  input.removeAttribute('aria-invalid');
}

// ---------------------------------------------------------- room directory

async function refreshBrowse() {
  // After a 404 the server has no directory; asking again only fills the
  // console with failed requests.
  if (C.stopped || S.browse.state === 'absent') return;
  clearTimeout(S.browse.timer);
  S.browse.timer = setTimeout(refreshBrowse, 60000);
  let res;
  try {
    res = await fetch('/api/rooms', { headers: { Accept: 'application/json' }, cache: 'no-store' });
  } catch {
    return; // offline: keep what is shown
  }
  if (res.status === 404) {
    // This server has no directory (yet): nothing to browse, no error.
    S.browse.state = 'absent';
    S.browse.rooms = [];
    clearTimeout(S.browse.timer);
    renderBrowse();
    return;
  }
  if (!res.ok) return;
  try {
    S.browse.rooms = parseRooms(await res.json());
    S.browse.state = 'ok';
  } catch {
    return;
  }
  renderBrowse();
}

function renderBrowse() {
  const items = S.browse.rooms;
  E.browse.hidden = S.browse.state !== 'ok';
  if (S.browse.state !== 'ok') return;
  const now = Date.now();
  const lis = items.map((r) => {
    const joined = S.rooms.has(r.room);
    const meta = [`${r.seq} ${r.seq === 1 ? 'message' : 'messages'}`];
    if (r.lastActivity) meta.push(relativeTime(r.lastActivity, now));
    return h('li', { dataset: { browseRoom: r.room } },
      h('button', {
        type: 'button', class: 'browse-btn',
        'aria-label': `${joined ? 'Open' : 'Join'} ${r.room}, ${meta.join(', ')}`,
      },
      h('span', { class: 'browse-name' }, h('span', { class: 'hash', 'aria-hidden': 'true' }, '#'), r.room),
      h('span', { class: 'browse-meta' }, meta.join(' · ')),
      joined ? h('span', { class: 'badge badge-muted' }, 'joined') : h('span', { class: 'browse-join' }, 'Join')));
  });
  if (lis.length === 0) lis.push(h('li', { class: 'muted small' }, 'No rooms yet.'));
  E['browse-list'].replaceChildren(...lis);
}

// --------------------------------------------------------------- identity

function renderMe() {
  const name = S.me ? S.me.name : S.name;
  const id = S.me ? S.me.id : S.knownUserId || name;
  E.me.textContent = name;
  E['me-avatar'].textContent = initials(name);
  E['me-avatar'].className = `avatar avatar-sm hue-${hueFor(id || name)}`;
  E['guest-badge'].hidden = !S.guest;
  E.gateway.textContent = S.gateway || '…';
  E.gateway.title = S.gateway ? `Connected through gateway ${S.gateway}` : '';
}

function login(name, room) {
  S.name = name;
  S.token = '';
  S.tokenInfo = null;
  S.tokenExpired = false;
  const who = identity(name);
  S.key = who.key;
  S.knownUserId = who.user;
  S.outboxKey = KEY.outbox + name;
  local.set(KEY.name, name);
  session.set(KEY.session, name);
  enter(room);
}

/**
 * loginWithToken signs in with a token from the app that embeds Parley: the
 * gateway says who it stands for, so no name is asked. What the token says
 * of itself (read, not verified) names the user until the welcome and keys
 * their outbox.
 */
function loginWithToken(token, room) {
  S.token = token;
  S.tokenInfo = tokenInfo(token);
  S.tokenExpired = false;
  const info = S.tokenInfo || { sub: '', name: '' };
  S.name = info.name || info.sub || 'you';
  S.key = '';
  S.guest = false;
  S.knownUserId = info.sub ? `u_${info.sub}` : '';
  S.outboxKey = `${KEY.outbox}token:${info.sub || '?'}`;
  session.set(KEY.token, token);
  enter(room);
}

/** enter opens the chat for the identity login or loginWithToken set. */
function enter(room) {
  S.outbox = Outbox.fromJSON(local.get(S.outboxKey) || '[]');
  let saved = [];
  try {
    const v = JSON.parse(local.get(KEY.rooms) || '[]');
    if (Array.isArray(v)) saved = v.filter((r) => validRoom(r));
  } catch { /* start afresh */ }
  if (saved.length === 0) saved = ['general'];
  if (room && !saved.includes(room)) saved.push(room);
  E['login-view'].hidden = true;
  E.app.hidden = false;
  renderMe();
  for (const r of saved) addRoom(r);
  // Unconfirmed messages of rooms no longer in the list are shown too.
  for (const it of S.outbox.list()) if (!S.rooms.has(it.room)) addRoom(it.room);
  const last = local.get(KEY.current);
  showRoom(room || (last && S.rooms.has(last) ? last : saved[0]));
  C.stopped = false;
  C.attempt = 0;
  C.failedOpens = 0;
  C.everConnected = false;
  clearInterval(S.latencyTimer);
  S.latencyTimer = setInterval(reportLatency, LATENCY_REPORT_MS);
  connect();
  if (!matchMedia('(max-width: 720px)').matches) E.text.focus();
}

function signOut() {
  C.stopped = true;
  clearConnTimers();
  const ws = C.ws;
  C.ws = null;
  if (ws) {
    try { ws.close(1000, 'signed out'); } catch { /* closing */ }
  }
  handleClose(1000, '', 0);
  for (const t of S.retryTimers) clearTimeout(t);
  S.retryTimers.clear();
  clearTimeout(S.browse.timer);
  clearInterval(S.latencyTimer);
  S.latencyTimer = 0;
  session.del(KEY.session);
  if (S.token) {
    // The token was this tab's sign-in; signing out forgets it.
    session.del(KEY.token);
    S.token = '';
    S.tokenInfo = null;
    S.name = local.get(KEY.name) || '';
  }
  for (const room of S.rooms.values()) {
    clearTimeout(room.joinTimer);
    room.li.remove();
    room.list.remove();
  }
  S.rooms.clear();
  S.unread = new Unread();
  S.latency = new LatencyMeter();
  S.current = '';
  S.me = null;
  S.gateway = '';
  S.guest = true;
  setConnState('offline');
  hideBanner();
  renderMembers();
  renderLag();
  renderTitle();
  E.app.hidden = true;
  E['login-view'].hidden = false;
  E.name.value = S.name;
  E.name.focus();
}

function showLogin() {
  E['login-view'].hidden = false;
  E.app.hidden = true;
  E.name.focus();
}

function onLoginSubmit() {
  if (!E.app.hidden) return;
  const name = E.name.value.trim();
  const problem = nameProblem(name);
  if (problem) {
    showFieldError(E.name, E['name-error'], problem);
    E.name.focus();
    return;
  }
  clearFieldError(E.name, E['name-error']);
  login(name, null);
}

// --------------------------------------------------------------- composer

function autosize() {
  const t = E.text;
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 200)}px`;
}

function updateComposerStatus() {
  if (!E['composer-status']) return;
  const n = utf8Length(E.text.value);
  let text = '';
  let warn = false;
  if (n > MAX_TEXT_BYTES * 0.9) {
    text = `${n} / ${MAX_TEXT_BYTES} bytes`;
    warn = n > MAX_TEXT_BYTES;
  } else if (S.rooms.size && !isOnline() && !C.stopped) {
    text = 'Not connected: messages will be sent when the connection is back.';
  }
  E['composer-status'].textContent = text;
  E['composer-status'].classList.toggle('warn', warn);
}

// swallowBreak is set while an Enter that sent the message is down: some
// input paths (on-screen keyboards, automation) deliver the line break as a
// separate input event that the keydown's preventDefault does not stop.
let swallowBreak = false;

function onComposerKey(ev) {
  if (ev.key !== 'Enter' || ev.shiftKey || ev.isComposing || ev.keyCode === 229) return;
  if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
  ev.preventDefault();
  swallowBreak = true;
  sendMessage();
}

function onComposerBeforeInput(ev) {
  if (!swallowBreak) return;
  if (ev.inputType === 'insertLineBreak' || ev.inputType === 'insertParagraph'
      || (ev.inputType === 'insertText' && (ev.data === '\n' || ev.data === '\r'))) {
    ev.preventDefault();
  }
  swallowBreak = false;
}

// -------------------------------------------------------------- mobile nav

function openNav() {
  closeMembers();
  document.body.classList.add('nav-open');
  E.scrim.hidden = false;
  E['menu-btn'].setAttribute('aria-expanded', 'true');
  const first = E.rooms.querySelector('.active .room-btn') || E['room-name'];
  first.focus();
}

function closeNav() {
  if (!document.body.classList.contains('nav-open')) return;
  document.body.classList.remove('nav-open');
  E.scrim.hidden = true;
  E['menu-btn'].setAttribute('aria-expanded', 'false');
}

// The member list is a column on wide screens (which the user may hide) and
// a drawer on narrow ones.
const narrowMembers = () => matchMedia('(max-width: 1000px)').matches;

function toggleMembers() {
  const body = document.body.classList;
  if (narrowMembers()) {
    if (body.contains('members-open')) {
      closeMembers();
      return;
    }
    closeNav();
    body.add('members-open');
    E.scrim.hidden = false;
    E['members-close'].focus();
  } else {
    body.toggle('members-hidden');
    local.set(KEY.members, body.contains('members-hidden') ? 'hidden' : 'shown');
  }
  syncMembersToggle();
}

function closeMembers() {
  if (!document.body.classList.contains('members-open')) return;
  document.body.classList.remove('members-open');
  E.scrim.hidden = true;
  syncMembersToggle();
}

function syncMembersToggle() {
  const body = document.body.classList;
  const open = narrowMembers() ? body.contains('members-open') : !body.contains('members-hidden');
  E['members-toggle'].setAttribute('aria-expanded', String(open));
}

// ------------------------------------------------------------------- boot

/**
 * onSubmit handles a form's submit event, and also form.submit() called from
 * script (automation tools do that). form.submit() skips the submit event
 * and would navigate away, but it first builds the form's entry list, firing
 * "formdata": taking the form out of the document for that moment makes the
 * submission stop there (a form that is not connected cannot navigate), and
 * the form goes back in on the next task, where the handler runs.
 */
function onSubmit(form, handler) {
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    handler();
  });
  form.addEventListener('formdata', () => {
    const parent = form.parentNode;
    const next = form.nextSibling;
    if (!parent) return;
    form.remove();
    setTimeout(() => {
      parent.insertBefore(form, next);
      handler();
    }, 0);
  });
}

function wire() {
  onSubmit(E['login-form'], onLoginSubmit);
  E.name.addEventListener('focus', () => E.name.select());
  E.name.addEventListener('input', () => clearFieldError(E.name, E['name-error']));

  onSubmit(E['room-form'], onRoomFormSubmit);
  E['room-name'].addEventListener('input', onRoomInput);

  E.rooms.addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action]');
    const li = ev.target.closest('li[data-room]');
    if (!btn || !li) return;
    const room = S.rooms.get(li.dataset.room);
    if (!room) return;
    if (btn.dataset.action === 'leave') removeRoom(room);
    else showRoom(room.name);
  });

  E['browse-list'].addEventListener('click', (ev) => {
    const li = ev.target.closest('li[data-browse-room]');
    if (!li || !ev.target.closest('button')) return;
    const name = li.dataset.browseRoom;
    if (!validRoom(name)) return;
    addRoom(name);
    showRoom(name);
  });
  E['browse-refresh'].addEventListener('click', refreshBrowse);

  E['message-pane'].addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action]');
    const el = btn && btn.closest('.msg');
    if (!el) return;
    const cmid = el.dataset.clientMsgId;
    const room = S.rooms.get(S.current);
    if (!room || !S.outbox.has(cmid)) return;
    if (btn.dataset.action === 'retry') {
      const it = S.outbox.retry(cmid);
      saveOutbox();
      updatePlaceholder(el, it);
      flushRoom(room);
    } else if (btn.dataset.action === 'delete') {
      S.latency.forget(cmid);
      S.outbox.remove(cmid);
      saveOutbox();
      dropPlaceholder(room, cmid);
    }
  });

  E.jump.addEventListener('click', () => {
    const room = S.rooms.get(S.current);
    if (room) room.list.scrollTop = room.list.scrollHeight;
    E.jump.hidden = true;
  });

  onSubmit(E.composer, sendMessage);
  E.text.addEventListener('keydown', onComposerKey);
  E.text.addEventListener('beforeinput', onComposerBeforeInput);
  E.text.addEventListener('keyup', (ev) => {
    if (ev.key === 'Enter') swallowBreak = false;
  });
  E.text.addEventListener('input', () => {
    autosize();
    updateComposerStatus();
    onComposerInput();
  });

  E['reconnect-now'].addEventListener('click', reconnectNow);
  E['banner-retry'].addEventListener('click', () => {
    C.attempt = 0;
    reconnectNow();
  });
  E.signout.addEventListener('click', signOut);

  E['menu-btn'].addEventListener('click', () => {
    if (document.body.classList.contains('nav-open')) closeNav();
    else openNav();
  });
  E['nav-close'].addEventListener('click', () => {
    closeNav();
    E['menu-btn'].focus();
  });
  E.scrim.addEventListener('click', () => {
    closeNav();
    closeMembers();
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && document.body.classList.contains('nav-open')) {
      closeNav();
      E['menu-btn'].focus();
    } else if (ev.key === 'Escape' && document.body.classList.contains('members-open')) {
      closeMembers();
      E['members-toggle'].focus();
    }
  });
  E['members-toggle'].addEventListener('click', toggleMembers);
  E['members-close'].addEventListener('click', () => {
    if (narrowMembers()) closeMembers();
    else toggleMembers();
    E['members-toggle'].focus();
  });
  if (local.get(KEY.members) === 'hidden') document.body.classList.add('members-hidden');
  matchMedia('(max-width: 1000px)').addEventListener('change', () => {
    closeMembers();
    syncMembersToggle();
  });
  syncMembersToggle();

  window.addEventListener('online', () => {
    if (!C.stopped && !C.ws && !C.blocked) {
      C.attempt = 0;
      connect();
    }
  });
  window.addEventListener('offline', () => {
    if (C.stopped) return;
    // The socket cannot outlive the network; say so now rather than when a
    // ping times out. The close handler sees navigator.onLine and waits for
    // the "online" event instead of backing off.
    if (C.ws) {
      dropSocket(1006, 'network lost');
    } else {
      clearConnTimers();
      setConnState('offline', 'Offline: no network');
    }
  });
  // A page kept in the back/forward cache would keep its socket, and the
  // user would stay in every member list while gone: close it, and come
  // back (resuming each room) when the page is shown again.
  window.addEventListener('pagehide', (ev) => {
    if (!ev.persisted || C.stopped) return;
    C.paused = true;
    if (C.ws) dropSocket(1000, 'page hidden');
    else clearConnTimers();
  });
  window.addEventListener('pageshow', (ev) => {
    if (!ev.persisted || !C.paused) return;
    C.paused = false;
    C.attempt = 0;
    if (!C.stopped && !C.ws) connect();
  });
  // Coming back to a tab whose reconnect is far off: try now.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && C.timer && C.retryAt - Date.now() > 2000) reconnectNow();
  });
}

function exposeDebug() {
  const view = Object.freeze({
    get connection() {
      return Object.freeze({ state: C.state, attempt: C.attempt, gateway: S.gateway, connId: C.id });
    },
    get user() {
      return S.me ? Object.freeze({ ...S.me, guest: S.guest }) : null;
    },
    get rooms() {
      return Object.freeze([...S.rooms.values()].map((r) => Object.freeze({
        room: r.name, epoch: r.tl.epoch, contig: r.tl.contig, top: r.tl.top,
        lowest: r.tl.lowest, highest: r.tl.highest, shown: r.tl.size, live: r.live,
        count: r.presence.known ? r.presence.count : null,
        members: r.presence.members ? Object.freeze(r.presence.members.map((u) => u.id)) : null,
        typing: Object.freeze(r.typing.names(Date.now())),
        unread: S.unread.get(r.name),
      })));
    },
    get latency() {
      const lag = S.latency.lag();
      return Object.freeze({ offset: S.latency.offset, rtt: lag.rtt, delivery: lag.delivery });
    },
    get outbox() {
      return Object.freeze(S.outbox.toJSON().map((it) => Object.freeze(it)));
    },
  });
  Object.defineProperty(window, 'parley', { value: view, writable: false, configurable: false, enumerable: false });
}

function boot() {
  grabElements();
  wire();
  exposeDebug();
  const params = new URLSearchParams(location.search);
  const qName = (params.get('name') || '').trim();
  const qRoom = (params.get('room') || '').trim();
  const qToken = (params.get('token') || '').trim();
  if (qToken) {
    // Keep the token out of the address bar (and of bookmarks, screenshots
    // and shared links): this tab keeps it in sessionStorage instead.
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
  }
  const token = qToken || session.get(KEY.token) || '';
  const remembered = local.get(KEY.name) || '';
  const signedIn = session.get(KEY.session) || '';
  E.name.value = remembered;
  S.name = remembered;
  if (token) {
    const roomOK = qRoom && validRoom(qRoom);
    loginWithToken(token, roomOK ? qRoom : null);
    if (qRoom && !roomOK) toast(`Cannot open room "${qRoom}": ${roomNameProblem(qRoom)}`);
  } else if (qName && !nameProblem(qName)) {
    const roomOK = qRoom && validRoom(qRoom);
    login(qName, roomOK ? qRoom : null);
    if (qRoom && !roomOK) toast(`Cannot open room "${qRoom}": ${roomNameProblem(qRoom)}`);
  } else if (signedIn && !nameProblem(signedIn)) {
    login(signedIn, null);
  } else {
    showLogin();
    if (remembered) E.name.select();
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
