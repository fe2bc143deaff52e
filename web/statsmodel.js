// statsmodel.js: the pure logic of the /stats page (no DOM, no network), so
// that it can be tested under Node. stats.js draws what this computes.
//
// The data is GET /api/stats (internal/stats.Snapshot): every gateway's
// latest report, the cluster's totals, the busiest rooms and the message
// rate history.

/** The page polls /api/stats this often. */
export const POLL_MS = 2000;

const num = (v, d = 0) => (typeof v === 'number' && Number.isFinite(v) ? v : d);
const numOrNull = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v) => (typeof v === 'string' ? v : '');
const time = (v) => {
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : 0;
};

function quantiles(q) {
  const o = q && typeof q === 'object' ? q : {};
  return { count: num(o.count), p50: numOrNull(o.p50_ms), p99: numOrNull(o.p99_ms) };
}

/**
 * parseSnapshot turns a GET /api/stats body into what the page shows, with
 * defaults for anything missing or malformed, so a partial answer draws a
 * partial dashboard rather than none.
 */
export function parseSnapshot(body) {
  const b = body && typeof body === 'object' ? body : {};
  const t = b.totals && typeof b.totals === 'object' ? b.totals : {};
  const r = b.rate && typeof b.rate === 'object' ? b.rate : {};
  const list = (v) => (Array.isArray(v) ? v.filter((x) => x && typeof x === 'object') : []);
  const series = (v) => (Array.isArray(v) ? v.map((x) => num(x)) : []);
  const gateways = list(b.gateways).map((g) => ({
    id: str(g.id),
    reportedAt: time(g.reported_at),
    ageMs: num(g.age_ms),
    started: time(g.started),
    intervalMs: num(g.interval_ms),
    connections: num(g.connections),
    rooms: num(g.local_rooms),
    sent: num(g.sent),
    delivered: num(g.delivered),
    sentPerSec: numOrNull(g.sent_per_sec),
    deliveredPerSec: numOrNull(g.delivered_per_sec),
    rtt: quantiles(g.rtt),
    delivery: quantiles(g.delivery),
    rttRecent: quantiles(g.rtt_recent),
    deliveryRecent: quantiles(g.delivery_recent),
  })).filter((g) => g.id !== '');
  const sent = series(r.sent_per_sec);
  const delivered = series(r.delivered_per_sec);
  const n = Math.min(sent.length, delivered.length);
  return {
    time: time(b.time),
    servedBy: str(b.served_by),
    recentMs: num(b.recent_ms, 60000),
    gateways,
    totals: {
      gateways: num(t.gateways, gateways.length),
      connections: num(t.connections),
      rooms: num(t.local_rooms),
      sent: num(t.sent),
      delivered: num(t.delivered),
      sentPerSec: num(t.sent_per_sec),
      deliveredPerSec: num(t.delivered_per_sec),
      rtt: quantiles(t.rtt),
      delivery: quantiles(t.delivery),
      rttRecent: quantiles(t.rtt_recent),
      deliveryRecent: quantiles(t.delivery_recent),
    },
    busiest: list(b.busiest_rooms).map((x) => ({
      room: str(x.room), sends: num(x.sends), perSec: num(x.per_sec),
    })).filter((x) => x.room !== ''),
    rate: {
      stepMs: Math.max(1, num(r.step_ms, 5000)),
      start: time(r.start),
      sent: sent.slice(0, n),
      delivered: delivered.slice(0, n),
    },
  };
}

/**
 * niceScale picks a y axis for values up to max: a round top and about
 * `count` round steps (1, 2 or 5 times a power of ten).
 *
 * @returns {{top: number, step: number, ticks: number[]}}
 */
export function niceScale(max, count = 4) {
  const m = max > 0 && Number.isFinite(max) ? max : 1;
  const raw = m / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const f = raw / pow;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * pow;
  const top = Number((Math.ceil(m / step - 1e-9) * step).toPrecision(12));
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { top, step, ticks };
}

/** formatCount shows a count compactly: 950, 12.3k, 4.5M. */
export function formatCount(n) {
  const v = num(n);
  const a = Math.abs(v);
  if (a < 1000) return String(Math.round(v));
  if (a < 1e6) return `${trim(v / 1e3)}k`;
  if (a < 1e9) return `${trim(v / 1e6)}M`;
  return `${trim(v / 1e9)}G`;
}

function trim(v) {
  return Math.abs(v) < 10 ? v.toFixed(1).replace(/\.0$/, '') : String(Math.round(v));
}

/** formatRate shows a per-second rate: "0", "0.4", "12", "1.2k". */
export function formatRate(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (v === 0) return '0';
  if (Math.abs(v) < 10) return v.toFixed(1).replace(/\.0$/, '');
  return formatCount(v);
}

/** formatLatency shows milliseconds: "–" when unknown, "0.8 ms", "12 ms", "1.5 s". */
export function formatLatency(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 10) return `${ms.toFixed(1).replace(/\.0$/, '')} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1).replace(/\.0$/, '')} s`;
}

/** formatSpan names a span of time: "last minute", "last 5 minutes", "last 30 s". */
export function formatSpan(ms) {
  const s = Math.round(num(ms) / 1000);
  if (s === 60) return 'last minute';
  if (s > 60 && s % 60 === 0) return `last ${s / 60} minutes`;
  return `last ${s} s`;
}

/** formatAge says how long ago, briefly: "now", "3s", "2m", "1h". */
export function formatAge(ms) {
  const s = Math.floor(num(ms) / 1000);
  if (s < 1) return 'now';
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h`;
}

/** formatUptime says how long since started (ms), to the largest unit or two. */
export function formatUptime(ms) {
  const s = Math.floor(num(ms) / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** latencyLevel grades a latency for colour: good, fair or poor (or ''). */
export function latencyLevel(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '';
  return ms < 250 ? 'good' : ms < 1000 ? 'fair' : 'poor';
}

/**
 * chartWindow cuts a rate series to the last `spanMs` and returns its points
 * as {t, sent, delivered}, t being the middle of each step (ms).
 */
export function chartWindow(rate, spanMs) {
  const out = [];
  const n = rate.sent.length;
  for (let i = 0; i < n; i++) {
    const t = rate.start + (i + 0.5) * rate.stepMs;
    out.push({ t, sent: rate.sent[i], delivered: rate.delivered[i] });
  }
  if (!out.length) return out;
  const end = out[out.length - 1].t;
  return out.filter((p) => p.t >= end - spanMs);
}
