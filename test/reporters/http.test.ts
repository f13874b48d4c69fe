import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BootlineEvent } from '../../src/events.ts';
import {
  HttpReporter,
  backoffDelay,
  classifyResponse,
  parseRetryAfter,
} from '../../src/agent/reporters/http.ts';
import { enqueueBounded } from '../../src/agent/bounded-queue.ts';
import { Events, collectWarnings, until } from './helpers.ts';

interface Received {
  events: BootlineEvent[];
  headers: http.IncomingHttpHeaders;
}

type Answer = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;

/** A real receiver on 127.0.0.1; `answer` decides each response (default 200). */
async function receiver(answer: Answer = (_q, res) => res.end('{}'), port = 0) {
  const received: Received[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const i = n++;
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { events: BootlineEvent[] };
      // Record only what the server accepted, as a real one would.
      const res0 = res;
      const origEnd = res0.end.bind(res0);
      res0.end = ((...args: Parameters<typeof origEnd>) => {
        if (res0.statusCode < 300) received.push({ events: body.events, headers: req.headers });
        return origEnd(...args);
      }) as typeof res0.end;
      answer(req, res0, i);
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const addr = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${addr.port}/api/events`,
    port: addr.port,
    received,
    requests: () => n,
    all: () => received.flatMap((r) => r.events),
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const fast = { backoffMs: 5, maxBackoffMs: 20 };

test('batches arrive in order, with increasing seq and the JSON content type', async () => {
  const rx = await receiver();
  try {
    const w = collectWarnings();
    const r = new HttpReporter({ type: 'http', url: rx.url, batchSize: 3 }, { warn: w.warn, ...fast });
    assert.equal(r.name, `http(${rx.url})`);
    const ev = new Events();
    const sent = [...ev.fullRun()];
    for (const e of sent) r.handle(e);
    await r.close(Date.now() + 3000);
    assert.deepEqual(rx.all(), sent);
    assert.ok(rx.received.every((b) => b.events.length <= 3));
    assert.ok(rx.received.length >= 3);
    const seqs = rx.all().map((e) => e.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    assert.equal(rx.received[0]?.headers['content-type'], 'application/json');
    assert.deepEqual(w.messages, []);
  } finally {
    await rx.close();
  }
});

test('503 twice then 200: every event is delivered exactly once', async () => {
  const rx = await receiver((_q, res, n) => {
    if (n < 2) {
      res.statusCode = 503;
      res.end('busy');
    } else res.end('{}');
  });
  try {
    const w = collectWarnings();
    const r = new HttpReporter({ type: 'http', url: rx.url }, { warn: w.warn, ...fast });
    const sent = new Events().fullRun();
    for (const e of sent) r.handle(e);
    await r.close(Date.now() + 3000);
    assert.deepEqual(rx.all(), sent);
    // The first event goes out alone (nothing else was queued yet) and is refused twice;
    // the rest queue meanwhile and go in one batch.
    assert.equal(rx.requests(), 4);
    assert.deepEqual(
      rx.received.map((b) => b.events.length),
      [1, 8],
    );
    assert.deepEqual(w.messages, []);
  } finally {
    await rx.close();
  }
});

test('a server that is down at first gets the events once it is up', async () => {
  // Find a free port, then leave it closed for a moment.
  const probe = await receiver();
  const port = probe.port;
  await probe.close();
  const w = collectWarnings();
  const r = new HttpReporter({ type: 'http', url: `http://127.0.0.1:${port}/api/events`, retries: 20 }, { warn: w.warn, ...fast });
  const sent = new Events().fullRun();
  for (const e of sent) r.handle(e);
  await new Promise((res) => setTimeout(res, 60));
  const rx = await receiver(undefined, port);
  try {
    await r.close(Date.now() + 3000);
    assert.deepEqual(rx.all(), sent);
    assert.deepEqual(w.messages, []);
  } finally {
    await rx.close();
  }
});

test('bearer token and custom headers arrive', async () => {
  const rx = await receiver();
  try {
    const r = new HttpReporter(
      { type: 'http', url: rx.url, token: 's3cret', headers: { 'x-line': 'L4' } },
      { warn: () => {}, ...fast },
    );
    r.handle(new Events().runStart());
    await r.close(Date.now() + 3000);
    assert.equal(rx.received[0]?.headers.authorization, 'Bearer s3cret');
    assert.equal(rx.received[0]?.headers['x-line'], 'L4');
  } finally {
    await rx.close();
  }
});

test('a 400 drops the batch with a warning naming the status and body, without retrying', async () => {
  const rx = await receiver((_q, res) => {
    res.statusCode = 400;
    res.end('{"error":"seq must be an integer"}');
  });
  try {
    const w = collectWarnings();
    const r = new HttpReporter({ type: 'http', url: rx.url }, { warn: w.warn, ...fast });
    r.handle(new Events().runStart());
    await until(() => w.messages.length > 0, 2000, 'a warning');
    assert.equal(rx.requests(), 1);
    assert.match(w.messages[0] ?? '', /400: \{"error":"seq must be an integer"\}; dropped 1 events/);
    await r.close(Date.now() + 1000);
    assert.equal(rx.requests(), 1);
  } finally {
    await rx.close();
  }
});

test('a full queue keeps every milestone and the newest progress', async () => {
  // Hold the first request so everything after it queues up.
  let release: (() => void) | undefined;
  const rx = await receiver((_q, res, n) => {
    if (n === 0) release = () => res.end('{}');
    else res.end('{}');
  });
  try {
    const w = collectWarnings();
    const r = new HttpReporter({ type: 'http', url: rx.url, queueSize: 5, batchSize: 100 }, { warn: w.warn, ...fast });
    const ev = new Events();
    r.handle(ev.runStart());
    await until(() => release !== undefined, 2000, 'first request');
    const queued: BootlineEvent[] = [ev.taskStart(0, 0)];
    for (let i = 1; i <= 20; i++) queued.push(ev.progress(0, i * 5, i), ev.log(`line ${i}`));
    const last = ev.progress(0, 100, 33);
    const end = ev.taskEnd(0, 'ok', 33);
    const runEnd = ev.runEnd('ok');
    for (const e of [...queued, last, end, runEnd]) r.handle(e);
    release?.();
    await r.close(Date.now() + 3000);
    const got = rx.all();
    const types = got.map((e) => e.type);
    assert.deepEqual(types.filter((t) => t !== 'log' && t !== 'task-progress'), ['run-start', 'task-start', 'task-end', 'run-end']);
    assert.ok(got.some((e) => e.seq === last.seq), 'newest progress kept');
    assert.ok(got.length <= 6, `at most the queue size after the first batch, got ${got.length}`);
    assert.match(w.messages.join('\n'), /dropping old progress and log events/);
  } finally {
    await rx.close();
  }
});

test('a receiver that never answers: close() returns by its deadline and says what was lost', async () => {
  const rx = await receiver(() => {});
  try {
    const w = collectWarnings();
    const r = new HttpReporter({ type: 'http', url: rx.url, timeout: 30 }, { warn: w.warn, ...fast });
    for (const e of new Events().fullRun()) r.handle(e);
    const t0 = Date.now();
    await r.close(t0 + 300);
    const took = Date.now() - t0;
    assert.ok(took < 600, `close took ${took} ms`);
    assert.match(w.messages.join('\n'), /9 events not delivered by the deadline/);
  } finally {
    await rx.close();
  }
});

test('the queue drops superseded progress first, then old logs, never milestones', () => {
  const ev = new Events();
  const q: BootlineEvent[] = [];
  const start = ev.taskStart(0, 0);
  const p1 = ev.progress(0, 10, 1);
  const log = ev.log('x');
  const p2 = ev.progress(0, 20, 2);
  for (const e of [start, p1, log]) enqueueBounded(q, e, 3);
  assert.equal(enqueueBounded(q, p2, 3), 1);
  assert.deepEqual(q, [start, log, p2]);
  const end = ev.taskEnd(0, 'ok', 3);
  enqueueBounded(q, end, 3);
  assert.deepEqual(q, [start, p2, end]);
  const runEnd = ev.runEnd('ok');
  enqueueBounded(q, runEnd, 3);
  assert.deepEqual(q, [start, end, runEnd]);
  enqueueBounded(q, ev.runStart(), 3);
  assert.equal(q.length, 4, 'milestones are kept past the limit');
});

test('retry policy: exponential backoff with jitter, capped; Retry-After in seconds or as a date', () => {
  assert.equal(backoffDelay(0, 250, 5000, () => 1), 250);
  assert.equal(backoffDelay(0, 250, 5000, () => 0), 125);
  assert.equal(backoffDelay(3, 250, 5000, () => 1), 2000);
  assert.equal(backoffDelay(10, 250, 5000, () => 1), 5000);
  assert.equal(parseRetryAfter('7', 0), 7000);
  assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
  assert.equal(parseRetryAfter('soon', 0), undefined);
  assert.deepEqual(classifyResponse(204, undefined, '', 0), { kind: 'ok' });
  assert.equal(classifyResponse(429, '2', '', 0).kind, 'retry');
  assert.equal(classifyResponse(408, undefined, '', 0).kind, 'retry');
  assert.equal(classifyResponse(404, undefined, 'not here', 0).kind, 'fatal');
});

test('a bad URL is warned about and never throws', async () => {
  const w = collectWarnings();
  const r = new HttpReporter({ type: 'http', url: 'ftp://line/events' }, { warn: w.warn });
  r.handle(new Events().runStart());
  await r.close(Date.now() + 100);
  assert.match(w.messages[0] ?? '', /not a usable http\(s\) URL/);
});
