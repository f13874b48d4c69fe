// `bootline run` as a user runs it: the bundled single file, real processes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { BootlineEvent } from '../../src/events.ts';
import { tempDir, script, isRunning } from '../helpers.ts';

const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');

function bootline(args: string[], opts: { cwd?: string; input?: string } = {}) {
  const r = spawnSync(process.execPath, [BUNDLE, ...args], { encoding: 'utf8', cwd: opts.cwd, input: opts.input ?? '', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Common flags that keep a test away from the machine's own /proc/cmdline and /var/lib. */
function isolated(dir: string, ...more: string[]) {
  const cmdline = join(dir, 'cmdline');
  if (!existsSync(cmdline)) writeFileSync(cmdline, 'BOOT_IMAGE=/vmlinuz root=/dev/vda2 quiet\n');
  return ['run', '--cmdline', cmdline, '--state-dir', join(dir, 'state'), ...more];
}

test('a config error exits with status 2, names file, line and key, and runs nothing', () => {
  const dir = tempDir();
  script(dir, 'touch.sh', `touch "${dir}/ran"`);
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\ntasks:\n  - name: t\n    script: touch.sh\n    workdir: ${dir}\n  - name: u\n    script: touch.sh\n    workdir: ${dir}\n    effort: heavy\n`);
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml')));
  assert.equal(r.status, 2);
  assert.match(r.stderr, /config error — nothing was run/);
  assert.match(r.stderr, new RegExp(`${dir}/c\\.yaml:9:5: tasks\\[u\\]\\.effort: expected number, got "heavy"`));
  assert.equal(existsSync(join(dir, 'ran')), false);
  assert.equal(existsSync(join(dir, 'state')), false, 'nothing written to the state dir');
});

test('a missing script is a config error before anything runs', () => {
  const dir = tempDir();
  script(dir, 'first.sh', `touch "${dir}/ran"`);
  writeFileSync(join(dir, 'c.yaml'), `tasks:\n  - { name: a, script: first.sh, workdir: ${dir} }\n  - { name: b, script: nope.sh, workdir: ${dir} }\n`);
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml')));
  assert.equal(r.status, 2);
  assert.match(r.stderr, new RegExp(`c\\.yaml:3:\\d+: tasks\\[b\\]\\.script: ${dir}/nope\\.sh not found`));
  assert.equal(existsSync(join(dir, 'ran')), false);
});

test('a missing --config file is a config error', () => {
  const dir = tempDir();
  const r = bootline(isolated(dir, '--config', join(dir, 'absent.yaml')));
  assert.equal(r.status, 2);
  assert.match(r.stderr, /absent\.yaml: config file: file not found — check the path/);
});

test('--dry-run prints the plan with shares and the source of every setting, and runs nothing', () => {
  const dir = tempDir();
  script(dir, 'a.sh', `touch "${dir}/ran"`);
  writeFileSync(join(dir, 'c.yaml'), `tasks:\n  - { name: a, script: a.sh, workdir: ${dir}, effort: 3 }\n  - { name: b, script: a.sh, workdir: ${dir} }\n`);
  writeFileSync(join(dir, 'cmdline'), 'quiet bootline.unattended bootline.tasks.b.effort=1.5 bootline.token=ble_SECRETVALUE console=ttyS0\n');
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml'), '--dry-run'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /token = "\(hidden\)"/);
  assert.ok(!r.stdout.includes('SECRETVALUE'), 'a dry run does not print the token');
  assert.match(r.stdout, /Mode: unattended/);
  assert.match(r.stdout, /^1 +a +script a\.sh +3 +66\.7%/m);
  assert.match(r.stdout, /^2 +b +script a\.sh +1\.5 +33\.3%/m);
  assert.match(r.stdout, /unattended = true +kernel command line file .*: bootline\.unattended|unattended = true +.*cmdline: bootline\.unattended/);
  assert.match(r.stdout, /tasks\[a\]\.effort = 3 +.*c\.yaml:2:\d+/);
  assert.equal(existsSync(join(dir, 'ran')), false);
});

test('--events writes every event as NDJSON in the shared vocabulary', () => {
  const dir = tempDir();
  script(dir, 'a.sh', 'echo hello; printf "PROGRESS 50\\n" > "$BOOTLINE_PROGRESS"; sleep 0.1');
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir} }\n`);
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml'), '--events', join(dir, 'events.ndjson')));
  assert.equal(r.status, 0, r.stderr);
  const events = readFileSync(join(dir, 'events.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  for (const e of events) assert.ok(Value.Check(BootlineEvent, e), `schema-valid: ${JSON.stringify(e)}`);
  assert.deepEqual([...new Set(events.map((e) => e.type))].sort(), ['log', 'run-end', 'run-start', 'task-end', 'task-progress', 'task-start']);
  assert.equal(events[0].type, 'run-start');
  assert.ok(events.every((e) => e.runId === events[0].runId));
  assert.equal(events.at(-1).status, 'ok');
  assert.equal(events.at(-1).progress, 100);
});

test('the plain console shows Isar-style task lines', () => {
  const dir = tempDir();
  script(dir, 'a.sh', 'echo from-a');
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nreporters: [{ type: console }]\ntasks:\n  - { name: first, script: a.sh, workdir: ${dir}, effort: 3 }\n  - { name: second, script: a.sh, workdir: ${dir} }\n`);
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml')));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Task 1\/2 - 0%$/m);
  assert.match(r.stdout, /^Task 2\/2 - 75%$/m);
  assert.match(r.stdout, /from-a/);
  assert.match(r.stdout, /All tasks completed!/);
});

test('an Isar local.conf works as the config file', () => {
  const dir = tempDir();
  script(dir, 'device-info-collector.sh', `echo collected > "${dir}/info"`);
  writeFileSync(
    join(dir, 'local.conf'),
    `MACHINE = "qemuamd64"\nTARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "device-info"\nTARGET_BOOTSTRAPPER_TASK_device-info[script] = "device-info-collector.sh"\nTARGET_BOOTSTRAPPER_TASK_device-info[workdir] = "${dir}"\nTARGET_BOOTSTRAPPER_TASK_device-info[effort] = "1"\n`,
  );
  const r = bootline(isolated(dir, '--config', join(dir, 'local.conf'), '--unattended'));
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(dir, 'info'), 'utf8').trim(), 'collected');
});

test('bootline.config= on the kernel command line fetches the config over HTTP', async () => {
  const dir = tempDir();
  script(dir, 'a.sh', `touch "${dir}/ran"`);
  const yaml = `unattended: true\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir} }\n`;
  const server = createServer((req, res) => (req.url === '/plan.yaml' ? res.end(yaml) : (res.statusCode = 404, res.end())));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as { port: number }).port;
    writeFileSync(join(dir, 'cmdline'), `quiet "bootline.config=http://127.0.0.1:${port}/plan.yaml"\n`);
    const r = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [BUNDLE, ...isolated(dir)], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr.on('data', (d) => (stderr += d));
      c.on('exit', (status) => resolve({ status, stderr }));
    });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(existsSync(join(dir, 'ran')));
  } finally {
    server.close();
  }
});

test('SIGTERM stops the current task and its children, exits 3, and a re-run resumes', async () => {
  const dir = tempDir();
  script(dir, 'a.sh', 'true');
  script(dir, 'slow.sh', `[ -e "${dir}/fast" ] && exit 0; sleep 300 & echo $! > "${dir}/child"; touch "${dir}/started"; wait`);
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir} }\n  - { name: slow, script: slow.sh, workdir: ${dir} }\n`);
  const c = spawn(process.execPath, [BUNDLE, ...isolated(dir, '--config', join(dir, 'c.yaml'))], { stdio: 'ignore' });
  for (let i = 0; i < 200 && !existsSync(join(dir, 'started')); i++) await new Promise((r) => setTimeout(r, 50));
  c.kill('SIGTERM');
  const status = await new Promise((r) => c.on('exit', r));
  assert.equal(status, 3);
  assert.equal(isRunning(Number(readFileSync(join(dir, 'child'), 'utf8'))), false);
  writeFileSync(join(dir, 'fast'), '');
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml'), '--events', join(dir, 'ev')));
  assert.equal(r.status, 0, r.stderr);
  const start = JSON.parse(readFileSync(join(dir, 'ev'), 'utf8').split('\n')[0]!);
  assert.deepEqual(start.resumed, ['a']);
});

test('after a power loss (agent killed with SIGKILL) the re-run skips finished tasks and re-runs the interrupted one', async () => {
  const dir = tempDir();
  script(dir, 'a.sh', `echo a >> "${dir}/trace"`);
  script(dir, 'b.sh', `ps -o pgid= -p $$ > "${dir}/b.pgid"; echo b >> "${dir}/trace"; [ -e "${dir}/fast" ] || sleep 300`);
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir} }\n  - { name: b, script: b.sh, workdir: ${dir} }\n`);
  const c = spawn(process.execPath, [BUNDLE, ...isolated(dir, '--config', join(dir, 'c.yaml'))], { stdio: 'ignore' });
  for (let i = 0; i < 200 && !(existsSync(join(dir, 'trace')) && readFileSync(join(dir, 'trace'), 'utf8').includes('b')); i++) await new Promise((r) => setTimeout(r, 50));
  c.kill('SIGKILL');
  await new Promise((r) => c.on('exit', r));
  // The agent died without cleaning up, as in a power loss: end the orphaned script's
  // whole process group (its own, led by the exit witness's shell), its sleep included.
  for (let i = 0; i < 100 && !readFileSync(join(dir, 'b.pgid'), 'utf8').trim(); i++) await new Promise((r) => setTimeout(r, 20));
  process.kill(-Number(readFileSync(join(dir, 'b.pgid'), 'utf8')), 'SIGKILL');
  const journal = JSON.parse(readFileSync(join(dir, 'state', 'journal.json'), 'utf8'));
  assert.equal(journal.tasks.a.status, 'ok');
  assert.equal(journal.tasks.b.status, 'running');
  writeFileSync(join(dir, 'fast'), '');
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml')));
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readFileSync(join(dir, 'trace'), 'utf8').trim().split('\n'), ['a', 'b', 'b']);
});

test('an agent killed after a script exited 0 but before the journal recorded it does not run the script again (exit witness)', async () => {
  const dir = tempDir();
  // The script stops the agent (its grandparent: the witness's shell is its parent) and exits
  // 0: the agent is frozen in the window between the exit and the journal's record, and is
  // then killed there, as a power cut would. The journal still says "running".
  script(dir, 'once.sh', `echo once >> "${dir}/trace"; kill -STOP $(ps -o ppid= -p $PPID); exit 0`);
  script(dir, 'next.sh', `echo next >> "${dir}/trace"`);
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: once, script: once.sh, workdir: ${dir} }\n  - { name: next, script: next.sh, workdir: ${dir} }\n`);
  const state = join(dir, 'state');
  const c = spawn(process.execPath, [BUNDLE, ...isolated(dir, '--config', join(dir, 'c.yaml'))], { stdio: 'ignore' });
  const exited = new Promise((r) => c.on('exit', r));
  const witness = () => readdirSync(state).filter((f) => f.startsWith('exited-ok-'));
  for (let i = 0; i < 400 && !(existsSync(state) && witness().length > 0); i++) await new Promise((r) => setTimeout(r, 25));
  c.kill('SIGKILL');
  await exited;
  assert.equal(witness().length, 1, 'the witness is there once the script exited 0');
  assert.equal(JSON.parse(readFileSync(join(state, 'journal.json'), 'utf8')).tasks.once.status, 'running', 'killed before the journal recorded the end');

  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml'), '--events', join(dir, 'ev')));
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readFileSync(join(dir, 'trace'), 'utf8').trim().split('\n'), ['once', 'next'], 'once ran once');
  assert.match(r.stdout + r.stderr, /once had ended \(exit status 0\) just before the agent stopped, before the journal recorded it: not run again/);
  const start = JSON.parse(readFileSync(join(dir, 'ev'), 'utf8').split('\n')[0]!);
  assert.deepEqual(start.resumed, ['once']);
  const journal = JSON.parse(readFileSync(join(state, 'journal.json'), 'utf8'));
  assert.equal(journal.tasks.once.status, 'ok');
  assert.equal(journal.tasks.once.witnessed, true);
  assert.deepEqual(witness(), [], 'witnesses are removed once the journal holds the outcome');
});

test('without the witness (the script had not ended), the interrupted script runs again; a script killed by a signal is named so', async () => {
  const dir = tempDir();
  script(dir, 'once.sh', `echo once >> "${dir}/trace"; [ -e "${dir}/second" ] && exit 0; kill -STOP $(ps -o ppid= -p $PPID); exit 5`);
  script(dir, 'dies.sh', 'kill -SEGV $$');
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: once, script: once.sh, workdir: ${dir} }\n`);
  writeFileSync(join(dir, 'd.yaml'), `unattended: true\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: dies, script: dies.sh, workdir: ${dir} }\n`);
  const state = join(dir, 'state');
  const c = spawn(process.execPath, [BUNDLE, ...isolated(dir, '--config', join(dir, 'c.yaml'))], { stdio: 'ignore' });
  const exited = new Promise((r) => c.on('exit', r));
  for (let i = 0; i < 400 && !existsSync(join(dir, 'trace')); i++) await new Promise((r) => setTimeout(r, 25));
  await new Promise((r) => setTimeout(r, 300)); // the script's exit 5 and the shell's end
  c.kill('SIGKILL');
  await exited;
  assert.deepEqual(readdirSync(state).filter((f) => f.startsWith('exited-ok-')), [], 'no witness for a non-zero exit');
  writeFileSync(join(dir, 'second'), '');
  const r = bootline(isolated(dir, '--config', join(dir, 'c.yaml')));
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readFileSync(join(dir, 'trace'), 'utf8').trim().split('\n'), ['once', 'once']);

  const d = bootline(isolated(dir, '--config', join(dir, 'd.yaml'), '--fresh'));
  assert.equal(d.status, 1);
  assert.match(d.stdout + d.stderr, /dies\.sh exit status 139 \(killed by SIGSEGV\)/);
});

test('onSuccess runs its action after the delay; a failed run takes onFailure', () => {
  const dir = tempDir();
  script(dir, 'ok.sh', 'true');
  script(dir, 'bad.sh', 'exit 1');
  const cfg = (s: string) => `unattended: true\nreporters: [{ type: console, mode: plain }]\nonSuccess: { action: reboot, delay: 0.2, command: "echo rebooted > ${dir}/action" }\nonFailure: { action: poweroff, command: "echo powered-off > ${dir}/action" }\ntasks:\n  - { name: t, script: ${s}, workdir: ${dir} }\n`;
  writeFileSync(join(dir, 'ok.yaml'), cfg('ok.sh'));
  writeFileSync(join(dir, 'bad.yaml'), cfg('bad.sh'));
  const ok = bootline(isolated(dir, '--config', join(dir, 'ok.yaml')));
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /Rebooting in 0\.2 s/);
  assert.equal(readFileSync(join(dir, 'action'), 'utf8').trim(), 'rebooted');
  const bad = bootline(isolated(dir, '--config', join(dir, 'bad.yaml'), '--fresh'));
  assert.equal(bad.status, 1);
  assert.equal(readFileSync(join(dir, 'action'), 'utf8').trim(), 'powered-off');
});

/**
 * Runs the agent on a pseudo-terminal (util-linux `script`) and answers it like a person:
 * each time the screen shows the next prompt pattern, the matching keys are typed.
 */
function onTty(args: string[], dialogue: Array<[RegExp, string]>): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const cmd = [process.execPath, BUNDLE, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
    const c = spawn('script', ['-qefc', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let step = 0;
    const onData = (d: Buffer) => {
      out += d;
      while (step < dialogue.length && dialogue[step]![0].test(out)) c.stdin.write(dialogue[step++]![1]);
    };
    c.stdout.on('data', onData);
    c.stderr.on('data', onData);
    const guard = setTimeout(() => c.kill('SIGKILL'), 30_000);
    c.on('exit', (status) => {
      clearTimeout(guard);
      c.stdin.destroy();
      resolve({ status, out });
    });
  });
}

test('attended mode asks on the TTY before a destructive built-in, and "n" stops it', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'img'), Buffer.alloc(4096, 7));
  writeFileSync(join(dir, 'c.yaml'), `reporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: deploy-image, builtin: deploy-image, with: { image: ${dir}/img, target: [${dir}/disk], allowFile: true } }\n`);
  const r = await onTty(isolated(dir, '--config', join(dir, 'c.yaml')), [[/Run it now\? \[y\/N\]/, 'n\r']]);
  assert.match(r.out, /Task "deploy-image" \(.*\) writes to disks\. Run it now\? \[y\/N\]/);
  assert.equal(r.status, 1);
  assert.match(r.out, /not confirmed at the console/);
  assert.equal(existsSync(join(dir, 'disk')), false);
});

test('a key pressed during the unattended abort countdown switches to attended mode', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'img'), Buffer.alloc(4096, 7));
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nabort: { enable: true, timeout: 20 }\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: deploy-image, builtin: deploy-image, with: { image: ${dir}/img, target: [${dir}/disk], allowFile: true } }\n`);
  const r = await onTty(isolated(dir, '--config', join(dir, 'c.yaml')), [[/press any key/, ' '], [/Run it now\? \[y\/N\]/, 'y\r']]);
  // The key switched to attended mode, so the agent asked, and "y" let it write.
  assert.match(r.out, /starts in 20 s — press any key/);
  assert.match(r.out, /switching to attended mode/);
  assert.match(r.out, /Run it now\? \[y\/N\]/);
  assert.equal(r.status, 0, r.out);
  assert.deepEqual(readFileSync(join(dir, 'disk')), Buffer.alloc(4096, 7));
});

test('without a key press the countdown ends and the unattended run goes on without asking', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'img'), Buffer.alloc(4096, 9));
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nabort: { enable: true, timeout: 1 }\nreporters: [{ type: console, mode: plain }]\ntasks:\n  - { name: deploy-image, builtin: deploy-image, with: { image: ${dir}/img, target: [${dir}/disk], allowFile: true } }\n`);
  const r = await onTty(isolated(dir, '--config', join(dir, 'c.yaml')), []);
  assert.equal(r.status, 0, r.out);
  assert.doesNotMatch(r.out, /Run it now/);
  assert.deepEqual(readFileSync(join(dir, 'disk')), Buffer.alloc(4096, 9));
});

test('the bundle is one file that runs with plain node and no node_modules', () => {
  const dir = tempDir();
  const lone = join(dir, 'bootline.mjs');
  writeFileSync(lone, readFileSync(BUNDLE));
  script(dir, 'a.sh', 'echo ran-from-lone-bundle');
  writeFileSync(join(dir, 'c.yaml'), `unattended: true\nreporters: [{ type: console, mode: plain }]\ntasks: [{ name: a, script: a.sh, workdir: ${dir} }]\n`);
  writeFileSync(join(dir, 'cmdline'), '');
  const r = spawnSync(process.execPath, [lone, 'run', '--config', join(dir, 'c.yaml'), '--cmdline', join(dir, 'cmdline'), '--state-dir', join(dir, 'state')], { cwd: dir, encoding: 'utf8', env: { PATH: process.env.PATH } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /ran-from-lone-bundle/);
});
