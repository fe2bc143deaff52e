import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TypingSender, TypingState, typingText, TYPING_SEND_EVERY_MS, TYPING_EXPIRE_MS,
} from '../protocol.js';

test('typing notices go at most every 3 s per room, only with text', () => {
  const ts = new TypingSender();
  assert.equal(TYPING_SEND_EVERY_MS, 3000);
  assert.equal(ts.input('general', false, 1000), false, 'an empty box is not typing');
  assert.equal(ts.input('general', true, 1000), true);
  assert.equal(ts.input('general', true, 1500), false);
  assert.equal(ts.input('general', true, 3999), false);
  assert.equal(ts.input('random', true, 2000), true, 'rooms are separate');
  assert.equal(ts.input('general', true, 4000), true);
  assert.equal(ts.input('general', true, 4100), false);
  ts.messageSent('general');
  assert.equal(ts.input('general', true, 4200), false, 'the gateway would drop it');
  assert.equal(ts.input('general', true, 6000), true, 'after a send: as soon as the gateway relays again');
  assert.equal(ts.input('general', true, 8000), false, 'then every 3 s again');
  assert.equal(ts.input('general', true, 9000), true);
  ts.messageSent('general');
  assert.equal(ts.input('general', true, 12000), true, 'long after the last notice: at once');
  ts.reset();
  assert.equal(ts.input('random', true, 4300), true, 'a new connection starts afresh');
  assert.equal(ts.input('general', true, 100), true, 'a clock that went back does not block');
});

test('typing expires after 6 s unless renewed', () => {
  const st = new TypingState();
  assert.equal(TYPING_EXPIRE_MS, 6000);
  assert.ok(st.seen({ id: 'g_a', name: 'alice' }, 0));
  assert.equal(st.seen({ name: 'nobody' }, 0), false, 'junk is ignored');
  assert.deepEqual(st.names(5999), ['alice']);
  assert.equal(st.nextExpiry(), 6000);
  st.seen({ id: 'g_a', name: 'alice' }, 5000);
  assert.deepEqual(st.names(10999), ['alice'], 'renewed');
  assert.deepEqual(st.names(11000), []);
  assert.equal(st.nextExpiry(), 0);
});

test('a user\'s message clears their typing', () => {
  const st = new TypingState();
  st.seen({ id: 'g_a', name: 'alice' }, 0);
  st.seen({ id: 'g_b', name: 'bob' }, 100);
  assert.deepEqual(st.names(200), ['alice', 'bob']);
  assert.equal(st.clear('g_a'), true);
  assert.equal(st.clear('g_a'), false);
  assert.deepEqual(st.names(200), ['bob']);
  assert.equal(st.nextExpiry(), 6100);
  st.reset();
  assert.deepEqual(st.names(200), []);
});

test('typing text', () => {
  assert.equal(typingText([]), '');
  assert.equal(typingText(['alice']), 'alice is typing…');
  assert.equal(typingText(['alice', 'bob']), 'alice and bob are typing…');
  assert.equal(typingText(['alice', 'bob', 'carol']), 'several people are typing…');
});
