// The device API client: retries with backoff on connection errors, 5xx and 429
// (Retry-After), never on other 4xx; answers checked against the API's schemas.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ServerClient, ServerError, ServerUnreachableError, classify } from '../../src/agent/server-client.ts';

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

/** A server answering the n-th request with handlers[n] (the last one repeats). */
async function scripted(handlers: Handler[]) {
  const seen: { method: string; url: string; auth: string | undefined; type: string | undefined; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, type: req.headers['content-type'], body });
      handlers[Math.min(seen.length - 1, handlers.length - 1)]!(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Handler => (_q, _b, res) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
};
const fast = { backoffMs: 5, maxBackoffMs: 20, retries: 3 };

test('enrollment posts the identity without a credential; the plan is fetched with it', async () => {
  const s = await scripted([json(201, { deviceId: 'd1', credential: 'bld_x' }), json(200, { plan: 'p', action: 'run', config: { tasks: [] } })]);
  const c = new ServerClient({ url: `${s.url}/`, ...fast });
  try {
    assert.deepEqual(await c.enroll({ token: 'ble_t', serial: 'S1', macs: ['aa:bb:cc:dd:ee:ff'] }), { deviceId: 'd1', credential: 'bld_x' });
    c.credential = 'bld_x';
    assert.deepEqual(await c.plan(), { plan: 'p', action: 'run', config: { tasks: [] } });
    assert.equal(s.seen[0]!.url, '/api/v1/enroll');
    assert.equal(s.seen[0]!.auth, undefined);
    assert.deepEqual(JSON.parse(s.seen[0]!.body), { token: 'ble_t', serial: 'S1', macs: ['aa:bb:cc:dd:ee:ff'] });
    assert.equal(s.seen[1]!.url, '/api/v1/device/plan');
    assert.equal(s.seen[1]!.auth, 'Bearer bld_x');
  } finally {
    c.close();
    await s.close();
  }
});

test('a server URL with a path prefix keeps it', () => {
  const c = new ServerClient({ url: 'https://line.example/bootline/' });
  assert.equal(c.endpoint('/device/events'), 'https://line.example/bootline/api/v1/device/events');
  c.close();
});

test('5xx and 429 are retried (Retry-After honoured), then the call succeeds', async () => {
  const s = await scripted([
    json(503, { error: 'internal', message: 'restarting' }),
    json(429, { error: 'slow-down', message: 'busy' }, { 'retry-after': '0' }),
    json(200, { runId: null, status: null, plan: null, completed: [] }),
  ]);
  const retries: string[] = [];
  const c = new ServerClient({ url: s.url, credential: 'bld_x', ...fast, onRetry: (m) => retries.push(m) });
  try {
    assert.deepEqual(await c.lastRun(), { runId: null, status: null, plan: null, completed: [] });
    assert.equal(s.seen.length, 3);
    assert.equal(retries.length, 2);
    assert.match(retries[0]!, /HTTP 503 restarting — retrying in/);
  } finally {
    c.close();
    await s.close();
  }
});

test('a 4xx is not retried: its status, code and message come back', async () => {
  const s = await scripted([json(401, { error: 'unauthorized', message: 'enrollment token not accepted' })]);
  const c = new ServerClient({ url: s.url, ...fast });
  try {
    const e = await c.enroll({ token: 'nope', macs: ['aa:bb:cc:dd:ee:ff'] }).then(() => assert.fail('resolved'), (x: unknown) => x);
    assert.ok(e instanceof ServerError);
    assert.equal(e.status, 401);
    assert.equal(e.code, 'unauthorized');
    assert.equal(e.serverMessage, 'enrollment token not accepted');
    assert.equal(s.seen.length, 1);
  } finally {
    c.close();
    await s.close();
  }
});

test('no server: the retries run out and say so', async () => {
  const s = await scripted([json(200, {})]);
  const url = s.url;
  await s.close();
  const retries: string[] = [];
  const c = new ServerClient({ url, ...fast, onRetry: (m) => retries.push(m) });
  const e = await c.plan().then(() => assert.fail('resolved'), (x: unknown) => x);
  c.close();
  assert.ok(e instanceof ServerUnreachableError, String(e));
  assert.equal(e.attempts, 4);
  assert.match(e.message, /ECONNREFUSED/);
  assert.equal(retries.length, 3);
});

test('a server that answered before is waited for while it restarts, past the retry count, and then only for the outage budget', async () => {
  const answer = (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ runId: null, status: null, plan: null, completed: [] }));
  };
  let server = createServer(answer);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const retries: string[] = [];
  const c = new ServerClient({ url: `http://127.0.0.1:${port}`, credential: 'bld_x', ...fast, outageMs: 5000, onRetry: (m) => retries.push(m) });
  try {
    await c.lastRun();
    await new Promise<void>((r) => server.close(() => r()));
    // Down for longer than 3 retries of at most 20 ms take; then back on the same port.
    setTimeout(() => {
      server = createServer(answer);
      server.listen(port, '127.0.0.1');
    }, 600);
    const r = await c.lastRun();
    assert.equal(r.runId, null);
    assert.ok(retries.length > 3, `${retries.length} retries`);
    assert.match(retries.at(-1)!, /for up to 5 s: the server answered before/);
    await new Promise<void>((r) => server.close(() => r()));
    const short = new ServerClient({ url: `http://127.0.0.1:${port}`, credential: 'bld_x', ...fast, outageMs: 300, reached: true });
    const started = Date.now();
    const e = await short.lastRun().then(() => assert.fail('resolved'), (x: unknown) => x);
    short.close();
    assert.ok(e instanceof ServerUnreachableError, String(e));
    assert.ok(Date.now() - started >= 300, 'it waited for the outage budget');
  } finally {
    c.close();
    server.close();
  }
});

test('5xx to the end is a ServerError with the last status', async () => {
  const s = await scripted([json(502, { error: 'bad-gateway', message: 'upstream down' })]);
  const c = new ServerClient({ url: s.url, ...fast });
  try {
    const e = await c.plan().then(() => assert.fail('resolved'), (x: unknown) => x);
    assert.ok(e instanceof ServerError);
    assert.equal(e.status, 502);
    assert.equal(s.seen.length, 4);
  } finally {
    c.close();
    await s.close();
  }
});

test('an answer that does not match the schema is an error, not a crash later', async () => {
  const s = await scripted([json(200, { plan: 'p', action: 'maybe', config: {} })]);
  const c = new ServerClient({ url: s.url, ...fast });
  try {
    await assert.rejects(c.plan(), /unexpected answer \(\/action/);
  } finally {
    c.close();
    await s.close();
  }
});

test('a request that gets no answer times out and is retried', async () => {
  let n = 0;
  const s = await scripted([
    () => {
      n++; // never answers
    },
    (_q, _b, res) => res.writeHead(204).end(),
  ]);
  const c = new ServerClient({ url: s.url, credential: 'bld_x', ...fast, timeoutMs: 200 });
  try {
    await c.putLog('r1', 'line 1\nline 2\n');
    assert.equal(n, 1);
    assert.equal(s.seen[1]!.url, '/api/v1/device/runs/r1/log');
    assert.equal(s.seen[1]!.type, 'text/plain; charset=utf-8');
    assert.equal(s.seen[1]!.body, 'line 1\nline 2\n');
  } finally {
    c.close();
    await s.close();
  }
});

test('classify: Retry-After as seconds; 408 retried; 404 not', () => {
  assert.deepEqual(classify(429, '2', '{"error":"x","message":"m"}', 0), { kind: 'retry', reason: 'HTTP 429 m', status: 429, code: 'x', message: 'm', retryAfterMs: 2000 });
  assert.equal(classify(408, undefined, '').kind, 'retry');
  assert.deepEqual(classify(404, undefined, '<html>nope</html>'), { kind: 'fatal', status: 404, code: '', message: '<html>nope</html>' });
});
