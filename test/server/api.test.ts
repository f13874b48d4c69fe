// The real server over real HTTP, on SQLite and on a real PostgreSQL: enrollment, plans by
// rule, idempotent events, the admin API, the live stream, export, boot scripts, limits.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import http from 'node:http';
import { startTestServer, type TestServer } from './test-server.ts';
import { runEvents } from './events-fixture.ts';
import { startPostgres } from './pg.ts';

const SCRIPT_PLAN = { tasks: [{ name: 'hello', script: '/bin/true' }] };

async function enroll(s: TestServer, identity: { serial?: string; macs?: string[] }, label = 'line-a') {
  const t = await s.admin('POST', '/api/v1/tokens', { label });
  assert.equal(t.status, 201, t.text);
  const r = await s.call('POST', '/api/v1/enroll', { body: { token: t.json.token, macs: [], ...identity } });
  assert.equal(r.status, 201, r.text);
  return r.json as { deviceId: string; credential: string };
}

function suite(kind: 'sqlite' | 'postgres') {
  describe(`server API on ${kind}`, () => {
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

    it('serves health, metrics and an OpenAPI document of every API route', async () => {
      assert.equal((await s.call('GET', '/healthz')).status, 200);
      const doc = (await s.call('GET', '/openapi.json')).json;
      assert.equal(doc.openapi, '3.0.3');
      for (const p of ['/api/v1/enroll', '/api/v1/device/events', '/api/v1/device/plan', '/api/v1/plans/{name}', '/api/v1/tokens']) assert.ok(doc.paths[p], `${p} documented`);
      assert.ok(doc.components.securitySchemes.device);
      const m = await s.call('GET', '/metrics');
      assert.match(m.text, /bootline_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/);
      assert.match(m.text, /bootline_devices/);
    });

    it('stores the inventory document a device sends and gives it to admins; a document that breaks the schema is refused with the field named', async () => {
      const d = await enroll(s, { serial: 'INV-1' });
      const empty = await s.admin('GET', `/api/v1/devices/${d.deviceId}/inventory`);
      assert.equal(empty.status, 404);
      assert.match(empty.json.message, /has sent no inventory yet: give its plan a collect-inventory task/);
      const doc = {
        format: 'bootline-inventory/1', collectedAt: '2026-12-01T02:00:00.000Z', serial: 'INV-1',
        system: { vendor: 'QEMU', serial: 'INV-1' }, board: {}, chassis: {}, firmware: { mode: 'uefi', version: '0.0.0' },
        cpus: { architecture: 'x64', sockets: 1, cores: 2, threads: 2 }, memory: { totalBytes: 1073741824 },
        disks: [{ name: 'vda', sizeBytes: 8589934592, serial: 'D1', removable: false }], nics: [{ name: 'eth0', mac: '52:54:00:12:34:56', state: 'up', carrier: true }],
        pci: [], usb: [], tpm: { present: false }, secureBoot: { supported: true, enabled: false, setupMode: true }, commands: [],
        errors: [{ field: 'memory.modules', message: 'dmidecode is not installed (Debian package dmidecode)' }],
      };
      const bad = await s.call('PUT', '/api/v1/device/inventory', { token: d.credential, body: { ...doc, disks: [{ name: 'vda' }] } });
      assert.equal(bad.status, 400, bad.text);
      assert.match(bad.text, /disks\/0.*sizeBytes|sizeBytes/);
      assert.equal((await s.call('PUT', '/api/v1/device/inventory', { token: s.adminToken, body: doc })).status, 401, 'device credentials only');
      const put = await s.call('PUT', '/api/v1/device/inventory', { token: d.credential, body: doc });
      assert.equal(put.status, 204, put.text);
      const got = await s.admin('GET', `/api/v1/devices/${d.deviceId}/inventory`);
      assert.equal(got.status, 200);
      assert.deepEqual(got.json, doc);
      assert.deepEqual((await s.admin('GET', `/api/v1/devices/${d.deviceId}`)).json.inventory, doc);
      assert.equal((await s.call('GET', `/api/v1/devices/${d.deviceId}/inventory`, { token: d.credential })).status, 401, 'admins only');
    });

    it('refuses the management API without admin credentials, and device credentials there', async () => {
      for (const p of ['/api/v1/devices', '/api/v1/plans', '/api/v1/tokens', '/api/v1/stream']) {
        const r = await s.call('GET', p);
        assert.equal(r.status, 401, p);
        assert.equal(r.json.error, 'unauthorized');
      }
      const d = await enroll(s, { serial: 'AUTH-1' });
      assert.equal((await s.call('GET', '/api/v1/devices', { token: d.credential })).status, 401);
      assert.equal((await s.call('GET', '/api/v1/device/plan', { token: s.adminToken })).status, 401);
      assert.equal((await s.call('GET', '/api/v1/devices', { token: 'bla_wrong' })).status, 401);
    });

    it('enrolls with a good token only: expired, revoked, unknown and missing tokens learn nothing', async () => {
      const good = await s.admin('POST', '/api/v1/tokens', { label: 'batch-7' });
      const ok = await s.call('POST', '/api/v1/enroll', { body: { token: good.json.token, serial: 'SN-100', macs: ['52:54:00:00:01:00'] } });
      assert.equal(ok.status, 201);
      assert.match(ok.json.credential, /^bld_/);
      const dev = await s.admin('GET', `/api/v1/devices/${ok.json.deviceId}`);
      assert.equal(dev.json.serial, 'SN-100');
      assert.equal(dev.json.batch, 'batch-7');
      assert.deepEqual(dev.json.macs, ['52:54:00:00:01:00']);
      // The same serial again is the same device, with a new credential; the old one stops working.
      const again = await s.call('POST', '/api/v1/enroll', { body: { token: good.json.token, serial: 'SN-100', macs: [] } });
      assert.equal(again.json.deviceId, ok.json.deviceId);
      assert.equal((await s.call('GET', '/api/v1/device/last-run', { token: again.json.credential })).status, 200);

      const revoked = await s.admin('POST', '/api/v1/tokens', { label: 'old' });
      assert.equal((await s.admin('DELETE', `/api/v1/tokens/${revoked.json.id}`)).status, 204);
      const expiring = await s.admin('POST', '/api/v1/tokens', { label: 'short', expiresInSeconds: 1 });
      await new Promise((r) => setTimeout(r, 1100));
      const answers = [];
      for (const token of [revoked.json.token, expiring.json.token, 'ble_unknown', good.json.token.slice(0, -2) + 'xx']) {
        const r = await s.call('POST', '/api/v1/enroll', { body: { token, serial: 'SN-X', macs: [] } });
        assert.equal(r.status, 401, token);
        answers.push(r.text);
      }
      assert.equal(new Set(answers).size, 1, 'every refusal reads the same');
      const missing = await s.call('POST', '/api/v1/enroll', { body: { serial: 'SN-X', macs: [] } });
      assert.equal(missing.status, 400);
      assert.match(missing.json.message, /token/);
      const noId = await s.call('POST', '/api/v1/enroll', { body: { token: good.json.token, macs: [] } });
      assert.equal(noId.status, 400);
      const list = (await s.admin('GET', '/api/v1/devices?q=SN-X')).json;
      assert.equal(list.length, 0, 'no device was made by a refused enrollment');
      const tokens = (await s.admin('GET', '/api/v1/tokens')).json as { id: string; uses: number; revokedAt: string | null }[];
      assert.equal(tokens.find((t) => t.id === good.json.id)?.uses, 2);
      assert.ok(tokens.find((t) => t.id === revoked.json.id)?.revokedAt);
      assert.ok(!JSON.stringify(tokens).includes(good.json.token), 'secrets are never listed');
    });

    it('gives each device the plan of the first matching rule, or nothing to do', async () => {
      for (const name of ['line-default', 'line-special']) assert.equal((await s.admin('PUT', `/api/v1/plans/${name}`, { config: SCRIPT_PLAN })).status, 200);
      assert.equal((await s.admin('POST', '/api/v1/rules', { match: 'default', plan: 'line-default', priority: 1000 })).status, 201);
      assert.equal((await s.admin('POST', '/api/v1/rules', { match: 'serial', pattern: 'SPC-*', plan: 'line-special', priority: 10 })).status, 201);
      assert.equal((await s.admin('POST', '/api/v1/rules', { match: 'mac', pattern: '52:54:00:AA:00:01', action: 'none', priority: 5 })).status, 201);
      const special = await enroll(s, { serial: 'SPC-0001' });
      const plain = await enroll(s, { serial: 'GEN-0001' });
      const skip = await enroll(s, { serial: 'SPC-0002', macs: ['52:54:00:aa:00:01'] });
      assert.equal((await s.call('GET', '/api/v1/device/plan', { token: special.credential })).json.plan, 'line-special');
      const p = (await s.call('GET', '/api/v1/device/plan', { token: plain.credential })).json;
      assert.equal(p.plan, 'line-default');
      assert.equal(p.action, 'run');
      assert.deepEqual(p.config, SCRIPT_PLAN);
      assert.equal((await s.call('GET', '/api/v1/device/plan', { token: skip.credential })).json.action, 'none');
      const bad = await s.admin('POST', '/api/v1/rules', { match: 'serial', plan: 'line-default' });
      assert.equal(bad.status, 400);
      assert.match(bad.json.message, /pattern/);
      const inUse = await s.admin('DELETE', '/api/v1/plans/line-default');
      assert.equal(inUse.status, 400);
      assert.match(inUse.json.message, /rules .* use plan line-default/);
    });

    it("checks plans with the agent's schema and refuses unknown images", async () => {
      const r = await s.admin('PUT', '/api/v1/plans/broken', { config: { tasks: [{ name: 'x', builtin: 'deploy-imag' }] } });
      assert.equal(r.status, 400);
      assert.match(r.json.message, /plan broken.*deploy-imag/);
      const typo = await s.admin('PUT', '/api/v1/plans/typo', { config: { tasks: [{ name: 'x', script: '/bin/true', retires: 2 }] } });
      assert.equal(typo.status, 400);
      assert.match(typo.json.message, /retires/);
      const img = await s.admin('PUT', '/api/v1/plans/noimage', { config: { tasks: [{ name: 'x', builtin: 'deploy-image', with: { image: 'image:nope', target: ['/dev/vdz'] } }] } });
      assert.equal(img.status, 400);
      assert.match(img.json.message, /not registered here: nope/);
      assert.equal((await s.admin('GET', '/api/v1/plans/broken')).status, 404, 'nothing saved');
      assert.equal((await s.admin('PUT', '/api/v1/plans/..%2fetc', { config: SCRIPT_PLAN })).status, 400);
    });

    it('stores events once per run id and sequence number, and follows the device through its run', async () => {
      const d = await enroll(s, { serial: 'EVT-1' });
      const events = runEvents('run-evt-1');
      const first = await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: events.slice(0, 4) } });
      assert.deepEqual(first.json, { stored: 4, duplicates: 0 });
      let dev = (await s.admin('GET', `/api/v1/devices/${d.deviceId}`)).json;
      assert.equal(dev.state, 'running');
      assert.equal(dev.currentTask, 'deploy');
      assert.equal(dev.currentRun, 'run-evt-1');
      // A re-sent batch overlapping the first is stored once.
      const resent = await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events } });
      assert.deepEqual(resent.json, { stored: events.length - 4, duplicates: 4 });
      const again = await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events } });
      assert.deepEqual(again.json, { stored: 0, duplicates: events.length });
      const stored = (await s.admin('GET', '/api/v1/runs/run-evt-1/events')).json as { seq: number }[];
      assert.deepEqual(stored.map((e) => e.seq), events.map((e) => e.seq));
      dev = (await s.admin('GET', `/api/v1/devices/${d.deviceId}`)).json;
      assert.equal(dev.state, 'succeeded');
      assert.equal(dev.progress, 100);
      const run = (await s.admin('GET', '/api/v1/runs/run-evt-1')).json;
      assert.equal(run.status, 'ok');
      assert.equal(run.report.status, 'ok');
      const last = (await s.call('GET', '/api/v1/device/last-run', { token: d.credential })).json;
      assert.deepEqual(last, { runId: 'run-evt-1', status: 'ok', plan: last.plan, completed: ['deploy', 'finish'] });
      const m = (await s.call('GET', '/metrics')).text;
      assert.match(m, /bootline_event_duplicates_total \d+/);
      assert.match(m, /bootline_events_ingested_total\{type="log"\} \d+/);
    });

    it('ends a run cut short by a power loss as aborted when the device starts a new one', async () => {
      const d = await enroll(s, { serial: 'PWR-1' });
      await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: runEvents('run-pwr-1').slice(0, 3) } });
      assert.equal((await s.admin('GET', '/api/v1/runs/run-pwr-1')).json.status, 'running');
      const last = (await s.call('GET', '/api/v1/device/last-run', { token: d.credential })).json;
      assert.equal(last.status, 'running', 'what the restarted agent sees before it starts again');
      await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: runEvents('run-pwr-2').slice(0, 1) } });
      assert.equal((await s.admin('GET', '/api/v1/runs/run-pwr-1')).json.status, 'aborted');
      assert.equal((await s.admin('GET', '/api/v1/runs/run-pwr-2')).json.status, 'running');
      assert.equal((await s.admin('GET', `/api/v1/devices/${d.deviceId}`)).json.currentRun, 'run-pwr-2');
    });

    it("refuses events into another device's run, bad event bodies and oversized bodies", async () => {
      const a = await enroll(s, { serial: 'OWN-A' });
      const b = await enroll(s, { serial: 'OWN-B' });
      const events = runEvents('run-owned');
      assert.equal((await s.call('POST', '/api/v1/device/events', { token: a.credential, body: { events: events.slice(0, 2) } })).status, 200);
      const steal = await s.call('POST', '/api/v1/device/events', { token: b.credential, body: { events: events.slice(2, 3) } });
      assert.equal(steal.status, 409);
      assert.match(steal.json.message, /another device/);
      const bad = await s.call('POST', '/api/v1/device/events', { token: a.credential, body: { events: [{ ...events[2], seq: -1 }] } });
      assert.equal(bad.status, 400);
      assert.match(bad.json.message, /events/);
      const empty = await s.call('POST', '/api/v1/device/events', { token: a.credential, body: { events: [] } });
      assert.equal(empty.status, 400);
      const huge = 'x'.repeat(5 * 1024 * 1024);
      const big = await s.call('POST', '/api/v1/device/events', { token: a.credential, raw: JSON.stringify({ events: [{ ...events[2], message: huge }] }), headers: { 'content-type': 'application/json' } });
      assert.equal(big.status, 413);
      assert.match(big.json.message, /larger than this server accepts/);
      const stored = (await s.admin('GET', '/api/v1/runs/run-owned/events')).json as unknown[];
      assert.equal(stored.length, 2, 'nothing of the refused requests was stored');
    });

    it('streams device updates live to a dashboard (server-sent events)', async () => {
      const d = await enroll(s, { serial: 'LIVE-1' });
      const got = new Promise<string>((resolve, reject) => {
        const req = http.get(`${s.url}/api/v1/stream?intervalMs=50`, { headers: { authorization: `Bearer ${s.adminToken}` } }, (res) => {
          assert.equal(res.headers['content-type'], 'text/event-stream');
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buf += chunk;
            if (buf.includes('event: hello') && !buf.includes('posted')) {
              buf += 'posted';
              void s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: runEvents('run-live').slice(0, 3) } });
            }
            const m = /event: devices\ndata: (.*)\n\n/.exec(buf);
            if (m) {
              req.destroy();
              resolve(m[1] as string);
            }
          });
        });
        req.on('error', reject);
        setTimeout(() => reject(new Error('no devices message within 5 s')), 5000);
      });
      const batch = JSON.parse(await got) as { device: { id: string; state: string }; events: { seq: number }[] }[];
      const mine = batch.find((e) => e.device.id === d.deviceId);
      assert.ok(mine, 'the device is in the message');
      assert.equal(mine.device.state, 'running');
      assert.deepEqual(mine.events.map((e) => e.seq), [0, 1, 2]);
    });

    it("exports a batch's run reports as CSV and JSON, with formula-looking cells neutralized", async () => {
      const d = await enroll(s, { serial: 'EXP-1' }, 'export-batch');
      await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: runEvents('run-exp-1', { fail: true }) } });
      const csv = await s.admin('GET', '/api/v1/export?batch=export-batch&format=csv');
      assert.equal(csv.status, 200);
      assert.match(csv.headers.get('content-type') ?? '', /text\/csv/);
      const lines = csv.text.trimEnd().split('\r\n');
      assert.equal(lines[0], 'deviceId,serial,batch,macs,runId,plan,status,startedAt,endedAt,durationSeconds,failedTask,message,volumes');
      assert.equal(lines.length, 2);
      assert.ok(lines[1]!.startsWith(`${d.deviceId},EXP-1,export-batch,,run-exp-1,`));
      assert.match(lines[1]!, /,failed,.*,finish,"'=cmd\|exit status 3, ""disk full""",$/, 'message, then an empty volumes cell');
      const json = (await s.admin('GET', '/api/v1/export?batch=export-batch')).json;
      assert.equal(json.length, 1);
      assert.equal(json[0].failedTask, 'finish');
    });

    it('boots devices: generic script, per-device script with a boot token that enrolls only that MAC', async () => {
      const generic = await s.call('GET', '/boot.ipxe');
      assert.match(generic.text, /^#!ipxe/);
      assert.match(generic.text, /net0\/mac/);
      // No installer yet: the device boots from disk with a message.
      const mac = '52:54:00:12:34:56';
      assert.equal((await s.admin('POST', '/api/v1/rules', { match: 'mac', pattern: mac, plan: 'line-default', priority: 1 })).status, 201);
      const none = await s.call('GET', '/boot/52-54-00-12-34-56.ipxe');
      assert.match(none.text, /\nexit/);
      assert.match(none.text, /no installer/);
      mkdirSync(join(s.data, 'installer'), { recursive: true });
      writeFileSync(join(s.data, 'installer', 'vmlinuz'), 'kernel');
      writeFileSync(join(s.data, 'installer', 'initrd.img'), 'initrd');
      const script = (await s.call('GET', '/boot/52-54-00-12-34-56.ipxe')).text;
      assert.match(script, new RegExp(`kernel ${s.url}/installer/vmlinuz .*initrd=initrd.img`));
      assert.match(script, new RegExp(`bootline.server=${s.url}`));
      const token = /bootline\.token=(\S+)/.exec(script)?.[1];
      assert.ok(token?.startsWith('blb_'));
      const wrongMac = await s.call('POST', '/api/v1/enroll', { body: { token, macs: ['52:54:00:12:34:57'] } });
      assert.equal(wrongMac.status, 401);
      const ok = await s.call('POST', '/api/v1/enroll', { body: { token, macs: [mac] } });
      assert.equal(ok.status, 201);
      const kernel = await s.call('GET', '/installer/vmlinuz');
      assert.equal(kernel.text, 'kernel');
      assert.equal((await s.call('GET', '/installer/..%2fsecret')).status, 400);
      assert.equal((await s.call('GET', '/images/..%2f..%2fsecret/x')).status >= 400, true);

      // Once its run succeeded the device boots its disk, until an admin asks for it again.
      const dev = ok.json as { deviceId: string; credential: string };
      const done = runEvents('boot-run-1');
      assert.equal((await s.call('POST', '/api/v1/device/events', { token: dev.credential, body: { events: done } })).status, 200);
      assert.equal((await s.admin('GET', `/api/v1/devices/${dev.deviceId}`)).json.state, 'succeeded');
      const provisioned = (await s.call('GET', '/boot/52-54-00-12-34-56.ipxe')).text;
      assert.match(provisioned, /^echo bootline: 52:54:00:12:34:56 is provisioned, booting from disk\nexit$/m);
      assert.equal((await s.call('POST', `/api/v1/devices/${dev.deviceId}/reprovision`)).status, 401);
      assert.equal((await s.admin('POST', '/api/v1/devices/dev_nobody/reprovision')).status, 404);
      assert.equal((await s.admin('POST', `/api/v1/devices/${dev.deviceId}/reprovision`)).status, 204);
      assert.equal((await s.admin('GET', `/api/v1/devices/${dev.deviceId}`)).json.state, 'enrolled');
      assert.match((await s.call('GET', '/boot/52-54-00-12-34-56.ipxe')).text, /kernel .*bootline\.token=/);

      // An installer built as a (signed) UKI is chain-loaded instead, with the same parameters.
      writeFileSync(join(s.data, 'installer', 'bootline-installer.efi'), 'MZ uki');
      const uki = (await s.call('GET', '/boot/52-54-00-12-34-56.ipxe')).text;
      assert.match(uki, new RegExp(`^chain --autofree ${s.url}/installer/bootline-installer\\.efi bootline\\.server=${s.url} bootline\\.token=blb_\\S+ console=tty0 console=ttyS0,115200 \\|\\| goto bootline_failed$`, 'm'));
      assert.doesNotMatch(uki, /^kernel /m);
      assert.equal((await s.call('GET', '/installer/bootline-installer.efi')).text, 'MZ uki');
    });
  });
}

suite('sqlite');
suite('postgres');

describe('two server processes on one PostgreSQL', () => {
  let pg: Awaited<ReturnType<typeof startPostgres>>;
  let a: TestServer;
  let b: TestServer;
  before(async () => {
    pg = await startPostgres();
    a = await startTestServer({ db: pg.url });
    b = await startTestServer({ db: pg.url });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await pg?.stop();
  });

  it('share admin tokens and devices, and events posted to one reach the other’s live stream', async () => {
    assert.equal(b.server.adminToken, undefined, 'the second process found the first one’s admin token');
    const d = await enroll(a, { serial: 'TWO-1' });
    const seen = new Promise<{ device: { id: string }; events: { seq: number }[] }[]>((resolve, reject) => {
      const req = http.get(`${b.url}/api/v1/stream?intervalMs=50&logs=false`, { headers: { authorization: `Bearer ${a.adminToken}` } }, (res) => {
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          if (buf.includes('event: hello') && !buf.includes('posted')) {
            buf += 'posted';
            void a.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: runEvents('run-two-1') } });
          }
          const m = /event: devices\ndata: (.*)\n\n/.exec(buf);
          if (m) {
            req.destroy();
            resolve(JSON.parse(m[1] as string));
          }
        });
      });
      req.on('error', reject);
      setTimeout(() => reject(new Error('server B streamed nothing within 5 s')), 5000);
    });
    const batch = await seen;
    const mine = batch.find((e) => e.device.id === d.deviceId);
    assert.ok(mine, 'B streamed the device A stored');
    assert.deepEqual(mine.events.map((e) => e.seq), runEvents('x').filter((e) => e.type !== 'log').map((e) => e.seq));
    // The device's credential works on either process.
    assert.equal((await b.call('GET', '/api/v1/device/last-run', { token: d.credential })).json.runId, 'run-two-1');
  });
});
