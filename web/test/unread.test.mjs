import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Unread, unreadLabel } from '../protocol.js';

test('messages in rooms not open count as unread until opened', () => {
  const u = new Unread();
  assert.equal(u.message('random', { current: 'general', mine: false }), 1);
  assert.equal(u.message('random', { current: 'general', mine: false }), 2);
  assert.equal(u.message('general', { current: 'general', mine: false }), 0, 'the open room');
  assert.equal(u.message('dev', { current: 'general', mine: true }), 0, 'own messages (another tab)');
  assert.equal(u.message('dev', { current: 'general', mine: false }), 1);
  assert.equal(u.total(), 3);
  u.clear('random');
  assert.equal(u.get('random'), 0);
  assert.equal(u.total(), 1);
});

test('unread labels', () => {
  assert.equal(unreadLabel(0), '');
  assert.equal(unreadLabel(undefined), '');
  assert.equal(unreadLabel(1), '1');
  assert.equal(unreadLabel(99), '99');
  assert.equal(unreadLabel(100), '99+');
});
