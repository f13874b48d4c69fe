// The server's pure parts: rules, plan image references, boot tokens, report CSV, stalled.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chooseRule, globToRegExp, resolveImages, imageRefs, PlanResolveError, mainFile } from '../../src/server/plan-resolve.ts';
import { bootToken, checkBootToken, hashPassword, checkPassword, newSecret, kindOf } from '../../src/server/credentials.ts';
import { csvCell, toCsv, reportRow } from '../../src/server/report-export.ts';
import { isStalled } from '../../src/server/routes/admin.ts';
import { resolveServerConfig, ServerConfigError, splitHostPort } from '../../src/server/config.ts';
import type { Device, Image, Rule, Run } from '../../src/api/admin.ts';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';

const device = (over: Partial<Device> = {}): Device => ({
  id: 'dev_1', serial: 'SN-1', uuid: null, macs: ['52:54:00:00:00:01'], hostname: null, batch: 'b', firstSeen: '2026-01-01T00:00:00.000Z',
  lastSeen: '2026-01-01T00:00:00.000Z', state: 'running', progress: 0, currentTask: null, currentRun: null, plan: null, message: null, inventory: null, ...over,
});

describe('rules', () => {
  it('match serial globs literally apart from * and ?', () => {
    assert.ok(globToRegExp('AB-*').test('AB-123'));
    assert.ok(globToRegExp('A?C').test('ABC'));
    assert.ok(!globToRegExp('A.C').test('ABC'), 'a dot is a dot');
    assert.ok(!globToRegExp('AB-*').test('XAB-1'), 'anchored');
  });
  it('take the first match by priority, then age', () => {
    const rules: Rule[] = [
      { id: 1, priority: 100, match: 'default', action: 'run', plan: 'dflt' },
      { id: 2, priority: 10, match: 'serial', pattern: 'SN-*', action: 'run', plan: 'sn' },
      { id: 3, priority: 10, match: 'mac', pattern: '52:54:00:00:00:01', action: 'none' },
    ];
    assert.equal(chooseRule(rules, device())?.id, 2);
    assert.equal(chooseRule(rules, device({ serial: 'X' }))?.id, 3);
    assert.equal(chooseRule(rules, device({ serial: null, macs: [] }))?.id, 1);
    assert.equal(chooseRule(rules.slice(1), device({ serial: null, macs: [] })), undefined);
  });
});

describe('plan image references', () => {
  const image: Image = {
    name: 'line-a', location: 'local', createdAt: 'now',
    files: [{ name: 'disk.wic.bmap', size: 1, sha256: 'a' }, { name: 'disk.wic.zst', size: 2, sha256: 'b', bmap: 'disk.wic.bmap' }],
  };
  const plan = (ref: string) => ({ tasks: [{ name: 'deploy', builtin: 'deploy-image', with: { image: ref, target: ['/dev/vda'] } }, { name: 's', script: '/bin/true' }] });
  it('become the URL the server serves the file at', () => {
    const out = resolveImages(plan('image:line-a'), new Map([['line-a', image]]), 'http://10.0.0.1:8080') as { tasks: { with?: { image: string } }[] };
    assert.equal(out.tasks[0]!.with!.image, 'http://10.0.0.1:8080/images/line-a/disk.wic.zst');
    const named = resolveImages(plan('image:line-a/disk.wic.bmap'), new Map([['line-a', image]]), 'http://h') as { tasks: { with?: { image: string } }[] };
    assert.equal(named.tasks[0]!.with!.image, 'http://h/images/line-a/disk.wic.bmap');
    assert.equal(mainFile(image), 'disk.wic.zst');
    assert.deepEqual(imageRefs(plan('image:line-a')), ['line-a']);
    assert.deepEqual(imageRefs(plan('http://elsewhere/x.img')), []);
  });
  it('leave the stored plan alone and refuse unknown images or files', () => {
    const p = plan('image:line-a');
    resolveImages(p, new Map([['line-a', image]]), 'http://h');
    assert.equal(p.tasks[0]!.with!.image, 'image:line-a');
    assert.throws(() => resolveImages(plan('image:nope'), new Map(), 'http://h'), PlanResolveError);
    assert.throws(() => resolveImages(plan('image:line-a/other.img'), new Map([['line-a', image]]), 'http://h'), /no file "other.img"/);
  });
});

describe('credentials', () => {
  const secret = Buffer.alloc(32, 1);
  it('boot tokens enroll one MAC until they expire, and cannot be forged', () => {
    const t = bootToken(secret, '52:54:00:ab:cd:ef', 10_000_000);
    assert.deepEqual(checkBootToken(secret, t, 9_000_000), { ok: true, mac: '52:54:00:ab:cd:ef' });
    assert.deepEqual(checkBootToken(secret, t, 10_000_001), { ok: false, reason: 'expired' });
    assert.deepEqual(checkBootToken(Buffer.alloc(32, 2), t, 0), { ok: false, reason: 'bad signature' });
    const later = t.replace(/\.(\d+)\./, (_m, e: string) => `.${Number(e) + 1000}.`);
    assert.deepEqual(checkBootToken(secret, later, 0), { ok: false, reason: 'bad signature' });
    assert.equal(checkBootToken(secret, 'blb_x', 0).ok, false);
  });
  it('passwords are salted scrypt hashes', async () => {
    const h = await hashPassword('correct horse battery');
    assert.notEqual(h, await hashPassword('correct horse battery'));
    assert.ok(await checkPassword('correct horse battery', h));
    assert.ok(!(await checkPassword('correct horse batterY', h)));
    assert.ok(!(await checkPassword('x', 'garbage')));
  });
  it('secrets say what kind they are', () => {
    assert.equal(kindOf(newSecret('device')), 'device');
    assert.equal(kindOf(newSecret('admin')), 'admin');
    assert.equal(kindOf('hello'), undefined);
  });
});

describe('report export', () => {
  it('quotes CSV cells and neutralizes formulas', () => {
    assert.equal(csvCell('plain'), 'plain');
    assert.equal(csvCell('a,b'), '"a,b"');
    assert.equal(csvCell('say "hi"'), '"say ""hi"""');
    assert.equal(csvCell('=HYPERLINK("x")'), `"'=HYPERLINK(""x"")"`);
    assert.equal(csvCell('-1'), "'-1");
    assert.equal(csvCell('line\nbreak'), '"line\nbreak"');
  });
  it('one row per run: failed task and message from the report', () => {
    const run: Run = {
      id: 'r1', deviceId: 'dev_1', plan: 'p', startedAt: '2026-01-01T00:00:00.000Z', endedAt: '2026-01-01T00:01:30.000Z', status: 'failed', progress: 40,
      report: { tasks: [{ name: 'a', status: 'ok' }, { name: 'b', status: 'failed', optional: true }, { name: 'c', status: 'failed', message: 'exit 3' }] },
    };
    const row = reportRow(run, device());
    assert.equal(row.failedTask, 'c');
    assert.equal(row.message, 'exit 3');
    assert.equal(row.durationSeconds, '90.0');
    assert.equal(toCsv([row]).split('\r\n').length, 3);
    assert.equal(row.volumes, '');
  });
  it('names the volumes whose recovery key was escrowed during the run, in one cell', () => {
    const run: Run = { id: 'r2', deviceId: 'dev_1', plan: 'p', startedAt: '2026-01-01T00:00:00.000Z', endedAt: null, status: 'running', progress: 10, report: null };
    const volumes = [
      { volumeUuid: '0f3c1a52-3b5e-4c1d-9a7e-2d4b6c8e0f11', partition: '/dev/vda3', keyslot: 2, recoveryKey: 'never-shown' },
      { volumeUuid: '1f3c1a52-3b5e-4c1d-9a7e-2d4b6c8e0f11', partition: 'data', keyslot: 1 },
    ];
    const row = reportRow(run, device(), volumes);
    assert.equal(row.volumes, '0f3c1a52-3b5e-4c1d-9a7e-2d4b6c8e0f11 (/dev/vda3 keyslot 2); 1f3c1a52-3b5e-4c1d-9a7e-2d4b6c8e0f11 (data keyslot 1)');
    const csv = toCsv([row]);
    assert.ok(csv.split('\r\n')[0]!.endsWith(',volumes'));
    assert.ok(!csv.includes('never-shown'));
  });
});

describe('server settings', () => {
  it('apply defaults and name the bad key and its source', () => {
    const c = resolveServerConfig({ data: '/tmp/x' });
    assert.equal(c.listen, '127.0.0.1:8080');
    assert.equal(c.db, 'sqlite:/tmp/x/bootline.db');
    const e = (() => {
      try {
        resolveServerConfig({ listen: 'localhost' });
      } catch (err) {
        return err as Error;
      }
    })();
    assert.ok(e instanceof ServerConfigError);
    assert.match(e.message, /listen \(command line\)/);
    // The installer's kernel parameters: serial console last by default; a parameter that
    // could inject into the iPXE script is refused when the server starts, with the file named.
    assert.deepEqual(c.installerCmdline, ['console=tty0', 'console=ttyS0,115200']);
    const dir = tempDir();
    const file = join(dir, 'server.yaml');
    writeFileSync(file, 'installerCmdline: ["console=ttyS0", "quiet; shell"]\n');
    assert.throws(() => resolveServerConfig({}, file), (err: Error) => err instanceof ServerConfigError && /installerCmdline \(.*server\.yaml\): .*"quiet; shell"/.test(err.message));
    assert.deepEqual(splitHostPort('[::1]:80'), { host: '::1', port: 80 });
    assert.deepEqual(splitHostPort(':80'), { host: '0.0.0.0', port: 80 });
  });
  it('flags running devices that went quiet as stalled', () => {
    const now = Date.parse('2026-01-01T00:10:00.000Z');
    assert.ok(isStalled(device({ lastSeen: '2026-01-01T00:05:00.000Z' }), 120, now));
    assert.ok(!isStalled(device({ lastSeen: '2026-01-01T00:09:00.000Z' }), 120, now));
    assert.ok(!isStalled(device({ state: 'succeeded', lastSeen: '2026-01-01T00:00:00.000Z' }), 120, now));
  });
});

describe('completed tasks of a run', () => {
  it('count tasks resumed from an earlier run unless they failed since, in plan order', async () => {
    const { completedFromEvents } = await import('../../src/server/db/kysely-store.ts');
    const { runEvents } = await import('./events-fixture.ts');
    const events = runEvents('r', { tasks: ['a', 'b', 'c'] });
    const start = events[0] as Extract<(typeof events)[number], { type: 'run-start' }>;
    start.resumed = ['a'];
    const ends = events.filter((e) => e.type === 'task-end') as Extract<(typeof events)[number], { type: 'task-end' }>[];
    ends[0]!.status = 'skipped';
    ends[2]!.status = 'failed';
    assert.deepEqual(completedFromEvents(events), ['a', 'b']);
    ends[0]!.status = 'failed';
    assert.deepEqual(completedFromEvents(events), ['b'], 'a resumed task that failed again is not finished');
    assert.deepEqual(completedFromEvents([...events].reverse().filter((e) => e.type !== 'run-start')), ['b']);
  });
});
