import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tokenInfo, tokenExpired } from '../protocol.js';

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
const jwt = (claims) => `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}.c2lnbmF0dXJl`;

test('tokenInfo reads sub, name and exp without verifying', () => {
  const info = tokenInfo(jwt({ sub: 'alice', name: 'Alice Ä', exp: 1800000000 }));
  assert.deepEqual(info, { sub: 'alice', name: 'Alice Ä', exp: 1800000000000 });
  assert.deepEqual(tokenInfo(jwt({ sub: 'bob' })), { sub: 'bob', name: '', exp: 0 });
});

test('tokenInfo refuses what is no JWT', () => {
  for (const bad of ['', 'abc', 'a.b', 'a.b.c.d', 'a..c', `x.${'!!'}.y`, 'e30.bm90IGpzb24.x', 'e30.WzFd.x', 42, null]) {
    assert.equal(tokenInfo(bad), null, String(bad));
  }
  assert.equal(tokenInfo('a.' + 'A'.repeat(9000) + '.c'), null, 'too long');
});

test('tokenExpired', () => {
  assert.equal(tokenExpired(null, 0), false);
  assert.equal(tokenExpired({ exp: 0 }, 1e15), false, 'no expiry');
  assert.equal(tokenExpired({ exp: 1000 }, 999), false);
  assert.equal(tokenExpired({ exp: 1000 }, 1000), true);
});
