// The server's side of the dashboard, on SQLite and on a real PostgreSQL: the line view's
// first load (devices with their runs' start, counts, the stall setting), the network-boot
// snippets, and the built page with its assets, served without credentials while every
// API answer needs them.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from './test-server.ts';
import { runEvents } from './events-fixture.ts';
import { startPostgres } from './pg.ts';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { findWebRoot } from '../../src/server/routes/web.ts';

function suite(kind: 'sqlite' | 'postgres') {
  describe(`dashboard API on ${kind}`, () => {
    let s: TestServer;
    let pg: Awaited<ReturnType<typeof startPostgres>> | undefined;
    before(async () => {
      if (kind === 'postgres') pg = await startPostgres();
      s = await startTestServer(pg ? { db: pg.url } : {});
    });
    after(async () => {
      await s?.close();
      await pg?.stop();
    });

    const enroll = async (serial: string, label: string) => {
      const t = await s.admin('POST', '/api/v1/tokens', { label });
      const r = await s.call('POST', '/api/v1/enroll', { body: { token: t.json.token, serial, macs: [] } });
      assert.equal(r.status, 201, r.text);
      return r.json as { deviceId: string; credential: string };
    };

    it("gives the line view every device with its current run's start, counts and the stall setting", async () => {
      const running = await enroll('LINE-1', 'batch-1');
      const done = await enroll('LINE-2', 'batch-2');
      const idle = await enroll('LINE-3', 'batch-2');
      const started = runEvents('run-line-1');
      // A running device: only the start of its run so far.
      assert.equal((await s.call('POST', '/api/v1/device/events', { token: running.credential, body: { events: started.slice(0, 3) } })).status, 200);
      assert.equal((await s.call('POST', '/api/v1/device/events', { token: done.credential, body: { events: runEvents('run-line-2', { fail: true }) } })).status, 200);
      const r = await s.admin('GET', '/api/v1/line');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.stalledAfter, 120);
      assert.ok(Math.abs(Date.parse(r.json.now) - Date.now()) < 5000, 'the server clock');
      assert.deepEqual(r.json.counts, { enrolled: 1, running: 1, succeeded: 0, failed: 1, aborted: 0 });
      const byId = new Map((r.json.devices as { id: string }[]).map((d) => [d.id, d as Record<string, unknown>]));
      assert.equal(byId.size, 3);
      assert.equal(byId.get(running.deviceId)!.runStartedAt, started[0]!.ts);
      assert.equal(byId.get(running.deviceId)!.state, 'running');
      assert.equal(byId.get(running.deviceId)!.stalled, false);
      assert.equal(byId.get(done.deviceId)!.state, 'failed');
      assert.match(String(byId.get(done.deviceId)!.message), /disk full/);
      assert.equal(byId.get(idle.deviceId)!.runStartedAt, null);
      assert.equal(byId.get(idle.deviceId)!.batch, 'batch-2');
    });

    it('gives the iPXE script and the dnsmasq configuration to copy', async () => {
      const r = await s.admin('GET', '/api/v1/setup');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.baseUrl, s.url);
      assert.match(r.json.ipxe, /^#!ipxe/);
      assert.ok(r.json.ipxe.includes(`${s.url}/boot/`));
      assert.ok(r.json.dnsmasq.includes(`dhcp-boot=tag:ipxe,${s.url}/boot.ipxe`));
      assert.equal(r.json.dnsmasqError, null);
    });

    it('refuses the dashboard endpoints without admin credentials', async () => {
      for (const p of ['/api/v1/line', '/api/v1/setup']) {
        const r = await s.call('GET', p);
        assert.equal(r.status, 401, p);
        assert.equal(r.json.error, 'unauthorized');
      }
      const d = await enroll('LINE-4', 'batch-1');
      assert.equal((await s.call('GET', '/api/v1/line', { token: d.credential })).status, 401, 'a device credential is not an admin one');
    });
  });
}

suite('sqlite');
suite('postgres');

describe('the built dashboard', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => s?.close());

  it('says why there is no dnsmasq configuration when devices reach the server by a host name', async () => {
    const named = await startTestServer({ publicUrl: 'http://line-server.example:8080' });
    try {
      const r = await named.admin('GET', '/api/v1/setup');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.dnsmasq, null);
      assert.match(r.json.dnsmasqError, /IPv4.*publicUrl/s);
      assert.match(r.json.ipxe, /http:\/\/line-server\.example:8080\/boot\//);
    } finally {
      await named.close();
    }
  });

  it("leaves the dashboard out of the agent's single-file bundle", () => {
    const agent = readFileSync(join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs'), 'utf8');
    const page = readdirSync(join(findWebRoot()!, 'assets')).filter((f) => f.endsWith('.js')).map((f) => readFileSync(join(findWebRoot()!, 'assets', f), 'utf8')).join('');
    assert.match(page, /createRoot/, 'the page bundle has React');
    assert.doesNotMatch(agent, /createRoot|react-dom|__bootlineMeasure/);
  });

  it('serves the page and its assets without credentials, with a strict content security policy', async () => {
    assert.ok(findWebRoot(), 'dist/web exists: npm run build makes it');
    const page = await s.call('GET', '/');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.doesNotMatch(page.text, /<script>(?!<\/script>)/, 'no inline script');
    const assets = [...page.text.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    assert.ok(assets.some((a) => a.endsWith('.js')) && assets.some((a) => a.endsWith('.css')), page.text);
    for (const a of assets) {
      const r = await s.call('GET', a);
      assert.equal(r.status, 200, a);
      assert.match(r.headers.get('cache-control') ?? '', /immutable/);
    }
    const missing = await s.call('GET', '/assets/nope.js');
    assert.equal(missing.status, 404);
    assert.equal((await s.call('GET', '/assets/..%2Fbootline.db')).status, 400, 'no path out of the assets');
  });
});
