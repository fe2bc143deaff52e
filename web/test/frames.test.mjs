import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitFrames } from '../protocol.js';

test('one frame', () => {
  const { frames, bad } = splitFrames('{"type":"welcome","user":{"id":"g_1","name":"a"}}');
  assert.equal(bad, 0);
  assert.deepEqual(frames, [{ type: 'welcome', user: { id: 'g_1', name: 'a' } }]);
});

test('several frames separated by newlines, in order', () => {
  const data = [
    '{"type":"message","room":"general","seq":1,"text":"a"}',
    '{"type":"message","room":"general","seq":2,"text":"b\\nc"}',
    '{"type":"ack","client_msg_id":"c-1","room":"general","seq":2,"id":"x"}',
  ].join('\n');
  const { frames, bad } = splitFrames(data);
  assert.equal(bad, 0);
  assert.deepEqual(frames.map((f) => f.type), ['message', 'message', 'ack']);
  assert.equal(frames[1].text, 'b\nc', 'an escaped newline inside JSON is not a separator');
});

test('blank parts and a trailing newline are skipped', () => {
  const { frames, bad } = splitFrames('\n{"type":"left","room":"a"}\n\n{"type":"left","room":"b"}\n');
  assert.equal(bad, 0);
  assert.deepEqual(frames.map((f) => f.room), ['a', 'b']);
});

test('a broken part does not lose the others', () => {
  const { frames, bad } = splitFrames('{"type":"left","room":"a"}\n{not json\n[1,2]\n{"no":"type"}\nnull\n{"type":"left","room":"b"}');
  assert.equal(bad, 4);
  assert.deepEqual(frames.map((f) => f.room), ['a', 'b']);
});

test('non-string input', () => {
  assert.deepEqual(splitFrames(new ArrayBuffer(2)), { frames: [], bad: 1 });
});

test('unknown frame types are passed through for the caller to ignore', () => {
  const { frames } = splitFrames('{"type":"typing","room":"a","extra":true}');
  assert.equal(frames[0].type, 'typing');
});
