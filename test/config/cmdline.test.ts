import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Type } from '@sinclair/typebox';
import { parseCmdline, tokenizeCmdline, resolveCmdlineKey } from '../../src/config/cmdline.ts';
import { coerceScalar, knownKeys, schemaAt } from '../../src/config/schema-path.ts';
import { configErrorOf } from '../helpers.ts';

const SRC = 'kernel command line';


const tok = (s: string) => tokenizeCmdline(s, SRC).map((p) => [p.name, p.value]);

// ----- tokenizing like the kernel's next_arg() -----------------------------------------

test('parameters split at white space; a flag has a null value; columns are 1-based', () => {
  const params = tokenizeCmdline('BOOT_IMAGE=/boot/vmlinuz root=/dev/sda2  ro\tquiet console=ttyS0,115200n8\n', SRC);
  assert.deepEqual(
    params.map((p) => [p.name, p.value, p.column]),
    [
      ['BOOT_IMAGE', '/boot/vmlinuz', 1],
      ['root', '/dev/sda2', 26],
      ['ro', null, 42],
      ['quiet', null, 45],
      ['console', 'ttyS0,115200n8', 51],
    ],
  );
});

test('double quotes protect spaces in a value or around a whole parameter, and are removed at the ends only', () => {
  assert.deepEqual(tok('a="b c" "d e=f g" h=i"j k"l "m" n=""'), [
    ['a', 'b c'],
    ['d e', 'f g'],
    ['h', 'i"j k"l'],
    ['m', null],
    ['n', ''],
  ]);
  // The kernel drops a trailing quote only when the value (or the parameter) opened with one;
  // a quote in the middle still protects the spaces after it.
  assert.deepEqual(tok('y="ab"cd z=ab"c d" w'), [
    ['y', 'ab"cd'],
    ['z', 'ab"c d"'],
    ['w', null],
  ]);
  // "=" inside quotes still ends the name, as in the kernel.
  assert.deepEqual(tok('"p=q r"'), [['p', 'q r']]);
});

test('everything after a lone -- belongs to init and is ignored', () => {
  assert.deepEqual(tok('quiet bootline.unattended -- bootline.stateDir=/x single'), [
    ['quiet', null],
    ['bootline.unattended', null],
  ]);
  assert.deepEqual(tok('a --=1 b'), [
    ['a', null],
    ['--', '1'],
    ['b', null],
  ]);
});

test('an unbalanced quote in a bootline.* or installer.* parameter is an error naming it and the column', () => {
  const e = configErrorOf(() => tokenizeCmdline('quiet bootline.tasks.x.with.msg="hello world', SRC));
  assert.equal(e.issues.length, 1);
  assert.deepEqual(e.issues[0]!.origin, { source: SRC, column: 7 });
  assert.match(e.message, /^kernel command line: bootline\.tasks\.x\.with\.msg="hello world: unbalanced double quote \(opened at column 33\)/);

  const inst = configErrorOf(() => parseCmdline('installer.image.uri="/x y', SRC));
  assert.match(inst.message, /installer\.image\.uri="\/x y: unbalanced double quote/);
});

test('an unbalanced quote elsewhere is tolerated, as by the kernel (it runs to the end of the line)', () => {
  assert.deepEqual(tok('console="ttyS0 quiet'), [['console', 'ttyS0 quiet']]);
  assert.deepEqual(parseCmdline('foo="bar baz quiet', SRC).layer.data, {});
});

// ----- installer.* --------------------------------------------------------------------

test("Isar's unattended installer command line configures deploy-image", () => {
  const line =
    'BOOT_IMAGE=/vmlinuz root=PARTLABEL=root loglevel=4 installer.unattended installer.image.uri=/install/isar-image-base-debian-bookworm-qemuamd64.wic.zst installer.target.dev=/dev/sda,/dev/vda:/dev/nvme0n1 installer.target.overwrite=OVERWRITE installer.unattended.abort.enable installer.unattended.abort.timeout=8';
  const { layer, config } = parseCmdline(line, SRC);
  assert.equal(config, undefined);
  assert.deepEqual(layer.data, {
    unattended: true,
    tasks: [
      {
        name: 'deploy-image',
        builtin: 'deploy-image',
        with: {
          image: '/install/isar-image-base-debian-bookworm-qemuamd64.wic.zst',
          target: ['/dev/sda', '/dev/vda', '/dev/nvme0n1'],
          overwrite: 'OVERWRITE',
        },
      },
    ],
    abort: { enable: true, timeout: 8 },
  });
  const target = layer.origins.get('tasks/deploy-image/with/target');
  assert.deepEqual(target, { source: SRC, param: 'installer.target.dev=/dev/sda,/dev/vda:/dev/nvme0n1', column: line.indexOf('installer.target.dev') + 1 });
  assert.equal(target.column, 152);
  assert.equal(layer.origins.get('abort/timeout')?.param, 'installer.unattended.abort.timeout=8');
  assert.equal(layer.origins.get('tasks/deploy-image')?.param?.startsWith('installer.image.uri='), true);
});

test('installer.image.uri alone makes the run unattended; a bare installer.target.overwrite means OVERWRITE, =ABORT is honoured', () => {
  const a = parseCmdline('installer.image.uri=img.wic installer.target.overwrite', SRC).layer;
  assert.equal(a.data.unattended, true);
  assert.equal(a.origins.get('unattended')?.param, 'installer.target.overwrite');
  assert.deepEqual((a.data.tasks as Record<string, unknown>[])[0]!.with, { image: 'img.wic', overwrite: 'OVERWRITE' });
  const b = parseCmdline('installer.target.overwrite=ABORT', SRC).layer;
  assert.deepEqual((b.data.tasks as Record<string, unknown>[])[0]!.with, { overwrite: 'ABORT' });
});

test('bad installer values and unknown installer.* parameters are errors', () => {
  const e = configErrorOf(() =>
    parseCmdline('installer.target.overwrite=yes installer.unattended.abort.timeout=-1 installer.image.uri installer.target.device=/dev/sda', SRC),
  );
  assert.equal(e.issues.length, 4);
  assert.match(e.message, /^kernel command line: installer\.target\.overwrite=yes: expected OVERWRITE or ABORT$/m);
  assert.match(e.message, /^kernel command line: installer\.unattended\.abort\.timeout=-1: expected a number of seconds \(0 or more\)$/m);
  assert.match(e.message, /^kernel command line: installer\.image\.uri: expected the path or URL of the image to install$/m);
  assert.match(e.message, /installer\.target\.device=\/dev\/sda: unknown installer parameter "installer\.target\.device"\. Did you mean "installer\.target\.dev"\? Known ones: installer\.unattended, installer\.image\.uri/);
});

// ----- bootline.* ---------------------------------------------------------------------

test('bootline.<key>=<value> sets any scalar key, coerced to its type', () => {
  const line =
    'root=/dev/sda1 bootline.unattended=1 bootline.stateDir=/x bootline.abort.timeout=10 bootline.onSuccess.action=reboot bootline.logs.reportLines=5 bootline.server=https://line.example bootline.token=abc bootline.abort.enable=off';
  const { layer } = parseCmdline(line, SRC);
  assert.deepEqual(layer.data, {
    unattended: true,
    stateDir: '/x',
    abort: { timeout: 10, enable: false },
    onSuccess: { action: 'reboot' },
    logs: { reportLines: 5 },
    server: 'https://line.example',
    token: 'abc',
  });
  assert.deepEqual(layer.origins.get('abort/timeout'), { source: SRC, param: 'bootline.abort.timeout=10', column: 59 });
  assert.deepEqual(layer.origins.get('onSuccess/action'), { source: SRC, param: 'bootline.onSuccess.action=reboot', column: line.indexOf('bootline.onSuccess') + 1 });
});

test('a bare boolean key means true', () => {
  assert.deepEqual(parseCmdline('bootline.unattended bootline.tasks.t.optional', SRC).layer.data, {
    unattended: true,
    tasks: [{ name: 't', optional: true }],
  });
});

test('per-task keys by name, including names with dots, with: options and env', () => {
  const { layer } = parseCmdline(
    'bootline.tasks.deploy-image.effort=3 bootline.tasks.x.with.msg="hello world" bootline.tasks.fw.v1.2.timeout=60 bootline.tasks.x.env.LANG=C bootline.tasks.x.rerun=always',
    SRC,
  );
  assert.deepEqual(layer.data, {
    tasks: [
      { name: 'deploy-image', effort: 3 },
      { name: 'x', with: { msg: 'hello world' }, env: { LANG: 'C' }, rerun: 'always' },
      { name: 'fw.v1.2', timeout: 60 },
    ],
  });
  assert.deepEqual(layer.origins.get('tasks/x/with/msg'), { source: SRC, param: 'bootline.tasks.x.with.msg="hello world"', column: 38 });
  assert.deepEqual(layer.origins.get('tasks/x'), layer.origins.get('tasks/x/with/msg'));
  assert.equal(layer.origins.get('tasks/fw.v1.2/timeout')?.param, 'bootline.tasks.fw.v1.2.timeout=60');
});

test('bootline.config is returned, not put in the layer', () => {
  const r = parseCmdline('bootline.config=http://10.0.0.1:8080/plan.yaml quiet', SRC);
  assert.deepEqual(r.config, { value: 'http://10.0.0.1:8080/plan.yaml', origin: { source: SRC, param: 'bootline.config=http://10.0.0.1:8080/plan.yaml', column: 1 } });
  assert.deepEqual(r.layer.data, {});
  assert.match(configErrorOf(() => parseCmdline('bootline.config', SRC)).message, /bootline\.config: expected the path or URL of a config file/);
});

test('a key given twice: the later one wins', () => {
  const { layer } = parseCmdline('bootline.abort.timeout=3 installer.unattended.abort.timeout=4 bootline.abort.timeout=5', SRC);
  assert.deepEqual(layer.data.abort, { timeout: 5 });
  assert.equal(layer.origins.get('abort/timeout')?.column, 63);
});

test('unrelated parameters are ignored', () => {
  const r = parseCmdline('BOOT_IMAGE=/vmlinuz root=/dev/sda1 console=tty0 quiet splash init=/sbin/init bootlinex=1 installerfoo', SRC);
  assert.deepEqual(r.layer.data, {});
  assert.equal(r.layer.origins.size, 0);
  assert.equal(r.layer.name, SRC);
});

test('a value of the wrong type names the parameter and the expected type', () => {
  const e = configErrorOf(() => parseCmdline('bootline.abort.timeout=abc', SRC));
  assert.equal(e.message, 'kernel command line: bootline.abort.timeout=abc: expected a number');
  assert.match(configErrorOf(() => parseCmdline('bootline.onSuccess.action=explode', SRC)).message, /onSuccess\.action=explode: expected one of none, reboot, poweroff, shell$/);
  assert.match(configErrorOf(() => parseCmdline('bootline.unattended=maybe', SRC)).message, /unattended=maybe: expected a boolean/);
  assert.match(configErrorOf(() => parseCmdline('bootline.tasks.x.retries=1.5', SRC)).message, /retries=1\.5: expected an integer/);
  assert.match(configErrorOf(() => parseCmdline('bootline.stateDir', SRC)).message, /bootline\.stateDir: expected a string/);
});

test('an unknown key names the parameter and suggests the nearest key', () => {
  const e = configErrorOf(() => parseCmdline('bootline.unatended=1 bootline.statedir=/x bootline.tasks.deploy-image.efort=3 bootline.abort.timout=3', SRC));
  assert.equal(e.issues.length, 4);
  assert.match(e.message, /^kernel command line: bootline\.unatended=1: unknown key "unatended"\. Did you mean "unattended"\?/m);
  assert.match(e.message, /bootline\.statedir=\/x: unknown key "statedir"\. Did you mean "stateDir"\?/);
  assert.match(e.message, /bootline\.tasks\.deploy-image\.efort=3: unknown key "efort" for task "deploy-image"\. Did you mean "effort"\?/);
  assert.match(e.message, /bootline\.abort\.timout=3: unknown key "timout" in abort\. Did you mean "timeout"\?/);
});

test('lists and objects cannot be set from the kernel command line: use bootline.config=', () => {
  for (const p of ['bootline.tasks=x', 'bootline.reporters=x', 'bootline.reporters.0.url=http://x', 'bootline.hooks.before=/x', 'bootline.tasks.t.args=-v', 'bootline.abort=1']) {
    const e = configErrorOf(() => parseCmdline(p, SRC));
    assert.match(e.message, new RegExp(`^kernel command line: ${p.replace(/[.]/g, '\\.')}: .*can't be set from the kernel command line.*bootline\\.config=`), p);
  }
});

test('other malformed bootline keys are errors', () => {
  assert.match(configErrorOf(() => parseCmdline('bootline.tasks.x=1', SRC)).message, /missing the task key: write bootline\.tasks\.x\.<key>=<value>/);
  assert.match(configErrorOf(() => parseCmdline('bootline.tasks.x.name=y', SRC)).message, /a task's name can't be set/);
  assert.match(configErrorOf(() => parseCmdline('bootline..unattended', SRC)).message, /empty part/);
  assert.match(configErrorOf(() => parseCmdline('bootline.unattended.x=1', SRC)).message, /unattended is a boolean .*: it has no key "x"/);
  assert.match(configErrorOf(() => parseCmdline('bootline=1', SRC)).message, /bootline=1: missing the key/);
});

// ----- schema paths ---------------------------------------------------------------------

test('schemaAt walks the schema by canonical path; tasks by any name', () => {
  assert.equal((schemaAt(['abort', 'timeout']) as { type?: string }).type, 'number');
  assert.equal((schemaAt(['tasks', 'anything', 'effort']) as { type?: string }).type, 'number');
  assert.notEqual(schemaAt(['tasks', 'x', 'with', 'opt']), undefined);
  assert.equal(schemaAt(['reporters', '0', 'url']), undefined);
  assert.equal(schemaAt(['nope']), undefined);
  assert.ok(knownKeys(['tasks', 'x']).includes('retryDelay'));
  assert.deepEqual(knownKeys(['abort']), ['enable', 'timeout']);
  assert.deepEqual(resolveCmdlineKey('tasks.a.b.with.c'), { ok: true, path: ['tasks', 'a.b', 'with', 'c'], schema: schemaAt(['tasks', 'a.b', 'with', 'c']) });
});

test('coerceScalar: booleans, numbers, integers, literals; bounds are left to validation', () => {
  const bool = Type.Boolean();
  for (const [raw, v] of [[null, true], ['yes', true], ['ON', true], ['0', false], ['no', false], ['off', false]] as const) {
    assert.deepEqual(coerceScalar(bool, raw), { ok: true, value: v }, String(raw));
  }
  assert.equal(coerceScalar(bool, 'y').ok, false);
  assert.deepEqual(coerceScalar(Type.Number({ minimum: 0 }), '-2.5'), { ok: true, value: -2.5 });
  assert.equal(coerceScalar(Type.Number(), '').ok, false);
  assert.equal(coerceScalar(Type.Number(), '0x10').ok, false);
  assert.deepEqual(coerceScalar(Type.Integer(), '42'), { ok: true, value: 42 });
  assert.deepEqual(coerceScalar(Type.Union([Type.Literal('a'), Type.Literal('b')]), 'c'), { ok: false, expected: 'one of a, b' });
  assert.equal(coerceScalar(Type.Array(Type.String()), 'x').ok, false);
});
