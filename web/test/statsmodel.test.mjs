import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseSnapshot, niceScale, formatCount, formatRate, formatLatency, formatAge, formatUptime,
  latencyLevel, chartWindow, formatSpan,
} from '../statsmodel.js';

const snapshot = {
  time: '2026-11-28T19:20:00Z',
  served_by: 'gw-1',
  gateways: [
    {
      id: 'gw-1', reported_at: '2026-11-28T19:19:58Z', age_ms: 1500, started: '2026-11-28T18:00:00Z',
      interval_ms: 5000, connections: 120, local_rooms: 8, sent: 5000, delivered: 40000,
      sent_per_sec: 12.5, delivered_per_sec: 100, rtt: { count: 30, p50_ms: 12, p99_ms: 80 },
      delivery: { count: 0, p50_ms: null, p99_ms: null },
      rtt_recent: { count: 300, p50_ms: 11, p99_ms: 95 },
    },
    { id: '', connections: 5 },
    'junk',
  ],
  totals: {
    gateways: 1, connections: 120, local_rooms: 8, sent: 5000, delivered: 40000,
    sent_per_sec: 12.5, delivered_per_sec: 100, rtt: { count: 30, p50_ms: 12, p99_ms: 80 },
  },
  busiest_rooms: [{ room: 'general', sends: 40, per_sec: 8 }, { sends: 3 }],
  rate: { step_ms: 5000, start: '2026-11-28T19:15:00Z', sent_per_sec: [1, 2, 3], delivered_per_sec: [4, 5] },
};

test('parseSnapshot keeps what is valid and defaults the rest', () => {
  const s = parseSnapshot(snapshot);
  assert.equal(s.servedBy, 'gw-1');
  assert.equal(s.gateways.length, 1, 'rows without an id are dropped');
  const g = s.gateways[0];
  assert.equal(g.connections, 120);
  assert.equal(g.sentPerSec, 12.5);
  assert.deepEqual(g.rtt, { count: 30, p50: 12, p99: 80 });
  assert.deepEqual(g.delivery, { count: 0, p50: null, p99: null });
  assert.deepEqual(s.totals.delivery, { count: 0, p50: null, p99: null }, 'missing quantiles');
  assert.deepEqual(g.rttRecent, { count: 300, p50: 11, p99: 95 });
  assert.equal(s.recentMs, 60000, 'default span');
  assert.deepEqual(s.busiest, [{ room: 'general', sends: 40, perSec: 8 }]);
  assert.deepEqual(s.rate.sent, [1, 2], 'series cut to equal length');
  assert.equal(s.rate.start, Date.parse('2026-11-28T19:15:00Z'));
  const empty = parseSnapshot(null);
  assert.deepEqual(empty.gateways, []);
  assert.equal(empty.totals.sentPerSec, 0);
  assert.equal(empty.rate.stepMs, 5000);
});

test('niceScale picks round axes', () => {
  assert.deepEqual(niceScale(0), { top: 1, step: 0.5, ticks: [0, 0.5, 1] });
  assert.deepEqual(niceScale(0.3), { top: 0.3, step: 0.1, ticks: [0, 0.1, 0.2, 0.3] });
  assert.deepEqual(niceScale(7), { top: 8, step: 2, ticks: [0, 2, 4, 6, 8] });
  assert.deepEqual(niceScale(100), { top: 100, step: 50, ticks: [0, 50, 100] });
  const s = niceScale(1234);
  assert.equal(s.step, 500);
  assert.equal(s.top, 1500);
  assert.ok(s.top >= 1234);
});

test('formatting', () => {
  assert.equal(formatCount(950), '950');
  assert.equal(formatCount(12345), '12k');
  assert.equal(formatCount(1500), '1.5k');
  assert.equal(formatCount(4.5e6), '4.5M');
  assert.equal(formatRate(0), '0');
  assert.equal(formatRate(0.44), '0.4');
  assert.equal(formatRate(12.3), '12');
  assert.equal(formatRate(null), '–');
  assert.equal(formatLatency(null), '–');
  assert.equal(formatLatency(0.83), '0.8 ms');
  assert.equal(formatLatency(123.4), '123 ms');
  assert.equal(formatLatency(1500), '1.5 s');
  assert.equal(formatAge(400), 'now');
  assert.equal(formatAge(3500), '3s');
  assert.equal(formatAge(150000), '2m');
  assert.equal(formatUptime(3 * 3600e3 + 5 * 60e3), '3h 5m');
  assert.equal(formatUptime(50 * 3600e3), '2d 2h');
  assert.equal(formatSpan(60000), 'last minute');
  assert.equal(formatSpan(300000), 'last 5 minutes');
  assert.equal(formatSpan(30000), 'last 30 s');
  assert.equal(latencyLevel(null), '');
  assert.equal(latencyLevel(10), 'good');
  assert.equal(latencyLevel(500), 'fair');
  assert.equal(latencyLevel(5000), 'poor');
});

test('chartWindow places each step at its middle and keeps the last span', () => {
  const rate = { stepMs: 1000, start: 0, sent: [1, 2, 3, 4], delivered: [5, 6, 7, 8] };
  assert.deepEqual(chartWindow(rate, 60000).map((p) => p.t), [500, 1500, 2500, 3500]);
  assert.deepEqual(chartWindow(rate, 2000).map((p) => p.sent), [2, 3, 4]);
  assert.deepEqual(chartWindow({ ...rate, sent: [], delivered: [] }, 1000), []);
});
