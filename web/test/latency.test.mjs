import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LatencyMeter, median, pickSamples, formatMs, MAX_LATENCY_SAMPLES, OFFSET_SAMPLES,
} from '../protocol.js';

test('median and even sampling', () => {
  assert.equal(median([]), null);
  assert.equal(median([3]), 3);
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  const list = Array.from({ length: 200 }, (_, i) => i);
  const s = pickSamples(list, 50);
  assert.equal(s.length, 50);
  assert.equal(s[0], 0);
  assert.equal(s[49], 196, 'spread over the whole list, not its start');
  assert.deepEqual(pickSamples([1, 2], 50), [1, 2]);
});

test('round trip from own messages; others are not measured', () => {
  const m = new LatencyMeter();
  m.sent('c-1', 1000);
  assert.equal(m.own('c-1', 1006, 1012), 12);
  assert.equal(m.own('c-1', 1006, 1020), null, 'measured once');
  assert.equal(m.own('c-other-tab', 1006, 1020), null, 'not sent from this page');
  m.sent('c-2', 2000);
  m.sent('c-2', 2500); // resent after a reconnect: the last send counts
  assert.equal(m.own('c-2', 2504, 2508), 8);
  assert.deepEqual(m.lag().rtt, 10);
});

test('the clock offset is the median of ts - (t_send + t_recv) / 2', () => {
  const m = new LatencyMeter();
  assert.equal(m.offset, null);
  // The server clock is 5000 ms ahead; the server stamps in the middle.
  for (let i = 0; i < 5; i++) {
    const t = 10000 * (i + 1);
    m.sent(`c-${i}`, t);
    m.own(`c-${i}`, t + 5000 + 10, t + 20);
  }
  // One outlier (the server stamped late) does not move the median.
  m.sent('c-x', 90000);
  m.own('c-x', 90000 + 5000 + 400, 90000 + 420);
  assert.equal(m.offset, 5000);
});

test('offset estimates are bounded to the latest ones', () => {
  const m = new LatencyMeter();
  for (let i = 0; i < OFFSET_SAMPLES + 5; i++) {
    const off = i < 5 ? -9999 : 100; // old estimates before the clock was fixed
    m.sent(`c-${i}`, i * 1000);
    m.own(`c-${i}`, i * 1000 + 10 + off, i * 1000 + 20);
  }
  assert.equal(m.offset, 100);
});

test('delivery is corrected for the clock offset', () => {
  const m = new LatencyMeter();
  assert.equal(m.shown(1000, 2000), null, 'unknown offset: not measured');
  m.sent('c-1', 0);
  m.own('c-1', -3000 + 5, 10); // server clock 3000 ms behind
  // A message stamped at server time 7000 (client time 10000), shown at 10004.
  assert.equal(m.shown(7000, 10004), 4);
  // Estimation noise never makes a negative delivery.
  assert.equal(m.shown(7010, 10004), 0);
});

test('reports: at most 50 values per list, then a new batch', () => {
  const m = new LatencyMeter();
  assert.equal(m.report(), null, 'nothing to report');
  for (let i = 0; i < 120; i++) {
    m.sent(`c-${i}`, i * 100);
    m.own(`c-${i}`, i * 100 + 5, i * 100 + 10.04);
  }
  m.shown(1000, 1200);
  const f = m.report();
  assert.equal(f.type, 'latency');
  assert.equal(f.rtt_ms.length, MAX_LATENCY_SAMPLES);
  assert.ok(f.rtt_ms.every((v) => v === 10), `rounded to 0.1 ms: ${f.rtt_ms.slice(0, 3)}`);
  assert.equal(f.delivery_ms.length, 1);
  assert.equal(m.report(), null, 'the batch was taken');
  assert.ok(Math.abs(m.lag().rtt - 10.04) < 1e-6, 'the lag shown outlives the report');
});

test('absurd round trips are not measured', () => {
  const m = new LatencyMeter();
  m.sent('c-1', 1000);
  assert.equal(m.own('c-1', 0, 900), null, 'negative');
  m.sent('c-2', 0);
  assert.equal(m.own('c-2', 0, 700000), null, 'over ten minutes');
  assert.equal(m.report(), null);
});

test('the pending sends are bounded', () => {
  const m = new LatencyMeter();
  for (let i = 0; i < 2000; i++) m.sent(`c-${i}`, i);
  assert.ok(m.pending.size <= 500);
  assert.equal(m.own('c-1999', 0, 2000), 1);
});

test('formatMs', () => {
  assert.equal(formatMs(null), '–');
  assert.equal(formatMs(0.42), '0.4 ms');
  assert.equal(formatMs(12.4), '12 ms');
  assert.equal(formatMs(999.4), '999 ms');
  assert.equal(formatMs(1234), '1.2 s');
  assert.equal(formatMs(45678), '46 s');
});
