// A corpus of bad inputs tried against the real CLI and a real server: configs, kernel command
// lines with shell metacharacters, bmaps, API bodies, image names and tokens. Each must be
// refused with a message (no stack trace, no crash), nothing may be written or run, and the
// server must still answer afterwards.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';
import { startLineServer, callApi, type LineServer } from '../../src/lab/line-server.ts';

const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');
const dir = tempDir('bootline-bad-inputs-');
const SENTINEL = join(dir, 'SENTINEL');
/** What a shell would run if a value were ever pasted into a command line. */
const SHELLY = [`$(touch ${SENTINEL})`, `\`touch ${SENTINEL}\``, `x; touch ${SENTINEL}`, `x && touch ${SENTINEL}`, `x | touch ${SENTINEL}`, `'"$IFS`];

function cli(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BUNDLE, ...args], { encoding: 'utf8', input, timeout: 60_000, env: { ...process.env, BOOTLINE_SYSFS_ROOT: join(dir, 'no-sysfs') } });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Refused with a message a person can act on: non-zero, not a crash, no JS stack trace. */
function assertRefused(r: { code: number | null; out: string }, what: string, mentions?: RegExp): void {
  assert.ok(r.code !== 0 && r.code !== null, `${what}: accepted (exit ${r.code})\n${r.out}`);
  assert.doesNotMatch(r.out, /^\s+at .+:\d+:\d+\)?$/m, `${what}: a stack trace reached the user\n${r.out}`);
  assert.doesNotMatch(r.out, /\b(TypeError|ReferenceError|RangeError|SyntaxError: Unexpected)\b/, `${what}: an internal error reached the user\n${r.out}`);
  assert.ok(r.out.trim().length > 0, `${what}: refused without a word`);
  if (mentions) assert.match(r.out, mentions, `${what}: the message does not say what or where\n${r.out}`);
}

test('bad configs are refused before anything runs, naming the file; the state dir stays empty', () => {
  const configs: [string, string][] = [
    ['unknown key', 'tasks:\n  - name: a\n    scirpt: ./x\n'],
    ['wrong type', 'tasks: yes\n'],
    ['bad effort', 'tasks:\n  - name: a\n    script: /bin/true\n    effort: -5\n'],
    ['duplicate names', 'tasks:\n  - name: a\n    script: /bin/true\n  - name: a\n    script: /bin/true\n'],
    ['not YAML', 'tasks: [unclosed\n  - {\n'],
    ['binary garbage', '\u0000\u0001\u0002\uffff\ud800'.repeat(50)],
    ['alias bomb', `a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ntasks: *f\n`],
    ['missing script', `tasks:\n  - name: a\n    script: ${join(dir, 'missing.sh')}\n`],
    ...SHELLY.map((s, i): [string, string] => [`script with shell text ${i}`, `tasks:\n  - name: a\n    script: ${JSON.stringify(s)}\n`]),
    ['unknown builtin', 'tasks:\n  - name: a\n    builtin: format-everything\n'],
    ['deploy-image without image', 'tasks:\n  - name: a\n    builtin: deploy-image\n    with: {}\n'],
  ];
  for (const [what, text] of configs) {
    const file = join(dir, `config-${what.replace(/\W+/g, '-')}.yaml`);
    const state = join(dir, `state-${what.replace(/\W+/g, '-')}`);
    writeFileSync(file, text);
    const r = cli(['run', '--unattended', '--config', file, '--state-dir', state]);
    assertRefused(r, `config "${what}"`, /config/i);
    assert.equal(r.code, 2, `config "${what}": exit 2 means nothing ran\n${r.out}`);
    assert.ok(!existsSync(state) || readdirSync(state).length === 0, `config "${what}": the state dir was written`);
  }
  assert.ok(!existsSync(SENTINEL), 'a shell ran a config value');
});

test('kernel command lines with shell metacharacters and broken quoting run nothing', () => {
  const lines = [
    ...SHELLY.map((s) => `bootline.server=${s}`),
    ...SHELLY.map((s) => `installer.target.dev=${JSON.stringify(s)} installer.unattended`),
    `bootline.config="${join(dir, 'nope.yaml')}`,
    'bootline.tasks.0.effort=many',
    `bootline.token=${'a'.repeat(100_000)}`,
    'bootline.nosuchkey=1',
  ];
  for (const [i, line] of lines.entries()) {
    const file = join(dir, `cmdline-${i}`);
    const state = join(dir, `cmdline-state-${i}`);
    writeFileSync(file, line);
    const r = cli(['run', '--unattended', '--cmdline', file, '--state-dir', state, '--config', join(dir, 'empty.yaml')]);
    assertRefused(r, `kernel command line ${JSON.stringify(line.slice(0, 80))}`);
  }
  assert.ok(!existsSync(SENTINEL), 'a shell ran a kernel parameter');
});

test('malformed bmaps are refused before the target is touched', () => {
  const image = join(dir, 'img.raw');
  writeFileSync(image, Buffer.alloc(64 * 1024, 7));
  const target = join(dir, 'target.raw');
  const before = Buffer.alloc(64 * 1024, 0xaa);
  const head = (body: string, v = '2.0') =>
    `<?xml version="1.0" ?>\n<bmap version="${v}">\n<ImageSize> 65536 </ImageSize>\n<BlockSize> 4096 </BlockSize>\n<BlocksCount> 16 </BlocksCount>\n<MappedBlocksCount> 16 </MappedBlocksCount>\n<ChecksumType> sha256 </ChecksumType>\n<BmapFileChecksum> ${'0'.repeat(64)} </BmapFileChecksum>\n<BlockMap>\n${body}\n</BlockMap>\n</bmap>\n`;
  const bmaps: [string, string][] = [
    ['entity expansion', `<?xml version="1.0"?><!DOCTYPE bmap [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><bmap version="2.0">&b;</bmap>`],
    ['external entity', `<?xml version="1.0"?><!DOCTYPE bmap [<!ENTITY x SYSTEM "file:///etc/shadow">]><bmap version="2.0">&x;</bmap>`],
    ['overlapping ranges', head('<Range> 0-8 </Range>\n<Range> 4-15 </Range>')],
    ['out of range', head('<Range> 0-99 </Range>')],
    ['huge numbers', head('<Range> 0-99999999999999999999999 </Range>')],
    ['negative', head('<Range> -4-2 </Range>')],
    ['truncated', head('<Range> 0-15 </Range>').slice(0, 200)],
    ['unknown version', head('<Range> 0-15 </Range>', '9.9')],
    ['not XML', 'this is not a bmap'],
    ['empty', ''],
  ];
  for (const [what, text] of bmaps) {
    writeFileSync(target, before);
    const bmap = join(dir, `bad-${what.replace(/\W+/g, '-')}.bmap`);
    writeFileSync(bmap, text);
    const r = cli(['image', 'copy', '--bmap', bmap, image, target]);
    assertRefused(r, `bmap "${what}"`, /bmap/i);
    assert.ok(readFileSync(target).equals(before), `bmap "${what}": the target was written`);
  }
});

let server: LineServer;
before(async () => {
  writeFileSync(join(dir, 'empty.yaml'), 'tasks: []\n');
  mkdirSync(join(dir, 'no-sysfs'), { recursive: true });
  server = await startLineServer({ cli: BUNDLE, data: join(dir, 'server') });
});
after(async () => {
  await server?.stop();
});

test('bad API bodies, image names and tokens get a 4xx with a message, and the server keeps answering', async () => {
  const admin = server.adminToken;
  assert.ok(admin);
  const raw = async (method: string, path: string, body: string | Blob | undefined, headers: Record<string, string>) => {
    const res = await fetch(`${server.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
    return { status: res.status, text: await res.text() };
  };
  // fetch and URL parsing resolve dot segments (`%2e%2e` too) before sending; node:http with a
  // `path` option sends it as given.
  const { hostname, port } = new URL(server.url);
  const verbatim = (path: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      get({ hostname, port, path }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d)).on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      }).on('error', reject);
    });
  const json = { 'content-type': 'application/json', authorization: `Bearer ${admin}` };
  const plan = (config: unknown) => JSON.stringify({ config });
  // Each case names the status it must get, so a request that missed its route (404) cannot pass.
  const cases: [string, number, Promise<{ status: number; text: string }>][] = [
    ['invalid JSON', 400, raw('PUT', '/api/v1/plans/a', '{"config": {', json)],
    ['wrong types', 400, raw('PUT', '/api/v1/plans/a', plan('tasks'), json)],
    ['plan with a bad task', 400, raw('PUT', '/api/v1/plans/a', plan({ tasks: [{ name: 'a', effort: -1, script: '/bin/true' }] }), json)],
    // Refused before it is all read: the server reads the rest first, so fetch gets the answer.
    ['huge body', 413, raw('PUT', '/api/v1/plans/a', plan({ tasks: [], pad: 'x'.repeat(20 * 1024 * 1024) }), json)],
    ['invalid UTF-8', 400, raw('PUT', '/api/v1/plans/a', new Blob(['{"config": {"tasks": [], "x": "', Buffer.from([0xff, 0xfe]), '"}}']), json)],
    ['enrollment with junk', 400, raw('POST', '/api/v1/enroll', JSON.stringify({ token: [], serial: { $gt: '' } }), { 'content-type': 'application/json' })],
    ['image name with ..', 400, verbatim('/images/%2e%2e/passwd')],
    ['image name with .. and a slash', 400, verbatim('/images/..%2f..%2fetc/passwd')],
    ['image name with a slash', 400, raw('GET', '/images/a%2fb/c', undefined, {})],
    ['a bad %-escape in the path', 400, raw('GET', '/images/a%zz/x', undefined, {})],
    ['image name too long', 414, raw('GET', `/images/${'a'.repeat(5000)}/x`, undefined, {})],
    ['no token', 401, raw('GET', '/api/v1/devices', undefined, {})],
    ['garbage token', 401, raw('GET', '/api/v1/devices', undefined, { authorization: 'Bearer \u00ff\u00fe;--' })],
    ['not bearer', 401, raw('GET', '/api/v1/devices', undefined, { authorization: `Basic ${admin}` })],
    ['very long token', 401, raw('GET', '/api/v1/devices', undefined, { authorization: `Bearer ${'t'.repeat(7000)}` })],
    ['token with shell text', 401, raw('GET', '/api/v1/devices', undefined, { authorization: `Bearer $(touch ${SENTINEL})` })],
  ];
  for (const [what, status, p] of cases) {
    const r = await p;
    assert.equal(r.status, status, `${what}: status ${r.status} (${r.text.slice(0, 200)})`);
    assert.ok(r.text.length > 0 && r.text.length < 10_000, `${what}: the answer should carry a short message`);
    assert.doesNotMatch(r.text, /\s+at .+:\d+:\d+/, `${what}: a stack trace in the answer`);
  }
  const health = await callApi(`${server.url}/api/v1/devices`, 'GET', admin);
  assert.equal(health.status, 200, 'the server still answers');
  assert.ok(!existsSync(SENTINEL));
});

test('image add refuses bad image names and leaves the data dir without them', () => {
  const file = join(dir, 'small.img');
  writeFileSync(file, Buffer.alloc(8192, 1));
  for (const name of ['../escape', 'a/b', '', '.', '..', 'x'.repeat(300), 'name with space', `$(touch ${SENTINEL})`, '-rf']) {
    const r = cli(['image', 'add', '--data', join(dir, 'server'), '--name', name, file]);
    assertRefused(r, `image name ${JSON.stringify(name.slice(0, 40))}`, /name/i);
  }
  const images = join(dir, 'server', 'images');
  const left = existsSync(images) ? readdirSync(images) : [];
  assert.deepEqual(left, [], `image directories were created: ${left.join(', ')}`);
  assert.ok(!existsSync(SENTINEL));
});
