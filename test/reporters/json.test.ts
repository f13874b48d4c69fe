import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonReporter } from '../../src/agent/reporters/json.ts';
import { Events, collectWarnings } from './helpers.ts';

function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bootline-json-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  'every event is one JSON line, in order, appended to the file',
  withDir(async (dir) => {
    const path = join(dir, 'events.ndjson');
    writeFileSync(path, '{"earlier":true}\n');
    const w = collectWarnings();
    const r = new JsonReporter({ type: 'json', path }, { warn: w.warn });
    assert.equal(r.name, `json(${path})`);
    const events = new Events().fullRun();
    for (const e of events) await r.handle(e);
    await r.close(Date.now() + 2000);
    const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
    assert.deepEqual(lines.slice(1).map((l) => JSON.parse(l)), events);
    assert.equal(lines[0], '{"earlier":true}');
    assert.deepEqual(w.messages, []);
  }),
);

test(
  'a new file is created readable by everyone (0644)',
  withDir(async (dir) => {
    const path = join(dir, 'new.ndjson');
    const old = process.umask(0o022);
    try {
      const r = new JsonReporter({ type: 'json', path }, { warn: () => {} });
      r.handle(new Events().runStart());
      await r.close(Date.now() + 2000);
    } finally {
      process.umask(old);
    }
    assert.equal(statSync(path).mode & 0o777, 0o644);
  }),
);

test(
  'a missing directory is warned about with the path, and nothing throws',
  withDir(async (dir) => {
    const path = join(dir, 'nope', 'events.ndjson');
    const w = collectWarnings();
    const r = new JsonReporter({ type: 'json', path }, { warn: w.warn });
    for (const e of new Events().fullRun()) await r.handle(e);
    await r.close(Date.now() + 1000);
    assert.equal(w.messages.length, 1);
    assert.match(w.messages[0] ?? '', new RegExp(`${join(dir, 'nope')} does not exist`));
    assert.equal(existsSync(path), false);
  }),
);

test(
  'an fd given in the config receives the lines and is left open',
  withDir(async (dir) => {
    const path = join(dir, 'fd.ndjson');
    const fd = openSync(path, 'w');
    try {
      const r = new JsonReporter({ type: 'json', fd }, { warn: () => {} });
      assert.equal(r.name, `json(fd ${fd})`);
      const ev = new Events();
      await r.handle(ev.runStart());
      await r.handle(ev.log('hello'));
      await r.close(Date.now() + 2000);
      const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
      assert.deepEqual(
        lines.map((l) => JSON.parse(l).type),
        ['run-start', 'log'],
      );
    } finally {
      closeSync(fd); // would throw EBADF had the reporter closed it
    }
  }),
);

test('without path or fd the lines go to stdout', async () => {
  const chunks: string[] = [];
  const stdout = { write: (s: string) => (chunks.push(s), true), on: () => stdout } as unknown as NodeJS.WritableStream;
  const r = new JsonReporter({ type: 'json' }, { warn: () => {}, stdout });
  assert.equal(r.name, 'json(fd 1)');
  const e = new Events().runStart();
  await r.handle(e);
  await r.close(Date.now() + 100);
  assert.deepEqual(chunks, [`${JSON.stringify(e)}\n`]);
});
