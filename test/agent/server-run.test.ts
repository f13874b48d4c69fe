// `bootline run` on a device whose kernel command line has only bootline.server= and
// bootline.token=, against the real server (in-process, SQLite on a temp dir).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { BootlineEvent } from '../../src/events.ts';
import { ServerClient } from '../../src/agent/server-client.ts';
import { script, tempDir } from '../helpers.ts';
import {
  assertContiguous,
  eventsFile,
  lineServer,
  RECORDED_MACS,
  RECORDED_SERIAL,
  runAgentOn,
  runEvents,
  startAgent,
  waitFor,
  type LineServer,
} from './server-harness.ts';

interface DeviceRow {
  id: string;
  serial: string | null;
  uuid: string | null;
  macs: string[];
  hostname: string | null;
  batch: string | null;
  state: string;
  plan: string | null;
}
interface RunRow {
  id: string;
  status: string;
  plan: string | null;
  report: Record<string, unknown> | null;
}
interface TokenRow {
  id: string;
  uses: number;
}

async function devices(line: LineServer): Promise<DeviceRow[]> {
  const r = await line.admin<DeviceRow[]>('GET', '/devices');
  assert.equal(r.status, 200);
  return r.body;
}

async function runsOf(line: LineServer, deviceId: string): Promise<RunRow[]> {
  const r = await line.admin<RunRow[]>('GET', `/devices/${deviceId}/runs`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

const cmdlineFor = (line: LineServer, token: string) => `bootline.server=${line.url} bootline.token=${token}`;

test('a good token: the device enrolls with its recorded serial and MACs, runs the plan of the default rule, and the server has every event, the report and the log', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token } = await line.token({ label: 'batch-7' });
  script(dir, 'hello.sh', `echo "hello from $BOOTLINE_DEVICE_ID" ; echo ran >> "${dir}/ran"`);
  await line.defaultPlan({ unattended: true, reporters: [{ type: 'console', mode: 'plain' }], tasks: [{ name: 'hello', script: 'hello.sh', workdir: dir }] });

  const state = join(dir, 'state');
  const r = await runAgentOn(dir, cmdlineFor(line, token), state, ['--events', join(dir, 'events.ndjson')]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(dir, 'ran'), 'utf8'), 'ran\n');
  assert.doesNotMatch(r.stderr, /warning/, 'events, report and log all delivered');
  assert.match(r.stderr, /enrolled with http:\/\/127\.0\.0\.1:\d+ as device \S+ \(serial PF3XK2A9\)/);

  // The device, as the recorded sysfs describes it.
  const [device, ...others] = await devices(line);
  assert.equal(others.length, 0);
  assert.equal(device!.serial, RECORDED_SERIAL);
  assert.deepEqual([...device!.macs].sort(), [...RECORDED_MACS].sort());
  assert.equal(device!.uuid, '4c4c4544-0042-3510-8052-b4c04f564432');
  assert.equal(device!.batch, 'batch-7');
  assert.equal(device!.state, 'succeeded');
  assert.equal(device!.plan, 'plan-a');
  assert.match(r.stdout, new RegExp(`hello from ${device!.id}`), 'the enrolled id is the device id');

  // The credential: kept for this server, readable by root only.
  const stored = JSON.parse(readFileSync(join(state, 'device.json'), 'utf8'));
  assert.equal(stored.deviceId, device!.id);
  assert.equal(stored.server, line.url);
  assert.match(stored.credential, /^bld_/);
  assert.equal(statSync(join(state, 'device.json')).mode & 0o777, 0o600);

  // The run: ok, every event the agent made (the same as its own --events file), seq 0..N.
  const [run] = await runsOf(line, device!.id);
  assert.equal(run!.status, 'ok');
  assert.equal(run!.plan, 'plan-a');
  const mine = eventsFile(join(dir, 'events.ndjson'));
  for (const e of mine) assert.ok(Value.Check(BootlineEvent, e));
  assert.equal(mine[0]!.runId, run!.id);
  assert.equal(mine[0]!.deviceId, device!.id);
  const onServer = await runEvents(line, run!.id);
  assert.equal(onServer.length, mine.length);
  assertContiguous(onServer);
  assert.deepEqual(onServer.map((e) => e.type), mine.map((e) => e.type));

  // The report and the log were uploaded.
  assert.equal(run!.report?.status, 'ok');
  assert.equal(run!.report?.runId, run!.id);
  const log = await line.admin<string>('GET', `/runs/${run!.id}/log`);
  assert.equal(log.status, 200);
  assert.match(log.body, /hello stdout: hello from/);

  // A batch sent again (a retry whose answer was lost) is stored once.
  const client = new ServerClient({ url: line.url, credential: stored.credential, retries: 0 });
  try {
    const again = await client.postEvents({ events: mine.slice(0, 5) as never });
    assert.deepEqual(again, { stored: 0, duplicates: 5 });
    const whole = await client.postEvents({ events: [...mine, ...mine.slice(0, 3)] as never });
    assert.deepEqual(whole, { stored: 0, duplicates: mine.length + 3 });
  } finally {
    client.close();
  }
  const after = await runEvents(line, run!.id);
  assert.equal(after.length, mine.length);
  assertContiguous(after);
});

test('a second start uses the stored credential; one the server no longer knows makes the agent enroll again', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token, id } = await line.token();
  script(dir, 'ok.sh', 'true');
  await line.defaultPlan({ unattended: true, reporters: [{ type: 'console', mode: 'plain' }], tasks: [{ name: 'ok', script: 'ok.sh', workdir: dir, rerun: 'always' }] });
  const uses = async () => (await line.admin<TokenRow[]>('GET', '/tokens')).body.find((t) => t.id === id)!.uses;
  const state = join(dir, 'state');

  const first = await runAgentOn(dir, cmdlineFor(line, token), state);
  assert.equal(first.status, 0, first.stderr);
  assert.equal(await uses(), 1);

  const second = await runAgentOn(dir, cmdlineFor(line, token), state);
  assert.equal(second.status, 0, second.stderr);
  assert.doesNotMatch(second.stderr, /enrolled/);
  assert.equal(await uses(), 1, 'no second enrollment');

  const file = join(state, 'device.json');
  const stored = JSON.parse(readFileSync(file, 'utf8'));
  writeFileSync(file, JSON.stringify({ ...stored, credential: 'bld_not-known-to-the-server' }));
  const third = await runAgentOn(dir, cmdlineFor(line, token), state);
  assert.equal(third.status, 0, third.stderr);
  assert.match(third.stderr, /no longer accepts the credential .*enrolling again/);
  assert.equal(await uses(), 2);
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).deviceId, stored.deviceId, 'same serial: same device');
  assert.equal((await devices(line)).length, 1);
  assert.equal((await runsOf(line, stored.deviceId)).length, 3);
});

test('a wrong, revoked or expired token: exit 2 with a message naming the server and what to do; nothing ran', async () => {
  const dir = tempDir();
  const line = await lineServer();
  script(dir, 'touch.sh', `touch "${dir}/ran"`);
  await line.defaultPlan({ unattended: true, tasks: [{ name: 't', script: 'touch.sh', workdir: dir }] });
  const revoked = await line.token();
  assert.equal((await line.admin('DELETE', `/tokens/${revoked.id}`)).status, 204);
  const expired = await line.token({ expiresInSeconds: 1 });
  await new Promise((r) => setTimeout(r, 1100));

  for (const token of ['ble_wrong', revoked.token, expired.token]) {
    const state = join(dir, `state-${token.slice(-6)}`);
    const r = await runAgentOn(dir, cmdlineFor(line, token), state);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /config error — nothing was run/);
    assert.match(r.stderr, new RegExp(`the server ${line.url.replace(/\./g, '\\.')} refused the enrollment token .*get a valid one .*bootline\\.token=`));
    assert.ok(!r.stderr.includes(token), 'the token is not printed');
    assert.equal(existsSync(join(state, 'device.json')), false);
  }
  assert.equal(existsSync(join(dir, 'ran')), false);
  assert.deepEqual(await devices(line), []);
});

test('no token and no stored credential: exit 2 saying to add bootline.token=', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const r = await runAgentOn(dir, `bootline.server=${line.url}`, join(dir, 'state'));
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /no enrollment token, and no credential for .* in .*device\.json: add bootline\.token=/);
});

test('a rule that says "none": exit 0, nothing ran', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token } = await line.token();
  await line.defaultPlan('none');
  const state = join(dir, 'state');
  const r = await runAgentOn(dir, cmdlineFor(line, token), state, ['--events', join(dir, 'ev')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /the server has nothing for this device to do/);
  assert.equal(existsSync(join(dir, 'ev')), false, 'no run, no event');
  assert.equal(existsSync(join(state, 'journal.json')), false);
  const [device] = await devices(line);
  assert.deepEqual(await runsOf(line, device!.id), []);
});

test('no rule for the device: exit 2 with the server\'s explanation', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token } = await line.token();
  const r = await runAgentOn(dir, cmdlineFor(line, token), join(dir, 'state'));
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /no usable plan for this device: no rule matches this device/);
});

test('after a power loss, a restart with an empty state dir skips what the server saw finish (not rerun: always tasks) and re-runs the interrupted task', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token } = await line.token();
  const trace = join(dir, 'trace');
  script(dir, 'a.sh', `echo a >> "${trace}"`);
  script(dir, 'stamp.sh', `echo stamp >> "${trace}"`);
  script(dir, 'b.sh', `ps -o pgid= -p $$ > "${dir}/b.tmp" && mv "${dir}/b.tmp" "${dir}/b.pgid"; echo b >> "${trace}"; [ -e "${dir}/fast" ] || sleep 300`);
  script(dir, 'c.sh', `echo c >> "${trace}"`);
  await line.defaultPlan({
    unattended: true,
    reporters: [{ type: 'console', mode: 'plain' }],
    tasks: [
      { name: 'a', script: 'a.sh', workdir: dir },
      { name: 'stamp', script: 'stamp.sh', workdir: dir, rerun: 'always' },
      { name: 'b', script: 'b.sh', workdir: dir },
      { name: 'c', script: 'c.sh', workdir: dir },
    ],
  });

  const first = startAgent(dir, cmdlineFor(line, token), join(dir, 'state-1'));
  // Until the server has heard that b started (a and stamp have ended before that).
  const deviceId = await waitFor('device.json', () => (existsSync(join(dir, 'state-1', 'device.json')) ? JSON.parse(readFileSync(join(dir, 'state-1', 'device.json'), 'utf8')).deviceId as string : undefined));
  const runId = await waitFor('b to start on the server', async () => {
    const [run] = await runsOf(line, deviceId);
    if (!run) return undefined;
    const events = await runEvents(line, run.id);
    return events.some((e) => e.type === 'task-start' && e.body.task === 'b') ? run.id : undefined;
  });
  await waitFor('b to be running', () => (readFileSync(trace, 'utf8').includes('b') && existsSync(join(dir, 'b.pgid')) ? true : undefined));
  first.child.kill('SIGKILL');
  await first.done;
  // The power went: the orphaned script's process group (led by its exit witness's shell) goes too.
  process.kill(-Number(readFileSync(join(dir, 'b.pgid'), 'utf8')), 'SIGKILL');
  assert.equal((await runsOf(line, deviceId))[0]!.status, 'running');

  writeFileSync(join(dir, 'fast'), '');
  const second = await runAgentOn(dir, cmdlineFor(line, token), join(dir, 'state-2'), ['--events', join(dir, 'ev')]);
  assert.equal(second.status, 0, second.stderr);
  assert.match(second.stderr, new RegExp(`run ${runId} of plan plan-a was interrupted after finishing a; they are not run again`));
  assert.deepEqual(readFileSync(trace, 'utf8').trim().split('\n'), ['a', 'stamp', 'b', 'stamp', 'b', 'c']);
  const events = eventsFile(join(dir, 'ev'));
  assert.deepEqual(events[0]!.resumed, ['a']);
  const runs = await runsOf(line, deviceId);
  const latest = runs.find((r) => r.id === events[0]!.runId)!;
  assert.equal(latest.status, 'ok');
  assertContiguous(await runEvents(line, latest.id));
});

test('--fresh ignores what the server saw finish', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token } = await line.token();
  const trace = join(dir, 'trace');
  script(dir, 'a.sh', `echo a >> "${trace}"`);
  script(dir, 'b.sh', `ps -o pgid= -p $$ > "${dir}/b.tmp" && mv "${dir}/b.tmp" "${dir}/b.pgid"; echo b >> "${trace}"; [ -e "${dir}/fast" ] || sleep 300`);
  await line.defaultPlan({ unattended: true, reporters: [{ type: 'console', mode: 'plain' }], tasks: [{ name: 'a', script: 'a.sh', workdir: dir }, { name: 'b', script: 'b.sh', workdir: dir }] });
  const first = startAgent(dir, cmdlineFor(line, token), join(dir, 'state-1'));
  const deviceId = await waitFor('device.json', () => (existsSync(join(dir, 'state-1', 'device.json')) ? JSON.parse(readFileSync(join(dir, 'state-1', 'device.json'), 'utf8')).deviceId as string : undefined));
  await waitFor('b to start on the server', async () => {
    const [run] = await runsOf(line, deviceId);
    return run && (await runEvents(line, run.id)).some((e) => e.type === 'task-start' && e.body.task === 'b') ? true : undefined;
  });
  await waitFor('b to be running', () => (readFileSync(trace, 'utf8').includes('b') && existsSync(join(dir, 'b.pgid')) ? true : undefined));
  first.child.kill('SIGKILL');
  await first.done;
  process.kill(-Number(readFileSync(join(dir, 'b.pgid'), 'utf8')), 'SIGKILL');
  writeFileSync(join(dir, 'fast'), '');
  const second = await runAgentOn(dir, cmdlineFor(line, token), join(dir, 'state-2'), ['--fresh']);
  assert.equal(second.status, 0, second.stderr);
  assert.deepEqual(readFileSync(trace, 'utf8').trim().split('\n'), ['a', 'b', 'a', 'b']);
});

test('--dry-run shows the server plan as a source and the server reporter, and runs nothing', async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token } = await line.token();
  script(dir, 'touch.sh', `touch "${dir}/ran"`);
  await line.defaultPlan({ unattended: true, tasks: [{ name: 'touch', script: 'touch.sh', workdir: dir, effort: 2 }] });
  const r = await runAgentOn(dir, cmdlineFor(line, token), join(dir, 'state'), ['--dry-run']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Sources, later wins: server plan < /);
  assert.match(r.stdout, /tasks\[touch\]\.effort = 2 +server plan:\d+:\d+/);
  assert.match(r.stdout, /deviceId = "dev_\w+" +enrollment with http:\/\/127\.0\.0\.1:\d+/);
  assert.match(r.stdout, /Reporters: console, http/);
  assert.equal(existsSync(join(dir, 'ran')), false);
});

test('an https server with its own CA: the agent trusts it with bootline.serverCa= for the API and the events, and refuses it without', async () => {
  const dir = tempDir();
  const line = await lineServer(undefined, { tls: true });
  assert.match(line.url, /^https:/);
  await line.defaultPlan({ unattended: true, tasks: [{ name: 'hello', script: '/bin/true' }] });
  const { token } = await line.token();
  const untrusted = await runAgentOn(dir, cmdlineFor(line, token), join(dir, 'state-untrusted'), ['--events', join(dir, 'untrusted.ndjson')]);
  assert.equal(untrusted.status, 2, untrusted.stderr);
  assert.match(untrusted.stderr, /certificate|self.signed/i);
  assert.equal((await devices(line)).length, 0, 'nothing enrolled over an untrusted connection');

  const r = await runAgentOn(dir, `${cmdlineFor(line, token)} bootline.serverCa=${line.ca}`, join(dir, 'state'), ['--events', join(dir, 'events.ndjson')]);
  assert.equal(r.status, 0, r.stderr);
  const [device] = await devices(line);
  assert.equal(device?.state, 'succeeded');
  const [run] = await runsOf(line, device!.id);
  const stored = await runEvents(line, run!.id);
  assert.equal(stored.length, eventsFile(join(dir, 'events.ndjson')).length, 'every event arrived over https');
});
