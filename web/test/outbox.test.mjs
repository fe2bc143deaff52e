import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Outbox, RETRY_ERROR_CODES } from '../protocol.js';

const zero = () => 0;

test('added messages are due once per connection', () => {
  const ob = new Outbox();
  ob.add('general', 'one', 'c-1', 100);
  ob.add('general', 'two', 'c-2', 200);
  ob.add('random', 'three', 'c-3', 150);
  assert.deepEqual(ob.due('general', 1, 0).map((i) => i.cmid), ['c-1', 'c-2']);
  ob.sent('c-1', 1);
  assert.deepEqual(ob.due('general', 1, 0).map((i) => i.cmid), ['c-2']);
  assert.deepEqual(ob.due('general', 2, 0).map((i) => i.cmid), ['c-1', 'c-2'], 'a new connection resends');
  ob.sent('c-2', 1);
  ob.connectionLost();
  assert.deepEqual(ob.due('general', 1, 0).map((i) => i.cmid), ['c-1', 'c-2']);
  assert.deepEqual(ob.list().map((i) => i.cmid), ['c-1', 'c-3', 'c-2'], 'oldest first');
});

test('settle removes exactly the acknowledged message', () => {
  const ob = new Outbox();
  ob.add('general', 'one', 'c-1', 1);
  ob.add('general', 'two', 'c-2', 2);
  assert.equal(ob.settle('c-1').text, 'one');
  assert.equal(ob.settle('c-1'), undefined, 'a second ack or the echo is harmless');
  assert.equal(ob.settle('c-unknown'), undefined);
  assert.deepEqual(ob.list().map((i) => i.cmid), ['c-2']);
});

test('rate_limited and unavailable keep it pending and retry later', () => {
  assert.deepEqual([...RETRY_ERROR_CODES], ['rate_limited', 'unavailable']);
  for (const code of RETRY_ERROR_CODES) {
    const ob = new Outbox();
    ob.add('general', 'hi', 'c-1', 1);
    ob.sent('c-1', 7);
    const r1 = ob.error('c-1', code, 'slow down', 10_000, zero);
    assert.deepEqual(r1, { action: 'retry', delay: 500 });
    assert.equal(ob.get('c-1').state, 'pending');
    assert.deepEqual(ob.due('general', 7, 10_499), [], 'not before the delay');
    assert.deepEqual(ob.due('general', 7, 10_500).map((i) => i.cmid), ['c-1'], 'same connection, same id');
    ob.sent('c-1', 7);
    const r2 = ob.error('c-1', code, 'slow down', 20_000, zero);
    assert.equal(r2.delay, 1000, 'backs off');
  }
});

test('other error codes fail it; retry and delete', () => {
  const ob = new Outbox();
  ob.add('general', 'hi', 'c-1', 1);
  const r = ob.error('c-1', 'text_too_long', 'text is 5000 bytes; the limit is 4000', 0);
  assert.deepEqual(r, { action: 'failed' });
  assert.equal(ob.get('c-1').state, 'failed');
  assert.equal(ob.get('c-1').error, 'text is 5000 bytes; the limit is 4000');
  assert.deepEqual(ob.due('general', 1, 0), []);
  ob.retry('c-1');
  assert.equal(ob.get('c-1').state, 'pending');
  assert.deepEqual(ob.due('general', 1, 0).map((i) => i.cmid), ['c-1']);
  assert.equal(ob.remove('c-1'), true);
  assert.equal(ob.size, 0);
  assert.equal(ob.error('c-1', 'bad_request', 'x', 0), null, 'unknown refs are not ours');
  assert.equal(ob.retry('c-1'), undefined);
});

test('an error without a message keeps the code', () => {
  const ob = new Outbox();
  ob.add('general', 'hi', 'c-1', 1);
  ob.error('c-1', 'not_joined', '', 0);
  assert.equal(ob.get('c-1').error, 'not_joined');
});

test('survives a reload with the same client_msg_id', () => {
  const ob = new Outbox();
  ob.add('general', 'first <img src=x onerror=alert(1)>', 'c-AAAA', 100);
  ob.add('random', 'second', 'c-BBBB', 200);
  ob.error('c-BBBB', 'bad_request', 'nope', 0);
  ob.sent('c-AAAA', 3);
  const stored = JSON.stringify(ob.toJSON());
  const back = Outbox.fromJSON(stored);
  assert.deepEqual(back.toJSON(), ob.toJSON());
  assert.deepEqual(back.due('general', 1, 0).map((i) => [i.cmid, i.text]), [['c-AAAA', 'first <img src=x onerror=alert(1)>']]);
  assert.equal(back.get('c-BBBB').state, 'failed');
  assert.equal(back.get('c-BBBB').error, 'nope');
});

test('junk in storage is dropped', () => {
  assert.equal(Outbox.fromJSON('not json').size, 0);
  assert.equal(Outbox.fromJSON('{"a":1}').size, 0);
  const ob = Outbox.fromJSON(JSON.stringify([
    null,
    { cmid: 'c-1', room: 'general', text: 'ok', createdAt: 5, state: 'pending' },
    { cmid: 'bad id!', room: 'general', text: 'x' },
    { cmid: 'c-2', room: '-bad', text: 'x' },
    { cmid: 'c-3', room: 'general', text: 7 },
    { cmid: 'c-4', room: 'general', text: 'weird state', state: 'sent' },
  ]));
  assert.deepEqual(ob.list().map((i) => [i.cmid, i.state]), [['c-4', 'pending'], ['c-1', 'pending']]);
});

test('dropRoom forgets a room left', () => {
  const ob = new Outbox();
  ob.add('a', '1', 'c-1', 1);
  ob.add('b', '2', 'c-2', 2);
  ob.dropRoom('a');
  assert.deepEqual(ob.list().map((i) => i.cmid), ['c-2']);
});
