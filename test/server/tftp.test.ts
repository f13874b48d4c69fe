// The built-in TFTP server: pure packet/negotiation/path functions, then the real server
// driven by curl (a real TFTP client) and by a raw UDP client for what curl cannot show
// (exact OACK, duplicate ACKs, retransmission, foreign TIDs, shutdown).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodePacket,
  encodeAck,
  encodeData,
  encodeError,
  encodeOack,
  encodePacket,
  encodeRequest,
  ErrorCode,
  netasciiDecode,
  netasciiEncode,
  TftpDecodeError,
  type TftpPacket,
} from '../../src/server/tftp/packet.ts';
import { negotiate, DEFAULT_MAX_BLKSIZE } from '../../src/server/tftp/negotiate.ts';
import { checkRequestPath, isWithinRoot } from '../../src/server/tftp/path.ts';
import { startTftpServer, type TftpServer, type TftpServerOptions } from '../../src/server/tftp/server.ts';
import { tempDir } from '../helpers.ts';

// ---------------------------------------------------------------- pure functions

describe('packets', () => {
  test('RRQ with options: exact bytes, and decoding lower-cases mode and option names', () => {
    const buf = encodeRequest('RRQ', 'ipxe.efi', 'octet', { tsize: '0', blksize: '1428' });
    assert.deepEqual(buf, Buffer.from('\x00\x01ipxe.efi\x00octet\x00tsize\x000\x00blksize\x001428\x00', 'latin1'));
    const raw = Buffer.from('\x00\x01a/b.kpxe\x00NetASCII\x00BLKSIZE\x00512\x00TSize\x000\x00', 'latin1');
    assert.deepEqual(decodePacket(raw), { op: 'RRQ', filename: 'a/b.kpxe', mode: 'netascii', options: { blksize: '512', tsize: '0' } });
  });

  test('every packet kind round-trips', () => {
    const packets: TftpPacket[] = [
      { op: 'WRQ', filename: 'x', mode: 'octet', options: {} },
      { op: 'DATA', block: 65535, data: Buffer.from('hello') },
      { op: 'ACK', block: 7 },
      { op: 'ERROR', code: 2, message: 'access violation' },
      { op: 'OACK', options: { blksize: '1468', tsize: '99' } },
    ];
    for (const p of packets) assert.deepEqual(decodePacket(encodePacket(p)), p);
  });

  test('DATA/ACK block numbers are 16-bit and wrap', () => {
    assert.deepEqual(encodeData(65536, Buffer.from('z')), Buffer.from([0, 3, 0, 0, 0x7a]));
    assert.deepEqual(encodeAck(65537), Buffer.from([0, 4, 0, 1]));
    assert.deepEqual(encodeError(ErrorCode.UNKNOWN_TID, 'who?'), Buffer.from('\x00\x05\x00\x05who?\x00', 'latin1'));
    assert.deepEqual(encodeOack({ tsize: '3' }), Buffer.from('\x00\x06tsize\x003\x00', 'latin1'));
  });

  test('malformed packets are refused with a reason', () => {
    const bad: [string, Buffer][] = [
      ['shorter than an opcode', Buffer.from([0])],
      ['unknown opcode 9', Buffer.from([0, 9, 0, 0])],
      ['needs a file name and a mode', Buffer.from('\x00\x01file\x00', 'latin1')],
      ['not NUL-terminated', Buffer.from('\x00\x01file\x00octet', 'latin1')],
      ['has no value', Buffer.from('\x00\x01file\x00octet\x00blksize\x00', 'latin1')],
      ['ACK: no block number', Buffer.from([0, 4, 1])],
    ];
    for (const [why, buf] of bad) {
      assert.throws(() => decodePacket(buf), (e: unknown) => e instanceof TftpDecodeError && e.message.includes(why), why);
    }
    assert.throws(() => encodeRequest('RRQ', 'a\0b', 'octet'), /NUL/);
  });

  test('netascii: LF becomes CR LF, a bare CR becomes CR NUL, and decoding inverts it', () => {
    const text = Buffer.from('a\nb\r\nc\rd', 'latin1');
    const wire = netasciiEncode(text);
    assert.deepEqual(wire, Buffer.from('a\r\nb\r\0\r\nc\r\0d', 'latin1'));
    assert.deepEqual(netasciiDecode(wire), text);
    const plain = Buffer.from('no line ends');
    assert.equal(netasciiEncode(plain), plain);
  });
});

describe('option negotiation', () => {
  const base = { mode: 'octet' as const, fileSize: 1000, maxBlksize: DEFAULT_MAX_BLKSIZE, defaultTimeoutMs: 1000 };

  test('no options: no OACK, 512-byte blocks, the server timeout', () => {
    assert.deepEqual(negotiate({ ...base, requested: {} }), { blksize: 512, timeoutMs: 1000, oack: null, ignored: {} });
  });

  test('blksize, timeout and tsize are answered in the OACK', () => {
    const n = negotiate({ ...base, requested: { blksize: '1024', timeout: '3', tsize: '0' } });
    assert.deepEqual(n.oack, { blksize: '1024', timeout: '3', tsize: '1000' });
    assert.equal(n.blksize, 1024);
    assert.equal(n.timeoutMs, 3000);
    assert.equal(n.tsize, 1000);
  });

  test('blksize is clamped to the server cap and to 65464; below 8 or not a number it is left out', () => {
    assert.equal(negotiate({ ...base, requested: { blksize: '65464' } }).oack?.blksize, '1468');
    assert.equal(negotiate({ ...base, maxBlksize: 65464, requested: { blksize: '70000' } }).oack?.blksize, '65464');
    assert.equal(negotiate({ ...base, maxBlksize: 8, requested: { blksize: '512' } }).blksize, 8);
    for (const v of ['7', '0', '-1', 'abc', '1e3', ' 512']) {
      const n = negotiate({ ...base, requested: { blksize: v } });
      assert.equal(n.oack, null, v);
      assert.equal(n.blksize, 512, v);
      assert.match(n.ignored.blksize!, /block size/);
    }
    assert.throws(() => negotiate({ ...base, maxBlksize: 7, requested: {} }), /maxBlksize/);
  });

  test('timeout outside 1..255 s is left out; tsize only in octet mode; unknown options ignored', () => {
    assert.equal(negotiate({ ...base, requested: { timeout: '0' } }).oack, null);
    assert.equal(negotiate({ ...base, requested: { timeout: '256' } }).timeoutMs, 1000);
    assert.deepEqual(negotiate({ ...base, requested: { timeout: '255' } }).oack, { timeout: '255' });
    assert.equal(negotiate({ ...base, fileSize: 0, requested: { tsize: '0' } }).oack, null);
    const na = negotiate({ ...base, mode: 'netascii', requested: { tsize: '0', windowsize: '4' } });
    assert.equal(na.oack, null);
    assert.match(na.ignored.tsize!, /octet/);
    assert.match(na.ignored.windowsize!, /not supported/);
  });
});

describe('request paths', () => {
  const root = '/srv/tftp';
  const ok = (name: string) => {
    const r = checkRequestPath(root, name);
    assert.ok(r.ok, `${name}: ${JSON.stringify(r)}`);
    return r.relative;
  };
  const refused = (name: string) => {
    const r = checkRequestPath(root, name);
    assert.ok(!r.ok, name);
    return r;
  };

  test('names are read relative to the root, absolute ones included', () => {
    assert.equal(ok('ipxe.efi'), 'ipxe.efi');
    assert.equal(ok('/ipxe.efi'), 'ipxe.efi');
    assert.equal(ok('/srv/tftp/efi/ipxe.efi'), 'efi/ipxe.efi');
    assert.equal(ok('//etc/passwd'), 'etc/passwd');
    assert.equal(ok('boot\\pxe\\undionly.kpxe'), 'boot/pxe/undionly.kpxe');
    assert.equal(ok('./a/./b'), 'a/b');
  });

  test('"..", NUL and control characters are access violations', () => {
    for (const name of ['../etc/passwd', 'a/../../x', 'a/..', '..\\x', '/srv/tftp/../etc/passwd']) {
      const r = refused(name);
      assert.equal(r.ok ? -1 : r.code, ErrorCode.ACCESS_VIOLATION, name);
      assert.match(r.ok ? '' : r.message, /leaving the TFTP root/);
    }
    assert.match(JSON.stringify(refused('a\0b')), /NUL/);
    assert.match(JSON.stringify(refused('a\nb')), /control character/);
    assert.equal(JSON.stringify(refused('/')), JSON.stringify({ ok: false, code: ErrorCode.FILE_NOT_FOUND, message: 'no file name' }));
  });

  test('isWithinRoot', () => {
    assert.ok(isWithinRoot('/srv/tftp', '/srv/tftp/a'));
    assert.ok(isWithinRoot('/srv/tftp', '/srv/tftp'));
    assert.ok(!isWithinRoot('/srv/tftp', '/srv/tftp2/a'));
    assert.ok(!isWithinRoot('/srv/tftp', '/etc/passwd'));
  });
});

// ---------------------------------------------------------------- the server

type Logged = Record<string, unknown>;

async function server(root: string, extra: Partial<TftpServerOptions> = {}): Promise<{ srv: TftpServer; events: Logged[] }> {
  const events: Logged[] = [];
  const log = { info: (o: object) => events.push(o as Logged), warn: (o: object) => events.push(o as Logged), debug: (o: object) => events.push(o as Logged) };
  const srv = await startTftpServer({ root, host: '127.0.0.1', port: 0, log, ...extra });
  after(() => srv.close());
  return { srv, events };
}

/** curl, run asynchronously: the server lives in this process's event loop. */
function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['--max-time', '60', ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** Waits until `cond` holds (the server handles a packet a moment after it is sent). */
async function eventually(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const done = (events: Logged[], file: string) => events.filter((e) => e.event === 'tftp-done' && e.file === file);
const refusals = (events: Logged[]) => events.filter((e) => e.event === 'tftp-refused');

describe('TFTP server with curl', () => {
  const root = tempDir('bootline-tftp-');
  const out = tempDir('bootline-tftp-out-');
  const sizes = [0, 511, 512, 513, 1024, 5000];
  for (const n of sizes) writeFileSync(join(root, `f${n}`), randomBytes(n));
  mkdirSync(join(root, 'efi'));
  writeFileSync(join(root, 'efi', 'ipxe.efi'), randomBytes(3000));
  writeFileSync(join(root, 'text.txt'), 'one\ntwo\r\nthree\rfour');
  const outside = tempDir('bootline-tftp-outside-');
  writeFileSync(join(outside, 'secret'), 'top secret');
  symlinkSync(join(outside, 'secret'), join(root, 'escape'));
  symlinkSync(outside, join(root, 'escdir'));
  symlinkSync('f513', join(root, 'inside-link'));

  test('files of 0, 511, 512, 513, 1024 and 5000 bytes arrive byte for byte, with the sizes negotiated', async () => {
    const { srv, events } = await server(root);
    for (const n of sizes) {
      const dest = join(out, `default-${n}`);
      const r = await curl(['-sS', `tftp://127.0.0.1:${srv.port}/f${n}`, '-o', dest]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(readFileSync(dest), readFileSync(join(root, `f${n}`)), `f${n}`);
      const [d] = done(events, `f${n}`);
      // curl asks for tsize and the OACK gives the size, except for an empty file (curl
      // refuses "tsize 0").
      assert.equal(d?.tsize, n === 0 ? undefined : n, `f${n} tsize`);
      assert.equal(d?.bytes, n);
      // A file that is a multiple of the block size ends with an empty DATA block.
      assert.equal(d?.blocks, Math.floor(n / 512) + 1, `f${n} blocks`);
    }
    assert.equal(srv.stats().activeTransfers, 0);
    assert.equal(srv.stats().transfersCompleted, sizes.length);
  });

  test('--tftp-blksize 1024 is granted; a blksize above the cap is clamped; --tftp-no-options uses 512', async () => {
    const { srv, events } = await server(root, { maxBlksize: 1024 });
    for (const [flags, file, blksize] of [
      [['--tftp-blksize', '1024'], 'f5000', 1024],
      [['--tftp-blksize', '8192'], 'f1024', 1024],
      [['--tftp-no-options'], 'f513', 512],
    ] as const) {
      const dest = join(out, `bs-${file}`);
      const r = await curl(['-sS', ...flags, `tftp://127.0.0.1:${srv.port}/${file}`, '-o', dest]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(readFileSync(dest), readFileSync(join(root, file)));
      const rrq = events.find((e) => e.event === 'tftp-rrq' && e.file === file);
      assert.equal(done(events, file)[0]?.blksize, blksize, file);
      if (flags[0] === '--tftp-no-options') assert.equal(rrq?.accepted, null, 'no options, no OACK');
      else assert.equal((rrq?.accepted as Record<string, string>).blksize, String(blksize));
    }
  });

  test('subdirectories and symlinks inside the root are served; netascii is translated', async () => {
    const { srv } = await server(root);
    let r = await curl(['-sS', `tftp://127.0.0.1:${srv.port}/efi/ipxe.efi`, '-o', join(out, 'ipxe.efi')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(join(out, 'ipxe.efi')), readFileSync(join(root, 'efi', 'ipxe.efi')));
    r = await curl(['-sS', `tftp://127.0.0.1:${srv.port}/inside-link`, '-o', join(out, 'inside-link')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(join(out, 'inside-link')), readFileSync(join(root, 'f513')));
    // curl asks for netascii with ;mode=netascii and writes what it receives as is.
    r = await curl(['-sS', `tftp://127.0.0.1:${srv.port}/text.txt;mode=netascii`, '-o', join(out, 'text.txt')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(out, 'text.txt'), 'latin1'), 'one\r\ntwo\r\0\r\nthree\r\0four');
  });

  test('refusals: missing file, "..", absolute path outside, symlink escapes, directory, upload', async () => {
    const { srv, events } = await server(root);
    const url = (p: string) => `tftp://127.0.0.1:${srv.port}/${p}`;
    // curl -v prints the server's ERROR message as "TFTP error: ..."; exit 68 is
    // CURLE_TFTP_NOTFOUND (ERROR 1), 69 is CURLE_TFTP_PERM (ERROR 2).
    const cases: [string[], number, RegExp][] = [
      [[url('missing.efi')], 68, /TFTP error: file not found: missing\.efi/],
      [['--path-as-is', url('../etc/passwd')], 69, /TFTP error: "\.\.": a path leaving the TFTP root is refused/],
      [['--path-as-is', url('efi/../../etc/passwd')], 69, /leaving the TFTP root/],
      [[url('/etc/passwd')], 68, /file not found: etc\/passwd/],
      [[url('escape')], 69, /escape resolves outside the TFTP root \(symlink escape refused\)/],
      [[url('escdir/secret')], 69, /resolves outside the TFTP root/],
      [[url('efi')], 68, /not a regular file: efi/],
      [['-T', join(root, 'f513'), url('uploaded')], 69, /read-only: uploads \(WRQ\) are refused/],
    ];
    for (const [args, code, message] of cases) {
      const dest = join(out, 'refused');
      const r = await curl(['-v', '-o', dest, ...args]);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
    assert.ok(!existsSync(join(root, 'uploaded')), 'nothing was written');
    assert.equal(refusals(events).length, cases.length);
    assert.equal(srv.stats().requestsRefused, cases.length);
    assert.equal(srv.stats().transfersStarted, 0);
  });

  test('a file over 33 MiB with 512-byte blocks: the block number wraps past 65535', async () => {
    const big = join(root, 'big.img');
    const size = 33 * 1024 * 1024 + 777;
    const fd = openSync(big, 'w');
    for (let left = size; left > 0; left -= 1 << 20) writeSync(fd, randomBytes(Math.min(left, 1 << 20)));
    closeSync(fd);
    const { srv, events } = await server(root);
    const dest = join(out, 'big.img');
    const r = await curl(['-sS', '--tftp-blksize', '512', `tftp://127.0.0.1:${srv.port}/big.img`, '-o', dest]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256(dest), await sha256(big));
    const [d] = done(events, 'big.img');
    assert.equal(d?.blksize, 512);
    assert.equal(d?.bytes, size);
    assert.ok((d?.blocks as number) > 65535, `blocks ${d?.blocks}`);
  });

  test("Debian's iPXE binaries: served byte for byte; its ipxe.efi symlink into /boot is an escape", { skip: !existsSync('/usr/lib/ipxe/undionly.kpxe') && 'ipxe package not installed' }, async () => {
    // /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi: served from /usr/lib/ipxe it
    // resolves outside the root and is refused; a copy in the root is served.
    const { srv } = await server('/usr/lib/ipxe');
    let r = await curl(['-sS', '--tftp-blksize', '1468', `tftp://127.0.0.1:${srv.port}/undionly.kpxe`, '-o', join(out, 'undionly.kpxe')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(join(out, 'undionly.kpxe')), readFileSync('/usr/lib/ipxe/undionly.kpxe'));
    r = await curl(['-v', `tftp://127.0.0.1:${srv.port}/ipxe.efi`, '-o', join(out, 'refused.efi')]);
    assert.equal(r.code, 69);
    assert.match(r.stderr, /ipxe\.efi resolves outside the TFTP root/);

    const copy = tempDir('bootline-tftp-ipxe-');
    copyFileSync('/usr/lib/ipxe/ipxe.efi', join(copy, 'ipxe.efi'));
    const { srv: srv2 } = await server(copy);
    r = await curl(['-sS', `tftp://127.0.0.1:${srv2.port}/ipxe.efi`, '-o', join(out, 'ipxe-copy.efi')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(join(out, 'ipxe-copy.efi')), readFileSync('/usr/lib/ipxe/ipxe.efi'));
  });
});

// ---------------------------------------------------------------- raw protocol checks

class RawClient {
  private readonly queue: { p: TftpPacket; port: number }[] = [];
  private waiter: (() => void) | undefined;
  private constructor(readonly sock: dgram.Socket) {
    sock.on('message', (msg, rinfo) => {
      this.queue.push({ p: decodePacket(msg), port: rinfo.port });
      this.waiter?.();
    });
  }

  static async open(): Promise<RawClient> {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const c = new RawClient(sock);
    after(() => c.close());
    return c;
  }

  send(buf: Buffer, port: number): void {
    this.sock.send(buf, port, '127.0.0.1');
  }

  /** The next packet, or undefined when none arrives within `ms`. */
  async next(ms = 2000): Promise<{ p: TftpPacket; port: number } | undefined> {
    if (this.queue.length === 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, ms);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.queue.shift();
  }

  async expect(ms = 2000): Promise<{ p: TftpPacket; port: number }> {
    const got = await this.next(ms);
    assert.ok(got, 'expected a packet');
    return got;
  }

  private closed = false;
  close(): void {
    if (!this.closed) this.sock.close();
    this.closed = true;
  }
}

describe('TFTP protocol details (raw client)', () => {
  const root = tempDir('bootline-tftp-raw-');
  const file = randomBytes(1500);
  writeFileSync(join(root, 'f1500'), file);

  test('OACK carries tsize, the clamped blksize and the timeout; DATA starts after ACK 0', async () => {
    const { srv } = await server(root);
    const c = await RawClient.open();
    c.send(encodeRequest('RRQ', 'f1500', 'octet', { blksize: '65464', tsize: '0', timeout: '2', foo: 'bar' }), srv.port);
    const oack = await c.expect();
    assert.deepEqual(oack.p, { op: 'OACK', options: { blksize: '1468', tsize: '1500', timeout: '2' } });
    assert.notEqual(oack.port, srv.port, 'the transfer runs on its own port');
    c.send(encodeAck(0), oack.port);
    const d1 = await c.expect();
    assert.deepEqual(d1.p, { op: 'DATA', block: 1, data: file.subarray(0, 1468) });
    c.send(encodeAck(1), oack.port);
    assert.deepEqual((await c.expect()).p, { op: 'DATA', block: 2, data: file.subarray(1468) });
    c.send(encodeAck(2), oack.port);
    await eventually(() => srv.stats().transfersCompleted === 1, 'transfer completed');
    assert.equal(srv.stats().activeTransfers, 0);
  });

  test('a duplicate ACK is not answered (Sorcerer’s Apprentice); a repeated RRQ starts no second transfer', async () => {
    const { srv } = await server(root, { timeoutMs: 5000 });
    const c = await RawClient.open();
    const rrq = encodeRequest('RRQ', 'f1500', 'octet');
    c.send(rrq, srv.port);
    c.send(rrq, srv.port);
    const d1 = await c.expect();
    assert.deepEqual(d1.p, { op: 'DATA', block: 1, data: file.subarray(0, 512) });
    assert.equal(await c.next(200), undefined, 'the repeated RRQ got no answer');
    c.send(encodeAck(1), d1.port);
    assert.equal(((await c.expect()).p as { block: number }).block, 2);
    c.send(encodeAck(1), d1.port); // duplicate
    assert.equal(await c.next(300), undefined, 'nothing is resent on a duplicate ACK');
    c.send(encodeAck(2), d1.port);
    const d3 = await c.expect();
    assert.deepEqual(d3.p, { op: 'DATA', block: 3, data: file.subarray(1024) });
    c.send(encodeAck(3), d1.port);
    await eventually(() => srv.stats().transfersCompleted === 1, 'transfer completed');
    assert.equal(srv.stats().transfersStarted, 1);
    assert.equal(srv.stats().transfersCompleted, 1);
    assert.equal(srv.stats().retransmissions, 0);
  });

  test('an unacknowledged block is retransmitted, then the transfer is given up', async () => {
    const { srv, events } = await server(root, { timeoutMs: 100, retries: 2 });
    const c = await RawClient.open();
    c.send(encodeRequest('RRQ', 'f1500', 'octet'), srv.port);
    for (let i = 0; i < 3; i++) assert.deepEqual((await c.expect()).p, { op: 'DATA', block: 1, data: file.subarray(0, 512) });
    const err = await c.expect();
    assert.equal(err.p.op, 'ERROR');
    assert.match((err.p as { message: string }).message, /no acknowledgement of block 1 after 3 tries/);
    await eventually(() => srv.stats().transfersFailed === 1, 'transfer failed');
    assert.deepEqual({ ...srv.stats(), bytesSent: 0 }, {
      activeTransfers: 0,
      transfersStarted: 1,
      transfersCompleted: 0,
      transfersFailed: 1,
      requestsRefused: 0,
      bytesSent: 0,
      retransmissions: 2,
    });
    assert.ok(events.some((e) => e.event === 'tftp-failed'));
  });

  test('a packet from a foreign TID gets ERROR 5 and the transfer carries on', async () => {
    const { srv } = await server(root, { timeoutMs: 5000 });
    const c = await RawClient.open();
    const intruder = await RawClient.open();
    c.send(encodeRequest('RRQ', 'f1500', 'octet'), srv.port);
    const d1 = await c.expect();
    intruder.send(encodeAck(1), d1.port);
    assert.deepEqual((await intruder.expect()).p, { op: 'ERROR', code: ErrorCode.UNKNOWN_TID, message: 'unknown transfer ID' });
    assert.equal(await c.next(200), undefined, 'the intruder moved nothing');
    c.send(encodeAck(1), d1.port);
    assert.equal(((await c.expect()).p as { block: number }).block, 2);
  });

  test('an ERROR from the client ends its transfer; other opcodes to port 69 are illegal', async () => {
    const { srv } = await server(root, { timeoutMs: 5000 });
    const c = await RawClient.open();
    c.send(encodeRequest('RRQ', 'f1500', 'octet', { blksize: '1024' }), srv.port);
    const oack = await c.expect();
    assert.equal(oack.p.op, 'OACK');
    c.send(encodeError(ErrorCode.OPTION_REFUSED, 'no thanks'), oack.port);
    await eventually(() => srv.stats().transfersFailed === 1, 'transfer failed');
    assert.equal(srv.stats().activeTransfers, 0);
    c.send(encodeAck(1), srv.port);
    assert.equal(((await c.expect()).p as { code: number }).code, ErrorCode.ILLEGAL_OPERATION);
    c.send(encodeRequest('RRQ', 'f1500', 'mail'), srv.port);
    const mail = (await c.expect()).p as { code: number; message: string };
    assert.equal(mail.code, ErrorCode.ILLEGAL_OPERATION);
    assert.match(mail.message, /mode "mail" is not supported/);
  });

  test('beyond maxTransfers a request is told the server is busy', async () => {
    const { srv } = await server(root, { timeoutMs: 5000, maxTransfers: 1 });
    const a = await RawClient.open();
    const b = await RawClient.open();
    a.send(encodeRequest('RRQ', 'f1500', 'octet'), srv.port);
    assert.equal((await a.expect()).p.op, 'DATA');
    b.send(encodeRequest('RRQ', 'f1500', 'octet'), srv.port);
    assert.deepEqual((await b.expect()).p, { op: 'ERROR', code: 0, message: 'server busy, try again later' });
  });

  test('a closed server releases its port and the ports of running transfers', async () => {
    const { srv } = await server(root, { timeoutMs: 5000 });
    const c = await RawClient.open();
    c.send(encodeRequest('RRQ', 'f1500', 'octet'), srv.port);
    const d1 = await c.expect();
    assert.equal(srv.stats().activeTransfers, 1);
    await srv.close();
    const bye = await c.expect();
    assert.deepEqual(bye.p, { op: 'ERROR', code: 0, message: 'server shutting down' });
    assert.equal(srv.stats().activeTransfers, 0);
    for (const port of [srv.port, d1.port]) {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(port, '127.0.0.1', () => resolve());
      });
      await new Promise<void>((r) => s.close(() => r()));
    }
    await srv.close(); // idempotent
  });

  test('the root must exist, and options are checked', async () => {
    await assert.rejects(startTftpServer({ root: join(root, 'nope'), port: 0 }), /TFTP root .*nope: no such directory/);
    await assert.rejects(startTftpServer({ root: join(root, 'f1500'), port: 0 }), /not a directory/);
    await assert.rejects(startTftpServer({ root, port: 0, maxBlksize: 70000 }), /maxBlksize/);
  });
});
