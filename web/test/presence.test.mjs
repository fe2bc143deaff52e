import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parsePresence, diffMembers, listNames, presenceNoticeText, PresenceRun, RoomPresence,
  compareMembers, PRESENCE_NOTICE_MAX,
} from '../protocol.js';

const u = (id, name = id) => ({ id, name });
const frame = (members, extra = {}) => ({
  type: 'presence', room: 'general', count: members.length, members, ...extra,
});
const names = (list) => list.map((x) => x.name);

test('parsePresence validates, dedupes and sorts members by name then id', () => {
  const p = parsePresence(frame([u('g_2', 'bob'), u('g_1', 'alice'), u('g_3', 'bob'), u('g_1', 'alice'), { id: '' }, null, 'x']));
  assert.equal(p.room, 'general');
  assert.deepEqual(p.members.map((m) => m.id), ['g_1', 'g_2', 'g_3']);
  assert.equal(p.count, 7, 'count is what the gateway says');
  assert.equal(p.joined, null);
  assert.equal(p.left, null);
  assert.equal(parsePresence({ type: 'presence', room: 'bad room', count: 1 }), null);
  assert.equal(parsePresence({ type: 'presence', room: 'general' }), null, 'neither count nor members');
  const big = parsePresence({ type: 'presence', room: 'general', count: 5000 });
  assert.equal(big.count, 5000);
  assert.equal(big.members, null, 'a big room has a count only');
  assert.deepEqual(parsePresence({ type: 'presence', room: 'r', members: [u('a')] }).count, 1, 'count defaults to the list');
  assert.equal(parsePresence(frame([{ id: 'g_9' }])).members[0].name, 'g_9', 'a nameless user shows the id');
});

test('compareMembers orders by code units, as the gateway does', () => {
  const list = [u('2', 'bob'), u('1', 'Bob'), u('3', 'alice'), u('0', 'bob')];
  assert.deepEqual(list.sort(compareMembers).map((m) => m.id), ['1', '3', '0', '2']);
});

test('diffMembers finds who came and who went', () => {
  const d = diffMembers([u('a'), u('b'), u('c')], [u('b'), u('c'), u('d')]);
  assert.deepEqual(names(d.joined), ['d']);
  assert.deepEqual(names(d.left), ['a']);
  assert.deepEqual(diffMembers([u('a')], [u('a')]), { joined: [], left: [] });
});

test('notice text collapses names', () => {
  assert.equal(listNames([]), '');
  assert.equal(listNames(['alice']), 'alice');
  assert.equal(listNames(['alice', 'bob']), 'alice and bob');
  assert.equal(listNames(['alice', 'bob', 'carol']), 'alice, bob and carol');
  assert.equal(listNames(['alice', 'bob', 'carol', 'dan']), 'alice, bob and 2 others');
  assert.equal(listNames(['alice', 'bob', 'carol', 'dan', 'eve']), 'alice, bob and 3 others');
  assert.equal(listNames(['a', 'b', 'c']), 'a, b and c');
  assert.equal(presenceNoticeText([u('alice')], []), 'alice joined');
  assert.equal(presenceNoticeText([u('alice'), u('bob'), u('c'), u('d'), u('e')], []), 'alice, bob and 3 others joined');
  assert.equal(presenceNoticeText([], [u('carol')]), 'carol left');
  assert.equal(presenceNoticeText([u('alice')], [u('carol'), u('dan')]), 'alice joined · carol and dan left');
  assert.equal(presenceNoticeText([], []), '');
});

test('a presence run is one notice, and coming and going cancels out', () => {
  const run = new PresenceRun();
  assert.ok(run.empty);
  run.add([u('alice')], []);
  assert.equal(run.text(), 'alice joined');
  run.add([u('bob')], [u('carol')]);
  assert.equal(run.text(), 'alice and bob joined · carol left');
  run.add([u('carol')], [u('alice')]);
  assert.equal(run.text(), 'bob joined', 'alice came and went; carol went and came back');
  run.add([], [u('bob')]);
  assert.ok(run.empty);
  assert.equal(run.text(), '');
});

test('no notice for the presence that follows a join', () => {
  const rp = new RoomPresence();
  let n = rp.apply(parsePresence(frame([u('g_me', 'me'), u('g_a', 'alice')])), 'g_me');
  assert.deepEqual(n, { joined: [], left: [] }, 'first presence after a join');
  assert.equal(rp.count, 2);
  assert.deepEqual(rp.members.map((m) => m.id), ['g_a', 'g_me']);

  n = rp.apply(parsePresence(frame([u('g_me', 'me'), u('g_a', 'alice'), u('g_b', 'bob')],
    { joined: [u('g_b', 'bob')], left: [] })), 'g_me');
  assert.deepEqual(names(n.joined), ['bob']);

  // After a rejoin (a reconnect), the first list is a baseline again, even
  // though it differs from the last one.
  rp.rejoined();
  n = rp.apply(parsePresence(frame([u('g_me', 'me')])), 'g_me');
  assert.deepEqual(n, { joined: [], left: [] });
  assert.equal(rp.count, 1);
});

test('lists are compared, so a missed frame still gives the right notice', () => {
  const rp = new RoomPresence();
  rp.apply(parsePresence(frame([u('g_me', 'me'), u('g_a', 'alice')])), 'g_me');
  // The frame in which carol joined was missed; this one says only that dan joined.
  const n = rp.apply(parsePresence(frame([u('g_me', 'me'), u('g_a', 'alice'), u('g_c', 'carol'), u('g_d', 'dan')],
    { joined: [u('g_d', 'dan')] })), 'g_me');
  assert.deepEqual(names(n.joined), ['carol', 'dan']);
});

test('without lists the frame\'s joined and left are used; never the user', () => {
  const rp = new RoomPresence();
  rp.apply(parsePresence({ type: 'presence', room: 'r', count: 10 }), 'g_me');
  const n = rp.apply(parsePresence({
    type: 'presence', room: 'r', count: 11, joined: [u('g_x', 'xavier'), u('g_me', 'me')], left: [],
  }), 'g_me');
  assert.deepEqual(names(n.joined), ['xavier']);
  assert.deepEqual(n.left, []);
});

test('big rooms get no notices', () => {
  const many = Array.from({ length: PRESENCE_NOTICE_MAX + 1 }, (_, i) => u(`g_${String(i).padStart(3, '0')}`));
  const rp = new RoomPresence();
  rp.apply(parsePresence(frame(many)), 'g_000');
  const n = rp.apply(parsePresence(frame([...many, u('g_new')], { joined: [u('g_new')] })), 'g_000');
  assert.deepEqual(n, { joined: [], left: [] });
  assert.equal(rp.count, PRESENCE_NOTICE_MAX + 2);
  // A count-only frame (the gateway's own limit) is no news either.
  const m = rp.apply(parsePresence({ type: 'presence', room: 'general', count: 500 }), 'g_000');
  assert.deepEqual(m, { joined: [], left: [] });
  assert.equal(rp.members, null);
});
