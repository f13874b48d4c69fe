import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIsarConf } from '../../src/config/isar-conf.ts';
import type { Layer } from '../../src/config/layer.ts';
import { configErrorOf } from '../helpers.ts';

const SRC = 'conf/local.conf';


const tasksOf = (l: Layer) => l.data.tasks as Record<string, unknown>[];
const names = (l: Layer) => tasksOf(l).map((t) => t.name);
const conf = (...lines: string[]) => lines.join('\n') + '\n';

test("Isar's recipe defaults plus a user's task give deploy-image (built-in) and the user's script task", () => {
  const layer = parseIsarConf(
    conf(
      '# from target-bootstrapper.bb',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES ??= "deploy-image"',
      'TARGET_BOOTSTRAPPER_TASK_deploy-image[script] ??= "deploy-image-wic.sh"',
      'TARGET_BOOTSTRAPPER_TASK_deploy-image[workdir] ??= "/usr/bin"',
      'TARGET_BOOTSTRAPPER_TASK_deploy-image[effort] ??= "2"',
      '',
      '# the user',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES:append = " device-info-collector"',
      'TARGET_BOOTSTRAPPER_TASK_device-info-collector[script] = "device-info-collector.sh"',
      'TARGET_BOOTSTRAPPER_TASK_device-info-collector[workdir] = "/usr/bin"',
    ),
    SRC,
  );
  assert.deepEqual(layer.data, {
    tasks: [
      { name: 'deploy-image', builtin: 'deploy-image', effort: 2 },
      { name: 'device-info-collector', script: 'device-info-collector.sh', workdir: '/usr/bin' },
    ],
  });
  assert.equal(layer.name, SRC);
  assert.deepEqual(layer.origins.get('tasks/deploy-image'), { source: SRC, line: 2 });
  assert.deepEqual(layer.origins.get('tasks/deploy-image/builtin'), { source: SRC, line: 3 });
  assert.deepEqual(layer.origins.get('tasks/deploy-image/effort'), { source: SRC, line: 5 });
  assert.deepEqual(layer.origins.get('tasks/device-info-collector'), { source: SRC, line: 8 });
  assert.deepEqual(layer.origins.get('tasks/device-info-collector/script'), { source: SRC, line: 9 });
  assert.deepEqual(layer.origins.get('tasks/device-info-collector/workdir'), { source: SRC, line: 10 });
});

test('+= " device-info-collector" appends with a space, and (as in BitBake) does not see a ??= default', () => {
  const appended = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "deploy-image"',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES += " device-info-collector"',
      'TARGET_BOOTSTRAPPER_TASK_device-info-collector[script] = "device-info-collector.sh"',
    ),
    SRC,
  );
  assert.deepEqual(names(appended), ['deploy-image', 'device-info-collector']);
  assert.deepEqual(appended.origins.get('tasks/device-info-collector'), { source: SRC, line: 2 });

  const weak = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES ??= "deploy-image"',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES += " device-info-collector"',
      'TARGET_BOOTSTRAPPER_TASK_device-info-collector[script] = "device-info-collector.sh"',
    ),
    SRC,
  );
  assert.deepEqual(names(weak), ['device-info-collector']);
});

test('a ??= default is overridden by a plain = whether it comes before or after, and the last ??= wins', () => {
  const after = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"',
      'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"',
      'TARGET_BOOTSTRAPPER_TASK_a[effort] ??= "2"',
      'TARGET_BOOTSTRAPPER_TASK_a[effort] = "5"',
      'TARGET_BOOTSTRAPPER_TASK_a[effort] ??= "7"',
    ),
    SRC,
  );
  assert.equal(tasksOf(after)[0]!.effort, 5);
  assert.deepEqual(after.origins.get('tasks/a/effort'), { source: SRC, line: 4 });

  const lastWeak = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"',
      'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"',
      'TARGET_BOOTSTRAPPER_TASK_a[effort] ??= "2"',
      'TARGET_BOOTSTRAPPER_TASK_a[effort] ??= "3"',
    ),
    SRC,
  );
  assert.equal(tasksOf(lastWeak)[0]!.effort, 3);
});

test('?= only sets an unset variable; =+ .= =. :prepend :remove apply in BitBake order', () => {
  const layer = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES ?= "b"',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES ?= "ignored"',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES =+ "a"',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES .= " c"',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES =. "z "',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES:prepend = "first "',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES:remove = "z"',
      ...['first', 'a', 'b', 'c', 'z'].map((n) => `TARGET_BOOTSTRAPPER_TASK_${n}[script] ??= "${n}.sh"`),
    ),
    SRC,
  );
  assert.deepEqual(names(layer), ['first', 'a', 'b', 'c']);
});

test('a value continued with backslashes spans lines; its origin is the first line', () => {
  const layer = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = " \\',
      '    deploy-image \\',
      '    device-info-collector \\',
      '    "',
      'TARGET_BOOTSTRAPPER_TASK_device-info-collector[script] = "device-info-\\',
      'collector.sh"',
    ),
    SRC,
  );
  assert.deepEqual(names(layer), ['deploy-image', 'device-info-collector']);
  assert.equal(tasksOf(layer)[1]!.script, 'device-info-collector.sh');
  assert.deepEqual(layer.origins.get('tasks/device-info-collector/script'), { source: SRC, line: 5 });
});

test('a whole local.conf: other variables, comments, include/require/inherit and export are ignored', () => {
  const layer = parseIsarConf(
    [
      '# local.conf',
      'MACHINE ??= "qemuamd64"',
      'DISTRO ?= "debian-bookworm"',
      'IMAGE_INSTALL:append = " hello"',
      'BB_DISKMON_DIRS ??= "\\',
      '    STOPTASKS,${TMPDIR},1G,100K \\',
      '    ABORT,${TMPDIR},100M,1K"',
      'SRC_URI[sha256sum] = "abc"',
      "USER_CLASSES ?= 'buildstats'",
      'include conf/multiconfig.conf',
      'require conf/other.conf',
      'inherit foo',
      'export http_proxy',
      'export TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES',
      'unset SOMETHING',
      '',
      'export TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = \'hello\'',
      "TARGET_BOOTSTRAPPER_TASK_hello[script]='hello.sh'",
      'CONF_VERSION = "2"',
    ].join('\r\n'),
    SRC,
  );
  assert.deepEqual(layer.data, { tasks: [{ name: 'hello', script: 'hello.sh' }] });
  assert.deepEqual(layer.origins.get('tasks/hello/script'), { source: SRC, line: 18 });
});

test('a conf without TARGET_BOOTSTRAPPER_* lines gives an empty layer', () => {
  const layer = parseIsarConf(conf('MACHINE = "qemuamd64"', '# nothing else'), SRC);
  assert.deepEqual(layer.data, {});
  assert.equal(layer.origins.size, 0);
});

test('flags become typed task keys: effort, timeout, retries, optional, args, rerun', () => {
  const layer = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "t"',
      'TARGET_BOOTSTRAPPER_TASK_t[script] = "t.sh"',
      'TARGET_BOOTSTRAPPER_TASK_t[effort] = "2.5"',
      'TARGET_BOOTSTRAPPER_TASK_t[timeout] = "600"',
      'TARGET_BOOTSTRAPPER_TASK_t[retries] = "3"',
      'TARGET_BOOTSTRAPPER_TASK_t[optional] = "1"',
      'TARGET_BOOTSTRAPPER_TASK_t[args] = "--verbose  --out /tmp/x"',
      'TARGET_BOOTSTRAPPER_TASK_t[rerun] = "always"',
    ),
    SRC,
  );
  assert.deepEqual(tasksOf(layer)[0], {
    name: 't',
    script: 't.sh',
    effort: 2.5,
    timeout: 600,
    retries: 3,
    optional: true,
    args: ['--verbose', '--out', '/tmp/x'],
    rerun: 'always',
  });
  for (const [key, line] of [['script', 2], ['effort', 3], ['timeout', 4], ['retries', 5], ['optional', 6], ['args', 7], ['rerun', 8]] as const) {
    assert.deepEqual(layer.origins.get(`tasks/t/${key}`), { source: SRC, line }, key);
  }
  const off = parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "t"', 'TARGET_BOOTSTRAPPER_TASK_t[script] = "t.sh"', 'TARGET_BOOTSTRAPPER_TASK_t[optional] = "0"'), SRC);
  assert.equal(tasksOf(off)[0]!.optional, false);
});

test('deploy-image becomes the built-in unless it has a script of its own', () => {
  const own = parseIsarConf(
    conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "deploy-image"', 'TARGET_BOOTSTRAPPER_TASK_deploy-image[script] = "my-deploy.sh"'),
    SRC,
  );
  assert.deepEqual(tasksOf(own)[0], { name: 'deploy-image', script: 'my-deploy.sh' });

  const bare = parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "deploy-image"'), SRC);
  assert.deepEqual(tasksOf(bare)[0], { name: 'deploy-image', builtin: 'deploy-image' });
  assert.deepEqual(bare.origins.get('tasks/deploy-image/builtin'), { source: SRC, line: 1 });

  const isarScript = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "install"',
      'TARGET_BOOTSTRAPPER_TASK_install[script] = "deploy-image-wic.sh"',
      'TARGET_BOOTSTRAPPER_TASK_install[workdir] = "/usr/bin"',
    ),
    SRC,
  );
  assert.deepEqual(tasksOf(isarScript)[0], { name: 'install', builtin: 'deploy-image' });
});

test('unset removes a variable or a flag', () => {
  const layer = parseIsarConf(
    conf(
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a b"',
      'unset TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES',
      'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES += "a"',
      'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"',
      'TARGET_BOOTSTRAPPER_TASK_a[effort] = "4"',
      'unset TARGET_BOOTSTRAPPER_TASK_a[effort]',
    ),
    SRC,
  );
  assert.deepEqual(layer.data, { tasks: [{ name: 'a', script: 'a.sh' }] });
});

// ----- errors ---------------------------------------------------------------------

test('an unknown TARGET_BOOTSTRAPPER_* variable names file and line', () => {
  const e = configErrorOf(() => parseIsarConf(conf('MACHINE = "x"', 'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGE = "a"'), SRC));
  assert.match(e.message, /^conf\/local\.conf:2: TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGE: unknown variable\. Did you mean "TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES"\?/);
  assert.deepEqual(e.issues[0]!.origin, { source: SRC, line: 2 });

  const legacy = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES_append = " a"'), SRC));
  assert.match(legacy.message, /conf\/local\.conf:1: .*TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES:append/);
});

test('an unknown flag names the line and lists the valid flags', () => {
  const e = configErrorOf(() =>
    parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"', 'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"', 'TARGET_BOOTSTRAPPER_TASK_a[efort] = "2"'), SRC),
  );
  assert.equal(
    e.message,
    'conf/local.conf:3: TARGET_BOOTSTRAPPER_TASK_a[efort]: unknown flag [efort]. Did you mean "effort"? Valid flags: script, workdir, effort, args, timeout, retries, optional, rerun',
  );
});

test('a listed task without [script] is an error at the ADDITIONAL_PACKAGES line', () => {
  const e = configErrorOf(() =>
    parseIsarConf(
      conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "deploy-image"', '', 'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES += " device-info-collector"'),
      SRC,
    ),
  );
  assert.equal(e.issues.length, 1);
  assert.match(
    e.message,
    /^conf\/local\.conf:3: TARGET_BOOTSTRAPPER_TASK_device-info-collector\[script\]: not set — set it to the script to run/,
  );
});

test('flags of a task not listed in ADDITIONAL_PACKAGES are an error (but weak ??= defaults are not)', () => {
  const e = configErrorOf(() =>
    parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"', 'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"', 'TARGET_BOOTSTRAPPER_TASK_b[script] = "b.sh"'), SRC),
  );
  assert.match(e.message, /^conf\/local\.conf:3: TARGET_BOOTSTRAPPER_TASK_b\[script\]: "b" is not listed in TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES/);

  const defaults = parseIsarConf(
    conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"', 'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"', 'TARGET_BOOTSTRAPPER_TASK_deploy-image[workdir] ??= "/usr/bin"'),
    SRC,
  );
  assert.deepEqual(names(defaults), ['a']);
});

for (const bad of ['abc', '0', '-1', '']) {
  test(`effort "${bad}" is an error naming the line and "a positive number"`, () => {
    const e = configErrorOf(() =>
      parseIsarConf(
        conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"', 'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"', `TARGET_BOOTSTRAPPER_TASK_a[effort] = "${bad}"`),
        SRC,
      ),
    );
    assert.equal(e.message, `conf/local.conf:3: TARGET_BOOTSTRAPPER_TASK_a[effort]: expected a positive number, got "${bad}"`);
  });
}

test('bad timeout, retries, optional and rerun values name their lines', () => {
  const e = configErrorOf(() =>
    parseIsarConf(
      conf(
        'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"',
        'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"',
        'TARGET_BOOTSTRAPPER_TASK_a[timeout] = "soon"',
        'TARGET_BOOTSTRAPPER_TASK_a[retries] = "1.5"',
        'TARGET_BOOTSTRAPPER_TASK_a[optional] = "perhaps"',
        'TARGET_BOOTSTRAPPER_TASK_a[rerun] = "never"',
      ),
      SRC,
    ),
  );
  assert.deepEqual(
    e.issues.map((i) => [i.origin?.line, i.key]),
    [
      [3, 'TARGET_BOOTSTRAPPER_TASK_a[timeout]'],
      [4, 'TARGET_BOOTSTRAPPER_TASK_a[retries]'],
      [5, 'TARGET_BOOTSTRAPPER_TASK_a[optional]'],
      [6, 'TARGET_BOOTSTRAPPER_TASK_a[rerun]'],
    ],
  );
  assert.match(e.message, /rerun\]: expected if-unfinished or always, got "never"/);
});

test('a task listed twice is an error', () => {
  const e = configErrorOf(() =>
    parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a b"', 'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES += "a"', 'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"', 'TARGET_BOOTSTRAPPER_TASK_b[script] = "b.sh"'), SRC),
  );
  assert.equal(e.message, 'conf/local.conf:2: TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES: "a" is listed twice — task names must be unique; remove one');
});

test('an unbalanced quote names line and column, also inside a continued value', () => {
  const e = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a'), SRC));
  assert.match(e.message, /^conf\/local\.conf:1:43: TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES: unbalanced double quote/);

  const continued = configErrorOf(() => parseIsarConf(conf('# x', 'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = \\', '  "a'), SRC));
  assert.deepEqual(continued.issues[0]!.origin, { source: SRC, line: 3, column: 3 });
});

test('a value without quotes, or with text after the closing quote, is an error with line and column', () => {
  const unquoted = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = a'), SRC));
  assert.match(unquoted.message, /^conf\/local\.conf:1:43: TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES: the value must be in double quotes/);
  const trailing = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a" # tasks'), SRC));
  assert.match(trailing.message, /^conf\/local\.conf:1:46: .*unexpected text after the closing quote/);
});

test('a line that is not BitBake syntax is an error; a TARGET_BOOTSTRAPPER line that is not an assignment too', () => {
  const garbage = configErrorOf(() => parseIsarConf(conf('MACHINE = "x"', '  this is not bitbake'), SRC));
  assert.match(garbage.message, /^conf\/local\.conf:2:3: syntax: not a BitBake assignment/);
  const tb = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_TASK_a[script] "a.sh"'), SRC));
  assert.match(tb.message, /^conf\/local\.conf:1:1: TARGET_BOOTSTRAPPER_TASK_a\[script\]: not a BitBake assignment/);
});

test('conditional overrides and ${} expansion in TARGET_BOOTSTRAPPER lines are errors', () => {
  const o = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES:append:qemuamd64 = " a"'), SRC));
  assert.match(o.message, /^conf\/local\.conf:1: .*depends on OVERRIDES/);
  const x = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a"', 'TARGET_BOOTSTRAPPER_TASK_a[script] = "${bindir}/a.sh"'), SRC));
  assert.match(x.message, /conf\/local\.conf:2:39: TARGET_BOOTSTRAPPER_TASK_a\[script\]: variable expansion/);
});

test('a flag-less TARGET_BOOTSTRAPPER_TASK_<name> and a bad task name are errors', () => {
  const e = configErrorOf(() => parseIsarConf(conf('TARGET_BOOTSTRAPPER_TASK_a = "a.sh"', 'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "-x"'), SRC));
  assert.match(e.issues[0]!.message, /set a flag of it, e\.g\. TARGET_BOOTSTRAPPER_TASK_a\[script\]/);
  assert.equal(e.issues[0]!.origin?.line, 1);
  assert.match(e.issues[1]!.message, /"-x" is not a valid task name/);
  assert.equal(e.issues[1]!.origin?.line, 2);
});

test('several problems are reported together, in line order', () => {
  const e = configErrorOf(() =>
    parseIsarConf(
      conf(
        'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "a b"',
        'TARGET_BOOTSTRAPPER_TASK_a[script] = "a.sh"',
        'TARGET_BOOTSTRAPPER_TASK_a[effort] = "0"',
        'TARGET_BOOTSTRAPPER_TASK_a[colour] = "red"',
        'TARGET_BOOTSTRAPPER_OTHER = "x"',
      ),
      SRC,
    ),
  );
  assert.deepEqual(
    e.issues.map((i) => `${i.origin?.line} ${i.key}`),
    ['1 TARGET_BOOTSTRAPPER_TASK_b[script]', '3 TARGET_BOOTSTRAPPER_TASK_a[effort]', '4 TARGET_BOOTSTRAPPER_TASK_a[colour]', '5 TARGET_BOOTSTRAPPER_OTHER'],
  );
});
