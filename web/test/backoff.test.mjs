import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, reconnectPlan, retryDelay, closeCodeText } from '../protocol.js';

const almostOne = () => 0.999999;
const zero = () => 0;

test('full jitter: random(0, min(30s, 0.5s * 2^attempt))', () => {
  const caps = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  caps.forEach((cap, attempt) => {
    assert.equal(backoffDelay(attempt, zero), 0);
    assert.equal(backoffDelay(attempt, almostOne), cap - 1, `attempt ${attempt}`);
  });
  assert.equal(backoffDelay(1000, almostOne), 29999, 'huge attempts stay capped');
  assert.equal(backoffDelay(-3, almostOne), 499);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(3);
    assert.ok(d >= 0 && d < 4000);
  }
});

test('retryable close codes back off with a growing attempt', () => {
  for (const code of [1001, 1006, 1011, 1013, 1000, 4000]) {
    let attempt = 0;
    for (let i = 0; i < 5; i++) {
      const p = reconnectPlan(code, { attempt, uptimeMs: 500, rand: almostOne });
      assert.equal(p.retry, true, `code ${code}`);
      assert.equal(p.delay, Math.min(30000, 500 * 2 ** i) - 1);
      assert.equal(p.attempt, attempt + 1);
      attempt = p.attempt;
    }
  }
});

test('a connection that lasted over 10 s resets the attempt', () => {
  const p = reconnectPlan(1006, { attempt: 7, uptimeMs: 10001, rand: almostOne });
  assert.equal(p.delay, 499);
  assert.equal(p.attempt, 1);
  const q = reconnectPlan(1006, { attempt: 7, uptimeMs: 9999, rand: almostOne });
  assert.equal(q.delay, 29999);
  assert.equal(q.attempt, 8);
});

test('1008 does not retry', () => {
  const p = reconnectPlan(1008, { attempt: 0, uptimeMs: 60000, rand: almostOne });
  assert.equal(p.retry, false);
});

test('1012 reconnects within a second', () => {
  for (let i = 0; i < 200; i++) {
    const p = reconnectPlan(1012, { attempt: 0, uptimeMs: 60000 });
    assert.ok(p.retry);
    assert.ok(p.delay >= 0 && p.delay < 1000, `delay ${p.delay}`);
  }
  // Even right after a reconnect, as long as it has not failed repeatedly.
  assert.ok(reconnectPlan(1012, { attempt: 2, uptimeMs: 100, rand: almostOne }).delay < 1000);
  // A gateway that keeps restarting under us falls back to backoff.
  assert.equal(reconnectPlan(1012, { attempt: 5, uptimeMs: 100, rand: almostOne }).delay, 15999);
});

test('send retry delay grows, keeps at least half, caps at 30 s', () => {
  assert.equal(retryDelay(0, zero), 500);
  assert.equal(retryDelay(0, almostOne), 999);
  assert.equal(retryDelay(3, zero), 4000);
  assert.equal(retryDelay(20, almostOne), 29999);
});

test('close code text', () => {
  assert.match(closeCodeText(1008), /policy/);
  assert.match(closeCodeText(4321), /4321/);
});
