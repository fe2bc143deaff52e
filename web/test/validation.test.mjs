import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  roomNameProblem, validRoom, textProblem, tidyText, utf8Length, nameProblem,
  randomToken, newGuestKey, validKey, newClientMsgId, TOKEN_ALPHABET,
  initials, hueFor, groupsWith, parseRooms, relativeTime,
} from '../protocol.js';
import { webcrypto } from 'node:crypto';

const fill = (a) => webcrypto.getRandomValues(a);

test('valid room names', () => {
  for (const n of ['general', 'a', '9', 'Room-1', 'a.b_c-d', 'x'.repeat(64), 'A.', '0-']) {
    assert.equal(roomNameProblem(n), null, n);
    assert.ok(validRoom(n));
  }
});

test('invalid room names say why', () => {
  const cases = [
    ['', /Enter a room name/],
    ['x'.repeat(65), /at most 64/],
    ['-abc', /start with a letter or a digit/],
    ['.abc', /start with a letter or a digit/],
    ['_abc', /start with a letter or a digit/],
    ['my room', /spaces/],
    ['#general', /"#"/],
    ['café', /"é"/],
    ['a/b', /"\/"/],
    ['<img>', /"<"/],
  ];
  for (const [name, re] of cases) {
    const p = roomNameProblem(name);
    assert.ok(p, `${JSON.stringify(name)} should be invalid`);
    assert.match(p, re, name);
    assert.equal(validRoom(name), false);
  }
  assert.ok(roomNameProblem(undefined));
});

test('text rules', () => {
  assert.equal(textProblem('hi'), null);
  assert.match(textProblem('   \n\t'), /Type a message/);
  assert.match(textProblem(''), /Type a message/);
  assert.equal(textProblem('é'.repeat(2000)), null, '4000 bytes is allowed');
  assert.match(textProblem('é'.repeat(2001)), /4002 bytes/);
  assert.equal(textProblem('abc', 3), null);
  assert.ok(textProblem('abcd', 3));
});

test('utf8Length', () => {
  assert.equal(utf8Length('abc'), 3);
  assert.equal(utf8Length('é'), 2);
  assert.equal(utf8Length('€'), 3);
  assert.equal(utf8Length('😀'), 4);
  assert.equal(utf8Length('a😀b'), Buffer.byteLength('a😀b'));
});

test('tidyText keeps inner whitespace', () => {
  assert.equal(tidyText('\n\n  hi\n  there  \n\n'), '  hi\n  there');
  assert.equal(tidyText('<img src=x onerror=alert(1)>'), '<img src=x onerror=alert(1)>');
});

test('display names', () => {
  assert.equal(nameProblem('alice'), null);
  assert.ok(nameProblem('   '));
  assert.ok(nameProblem('x'.repeat(33)));
  assert.equal(nameProblem('x'.repeat(32)), null);
});

test('guest keys: 32 characters of [A-Za-z0-9_-], all characters reachable', () => {
  assert.equal(TOKEN_ALPHABET.length, 64);
  const k = newGuestKey(fill);
  assert.match(k, /^[A-Za-z0-9_-]{32}$/);
  assert.ok(validKey(k));
  assert.ok(!validKey('short'));
  assert.ok(!validKey(null));
  assert.notEqual(newGuestKey(fill), k);
  // Every byte maps into the alphabet.
  const all = randomToken(256, (a) => { for (let i = 0; i < a.length; i++) a[i] = i; });
  assert.equal(new Set(all).size, 64);
});

test('client_msg_id fits the protocol alphabet and length', () => {
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const id = newClientMsgId(fill);
    assert.match(id, /^c-[A-Za-z0-9_-]{16}$/);
    assert.ok(id.length <= 64);
    seen.add(id);
  }
  assert.equal(seen.size, 200);
});

test('initials', () => {
  assert.equal(initials('alice'), 'A');
  assert.equal(initials('Bob Stone'), 'BS');
  assert.equal(initials('mary-jane watson'), 'MW');
  assert.equal(initials('  '), '?');
  assert.equal(initials('émile zola'), 'ÉZ');
  assert.equal(initials('(x)'), 'X');
  assert.equal(initials('😀'), '😀');
});

test('hueFor is stable and in range', () => {
  assert.equal(hueFor('g_abc'), hueFor('g_abc'));
  const hues = new Set();
  for (let i = 0; i < 100; i++) {
    const h = hueFor(`g_user${i}`);
    assert.ok(h >= 0 && h < 12);
    hues.add(h);
  }
  assert.ok(hues.size > 6, 'users spread over the palette');
});

test('grouping consecutive messages', () => {
  const t = Date.parse('2026-11-28T12:00:00Z');
  assert.ok(groupsWith({ userId: 'u', time: t }, { userId: 'u', time: t + 60000 }));
  assert.ok(!groupsWith({ userId: 'u', time: t }, { userId: 'v', time: t + 1000 }));
  assert.ok(!groupsWith({ userId: 'u', time: t }, { userId: 'u', time: t + 6 * 60000 }));
  assert.ok(!groupsWith(null, { userId: 'u', time: t }));
  assert.ok(!groupsWith({ userId: 'u', time: t + 1000 }, { userId: 'u', time: t }), 'older after newer starts a group');
});

test('parseRooms keeps valid rooms, newest activity first', () => {
  const rooms = parseRooms({
    rooms: [
      { room: 'general', seq: 57, last_activity: '2026-11-28T19:20:01Z' },
      { room: 'bad room', seq: 1, last_activity: '2026-11-28T19:20:01Z' },
      { room: 'random', seq: 3, last_activity: '2026-11-28T19:30:00Z' },
      { room: 'quiet', seq: -4, last_activity: 'garbage' },
      null,
    ],
  });
  assert.deepEqual(rooms.map((r) => r.room), ['random', 'general', 'quiet']);
  assert.equal(rooms[1].seq, 57);
  assert.equal(rooms[2].seq, 0);
  assert.deepEqual(parseRooms(null), []);
  assert.deepEqual(parseRooms({ rooms: 'x' }), []);
});

test('relativeTime', () => {
  const now = 1_000_000_000;
  assert.equal(relativeTime(now - 10_000, now), 'just now');
  assert.equal(relativeTime(now - 5 * 60_000, now), '5 min ago');
  assert.equal(relativeTime(now - 3 * 3600_000, now), '3 h ago');
  assert.equal(relativeTime(now - 30 * 3600_000, now), 'yesterday');
});
