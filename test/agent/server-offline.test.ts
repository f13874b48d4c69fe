// A server that cannot be reached: the agent retries (a line's server may be
// restarting), then stops with a clear error and runs nothing. Its own file: the
// retries take some seconds, and test files run in parallel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';
import { runAgentOn } from './server-harness.ts';

/** A local port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test('an unreachable server: retries, then exit 2 naming the server, and nothing ran', async () => {
  const dir = tempDir();
  const port = await closedPort();
  const started = Date.now();
  const r = await runAgentOn(dir, `bootline.server=http://127.0.0.1:${port} bootline.token=ble_whatever`, join(dir, 'state'));
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /retrying in/);
  assert.match(r.stderr, new RegExp(`cannot reach the server http://127\\.0\\.0\\.1:${port} \\(enrollment: no answer after 7 attempts, the last: connect ECONNREFUSED .*\\) — check the URL, the network and that the server is running`));
  assert.ok(Date.now() - started > 3000, 'it did retry for a while');
  assert.equal(existsSync(join(dir, 'state', 'journal.json')), false);
});
