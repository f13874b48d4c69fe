// `bootline serve` and `bootline image add` from the built bundle, as a line would run them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync, readFileSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import https from 'node:https';
import { createHash } from 'node:crypto';
import { tempDir, isRunning } from '../helpers.ts';

const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');

/** Starts `bootline serve`, waits for its first lines, returns the URL and admin token. */
async function serve(args: string[], cwd: string) {
  const child = spawn(process.execPath, [BUNDLE, 'serve', '--listen', '127.0.0.1:0', '--log-level', 'warn', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const ready = await new Promise<{ url: string; token: string | undefined }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${out} ${err}`)), 15000);
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const url = /listening on (\S+)/.exec(out)?.[1];
      if (url && (out.includes('admin token') || out.split('\n').length > 1)) {
        clearTimeout(timer);
        resolve({ url, token: /admin token \(shown once, stored hashed\): (\S+)/.exec(out)?.[1] });
      }
    });
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
  const stop = async () => {
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.on('exit', r)));
    return code;
  };
  return { ...ready, child, stop, output: () => out + err };
}

describe('bootline serve', () => {
  it('starts with no settings on an embedded database under ./bootline-data, prints its URL and an admin token once', async () => {
    const cwd = tempDir();
    const s = await serve([], cwd);
    try {
      assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.match(s.token ?? '', /^bla_/);
      assert.ok(existsSync(join(cwd, 'bootline-data', 'bootline.db')));
      const r = await fetch(`${s.url}/api/v1/devices`, { headers: { authorization: `Bearer ${s.token}` } });
      assert.equal(r.status, 200);
      assert.ok(!readFileSync(join(cwd, 'bootline-data', 'bootline.db')).includes(Buffer.from(s.token!)), 'the token is not stored in clear');
    } finally {
      assert.equal(await s.stop(), 0);
    }
    assert.ok(!isRunning(s.child.pid!));
    // A second start keeps the token: none is printed.
    const again = await serve([], cwd);
    try {
      assert.equal(again.token, undefined);
    } finally {
      await again.stop();
    }
  });

  it('serves HTTPS with a given certificate and key', async () => {
    const dir = tempDir();
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const s = await serve(['--data', join(dir, 'data'), '--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem')], dir);
    try {
      assert.match(s.url, /^https:/);
      const body = await new Promise<string>((resolve, reject) => {
        https.get(`${s.url}/healthz`, { ca: readFileSync(join(dir, 'cert.pem')) }, (res) => {
          let b = '';
          res.on('data', (c: Buffer) => (b += c.toString()));
          res.on('end', () => resolve(b));
        }).on('error', reject);
      });
      assert.deepEqual(JSON.parse(body), { ok: true });
    } finally {
      await s.stop();
    }
  });

  it('refuses bad settings with a message naming the setting', () => {
    const dir = tempDir();
    const r = spawnSync(process.execPath, [BUNDLE, 'serve', '--data', join(dir, 'd'), '--listen', 'nowhere'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /listen \(command line\)/);
    const half = spawnSync(process.execPath, [BUNDLE, 'serve', '--data', join(dir, 'd'), '--tls-cert', 'x.pem'], { encoding: 'utf8' });
    assert.notEqual(half.status, 0);
    assert.match(half.stderr, /--tls-cert and --tls-key go together/);
    const db = spawnSync(process.execPath, [BUNDLE, 'serve', '--data', join(dir, 'd'), '--db', 'mysql://x'], { encoding: 'utf8' });
    assert.notEqual(db.status, 0);
    assert.match(db.stderr, /sqlite:|postgres/);
  });

  it('prints a dnsmasq proxy-DHCP configuration', () => {
    const out = execFileSync(process.execPath, [BUNDLE, 'serve', '--print-dnsmasq-config', '--public-url', 'http://192.168.7.1:8080'], { encoding: 'utf8' });
    assert.match(out, /proxy/);
    assert.match(out, /192\.168\.7\.1/);
  });
});

describe('bootline image add', () => {
  it('registers an image under its name, keeping its file name, and the server serves it', async () => {
    const dir = tempDir();
    const img = join(dir, 'disk.img');
    writeFileSync(img, Buffer.alloc(1 << 20, 7));
    const data = join(dir, 'data');
    const out = execFileSync(process.execPath, [BUNDLE, 'image', 'add', img, '--data', data, '--name', 'line-a', '--image-version', '2.4.1'], { encoding: 'utf8' });
    const sha = createHash('sha256').update(readFileSync(img)).digest('hex');
    assert.match(out, new RegExp(`/images/line-a/disk.img .*${sha}`));
    assert.equal(statSync(join(data, 'images', 'line-a', 'disk.img')).size, 1 << 20);
    const s = await serve(['--data', data], dir);
    try {
      const r = await fetch(`${s.url}/images/line-a/disk.img`);
      assert.equal(r.status, 200);
      assert.equal(createHash('sha256').update(Buffer.from(await r.arrayBuffer())).digest('hex'), sha);
      const list = await (await fetch(`${s.url}/api/v1/images`, { headers: { authorization: `Bearer ${s.token}` } })).json();
      assert.equal(list[0].name, 'line-a');
      assert.equal(list[0].version, '2.4.1');
    } finally {
      await s.stop();
    }
    const bad = spawnSync(process.execPath, [BUNDLE, 'image', 'add', img, '--data', data, '--name', '../evil'], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /name/);
    assert.deepEqual(readdirSync(join(data, 'images')), ['line-a'], 'nothing half-written');
  });
});
