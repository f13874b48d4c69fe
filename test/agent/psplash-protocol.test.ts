import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePsplashCommand, PsplashSplitter } from '../../src/agent/psplash-protocol.ts';

test('psplash commands are parsed as bmaptool and psplash-write send them', () => {
  assert.deepEqual(parsePsplashCommand('PROGRESS 42'), { progress: 42 });
  assert.deepEqual(parsePsplashCommand('progress 150'), { progress: 100 });
  assert.deepEqual(parsePsplashCommand('MSG Writing image'), { message: 'Writing image' });
  assert.equal(parsePsplashCommand('PROGRESS abc'), undefined);
  assert.equal(parsePsplashCommand('QUIT'), undefined);
});

test('a byte stream splits into commands on NUL and newline, across chunks', () => {
  const s = new PsplashSplitter();
  assert.deepEqual(s.push('PROGRESS 1\0PROG'), ['PROGRESS 1']);
  assert.deepEqual(s.push('RESS 2\nMSG a b\0'), ['PROGRESS 2', 'MSG a b']);
});
