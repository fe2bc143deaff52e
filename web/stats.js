// stats.js: the /stats page. It polls GET /api/stats and draws the cluster:
// totals, the message rate over the last minutes (a canvas chart drawn
// here, no library), every gateway, the busiest rooms. The logic that needs
// no DOM is in statsmodel.js.
//
// Like the chat client it runs under a strict Content-Security-Policy: no
// inline script or style attributes, and names (gateways, rooms) reach the
// page only as text.

import {
  POLL_MS, parseSnapshot, niceScale, formatCount, formatRate, formatLatency, formatAge,
  formatUptime, latencyLevel, chartWindow, formatSpan,
} from './statsmodel.js';

const CHART_SPAN_MS = 5 * 60 * 1000;
const $ = (id) => document.getElementById(id);

function h(tag, cls, ...children) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  for (const c of children) {
    if (c === null || c === undefined) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function bar(fraction) {
  const fill = h('span');
  fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return h('div', 'bar', fill);
}

const P = {
  snap: null,
  lastOk: 0,
  failures: 0,
  timer: 0,
  hover: null, // pointer x on the chart, in CSS pixels
};

// ------------------------------------------------------------------ poll

async function poll() {
  clearTimeout(P.timer);
  const ctl = new AbortController();
  const abort = setTimeout(() => ctl.abort(), POLL_MS * 2);
  try {
    const res = await fetch('/api/stats', { cache: 'no-store', headers: { Accept: 'application/json' }, signal: ctl.signal });
    if (res.status === 404) {
      setStatus('error', 'Not available');
      setText('served-by', '–');
      $('chart-empty').textContent = 'This server does not publish cluster statistics.';
      $('chart-empty').hidden = false;
      P.timer = setTimeout(poll, POLL_MS * 5);
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    P.snap = parseSnapshot(await res.json());
    P.lastOk = Date.now();
    P.failures = 0;
    render();
  } catch (err) {
    P.failures++;
    const age = P.lastOk ? formatAge(Date.now() - P.lastOk) : '';
    setStatus(P.snap ? 'stale' : 'error', P.snap ? `Stale · ${age}` : `Unreachable (${err.message || err})`);
  } finally {
    clearTimeout(abort);
  }
  P.timer = setTimeout(poll, POLL_MS);
}

function setStatus(state, text) {
  $('stats-status').dataset.state = state;
  setText('status-text', text);
}

// ---------------------------------------------------------------- render

function render() {
  const s = P.snap;
  const t = s.totals;
  setStatus(s.gateways.length ? 'live' : 'stale', s.gateways.length ? 'Live' : 'No reports');
  setText('served-by', s.servedBy || '–');
  setText('updated', new Date(s.time || Date.now()).toLocaleTimeString());

  setText('kpi-rate', formatRate(t.sentPerSec));
  setText('kpi-rate-sub', `${formatCount(t.sent)} sent in total`);
  setText('kpi-delivery-rate', formatRate(t.deliveredPerSec));
  setText('kpi-fanout', t.sentPerSec > 0
    ? `fan-out ×${(t.deliveredPerSec / t.sentPerSec).toFixed(1)}`
    : `${formatCount(t.delivered)} delivered in total`);
  setText('kpi-connections', formatCount(t.connections));
  setText('kpi-rooms', `${formatCount(t.rooms)} local rooms`);
  setText('kpi-gateways', String(t.gateways));
  const late = s.gateways.filter((g) => g.intervalMs && g.ageMs > 1.5 * g.intervalMs).length;
  setText('kpi-gateways-sub', late ? `${late} reporting late` : 'all reporting');
  latencyKpi('rtt', t.rttRecent, s.recentMs);
  latencyKpi('delivery', t.deliveryRecent, s.recentMs);

  renderGateways(s);
  renderRooms(s);
  drawChart();
}

function latencyKpi(name, q, spanMs) {
  for (const k of ['p50', 'p99']) {
    const el = $(`kpi-${name}-${k}`);
    el.textContent = formatLatency(q[k]);
    el.dataset.level = latencyLevel(q[k]);
  }
  const span = formatSpan(spanMs);
  setText(`kpi-${name}-sub`, q.count ? `${formatCount(q.count)} samples, ${span}` : `no samples, ${span}`);
}

function renderGateways(s) {
  const maxConns = Math.max(1, ...s.gateways.map((g) => g.connections));
  const total = Math.max(1, s.totals.connections);
  const rows = s.gateways.map((g) => {
    const tr = document.createElement('tr');
    tr.dataset.gateway = g.id;
    tr.dataset.fresh = g.intervalMs && g.ageMs > 1.5 * g.intervalMs ? 'late' : 'ok';
    const id = h('span', 'gw-id', h('span', 'gw-dot'), g.id);
    if (g.id === s.servedBy) id.append(h('span', 'gw-self', 'this'));
    const share = h('td', 'share-col', bar(g.connections / maxConns));
    share.title = `${Math.round((100 * g.connections) / total)}% of connections`;
    const pair = (q) => {
      const td = h('td', 'num');
      const a = h('span', '', formatLatency(q.p50));
      const b = h('span', '', formatLatency(q.p99));
      a.dataset.level = latencyLevel(q.p50);
      b.dataset.level = latencyLevel(q.p99);
      td.append(a, h('span', 'dim', ' / '), b);
      return td;
    };
    tr.append(
      h('td', '', id),
      h('td', 'num', formatCount(g.connections)),
      share,
      h('td', 'num', formatCount(g.rooms)),
      h('td', 'num', formatRate(g.sentPerSec)),
      h('td', 'num', formatRate(g.deliveredPerSec)),
      h('td', 'num', formatCount(g.sent)),
      pair(g.rttRecent),
      pair(g.deliveryRecent),
      h('td', 'num dim', g.started ? formatUptime(Date.now() - g.started) : '–'),
      h('td', 'num dim', g.ageMs < 1000 ? 'just now' : `${formatAge(g.ageMs)} ago`),
    );
    return tr;
  });
  $('gateways').tBodies[0].replaceChildren(...rows);
  $('gateways-empty').hidden = rows.length > 0;
  setText('gateways-count', `${s.gateways.length} reporting`);
}

function renderRooms(s) {
  const top = Math.max(1, ...s.busiest.map((r) => r.sends));
  const items = s.busiest.map((r) => {
    const li = h('li', '', h('span', 'room-name', r.room),
      h('span', 'room-rate', `${formatRate(r.perSec)}/s · ${formatCount(r.sends)}`), bar(r.sends / top));
    li.dataset.room = r.room;
    li.title = `#${r.room}: ${r.sends} messages in the last interval`;
    return li;
  });
  $('busiest').replaceChildren(...items);
  $('busiest-empty').hidden = items.length > 0;
}

// ----------------------------------------------------------------- chart

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** drawChart draws messages/s and deliveries/s over the last minutes. */
function drawChart() {
  const canvas = $('rate-chart');
  const box = $('chart-box');
  const w = box.clientWidth;
  const hgt = box.clientHeight;
  if (!w || !hgt) return;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);

  const pts = P.snap ? chartWindow(P.snap.rate, CHART_SPAN_MS) : [];
  $('chart-empty').hidden = pts.length >= 2 || !P.snap;
  const pad = { l: 48, r: 14, t: 12, b: 26 };
  const pw = w - pad.l - pad.r;
  const ph = hgt - pad.t - pad.b;
  const max = Math.max(0, ...pts.map((p) => Math.max(p.sent, p.delivered)));
  const scale = niceScale(max || 1);
  const end = pts.length ? pts[pts.length - 1].t : Date.now();
  const start = end - CHART_SPAN_MS;
  const x = (t) => pad.l + ((t - start) / CHART_SPAN_MS) * pw;
  const y = (v) => pad.t + ph - (v / scale.top) * ph;

  const grid = cssVar('--grid');
  const muted = cssVar('--muted');
  ctx.font = `11px ${cssVar('--mono')}`;
  ctx.lineWidth = 1;
  // Horizontal grid and y labels.
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const v of scale.ticks) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.strokeStyle = grid;
    ctx.beginPath();
    ctx.moveTo(pad.l, yy);
    ctx.lineTo(w - pad.r, yy);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.fillText(formatRate(v), pad.l - 8, yy);
  }
  // Minute marks.
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let m = 0; m <= 5; m++) {
    const xx = Math.round(x(end - m * 60000)) + 0.5;
    ctx.strokeStyle = grid;
    ctx.beginPath();
    ctx.moveTo(xx, pad.t);
    ctx.lineTo(xx, pad.t + ph);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.fillText(m === 0 ? 'now' : `-${m}m`, xx, pad.t + ph + 7);
  }
  if (pts.length < 2) return;

  const line = (key, color, fill) => {
    ctx.beginPath();
    pts.forEach((p, i) => {
      const px = x(p.t);
      const py = y(p[key]);
      if (i === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
    });
    if (fill) {
      ctx.save();
      ctx.lineTo(x(pts[pts.length - 1].t), y(0));
      ctx.lineTo(x(pts[0].t), y(0));
      ctx.closePath();
      const g = ctx.createLinearGradient(0, pad.t, 0, pad.t + ph);
      g.addColorStop(0, fill);
      g.addColorStop(1, 'rgba(0,0,0,0)');
      ctx.fillStyle = g;
      ctx.fill();
      ctx.restore();
      ctx.beginPath();
      pts.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p[key])) : ctx.lineTo(x(p.t), y(p[key]))));
    }
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    ctx.stroke();
    ctx.lineWidth = 1;
  };
  const green = cssVar('--green');
  const accent = cssVar('--accent');
  line('delivered', green, null);
  line('sent', accent, cssVar('--accent-fill'));

  // The latest values, as dots at the right end.
  const last = pts[pts.length - 1];
  for (const [key, color] of [['delivered', green], ['sent', accent]]) {
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(x(last.t), y(last[key]), 3, 0, 2 * Math.PI);
    ctx.fill();
  }

  // Hover: a crosshair and the values at that time.
  const tip = $('chart-tip');
  if (P.hover === null) {
    tip.hidden = true;
    return;
  }
  let best = pts[0];
  for (const p of pts) if (Math.abs(x(p.t) - P.hover) < Math.abs(x(best.t) - P.hover)) best = p;
  const bx = Math.round(x(best.t)) + 0.5;
  ctx.strokeStyle = muted;
  ctx.setLineDash([3, 3]);
  ctx.beginPath();
  ctx.moveTo(bx, pad.t);
  ctx.lineTo(bx, pad.t + ph);
  ctx.stroke();
  ctx.setLineDash([]);
  tip.replaceChildren(
    h('div', '', new Date(best.t).toLocaleTimeString()),
    h('div', '', 'msg/s ', h('b', '', formatRate(best.sent))),
    h('div', '', 'deliv/s ', h('b', '', formatRate(best.delivered))),
  );
  tip.hidden = false;
  const tw = tip.offsetWidth;
  tip.style.left = `${Math.min(w - tw - 4, Math.max(4, bx + 10))}px`;
}

// ------------------------------------------------------------------ boot

function boot() {
  const box = $('chart-box');
  new ResizeObserver(() => drawChart()).observe(box);
  box.addEventListener('pointermove', (ev) => {
    const r = box.getBoundingClientRect();
    P.hover = ev.clientX - r.left;
    drawChart();
  });
  box.addEventListener('pointerleave', () => {
    P.hover = null;
    drawChart();
  });
  // A hidden tab need not poll; it catches up when shown.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') poll();
    else clearTimeout(P.timer);
  });
  poll();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
