// A body the server refuses is read to its end before the answer goes out, so that a client
// still sending it reads the answer; bounded, so a client that never stops is cut off.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { startTestServer, type TestServer } from './test-server.ts';
import { drainBody } from '../../src/server/drain-refused-body.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer(); // body limit 4 MiB
});
after(async () => {
  await s?.close();
});

/** Sends a request head, then `chunks` of the body with a pause between them, noting how many
 *  chunks had been written when the first byte of the answer came. */
async function sendSlowly(url: string, head: string, chunks: Buffer[], pauseMs: number) {
  const { hostname, port } = new URL(url);
  const sock = net.connect(Number(port), hostname);
  await once(sock, 'connect');
  let answer = '';
  let writtenAtAnswer = -1;
  let written = 0;
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    if (writtenAtAnswer < 0) writtenAtAnswer = written;
    answer += d;
  });
  const closed = once(sock, 'close');
  sock.write(head);
  for (const c of chunks) {
    await new Promise((r) => setTimeout(r, pauseMs));
    if (sock.destroyed) break;
    await new Promise<void>((resolve, reject) => sock.write(c, (e) => (e ? reject(e) : resolve())));
    written++;
  }
  await closed;
  return { answer, writtenAtAnswer, written };
}

test('a body over the limit is read to its end before the 413 goes out', async () => {
  const chunks = Array.from({ length: 10 }, () => Buffer.alloc(512 * 1024, 0x20));
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const head = `PUT /api/v1/plans/p HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${s.adminToken}\r\ncontent-type: application/json\r\ncontent-length: ${length}\r\n\r\n`;
  const r = await sendSlowly(s.url, head, chunks, 30);
  assert.match(r.answer, /^HTTP\/1\.1 413 /, r.answer.slice(0, 200));
  assert.match(r.answer, /larger than this server accepts/);
  assert.equal(r.writtenAtAnswer, chunks.length, `the answer came after ${r.writtenAtAnswer} of ${chunks.length} chunks`);
});

test('a refusal for another reason (a content type no route takes) also waits for the whole body', async () => {
  const chunks = Array.from({ length: 4 }, () => Buffer.alloc(64 * 1024, 0x20));
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const head = `PUT /api/v1/plans/p HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer ${s.adminToken}\r\ncontent-type: application/x-unknown\r\ncontent-length: ${length}\r\n\r\n`;
  const r = await sendSlowly(s.url, head, chunks, 30);
  assert.match(r.answer, /^HTTP\/1\.1 415 /, r.answer.slice(0, 200));
  assert.equal(r.writtenAtAnswer, chunks.length, `the answer came after ${r.writtenAtAnswer} of ${chunks.length} chunks`);
});

/** A server whose every request is drained with the given bounds; it answers with the result. */
async function drainServer(maxBytes: number, maxMs: number) {
  const server = http.createServer((req, res) => {
    void drainBody(req, maxBytes, maxMs).then((all) => res.end(String(all)));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return { server, port };
}

function post(port: number, headers: http.OutgoingHttpHeaders, body: Buffer | undefined) {
  return new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', headers }, (res) => {
      let t = '';
      res.setEncoding('utf8').on('data', (d: string) => (t += d)).on('end', () => resolve(t));
    });
    req.on('error', (e) => (e as NodeJS.ErrnoException).code === 'ECONNRESET' || e.message.includes('socket hang up') ? resolve('reset') : reject(e));
    if (body) req.end(body);
    else req.flushHeaders();
  });
}

test('drainBody: true for a whole body, false past its byte bound, and at once for a declared length past it', async () => {
  // The time bound is longer than the test may take: a drain that waited for it would time out.
  const { server, port } = await drainServer(64 * 1024, 600_000);
  try {
    assert.equal(await post(port, { 'content-length': 1000 }, Buffer.alloc(1000)), 'true');
    assert.equal(await post(port, { 'transfer-encoding': 'chunked' }, Buffer.alloc(200 * 1024)), 'false', 'chunked, past the bound');
    assert.equal(await post(port, { 'content-length': 10 * 1024 * 1024 }, undefined), 'false', 'declared past the bound, nothing sent');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('drainBody: false when the body does not come within its time bound', async () => {
  const { server, port } = await drainServer(64 * 1024, 300);
  try {
    assert.equal(await post(port, { 'content-length': 1000 }, undefined), 'false');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
