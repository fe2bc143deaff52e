// protocol.js: the pure logic of the Parley browser client.
//
// Nothing here touches the DOM, the network or storage, so every function can
// be tested under Node (web/test/*.test.mjs). app.js does the rest. The rules
// implemented here are the ones in docs/protocol.md; comments say which.

/** Longest room name (protocol.md, "Validation rules"). */
export const MAX_ROOM_LEN = 64;
/** Default gateway text limit in bytes (PARLEY_MAX_TEXT_BYTES). */
export const MAX_TEXT_BYTES = 4000;
/** Longest display name the gateway keeps. */
export const MAX_NAME_LEN = 32;
/** Page size for scrollback. */
export const SCROLLBACK_LIMIT = 50;
/** Page size for filling holes and resuming: the protocol's maximum. */
export const FILL_LIMIT = 100;
/** A history request unanswered for this long no longer blocks a new one. */
export const REQUEST_TIMEOUT_MS = 15000;

/** The 64 characters a guest key and random ids are made of. */
export const TOKEN_ALPHABET =
  'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';

// ---------------------------------------------------------------- frames

/**
 * splitFrames turns one WebSocket text message into the frames it carries. A
 * gateway may send several JSON objects in one message, separated by "\n"
 * (JSON text never holds a raw newline). Blank parts are skipped; parts that
 * are not JSON objects with a string "type" are counted in `bad` and
 * otherwise ignored, so that one broken part does not lose the others.
 *
 * @param {string} data
 * @returns {{frames: object[], bad: number}}
 */
export function splitFrames(data) {
  const frames = [];
  let bad = 0;
  if (typeof data !== 'string') return { frames, bad: 1 };
  for (const part of data.split('\n')) {
    if (part.trim() === '') continue;
    let v;
    try {
      v = JSON.parse(part);
    } catch {
      bad++;
      continue;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v) || typeof v.type !== 'string') {
      bad++;
      continue;
    }
    frames.push(v);
  }
  return { frames, bad };
}

// ------------------------------------------------------------ validation

const ROOM_CHAR = /^[A-Za-z0-9._-]$/;
const ALNUM = /^[A-Za-z0-9]$/;

/**
 * roomNameProblem says why name is not a valid room name, or returns null
 * when it is one: 1-64 characters from A-Z a-z 0-9 - _ . starting with a
 * letter or a digit. Names are case-sensitive, so nothing is normalised.
 *
 * @param {string} name
 * @returns {string|null}
 */
export function roomNameProblem(name) {
  if (typeof name !== 'string' || name.length === 0) return 'Enter a room name.';
  if (name.length > MAX_ROOM_LEN) {
    return `Room names are at most ${MAX_ROOM_LEN} characters (this one has ${name.length}).`;
  }
  for (const ch of name) {
    if (!ROOM_CHAR.test(ch)) {
      const shown = ch === ' ' ? 'spaces' : `"${ch}"`;
      return `Room names may not contain ${shown}: use letters, digits, "-", "_" or ".".`;
    }
  }
  if (!ALNUM.test(name[0])) return 'Room names must start with a letter or a digit.';
  return null;
}

/** validRoom reports whether name is a valid room name. */
export function validRoom(name) {
  return roomNameProblem(name) === null;
}

/** utf8Length returns the number of bytes s takes in UTF-8. */
export function utf8Length(s) {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

/**
 * tidyText prepares what the user typed for sending: blank lines at the start
 * and whitespace at the end are dropped; indentation inside is kept.
 */
export function tidyText(s) {
  return String(s).replace(/^(?:[ \t]*\r?\n)+/, '').replace(/\s+$/, '');
}

/**
 * textProblem says why text cannot be sent, or returns null: it must not be
 * blank and must fit in maxBytes bytes of UTF-8.
 */
export function textProblem(text, maxBytes = MAX_TEXT_BYTES) {
  if (typeof text !== 'string' || text.trim() === '') return 'Type a message first.';
  const n = utf8Length(text);
  if (n > maxBytes) return `Message is too long: ${n} bytes, the limit is ${maxBytes}.`;
  return null;
}

/** nameProblem says why a display name will not do, or returns null. */
export function nameProblem(name) {
  const n = typeof name === 'string' ? name.trim() : '';
  if (n === '') return 'Pick a display name.';
  if ([...n].length > MAX_NAME_LEN) return `Names are at most ${MAX_NAME_LEN} characters.`;
  return null;
}

// ----------------------------------------------------------- randomness

/**
 * randomToken returns n characters of TOKEN_ALPHABET drawn from fill, a
 * function that fills a Uint8Array with random bytes (the browser's
 * crypto.getRandomValues). The alphabet has 64 characters, so taking the low
 * six bits of each byte keeps every character equally likely.
 */
export function randomToken(n, fill) {
  const bytes = new Uint8Array(n);
  fill(bytes);
  let s = '';
  for (const b of bytes) s += TOKEN_ALPHABET[b & 63];
  return s;
}

/** validKey reports whether k looks like a key made by newGuestKey. */
export function validKey(k) {
  return typeof k === 'string' && /^[A-Za-z0-9_-]{32}$/.test(k);
}

/** newGuestKey returns a fresh 32-character guest secret. */
export function newGuestKey(fill) {
  return randomToken(32, fill);
}

/** newClientMsgId returns an id for one send: "c-" and 16 random characters. */
export function newClientMsgId(fill) {
  return 'c-' + randomToken(16, fill);
}

// -------------------------------------------------------------- backoff

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 30000;
/** A connection that lasted longer than this resets the backoff. */
export const STABLE_AFTER_MS = 10000;
/** Close 1012 (service restart) reconnects within this much jitter. */
export const RESTART_JITTER_MS = 750;

/**
 * backoffDelay is full-jitter exponential backoff (protocol.md, "Close
 * codes"): random(0, min(30 s, 0.5 s * 2^attempt)).
 *
 * @param {number} attempt 0 for the first retry
 * @param {() => number} rand uniform in [0, 1)
 */
export function backoffDelay(attempt, rand = Math.random) {
  const a = Math.max(0, Math.min(30, Math.floor(attempt) || 0));
  return Math.floor(rand() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** a));
}

/** Close codes after which the client reconnects on its own. */
export const RETRY_CLOSE_CODES = Object.freeze([1001, 1006, 1011, 1012, 1013]);

/**
 * reconnectPlan decides what to do after a WebSocket closed.
 *
 * - 1008 (policy: authentication, abuse): do not retry blindly; the user is
 *   shown the reason and reconnects by hand.
 * - 1012 (the gateway restarts): reconnect almost at once (under a second),
 *   unless that has already failed a few times in a row.
 * - everything else, 1001/1006/1011/1013 among them: full-jitter backoff.
 *
 * `attempt` counts reconnects since the last stable connection; a connection
 * that lasted more than STABLE_AFTER_MS resets it.
 *
 * @param {number} code the close code (1006 when the socket just dropped)
 * @param {{attempt: number, uptimeMs: number, rand?: () => number}} st
 * @returns {{retry: boolean, delay: number, attempt: number}}
 *   delay before the next try, and the attempt count to keep
 */
export function reconnectPlan(code, st) {
  const rand = st.rand || Math.random;
  let attempt = st.uptimeMs > STABLE_AFTER_MS ? 0 : Math.max(0, st.attempt | 0);
  if (code === 1008) return { retry: false, delay: 0, attempt };
  if (code === 1012 && attempt < 3) {
    return { retry: true, delay: Math.floor(rand() * RESTART_JITTER_MS), attempt: attempt + 1 };
  }
  return { retry: true, delay: backoffDelay(attempt, rand), attempt: attempt + 1 };
}

/** closeCodeText describes a close code for people. */
export function closeCodeText(code) {
  switch (code) {
    case 1000: return 'closed';
    case 1001: return 'the server is going away';
    case 1006: return 'the connection dropped';
    case 1007: return 'the server rejected invalid text';
    case 1008: return 'refused by policy';
    case 1009: return 'a message was too big';
    case 1011: return 'server error';
    case 1012: return 'the server is restarting';
    case 1013: return 'the server asked to try again later';
    default: return `closed (${code})`;
  }
}

// ------------------------------------------------------------- timeline

function isMessage(m) {
  return m !== null && typeof m === 'object' && Number.isSafeInteger(m.seq) && m.seq > 0;
}

function sortedMessages(list) {
  if (!Array.isArray(list)) return [];
  return list.filter(isMessage).sort((a, b) => a.seq - b.seq);
}

/**
 * RoomTimeline is the client's view of one room: the messages it shows, by
 * seq, and what it still has to fetch (protocol.md, "Order and recovery").
 *
 * - `epoch` is the life of the room's history the view belongs to.
 * - `contig` is the highest seq up to which the view has no hole: every seq
 *   from the oldest shown to `contig` is shown (or known to be gone). It is
 *   what a resume asks `since`.
 * - `top` is the highest seq the client knows exists (from messages, and from
 *   the `seq` of joined and history frames). `top > contig` means a hole, to
 *   fill with `history` `after` `contig` on the same socket.
 *
 * Methods take frames and return a Change: what to draw and what to ask.
 * History requests are tracked so that answers can be matched to them in any
 * order: by their seqs when they carry messages, first-in-first-out when empty.
 */
export class RoomTimeline {
  /**
   * @param {string} room
   * @param {{now?: () => number}} [opts]
   */
  constructor(room, opts = {}) {
    this.room = room;
    this.now = opts.now || Date.now;
    this._clear('');
  }

  _clear(epoch) {
    /** @type {string} */
    this.epoch = epoch;
    /** @type {Map<number, object>} */
    this.bySeq = new Map();
    /** @type {number[]} ascending */
    this.seqs = [];
    this.contig = 0;
    this.top = 0;
    /** The view has a starting point (a joined frame, or a new epoch). */
    this.started = false;
    /** The oldest message of the room is shown: no scrollback left. */
    this.atStart = false;
    /** @type {{kind: 'before'|'after', value: number, at: number}[]} */
    this.requests = [];
    /** Messages that came before the first joined (kept, merged on join). */
    this.early = [];
  }

  /** lowest is the oldest seq shown, or 0. */
  get lowest() { return this.seqs.length ? this.seqs[0] : 0; }
  /** highest is the newest seq shown, or 0. */
  get highest() { return this.seqs.length ? this.seqs[this.seqs.length - 1] : 0; }
  /** size is the number of messages shown. */
  get size() { return this.seqs.length; }

  has(seq) { return this.bySeq.has(seq); }
  get(seq) { return this.bySeq.get(seq); }
  /** messages returns the shown messages in seq order. */
  messages() { return this.seqs.map((s) => this.bySeq.get(s)); }

  /** nextSeqAfter returns the smallest shown seq greater than seq, or 0. */
  nextSeqAfter(seq) {
    const i = upperBound(this.seqs, seq);
    return i < this.seqs.length ? this.seqs[i] : 0;
  }

  /** prevSeqBefore returns the largest shown seq smaller than seq, or 0. */
  prevSeqBefore(seq) {
    const i = lowerBound(this.seqs, seq) - 1;
    return i >= 0 ? this.seqs[i] : 0;
  }

  /**
   * joinFrame returns the join to send for this room: with `since` and
   * `epoch` once the view has a starting point, so that a reconnect resumes.
   */
  joinFrame() {
    const f = { type: 'join', room: this.room };
    if (this.started && this.epoch) {
      f.since = this.contig;
      f.epoch = this.epoch;
    }
    return f;
  }

  /** connectionLost forgets requests made on a socket that is gone. */
  connectionLost() {
    this.requests = [];
  }

  /** requestFailed forgets outstanding requests after an error for the room. */
  requestFailed() {
    this.requests = [];
  }

  _change() {
    return { added: [], reset: false, notices: [], requests: [], dropped: 0, rejoin: false };
  }

  _insert(m, ch) {
    if (this.bySeq.has(m.seq)) {
      ch.dropped++;
      return;
    }
    this.bySeq.set(m.seq, m);
    const i = lowerBound(this.seqs, m.seq);
    this.seqs.splice(i, 0, m.seq);
    if (m.seq > this.top) this.top = m.seq;
    if (m.seq <= 1) this.atStart = true;
    ch.added.push(m);
  }

  _advance() {
    while (this.bySeq.has(this.contig + 1)) this.contig++;
  }

  _reset(epoch, ch, notice) {
    this._clear(epoch);
    ch.reset = true;
    if (notice) ch.notices.push(notice);
  }

  _live(r) {
    return this.now() - r.at < REQUEST_TIMEOUT_MS;
  }

  /** _fill asks for the hole above contig unless a fill is already out. */
  _fill(ch, force = false) {
    this.requests = this.requests.filter((r) => this._live(r));
    if (this.top <= this.contig && !force) return;
    if (this.requests.some((r) => r.kind === 'after')) return;
    this.requests.push({ kind: 'after', value: this.contig, at: this.now() });
    ch.requests.push({ type: 'history', room: this.room, after: this.contig, limit: FILL_LIMIT });
  }

  /**
   * olderRequest returns the history frame that fetches the page before the
   * oldest shown message, or null when there is nothing older or a page is
   * already on its way.
   */
  olderRequest() {
    if (!this.started || this.atStart) return null;
    this.requests = this.requests.filter((r) => this._live(r));
    if (this.requests.some((r) => r.kind === 'before')) return null;
    const before = this.seqs.length ? this.lowest : this.contig + 1;
    if (before <= 1) {
      this.atStart = true;
      return null;
    }
    this.requests.push({ kind: 'before', value: before, at: this.now() });
    return { type: 'history', room: this.room, before, limit: SCROLLBACK_LIMIT };
  }

  /** loadingOlder reports whether a scrollback page is on its way. */
  get loadingOlder() {
    return this.requests.some((r) => r.kind === 'before' && this._live(r));
  }

  /**
   * applyJoined handles a `joined` frame.
   *
   * recovered:false (the epoch changed, or the missed messages are no longer
   * kept) starts the view afresh from the messages given, with a notice. A
   * plain join of a view that has no start yet starts it. `more:true`, or a
   * room seq above what came, asks `history` `after` for the rest.
   */
  applyJoined(j) {
    const ch = this._change();
    const epoch = typeof j.epoch === 'string' ? j.epoch : '';
    this.requests = [];
    if (j.recovered === false) {
      const hadView = this.started;
      this._reset(epoch, ch, hadView ? 'missed' : null);
    } else if (this.started && this.epoch && epoch && epoch !== this.epoch) {
      this._reset(epoch, ch, 'epoch');
    }
    if (!this.epoch) this.epoch = epoch;
    const msgs = sortedMessages(j.messages);
    const seq = Number.isSafeInteger(j.seq) && j.seq > 0 ? j.seq : 0;
    if (!this.started) {
      this.started = true;
      this.contig = msgs.length ? msgs[0].seq - 1 : seq;
      if (msgs.length === 0 && seq === 0) this.atStart = true;
    }
    for (const m of msgs) this._insert(m, ch);
    const early = this.early;
    this.early = [];
    for (const m of early) {
      if (!m.epoch || !this.epoch || m.epoch === this.epoch) this._insert(m, ch);
    }
    if (seq > this.top) this.top = seq;
    this._advance();
    this._fill(ch, j.more === true);
    ch.added.sort((a, b) => a.seq - b.seq);
    return ch;
  }

  /**
   * applyMessage handles a live `message` frame: drops a seq already shown,
   * starts afresh on a new epoch (with a notice), and asks for any hole the
   * message reveals.
   */
  applyMessage(m) {
    const ch = this._change();
    if (!isMessage(m)) return ch;
    if (!this.started) {
      this.early.push(m);
      return ch;
    }
    const epoch = typeof m.epoch === 'string' ? m.epoch : '';
    if (epoch && this.epoch && epoch !== this.epoch) {
      this._reset(epoch, ch, 'epoch');
      this.started = true;
      this.contig = m.seq - 1;
    } else if (!this.epoch) {
      this.epoch = epoch;
    }
    this._insert(m, ch);
    this._advance();
    this._fill(ch);
    return ch;
  }

  /**
   * applyGap handles a `gap` frame: the gateway dropped messages from..to of
   * this room from the backlog of a client that fell behind. They are in
   * history; ask for them like any hole.
   */
  applyGap(g) {
    const ch = this._change();
    if (!this.started || !Number.isSafeInteger(g.to) || g.to < 1) return ch;
    if (g.to > this.top) this.top = g.to;
    this._fill(ch);
    return ch;
  }

  _match(msgs) {
    if (this.requests.length === 0) return null;
    let idx = -1;
    if (msgs.length) {
      const first = msgs[0].seq;
      const last = msgs[msgs.length - 1].seq;
      const score = (r) => {
        if (r.kind === 'after' && first > r.value) return first === r.value + 1 ? 2 : 1;
        if (r.kind === 'before' && last < r.value) return last === r.value - 1 ? 2 : 1;
        return 0;
      };
      let best = 0;
      this.requests.forEach((r, i) => {
        const s = score(r);
        if (s > best) { best = s; idx = i; }
      });
    }
    if (idx < 0) idx = 0;
    return this.requests.splice(idx, 1)[0];
  }

  /**
   * applyHistory handles a `history` answer. It merges the messages in seq
   * order whatever the order answers come in. An empty answer to a
   * scrollback request means the start of the room is reached; an answer to a
   * fill that leaves the hole open means those seqs are gone (a notice). An
   * answer from another epoch resets the view and asks for a re-join.
   */
  applyHistory(h) {
    const ch = this._change();
    const epoch = typeof h.epoch === 'string' ? h.epoch : '';
    const msgs = sortedMessages(h.messages);
    if (epoch && this.epoch && epoch !== this.epoch) {
      this._reset('', ch, 'epoch');
      ch.rejoin = true;
      return ch;
    }
    if (!this.started) return ch;
    if (!this.epoch) this.epoch = epoch;
    const req = this._match(msgs);
    for (const m of msgs) this._insert(m, ch);
    if (req && req.kind === 'before' && msgs.length === 0) this.atStart = true;
    if (Number.isSafeInteger(h.seq) && h.seq > this.top) this.top = h.seq;
    this._advance();
    if (req && req.kind === 'after' && this.top > this.contig) {
      // The answer should have started right after the hole. Whatever it
      // skipped, or an empty answer while seqs are known to exist, is gone
      // from the store: step over it so it is not asked for forever.
      const lostUpTo = msgs.length
        ? (msgs[0].seq > req.value + 1 ? msgs[0].seq - 1 : 0)
        : (this.nextSeqAfter(this.contig) || this.top + 1) - 1;
      if (lostUpTo > this.contig) {
        this.contig = lostUpTo;
        ch.notices.push('missed');
        this._advance();
      }
    }
    this._fill(ch);
    ch.added.sort((a, b) => a.seq - b.seq);
    return ch;
  }
}

function lowerBound(arr, x) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function upperBound(arr, x) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// --------------------------------------------------------------- outbox

/** Error codes after which a send is retried with the same client_msg_id. */
export const RETRY_ERROR_CODES = Object.freeze(['rate_limited', 'unavailable']);

/**
 * retryDelay is the wait before resending a message the gateway turned away
 * with a retryable code: exponential from 1 s to 30 s, with jitter that keeps
 * at least half of it (a rate limit is not helped by retrying at once).
 */
export function retryDelay(attempts, rand = Math.random) {
  const a = Math.max(0, Math.min(10, attempts | 0));
  const d = Math.min(30000, 1000 * 2 ** a);
  return Math.floor(d / 2 + rand() * (d / 2));
}

/**
 * Outbox keeps the messages the user sent that the gateway has not
 * acknowledged yet, so they survive reconnects and reloads and are resent
 * with the same client_msg_id (which the gateway dedupes). Items are
 * 'pending' (to be sent or awaiting an ack) or 'failed' (turned away for
 * good; the user may retry or delete them).
 *
 * Only the fields in toJSON are stored; the rest is per page.
 */
export class Outbox {
  constructor() {
    /** @type {Map<string, object>} */
    this.items = new Map();
    this._order = 0;
  }

  /** Outbox.fromJSON rebuilds an outbox from toJSON's output (or junk). */
  static fromJSON(text) {
    const ob = new Outbox();
    let list;
    try {
      list = JSON.parse(text);
    } catch {
      return ob;
    }
    if (!Array.isArray(list)) return ob;
    for (const it of list) {
      if (!it || typeof it !== 'object') continue;
      if (typeof it.cmid !== 'string' || !/^[A-Za-z0-9._:-]{1,64}$/.test(it.cmid)) continue;
      if (!validRoom(it.room) || typeof it.text !== 'string') continue;
      ob._put({
        cmid: it.cmid,
        room: it.room,
        text: it.text,
        createdAt: Number.isFinite(it.createdAt) ? it.createdAt : 0,
        state: it.state === 'failed' ? 'failed' : 'pending',
        error: typeof it.error === 'string' ? it.error : '',
      });
    }
    return ob;
  }

  _put(it) {
    it.order = this._order++;
    it.attempts = 0;
    it.sentOn = 0; // id of the connection it was last sent on
    it.retryAt = 0; // when a retry is due, while waiting for one
    this.items.set(it.cmid, it);
    return it;
  }

  /** toJSON returns the storable form: pending and failed items, oldest first. */
  toJSON() {
    return this.list().map(({ cmid, room, text, createdAt, state, error }) => ({
      cmid, room, text, createdAt, state, error,
    }));
  }

  /** add records a new message, pending. */
  add(room, text, cmid, createdAt) {
    return this._put({ cmid, room, text, createdAt, state: 'pending', error: '' });
  }

  has(cmid) { return this.items.has(cmid); }
  get(cmid) { return this.items.get(cmid); }
  get size() { return this.items.size; }

  /** list returns all items (of one room, if given), oldest first. */
  list(room) {
    const all = [...this.items.values()].filter((it) => room === undefined || it.room === room);
    return all.sort((a, b) => a.createdAt - b.createdAt || a.order - b.order);
  }

  /**
   * due returns the pending items of room to send now on connection connId:
   * not already sent on it, and not waiting for a retry.
   */
  due(room, connId, now) {
    return this.list(room).filter(
      (it) => it.state === 'pending' && it.sentOn !== connId && (it.retryAt === 0 || it.retryAt <= now),
    );
  }

  /** sent notes that it went out on connection connId. */
  sent(cmid, connId) {
    const it = this.items.get(cmid);
    if (it) {
      it.sentOn = connId;
      it.retryAt = 0;
    }
  }

  /**
   * settle removes an item the gateway has stored (an ack, or its message
   * frame came back). It returns the item, or undefined if it was not ours.
   */
  settle(cmid) {
    const it = this.items.get(cmid);
    if (it) this.items.delete(cmid);
    return it;
  }

  /**
   * error applies an `error` frame whose ref is cmid. rate_limited and
   * unavailable keep the item pending, to resend after `delay` ms; any other
   * code fails it with the gateway's message.
   *
   * @returns {{action: 'retry', delay: number} | {action: 'failed'} | null}
   */
  error(cmid, code, message, now, rand = Math.random) {
    const it = this.items.get(cmid);
    if (!it) return null;
    if (RETRY_ERROR_CODES.includes(code)) {
      const delay = retryDelay(it.attempts, rand);
      it.attempts++;
      it.sentOn = 0;
      it.retryAt = now + delay;
      it.state = 'pending';
      return { action: 'retry', delay };
    }
    it.state = 'failed';
    it.error = message || code || 'failed';
    it.sentOn = 0;
    it.retryAt = 0;
    return { action: 'failed' };
  }

  /** retry makes a failed item pending again, to be sent at once. */
  retry(cmid) {
    const it = this.items.get(cmid);
    if (!it) return undefined;
    it.state = 'pending';
    it.error = '';
    it.attempts = 0;
    it.sentOn = 0;
    it.retryAt = 0;
    return it;
  }

  /** remove drops an item (the user deleted it, or left its room). */
  remove(cmid) {
    return this.items.delete(cmid);
  }

  /** dropRoom removes every item of room. */
  dropRoom(room) {
    for (const it of this.list(room)) this.items.delete(it.cmid);
  }

  /** connectionLost marks everything as not sent on the current connection. */
  connectionLost() {
    for (const it of this.items.values()) it.sentOn = 0;
  }
}

// ------------------------------------------------------------ rendering

/** The number of avatar colours style.css defines (.hue-0 ... .hue-11). */
export const HUES = 12;

/** hueFor picks a stable colour index for a user id (FNV-1a hash). */
export function hueFor(id, n = HUES) {
  let h = 0x811c9dc5;
  for (const ch of String(id)) {
    h ^= ch.codePointAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % n;
}

/** initials returns one or two letters standing for a display name. */
export function initials(name) {
  const words = String(name || '').trim().split(/[\s._-]+/u).filter(Boolean);
  if (words.length === 0) return '?';
  const first = (w) => {
    const chars = [...w];
    const letter = chars.find((c) => /[\p{L}\p{N}]/u.test(c));
    return (letter || chars[0]).toUpperCase();
  };
  if (words.length === 1) return first(words[0]);
  return first(words[0]) + first(words[words.length - 1]);
}

/** GROUP_WINDOW_MS: consecutive messages of one user this close are grouped. */
export const GROUP_WINDOW_MS = 5 * 60 * 1000;

/**
 * groupsWith reports whether message b, shown right after a, continues a's
 * group: same user, within GROUP_WINDOW_MS, same day.
 *
 * @param {{userId: string, time: number}|null} a
 * @param {{userId: string, time: number}} b
 */
export function groupsWith(a, b) {
  if (!a || !b || !a.userId || a.userId !== b.userId) return false;
  const dt = b.time - a.time;
  if (!(dt >= 0 && dt <= GROUP_WINDOW_MS)) return false;
  return new Date(a.time).toDateString() === new Date(b.time).toDateString();
}

/** relativeTime describes how long ago t was, in words, from now. */
export function relativeTime(t, now) {
  const s = Math.round((now - t) / 1000);
  if (!Number.isFinite(s)) return '';
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  return d === 1 ? 'yesterday' : `${d} days ago`;
}

/**
 * parseRooms validates a GET /api/rooms body: {"rooms":[{"room","seq",
 * "last_activity"}]}. Bad entries are dropped; the list is sorted by latest
 * activity first.
 */
export function parseRooms(body) {
  const list = body && Array.isArray(body.rooms) ? body.rooms : [];
  const out = [];
  for (const r of list) {
    if (!r || !validRoom(r.room)) continue;
    const t = Date.parse(r.last_activity);
    out.push({
      room: r.room,
      seq: Number.isSafeInteger(r.seq) && r.seq >= 0 ? r.seq : 0,
      lastActivity: Number.isFinite(t) ? t : 0,
    });
  }
  return out.sort((a, b) => b.lastActivity - a.lastActivity || a.room.localeCompare(b.room));
}

// ------------------------------------------------------------- presence

/**
 * Rooms with more members than this get no join/leave notices: in a big
 * room they would be most of the timeline.
 */
export const PRESENCE_NOTICE_MAX = 50;

/** parseUser returns {id, name} from a frame's user object, or null. */
export function parseUser(u) {
  if (!u || typeof u !== 'object' || typeof u.id !== 'string' || u.id === '') return null;
  const name = typeof u.name === 'string' && u.name !== '' ? u.name : u.id;
  return { id: u.id, name };
}

function parseUsers(list) {
  if (!Array.isArray(list)) return null;
  const seen = new Set();
  const out = [];
  for (const x of list) {
    const u = parseUser(x);
    if (!u || seen.has(u.id)) continue;
    seen.add(u.id);
    out.push(u);
  }
  return out;
}

/**
 * compareMembers orders members as the gateway does: by name, then by id,
 * comparing code units (not the locale), so every client shows one order.
 */
export function compareMembers(a, b) {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

/**
 * parsePresence validates a `presence` frame (protocol.md). `members` is
 * null when the gateway left it out (a big room: the count is all there is);
 * `joined` and `left` are null when absent (the frame after a join).
 *
 * @returns {{room: string, count: number, members: object[]|null,
 *   joined: object[]|null, left: object[]|null} | null}
 */
export function parsePresence(f) {
  if (!f || typeof f !== 'object' || !validRoom(f.room)) return null;
  const members = parseUsers(f.members);
  if (members) members.sort(compareMembers);
  let count = Number.isSafeInteger(f.count) && f.count >= 0 ? f.count : -1;
  if (count < 0) {
    if (!members) return null;
    count = members.length;
  }
  return { room: f.room, count, members, joined: parseUsers(f.joined), left: parseUsers(f.left) };
}

/**
 * diffMembers returns who is in `next` but not in `prev` (joined) and who is
 * in `prev` but not in `next` (left), by user id.
 */
export function diffMembers(prev, next) {
  const before = new Map(prev.map((u) => [u.id, u]));
  const after = new Map(next.map((u) => [u.id, u]));
  return {
    joined: next.filter((u) => !before.has(u.id)),
    left: prev.filter((u) => !after.has(u.id)),
  };
}

/**
 * listNames joins names for a sentence: "alice", "alice and bob",
 * "alice, bob and carol", and past `max` names "alice, bob and 3 others".
 */
export function listNames(names, max = 3) {
  const n = names.length;
  if (n === 0) return '';
  if (n === 1) return names[0];
  if (n <= max) return `${names.slice(0, -1).join(', ')} and ${names[n - 1]}`;
  const shown = names.slice(0, 2);
  const rest = n - shown.length;
  return `${shown.join(', ')} and ${rest} ${rest === 1 ? 'other' : 'others'}`;
}

/**
 * presenceNoticeText is the one line a timeline shows for who came and went:
 * "alice joined", "alice, bob and 3 others joined", "carol left", or both
 * joined by " · ". Empty when nobody did.
 */
export function presenceNoticeText(joined, left) {
  const parts = [];
  if (joined.length) parts.push(`${listNames(joined.map((u) => u.name))} joined`);
  if (left.length) parts.push(`${listNames(left.map((u) => u.name))} left`);
  return parts.join(' · ');
}

/**
 * PresenceRun collects the comings and goings shown in one timeline notice:
 * the notice stands for everything since the last message, so however many
 * presence frames arrive in between, the timeline gains one line. A user
 * who joins and leaves again within one run cancels out.
 */
export class PresenceRun {
  constructor() {
    /** @type {Map<string, object>} */
    this.joined = new Map();
    /** @type {Map<string, object>} */
    this.left = new Map();
  }

  /** add merges one frame's joined and left users. */
  add(joined, left) {
    for (const u of joined) {
      if (this.left.has(u.id)) this.left.delete(u.id);
      else this.joined.set(u.id, u);
    }
    for (const u of left) {
      if (this.joined.has(u.id)) this.joined.delete(u.id);
      else this.left.set(u.id, u);
    }
  }

  get empty() { return this.joined.size === 0 && this.left.size === 0; }

  text() {
    return presenceNoticeText([...this.joined.values()], [...this.left.values()]);
  }
}

/**
 * RoomPresence is what a client knows of who is in one room. `members` is
 * null while only the count is known (a big room, or nothing yet).
 */
export class RoomPresence {
  constructor() {
    this.count = 0;
    /** @type {object[]|null} */
    this.members = null;
    this.known = false;
    // The next presence frame follows our own join: it is the list as we
    // find it, not news.
    this.baseline = true;
  }

  /** rejoined notes a `joined` frame: the next presence is a baseline. */
  rejoined() {
    this.baseline = true;
  }

  /** reset forgets everything (the connection is gone). */
  reset() {
    this.count = 0;
    this.members = null;
    this.known = false;
    this.baseline = true;
  }

  /**
   * apply takes a parsed presence frame and says who came and went, for a
   * notice: nothing for the frame after a join, nothing in rooms of more
   * than PRESENCE_NOTICE_MAX members, and never the user themself (meId).
   * When both the old and the new list are known they are compared, which
   * stays right even if a frame was missed; otherwise the frame's own
   * joined/left are used.
   *
   * @returns {{joined: object[], left: object[]}}
   */
  apply(p, meId = '') {
    const prev = this.members;
    const wasBaseline = this.baseline || !this.known;
    this.count = p.count;
    this.members = p.members;
    this.known = true;
    this.baseline = false;
    const none = { joined: [], left: [] };
    if (wasBaseline || p.count > PRESENCE_NOTICE_MAX) return none;
    let d;
    if (prev && p.members) d = diffMembers(prev, p.members);
    else d = { joined: p.joined || [], left: p.left || [] };
    const notMe = (u) => u.id !== meId;
    return { joined: d.joined.filter(notMe), left: d.left.filter(notMe) };
  }
}

// --------------------------------------------------------------- typing

/** A typing notice is sent at most this often per room while typing. */
export const TYPING_SEND_EVERY_MS = 3000;
/** The gateway relays at most one typing notice per room this often. */
export const TYPING_RELAY_MIN_MS = 2000;
/** Someone shown as typing is no longer after this without a renewal. */
export const TYPING_EXPIRE_MS = 6000;

/**
 * TypingSender decides when the composer's input becomes a `typing` frame:
 * at most once every TYPING_SEND_EVERY_MS per room, and only for input that
 * leaves some text (clearing the box is not typing). After the user sends
 * a message, the others clear the hint when it arrives, so the next
 * keystroke notifies again as soon as the gateway would relay it
 * (TYPING_RELAY_MIN_MS after the previous notice; sooner it would be
 * dropped, and the hint would wait for the next one).
 */
export class TypingSender {
  constructor() {
    /** @type {Map<string, number>} room -> when the last notice went */
    this.last = new Map();
    /** rooms where a message was sent since the last notice */
    this.sentSince = new Set();
  }

  /** input returns true when a typing frame should be sent now. */
  input(room, hasText, now) {
    if (!hasText) return false;
    const t = this.last.get(room);
    const every = this.sentSince.has(room) ? TYPING_RELAY_MIN_MS : TYPING_SEND_EVERY_MS;
    if (t !== undefined && now - t < every && now >= t) return false;
    this.last.set(room, now);
    this.sentSince.delete(room);
    return true;
  }

  /** messageSent notes that the user sent a message to room. */
  messageSent(room) {
    this.sentSince.add(room);
  }

  /** reset forgets everything (a new connection). */
  reset() {
    this.last.clear();
    this.sentSince.clear();
  }
}

/**
 * TypingState is who is typing in one room, each until TYPING_EXPIRE_MS
 * after their latest notice, or until their message arrives.
 */
export class TypingState {
  constructor() {
    /** @type {Map<string, {name: string, until: number}>} */
    this.users = new Map();
  }

  /** seen records a typing notice from user. It returns false for junk. */
  seen(user, now) {
    const u = parseUser(user);
    if (!u) return false;
    this.users.set(u.id, { name: u.name, until: now + TYPING_EXPIRE_MS });
    return true;
  }

  /** clear drops a user (their message arrived); true if they were shown. */
  clear(userId) {
    return this.users.delete(userId);
  }

  /** reset drops everyone. */
  reset() {
    this.users.clear();
  }

  /** names returns who is typing at now, sorted, dropping the expired. */
  names(now) {
    for (const [id, u] of this.users) if (u.until <= now) this.users.delete(id);
    return [...this.users.values()].map((u) => u.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** nextExpiry returns when the shown list next changes by itself, or 0. */
  nextExpiry() {
    let t = 0;
    for (const u of this.users.values()) if (t === 0 || u.until < t) t = u.until;
    return t;
  }
}

/**
 * typingText is the hint under the messages: "alice is typing…",
 * "alice and bob are typing…", "several people are typing…", or empty.
 */
export function typingText(names) {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'several people are typing…';
}

// --------------------------------------------------------------- unread

/**
 * Unread counts the messages that arrived in rooms while they were not
 * open. Opening a room clears its count.
 */
export class Unread {
  constructor() {
    /** @type {Map<string, number>} */
    this.counts = new Map();
  }

  /**
   * message counts a newly shown message in room, unless the room is the
   * one open or the message is the user's own. It returns the room's count.
   */
  message(room, { current, mine }) {
    if (room === current || mine) return this.get(room);
    const n = this.get(room) + 1;
    this.counts.set(room, n);
    return n;
  }

  get(room) { return this.counts.get(room) || 0; }

  clear(room) { this.counts.delete(room); }

  /** total is the count over every room. */
  total() {
    let n = 0;
    for (const c of this.counts.values()) n += c;
    return n;
  }
}

/** unreadLabel is how a count shows on a badge: "" for none, "99+" past 99. */
export function unreadLabel(n) {
  if (!(n > 0)) return '';
  return n > 99 ? '99+' : String(n);
}

// -------------------------------------------------------------- latency

/** A latency report goes to the gateway this often, when there is one. */
export const LATENCY_REPORT_MS = 5000;
/** Most values per list in one report (the gateway's limit). */
export const MAX_LATENCY_SAMPLES = 50;
/** The clock offset is the median of this many latest estimates. */
export const OFFSET_SAMPLES = 15;
/** The lag shown to the user is the median of this many latest round trips. */
export const LAG_SAMPLES = 10;
/** Largest value the gateway takes, in milliseconds. */
export const MAX_LATENCY_MS = 600000;

/** median returns the median of numbers, or null for none. */
export function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * pickSamples returns at most max values, spread evenly over the list (a
 * fair sample when there are more, not just the first or the last ones).
 */
export function pickSamples(values, max = MAX_LATENCY_SAMPLES) {
  if (values.length <= max) return values.slice();
  const out = [];
  const step = values.length / max;
  for (let i = 0; i < max; i++) out.push(values[Math.floor(i * step)]);
  return out;
}

function round1(v) {
  return Math.round(v * 10) / 10;
}

/**
 * LatencyMeter measures latency as the user feels it (protocol.md,
 * `latency`):
 *
 * - rtt: from sending a message to its own `message` frame arriving;
 * - delivery: from a message's server `ts` to showing it, on the client's
 *   clock. The two clocks differ, so the offset between them is estimated
 *   from the user's own messages: the server stamped `ts` somewhere between
 *   the send and the echo, so offset ≈ ts - (t_send + t_recv) / 2; the
 *   median of the latest OFFSET_SAMPLES estimates is used.
 *
 * Times are milliseconds since the epoch on the client's clock.
 */
export class LatencyMeter {
  constructor() {
    /** @type {Map<string, number>} client_msg_id -> when it was (last) sent */
    this.pending = new Map();
    this.offsets = [];
    this.rtt = [];
    this.delivery = [];
    this.recentRtt = [];
    this.recentDelivery = [];
  }

  /** sent notes that a message went out (again) at t. */
  sent(cmid, t) {
    this.pending.delete(cmid);
    this.pending.set(cmid, t);
    // Messages never echoed (a failed send) must not pile up.
    while (this.pending.size > 500) this.pending.delete(this.pending.keys().next().value);
  }

  /** forget drops a message that will not be measured (failed, deleted). */
  forget(cmid) {
    this.pending.delete(cmid);
  }

  /** offset is the estimated server-minus-client clock offset, or null. */
  get offset() {
    return median(this.offsets);
  }

  /**
   * own takes the user's own message coming back at tRecv, with its server
   * timestamp ts (ms). It returns the round trip, or null when the message
   * was not sent from this page (another tab, a reload).
   */
  own(cmid, ts, tRecv) {
    const tSend = this.pending.get(cmid);
    if (tSend === undefined) return null;
    this.pending.delete(cmid);
    const rtt = tRecv - tSend;
    if (!(rtt >= 0 && rtt <= MAX_LATENCY_MS)) return null;
    if (Number.isFinite(ts)) {
      this.offsets.push(ts - (tSend + tRecv) / 2);
      if (this.offsets.length > OFFSET_SAMPLES) this.offsets.shift();
    }
    this._push(this.rtt, this.recentRtt, rtt);
    return rtt;
  }

  /**
   * shown takes a live message shown at tShown with server timestamp ts
   * (ms) and returns its delivery time, or null while the clock offset is
   * unknown. Small negative results (the offset is an estimate) count as 0.
   */
  shown(ts, tShown) {
    const off = this.offset;
    if (off === null || !Number.isFinite(ts)) return null;
    const d = Math.max(0, tShown - (ts - off));
    if (d > MAX_LATENCY_MS) return null;
    this._push(this.delivery, this.recentDelivery, d);
    return d;
  }

  _push(batch, recent, v) {
    batch.push(v);
    // Keep a bounded batch between reports: a fair sample is drawn from it.
    if (batch.length > 10 * MAX_LATENCY_SAMPLES) batch.splice(0, batch.length - 10 * MAX_LATENCY_SAMPLES);
    recent.push(v);
    if (recent.length > LAG_SAMPLES) recent.shift();
  }

  /**
   * report returns the `latency` frame for what was measured since the last
   * one, and starts a new batch; null when there is nothing to report.
   */
  report() {
    if (this.rtt.length === 0 && this.delivery.length === 0) return null;
    const f = {
      type: 'latency',
      rtt_ms: pickSamples(this.rtt).map(round1),
      delivery_ms: pickSamples(this.delivery).map(round1),
    };
    this.rtt = [];
    this.delivery = [];
    return f;
  }

  /** lag is what the user is shown: recent median rtt and delivery (or null). */
  lag() {
    return { rtt: median(this.recentRtt), delivery: median(this.recentDelivery) };
  }
}

/** formatMs shows a duration for people: "0.4 ms", "12 ms", "1.2 s". */
export function formatMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1) return `${round1(ms)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 1000)} s`;
}

// ---------------------------------------------------------------- tokens

/**
 * tokenInfo reads what a client may know of its JWT without verifying it
 * (the gateway does that): the subject, the name and the expiry (ms since
 * the epoch, 0 if none). It returns null for something that is no JWT.
 */
export function tokenInfo(token) {
  if (typeof token !== 'string' || token.length > 8192) return null;
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p)) || parts[1] === '') return null;
  let claims;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    claims = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
  if (!claims || typeof claims !== 'object' || Array.isArray(claims)) return null;
  return {
    sub: typeof claims.sub === 'string' ? claims.sub : '',
    name: typeof claims.name === 'string' ? claims.name : '',
    exp: Number.isFinite(claims.exp) ? claims.exp * 1000 : 0,
  };
}

/** tokenExpired reports whether info's expiry has passed at now (ms). */
export function tokenExpired(info, now) {
  return !!info && info.exp > 0 && info.exp <= now;
}
