import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomTimeline, REQUEST_TIMEOUT_MS } from '../protocol.js';

const E = 'k3x9';
const msg = (seq, extra = {}) => ({
  type: 'message', room: 'general', epoch: E, seq, id: `id${seq}`,
  user: { id: 'g_a', name: 'alice' }, text: `m${seq}`, ts: '2026-11-28T19:20:01.123Z', ...extra,
});
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const joined = (seqs, extra = {}) => ({
  type: 'joined', room: 'general', epoch: E, seq: seqs.length ? seqs[seqs.length - 1] : 0,
  messages: seqs.map((s) => msg(s)), ...extra,
});
const seqsOf = (tl) => tl.messages().map((m) => m.seq);

function clock(start = 1000) {
  const c = { t: start, now: () => c.t };
  return c;
}

test('a plain join shows the newest messages and asks nothing', () => {
  const tl = new RoomTimeline('general');
  assert.deepEqual(tl.joinFrame(), { type: 'join', room: 'general' }, 'no since before a first join');
  const ch = tl.applyJoined(joined(range(8, 57)));
  assert.deepEqual(ch.added.map((m) => m.seq), range(8, 57));
  assert.deepEqual(ch.requests, []);
  assert.equal(tl.epoch, E);
  assert.equal(tl.contig, 57);
  assert.equal(tl.top, 57);
  assert.equal(tl.lowest, 8);
  assert.equal(tl.atStart, false);
  assert.deepEqual(tl.joinFrame(), { type: 'join', room: 'general', since: 57, epoch: E });
});

test('live messages append; a repeated seq is dropped', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 3)));
  assert.equal(tl.atStart, true, 'seq 1 shown: nothing older');
  let ch = tl.applyMessage(msg(4));
  assert.deepEqual(ch.added.map((m) => m.seq), [4]);
  ch = tl.applyMessage(msg(4, { text: 'dup' }));
  assert.deepEqual(ch.added, []);
  assert.equal(ch.dropped, 1);
  assert.equal(tl.get(4).text, 'm4', 'the first copy stays');
  ch = tl.applyMessage(msg(2));
  assert.equal(ch.dropped, 1);
  assert.deepEqual(seqsOf(tl), [1, 2, 3, 4]);
});

test('a seq jump asks history after the last contiguous seq, once', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(30, 41)));
  let ch = tl.applyMessage(msg(43));
  assert.deepEqual(ch.added.map((m) => m.seq), [43]);
  assert.deepEqual(ch.requests, [{ type: 'history', room: 'general', after: 41, limit: 100 }]);
  ch = tl.applyMessage(msg(44));
  assert.deepEqual(ch.requests, [], 'one fill at a time');
  assert.equal(tl.contig, 41);
  ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 44, messages: [msg(42), msg(43), msg(44)] });
  assert.deepEqual(ch.added.map((m) => m.seq), [42], 'only the missing one is new');
  assert.equal(ch.dropped, 2);
  assert.equal(tl.contig, 44);
  assert.deepEqual(ch.requests, []);
  assert.deepEqual(seqsOf(tl), range(30, 44));
  assert.equal(tl.joinFrame().since, 44);
});

test('resume uses the highest seq without a hole before it', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 41)));
  tl.applyMessage(msg(45));
  assert.equal(tl.highest, 45);
  assert.deepEqual(tl.joinFrame(), { type: 'join', room: 'general', since: 41, epoch: E });
});

test('a hole larger than a page is filled page by page', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined([10]));
  let ch = tl.applyMessage(msg(250));
  assert.equal(ch.requests[0].after, 10);
  ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 250, messages: range(11, 110).map((s) => msg(s)) });
  assert.deepEqual(ch.requests, [{ type: 'history', room: 'general', after: 110, limit: 100 }]);
  ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 250, messages: range(111, 210).map((s) => msg(s)) });
  assert.equal(ch.requests[0].after, 210);
  ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 250, messages: range(211, 250).map((s) => msg(s)) });
  assert.deepEqual(ch.requests, []);
  assert.deepEqual(seqsOf(tl), range(10, 250));
  assert.equal(tl.contig, 250);
});

test('answers out of order are matched to their requests and merged in seq order', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(51, 100)));
  const older = tl.olderRequest();
  assert.deepEqual(older, { type: 'history', room: 'general', before: 51, limit: 50 });
  assert.equal(tl.olderRequest(), null, 'one scrollback page at a time');
  assert.ok(tl.loadingOlder);
  const fill = tl.applyMessage(msg(105)).requests[0];
  assert.equal(fill.after, 100);
  // The fill answers first, then the scrollback page.
  let ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 105, messages: range(101, 105).map((s) => msg(s)) });
  assert.deepEqual(ch.added.map((m) => m.seq), range(101, 104));
  assert.ok(tl.loadingOlder, 'the scrollback request is still open');
  ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 105, messages: range(1, 50).map((s) => msg(s)) });
  assert.deepEqual(ch.added.map((m) => m.seq), range(1, 50));
  assert.ok(!tl.loadingOlder);
  assert.deepEqual(seqsOf(tl), range(1, 105));
  assert.equal(tl.atStart, true);
  assert.equal(tl.olderRequest(), null);
});

test('scrollback stops on an empty page', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(20, 30)));
  assert.equal(tl.olderRequest().before, 20);
  tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 30, messages: range(10, 19).map((s) => msg(s)) });
  assert.equal(tl.atStart, false);
  assert.equal(tl.olderRequest().before, 10);
  const ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 30, messages: [] });
  assert.deepEqual(ch.added, []);
  assert.equal(tl.atStart, true);
  assert.equal(tl.olderRequest(), null);
});

test('an empty scrollback page and an empty fill are told apart by order', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(20, 30)));
  tl.olderRequest();
  tl.applyMessage(msg(32));
  // Both come back empty: the first answers the first request (before 20).
  let ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 32, messages: [] });
  assert.equal(tl.atStart, true);
  assert.deepEqual(ch.notices, []);
  ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 32, messages: [] });
  assert.deepEqual(ch.notices, ['missed'], 'seq 31 is gone');
  assert.equal(tl.contig, 32);
  assert.deepEqual(ch.requests, [], 'and is not asked for again');
});

test('a fill answer that skips seqs steps over them', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 10)));
  tl.applyMessage(msg(20));
  const ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 20, messages: range(15, 19).map((s) => msg(s)) });
  assert.deepEqual(ch.notices, ['missed']);
  assert.equal(tl.contig, 20);
  assert.deepEqual(ch.requests, []);
});

test('a message from another epoch starts the view afresh', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 57)));
  const ch = tl.applyMessage(msg(3, { epoch: 'new1' }));
  assert.equal(ch.reset, true);
  assert.deepEqual(ch.notices, ['epoch']);
  assert.deepEqual(ch.added.map((m) => m.seq), [3]);
  assert.deepEqual(ch.requests, [], 'older messages of the new epoch are scrollback, not a hole');
  assert.equal(tl.epoch, 'new1');
  assert.deepEqual(seqsOf(tl), [3]);
  assert.equal(tl.contig, 3);
  assert.deepEqual(tl.joinFrame(), { type: 'join', room: 'general', since: 3, epoch: 'new1' });
  assert.equal(tl.olderRequest().before, 3);
  // Old-epoch stragglers are not mixed in; seq 4 of the new epoch follows.
  assert.deepEqual(tl.applyMessage(msg(4, { epoch: 'new1' })).added.map((m) => m.seq), [4]);
});

test('a first message in a room that had no epoch is adopted quietly', () => {
  const tl = new RoomTimeline('general');
  const ch0 = tl.applyJoined({ type: 'joined', room: 'general', epoch: '', seq: 0, messages: [] });
  assert.equal(tl.atStart, true);
  assert.deepEqual(ch0.requests, []);
  const ch = tl.applyMessage(msg(1));
  assert.equal(ch.reset, false);
  assert.deepEqual(ch.notices, []);
  assert.equal(tl.epoch, E);
  assert.deepEqual(seqsOf(tl), [1]);
});

test('resume: recovered:true merges, more:true fetches the rest', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 41)));
  const frame = tl.joinFrame();
  assert.deepEqual(frame, { type: 'join', room: 'general', since: 41, epoch: E });
  tl.connectionLost();
  const ch = tl.applyJoined({
    type: 'joined', room: 'general', epoch: E, seq: 300, recovered: true, more: true,
    messages: range(42, 141).map((s) => msg(s)),
  });
  assert.equal(ch.reset, false);
  assert.deepEqual(ch.notices, []);
  assert.deepEqual(ch.added.map((m) => m.seq), range(42, 141));
  assert.deepEqual(ch.requests, [{ type: 'history', room: 'general', after: 141, limit: 100 }]);
});

test('resume: more:true is honoured even when the joined seq is stale', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 5)));
  const ch = tl.applyJoined({ type: 'joined', room: 'general', epoch: E, seq: 6, recovered: true, more: true, messages: [msg(6)] });
  assert.deepEqual(ch.requests, [{ type: 'history', room: 'general', after: 6, limit: 100 }]);
  // The answer is empty: nothing more, and nothing counted as missed.
  const ch2 = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 6, messages: [] });
  assert.deepEqual(ch2.notices, []);
  assert.deepEqual(ch2.requests, []);
});

test('resume: recovered:false starts afresh with a notice', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 41)));
  const ch = tl.applyJoined({
    type: 'joined', room: 'general', epoch: 'e2', seq: 90, recovered: false,
    messages: range(41, 90).map((s) => msg(s, { epoch: 'e2' })),
  });
  assert.equal(ch.reset, true);
  assert.deepEqual(ch.notices, ['missed']);
  assert.deepEqual(seqsOf(tl), range(41, 90));
  assert.equal(tl.epoch, 'e2');
  assert.equal(tl.contig, 90);
  assert.deepEqual(ch.requests, []);
});

test('a join answer with a new epoch and no recovered field resets too', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(1, 10)));
  const ch = tl.applyJoined({ type: 'joined', room: 'general', epoch: 'e9', seq: 2, messages: [msg(1, { epoch: 'e9' }), msg(2, { epoch: 'e9' })] });
  assert.equal(ch.reset, true);
  assert.deepEqual(ch.notices, ['epoch']);
  assert.deepEqual(seqsOf(tl), [1, 2]);
});

test('a history answer from another epoch resets and asks for a re-join', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(10, 20)));
  tl.olderRequest();
  const ch = tl.applyHistory({ type: 'history', room: 'general', epoch: 'zzz', seq: 4, messages: [msg(1, { epoch: 'zzz' })] });
  assert.equal(ch.reset, true);
  assert.equal(ch.rejoin, true);
  assert.deepEqual(tl.joinFrame(), { type: 'join', room: 'general' }, 'the re-join is a plain join');
  const ch2 = tl.applyJoined({ type: 'joined', room: 'general', epoch: 'zzz', seq: 4, messages: range(1, 4).map((s) => msg(s, { epoch: 'zzz' })) });
  assert.deepEqual(ch2.added.map((m) => m.seq), [1, 2, 3, 4]);
});

test('messages that beat the joined frame are kept and merged', () => {
  const tl = new RoomTimeline('general');
  assert.deepEqual(tl.applyMessage(msg(58)).added, []);
  const ch = tl.applyJoined(joined(range(50, 57)));
  assert.deepEqual(ch.added.map((m) => m.seq), range(50, 58));
  assert.equal(tl.contig, 58);
});

test('a joined seq above the messages given fills the difference', () => {
  const tl = new RoomTimeline('general');
  const ch = tl.applyJoined({ type: 'joined', room: 'general', epoch: E, seq: 60, messages: range(1, 50).map((s) => msg(s)) });
  assert.deepEqual(ch.requests, [{ type: 'history', room: 'general', after: 50, limit: 100 }]);
});

test('a history seq above what is shown fills the difference', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(40, 50)));
  tl.olderRequest();
  const ch = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 52, messages: range(30, 39).map((s) => msg(s)) });
  assert.deepEqual(ch.requests, [{ type: 'history', room: 'general', after: 50, limit: 100 }]);
});

test('an unanswered request stops blocking after the timeout', () => {
  const c = clock();
  const tl = new RoomTimeline('general', { now: c.now });
  tl.applyJoined(joined(range(1, 10)));
  assert.equal(tl.applyMessage(msg(12)).requests.length, 1);
  c.t += 1000;
  assert.equal(tl.applyMessage(msg(13)).requests.length, 0);
  c.t += REQUEST_TIMEOUT_MS;
  assert.equal(tl.applyMessage(msg(14)).requests.length, 1, 'asked again');
});

test('a lost connection forgets open requests', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined(range(20, 30)));
  assert.ok(tl.olderRequest());
  tl.connectionLost();
  assert.ok(!tl.loadingOlder);
  assert.ok(tl.olderRequest());
  tl.requestFailed();
  assert.ok(tl.olderRequest());
});

test('any arrival order ends sorted, complete and without duplicates', () => {
  let state = 42;
  const rand = () => { state = (state * 1103515245 + 12345) % 2147483648; return state / 2147483648; };
  for (let round = 0; round < 30; round++) {
    const tl = new RoomTimeline('general');
    tl.applyJoined({ type: 'joined', room: 'general', epoch: E, seq: 0, messages: [] });
    const seqs = range(1, 80);
    const deliveries = [...seqs, ...seqs.filter(() => rand() < 0.3)];
    for (let i = deliveries.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [deliveries[i], deliveries[j]] = [deliveries[j], deliveries[i]];
    }
    let shown = 0;
    for (const s of deliveries) {
      const ch = tl.applyMessage(msg(s));
      // Answer every fill at once with what the store holds.
      for (const r of ch.requests) {
        const ans = tl.applyHistory({ type: 'history', room: 'general', epoch: E, seq: 80, messages: seqs.filter((x) => x > r.after).slice(0, r.limit).map((x) => msg(x)) });
        shown += ans.added.length;
      }
      shown += ch.added.length;
    }
    assert.deepEqual(seqsOf(tl), seqs);
    assert.equal(shown, 80, 'each seq drawn once');
    assert.equal(tl.contig, 80);
  }
});

test('nextSeqAfter / prevSeqBefore give DOM neighbours', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined(joined([5, 7, 9]));
  assert.equal(tl.nextSeqAfter(7), 9);
  assert.equal(tl.nextSeqAfter(6), 7);
  assert.equal(tl.nextSeqAfter(9), 0);
  assert.equal(tl.prevSeqBefore(7), 5);
  assert.equal(tl.prevSeqBefore(5), 0);
});

test('junk in messages arrays is ignored', () => {
  const tl = new RoomTimeline('general');
  const ch = tl.applyJoined({ type: 'joined', room: 'general', epoch: E, seq: 2, messages: [null, { seq: 'x' }, { seq: -1 }, msg(2), msg(1)] });
  assert.deepEqual(ch.added.map((m) => m.seq), [1, 2]);
  assert.deepEqual(tl.applyMessage({ type: 'message' }).added, []);
});

test('a gap frame asks history for the dropped messages', () => {
  const tl = new RoomTimeline('general');
  tl.applyJoined({ room: 'general', epoch: 'e1', seq: 3, messages: [msg(1), msg(2), msg(3)] });
  const ch = tl.applyGap({ type: 'gap', room: 'general', from: 4, to: 9 });
  assert.deepEqual(ch.requests, [{ type: 'history', room: 'general', after: 3, limit: 100 }]);
  // A second gap while the fill is out asks nothing more.
  assert.equal(tl.applyGap({ type: 'gap', room: 'general', from: 10, to: 12 }).requests.length, 0);
});
