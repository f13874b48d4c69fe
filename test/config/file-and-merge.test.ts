import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Type } from '@sinclair/typebox';
import { parseConfigText } from '../../src/config/yaml-file.ts';
import { mergeLayers } from '../../src/config/merge.ts';
import { validateConfig } from '../../src/config/validate.ts';
import { describeOrigin, findOrigin, type Layer } from '../../src/config/layer.ts';
import { configErrorOf } from '../helpers.ts';

const builtins = {
  'deploy-image': { optionsSchema: Type.Object({ image: Type.String(), target: Type.Array(Type.String()), overwrite: Type.Optional(Type.Union([Type.Literal('OVERWRITE'), Type.Literal('ABORT')], { default: 'ABORT' })) }, { additionalProperties: false }) },
};

const YAML = `unattended: true
tasks:
  - name: deploy-image
    builtin: deploy-image
    with: { image: img.wic, target: [/dev/vda] }
    effort: 2
  - name: device-info
    script: device-info-collector.sh
    workdir: /usr/bin
`;


test('a YAML file gives the typed config with defaults applied', () => {
  const cfg = validateConfig(mergeLayers([parseConfigText(YAML, 'config.yaml')]), builtins);
  assert.equal(cfg.unattended, true);
  assert.equal(cfg.tasks.length, 2);
  assert.deepEqual(cfg.tasks[0]!.with, { image: 'img.wic', target: ['/dev/vda'], overwrite: 'ABORT' });
  assert.equal(cfg.tasks[1]!.effort, 1);
  assert.equal(cfg.tasks[1]!.retries, 0);
  assert.equal(cfg.tasks[1]!.workdir, '/usr/bin');
  assert.deepEqual(cfg.reporters, [{ type: 'console' }]);
  assert.equal(cfg.onSuccess.action, 'none');
});

test('every key in a YAML file knows its line', () => {
  const layer = parseConfigText(YAML, 'config.yaml');
  assert.equal(describeOrigin(findOrigin(layer.origins, ['tasks', 'deploy-image', 'effort'])), 'config.yaml:6:5');
  assert.equal(describeOrigin(findOrigin(layer.origins, ['tasks', 'device-info', 'workdir'])), 'config.yaml:9:5');
});

test('JSON files are accepted and give line numbers too', () => {
  const json = '{\n  "tasks": [\n    { "name": "a", "script": "a.sh", "effort": -1 }\n  ]\n}\n';
  const e = configErrorOf(() => validateConfig(mergeLayers([parseConfigText(json, 'c.json')]), builtins));
  assert.match(e.message, /^c\.json:3:\d+: tasks\[a\]\.effort: expected a positive number, got -1$/m);
});

test('later layers win, tasks merge by name, other arrays are replaced', () => {
  const file = parseConfigText(YAML + 'hooks: { before: [a, b] }\n', 'config.yaml');
  const plan: Layer = {
    name: 'kernel command line',
    data: { unattended: false, tasks: [{ name: 'deploy-image', with: { image: 'http://srv/img.wic.gz' } }, { name: 'extra', script: 'x.sh' }], hooks: { before: ['c'] } },
    origins: new Map([['tasks/deploy-image/with/image', { source: 'kernel command line', param: 'installer.image.uri=http://srv/img.wic.gz' }]]),
  };
  const merged = mergeLayers([file, plan]);
  const cfg = validateConfig(merged, builtins);
  assert.equal(cfg.unattended, false);
  assert.deepEqual(cfg.tasks.map((t) => t.name), ['deploy-image', 'device-info', 'extra']);
  assert.deepEqual(cfg.tasks[0]!.with.target, ['/dev/vda'], 'options not given by the later layer stay');
  assert.equal(cfg.tasks[0]!.with.image, 'http://srv/img.wic.gz');
  assert.equal(cfg.tasks[0]!.effort, 2);
  assert.deepEqual(cfg.hooks.before, ['c']);
  assert.equal(describeOrigin(findOrigin(merged.origins, ['tasks', 'deploy-image', 'with', 'image'])), 'kernel command line: installer.image.uri=http://srv/img.wic.gz');
  assert.equal(describeOrigin(findOrigin(merged.origins, ['tasks', 'deploy-image', 'with', 'target'])), 'config.yaml:5:29');
});

test('unknown keys are named with their line and a suggestion', () => {
  const e = configErrorOf(() => validateConfig(mergeLayers([parseConfigText('tasks:\n  - name: a\n    script: a.sh\n    efort: 2\n', 'c.yaml')]), builtins));
  assert.match(e.message, /c\.yaml:4:5: tasks\[a\]\.efort: unknown key \(did you mean "effort"\?\)/);
});

test('bad effort, bad types and unknown built-ins are errors naming the key', () => {
  const text = 'unattended: maybe\ntasks:\n  - name: a\n    builtin: deploy-imag\n  - name: b\n    script: b.sh\n    effort: 0\n  - name: c\n';
  const e = configErrorOf(() => validateConfig(mergeLayers([parseConfigText(text, 'c.yaml')]), builtins));
  const lines = e.message.split('\n');
  assert.ok(lines.some((l) => /^c\.yaml:1:1: unattended: expected boolean, got "maybe"$/.test(l)), e.message);
  assert.ok(lines.some((l) => /^c\.yaml:4:\d+: tasks\[a\]\.builtin: unknown built-in "deploy-imag" \(did you mean "deploy-image"\?\)/.test(l)), e.message);
  assert.ok(lines.some((l) => /^c\.yaml:7:\d+: tasks\[b\]\.effort: expected a positive number, got 0$/.test(l)), e.message);
  assert.ok(lines.some((l) => /^c\.yaml:8:\d+: tasks\[c\]: has neither builtin: nor script:/.test(l)), e.message);
});

test('duplicate task names are an error at the second one', () => {
  const e = configErrorOf(() => mergeLayers([parseConfigText('tasks:\n  - { name: a, script: a.sh }\n  - { name: a, script: b.sh }\n', 'c.yaml')]));
  assert.match(e.message, /^c\.yaml:3:\d+: tasks\[a\]: task name "a" is used twice/);
});

test('built-in options are checked against the built-in schema', () => {
  const e = configErrorOf(() =>
    validateConfig(mergeLayers([parseConfigText('tasks:\n  - name: d\n    builtin: deploy-image\n    with: { image: x, target: [a], overwrite: YES }\n', 'c.yaml')]), builtins),
  );
  assert.match(e.message, /c\.yaml:4:\d+: tasks\[d\]\.with\.overwrite: expected one of OVERWRITE, ABORT, got "YES"/);
});

test('a reporter is checked against the schema of its type', () => {
  const e = configErrorOf(() =>
    validateConfig(mergeLayers([parseConfigText('tasks: [{ name: a, script: a.sh }]\nreporters:\n  - type: http\n  - type: consol\n', 'c.yaml')]), builtins),
  );
  assert.match(e.message, /c\.yaml:3:\d+: reporters\[0\]\.url: is required/);
  assert.match(e.message, /c\.yaml:4:\d+: reporters\[1\]\.type: expected one of console, json, led, http, psplash, command, got "consol" \(did you mean "console"\?\)/);
});

test('YAML syntax errors name the line', () => {
  const e = configErrorOf(() => parseConfigText('tasks:\n  - name: "a\n', 'c.yaml'));
  assert.match(e.message, /^c\.yaml:\d+:\d+: \(syntax\): .*fix the YAML\/JSON syntax here/);
});

test('an empty task list is an error that says where tasks come from', () => {
  const e = configErrorOf(() => validateConfig(mergeLayers([parseConfigText('unattended: true\n', 'c.yaml')]), builtins));
  assert.match(e.message, /tasks: no tasks to run/);
});
