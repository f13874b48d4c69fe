import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAutoInstall } from '../../src/config/auto-install.ts';
import { configErrorOf } from '../helpers.ts';

const SRC = '/install/auto.install';


test('a full auto.install configures the built-in deploy-image task and makes the run unattended', () => {
  const layer = parseAutoInstall('/install/isar-image-base.wic.zst\n/dev/sda,/dev/nvme0n1:/dev/vda\nOVERWRITE\ntrue\n10\n', SRC);
  assert.deepEqual(layer.data, {
    tasks: [
      {
        name: 'deploy-image',
        builtin: 'deploy-image',
        with: { image: '/install/isar-image-base.wic.zst', target: ['/dev/sda', '/dev/nvme0n1', '/dev/vda'], overwrite: 'OVERWRITE' },
      },
    ],
    abort: { enable: true, timeout: 10 },
    unattended: true,
  });
  assert.equal(layer.name, SRC);
  assert.deepEqual(layer.origins.get('tasks/deploy-image'), { source: SRC, line: 1 });
  assert.deepEqual(layer.origins.get('tasks/deploy-image/with/image'), { source: SRC, line: 1 });
  assert.deepEqual(layer.origins.get('tasks/deploy-image/with/target'), { source: SRC, line: 2 });
  assert.deepEqual(layer.origins.get('tasks/deploy-image/with/overwrite'), { source: SRC, line: 3 });
  assert.deepEqual(layer.origins.get('abort/enable'), { source: SRC, line: 4 });
  assert.deepEqual(layer.origins.get('abort/timeout'), { source: SRC, line: 5 });
  assert.deepEqual(layer.origins.get('unattended'), { source: SRC });
});

test('whitespace and CRLF line ends are tolerated, blank lines at the end ignored', () => {
  const layer = parseAutoInstall('  image.wic  \r\n\t/dev/sda \r\n ABORT\r\nfalse\r\n0\r\n\r\n\r\n', SRC);
  const t = (layer.data.tasks as Record<string, unknown>[])[0]!;
  assert.deepEqual(t.with, { image: 'image.wic', target: ['/dev/sda'], overwrite: 'ABORT' });
  assert.deepEqual(layer.data.abort, { enable: false, timeout: 0 });
});

test('the Isar 3-line form leaves abort enable and timeout to the defaults', () => {
  const layer = parseAutoInstall('image.wic\n/dev/sda\nOVERWRITE', SRC);
  assert.equal(layer.data.abort, undefined);
  assert.equal(layer.origins.has('abort/enable'), false);
  assert.equal(layer.data.unattended, true);
});

test('a missing required line names its number and what belongs there', () => {
  const e = configErrorOf(() => parseAutoInstall('image.wic\n/dev/sda\n', SRC));
  assert.equal(e.issues.length, 1);
  assert.equal(e.message, '/install/auto.install:3: overwrite: missing — line 3 must hold OVERWRITE or ABORT');

  const empty = configErrorOf(() => parseAutoInstall('', SRC));
  assert.deepEqual(
    empty.issues.map((i) => i.origin?.line),
    [1, 2, 3],
  );
  assert.match(empty.message, /auto\.install:1: image: missing — line 1 must hold the path or URL of the image to install/);
  assert.match(empty.message, /auto\.install:2: target device: missing — line 2 must hold the target block device/);

  const blank = configErrorOf(() => parseAutoInstall('image.wic\n\nOVERWRITE\n', SRC));
  assert.match(blank.message, /^\/install\/auto\.install:2: target device: empty — line 2 must hold/);
});

test('an invalid overwrite value is an error naming line 3', () => {
  const e = configErrorOf(() => parseAutoInstall('image.wic\n/dev/sda\noverwrite\n', SRC));
  assert.equal(e.message, '/install/auto.install:3: overwrite: must be OVERWRITE or ABORT, got "overwrite"');
});

test('an invalid abort enable or timeout is an error naming its line', () => {
  const e = configErrorOf(() => parseAutoInstall('image.wic\n/dev/sda\nABORT\nmaybe\nsoon\n', SRC));
  assert.deepEqual(
    e.issues.map((i) => [i.origin?.line, i.key]),
    [
      [4, 'abort enable'],
      [5, 'abort timeout'],
    ],
  );
  assert.match(e.message, /auto\.install:4: abort enable: must be a boolean .*got "maybe"/);
  assert.match(e.message, /auto\.install:5: abort timeout: must be a number of seconds \(0 or more\), got "soon"/);

  const negative = configErrorOf(() => parseAutoInstall('image.wic\n/dev/sda\nABORT\ntrue\n-3\n', SRC));
  assert.match(negative.message, /auto\.install:5: abort timeout: .*got "-3"/);
});

test('more than five lines is an error naming the first extra line', () => {
  const e = configErrorOf(() => parseAutoInstall('image.wic\n/dev/sda\nABORT\ntrue\n5\n\nextra\n', SRC));
  assert.match(e.message, /^\/install\/auto\.install:7: auto\.install: unexpected line "extra": auto\.install has at most 5 lines/);
});

test('a target line of only separators is an error', () => {
  const e = configErrorOf(() => parseAutoInstall('image.wic\n,:,\nABORT\n', SRC));
  assert.match(e.message, /auto\.install:2: target device: must be the target block device, or candidates separated by commas or colons/);
});
