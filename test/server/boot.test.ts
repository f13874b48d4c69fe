// iPXE scripts and the dnsmasq proxy-DHCP configuration: exact content and refusals.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BootScriptError,
  bootScriptName,
  deviceBootScript,
  deviceUkiBootScript,
  exitScript,
  genericBootScript,
  macFromBootScriptName,
  type DeviceBootScriptInput,
} from '../../src/server/boot/ipxe.ts';
import { BOOTP_FILE_MAX, DnsmasqConfigError, dnsmasqProxyConfig } from '../../src/server/boot/dnsmasq.ts';
import { tempDir, thrown } from '../helpers.ts';

const lines = (s: string) => s.split('\n');

describe('generic boot script (GET /boot.ipxe)', () => {
  test('chains to the per-device script named by ${net0/mac:hexhyp}, retrying, then exits', () => {
    const s = genericBootScript('http://10.0.0.5:8080/');
    assert.ok(s.startsWith('#!ipxe\n'), 'the magic line comes first');
    assert.ok(s.endsWith('\n'));
    const l = lines(s);
    for (const expected of [
      'set bootline_try:int32 0',
      ':bootline_chain',
      'chain --replace --autofree http://10.0.0.5:8080/boot/${net0/mac:hexhyp}.ipxe || goto bootline_retry',
      ':bootline_retry',
      'inc bootline_try',
      'iseq ${bootline_try} 5 && goto bootline_give_up ||',
      'sleep 5',
      'goto bootline_chain',
      ':bootline_give_up',
      'exit 1',
    ])
      assert.ok(l.includes(expected), `missing line: ${expected}\n${s}`);
    // Labels that are jumped to exist.
    for (const m of s.matchAll(/goto (\w+)/g)) assert.ok(l.includes(`:${m[1]}`), `label ${m[1]}`);
    assert.ok(l.indexOf(':bootline_give_up') > l.indexOf('goto bootline_chain'), 'the retry loop does not fall into the give-up branch');
  });

  test('attempts and delay are configurable and checked', () => {
    const s = genericBootScript('https://boot.example/bl', { attempts: 3, retryDelaySeconds: 2 });
    assert.ok(lines(s).includes('iseq ${bootline_try} 3 && goto bootline_give_up ||'));
    assert.ok(lines(s).includes('sleep 2'));
    assert.match(s, /chain --replace --autofree https:\/\/boot\.example\/bl\/boot\/\$\{net0\/mac:hexhyp\}\.ipxe/);
    assert.throws(() => genericBootScript('http://x', { attempts: 0 }), BootScriptError);
    assert.throws(() => genericBootScript('http://x', { retryDelaySeconds: 1.5 }), BootScriptError);
  });

  test('a base URL that could inject iPXE commands is refused', () => {
    const bad: [string, RegExp][] = [
      ['http://x/${net0/ip}', /"\$\{" \(an iPXE settings expansion\)/],
      ['http://x/a b', /whitespace/],
      ['http://x/a\nchain http://evil', /whitespace/],
      ['http://x/"a"', /quote/],
      ['http://x/a&&shell', /"&&"/],
      ['http://x/a||shell', /"\|\|"/],
      ['http://x/a;b', /";"/],
      ['http://x/a\\b', /"\\"/],
      ['ftp://x/', /must be http/],
      ['not a url', /whitespace/],
      ['nourl', /is not a URL/],
      ['http://user:pw@x/', /credentials/],
      ['', /empty/],
    ];
    for (const [url, why] of bad) {
      const e = thrown(BootScriptError, () => genericBootScript(url));
      assert.match(e.message, /^baseUrl /);
      assert.match(e.message, why, url);
    }
  });

  test('script names and MAC addresses map both ways', () => {
    assert.equal(bootScriptName('52:54:00:AB:cd:0F'), '52-54-00-ab-cd-0f.ipxe');
    assert.equal(bootScriptName('52-54-00-ab-cd-0f'), '52-54-00-ab-cd-0f.ipxe');
    assert.equal(macFromBootScriptName('52-54-00-AB-CD-0F.ipxe'), '52:54:00:ab:cd:0f');
    for (const bad of ['52:54:00:ab:cd:0f.ipxe', '52-54-00-ab-cd.ipxe', '52-54-00-ab-cd-0f', '../x.ipxe', '52-54-00-ab-cd-0g.ipxe'])
      assert.equal(macFromBootScriptName(bad), null, bad);
    assert.throws(() => bootScriptName('nope'), BootScriptError);
  });
});

describe('per-device boot script', () => {
  const good: DeviceBootScriptInput = {
    baseUrl: 'http://10.0.0.5:8080',
    kernelUrl: 'http://10.0.0.5:8080/installer/vmlinuz',
    initrdUrl: 'http://10.0.0.5:8080/installer/initrd.img',
    initrdName: 'initrd.img',
    cmdline: ['console=ttyS0,115200n8', 'quiet', 'bootline.unattended'],
    token: 'dGhpcyBpcyBhIHRva2Vu_-.~',
  };

  test('kernel with initrd=<name>, bootline.server and bootline.token; initrd --name; boot', () => {
    const s = deviceBootScript(good);
    const l = lines(s);
    assert.equal(l[0], '#!ipxe');
    const kernel = 'kernel http://10.0.0.5:8080/installer/vmlinuz initrd=initrd.img bootline.server=http://10.0.0.5:8080 bootline.token=dGhpcyBpcyBhIHRva2Vu_-.~ console=ttyS0,115200n8 quiet bootline.unattended || goto bootline_failed';
    const initrd = 'initrd --name initrd.img http://10.0.0.5:8080/installer/initrd.img || goto bootline_failed';
    assert.ok(l.includes(kernel), s);
    assert.ok(l.includes(initrd), s);
    assert.ok(l.includes('boot || goto bootline_failed'), s);
    assert.ok(l.indexOf(kernel) < l.indexOf(initrd) && l.indexOf(initrd) < l.indexOf('boot || goto bootline_failed'));
    // On failure it starts over from the generic script (a fresh token).
    assert.ok(l.includes(':bootline_failed'));
    assert.ok(l.includes('chain --replace --autofree http://10.0.0.5:8080/boot.ipxe'));
    // The name given to the kernel is the name of the initrd image.
    assert.equal(/initrd=(\S+)/.exec(s)?.[1], /initrd --name (\S+)/.exec(s)?.[1]);
  });

  test('an installer built as a UKI is chain-loaded with bootline.server, bootline.token and the parameters, and no initrd', () => {
    const s = deviceUkiBootScript({ baseUrl: good.baseUrl, ukiUrl: 'http://10.0.0.5:8080/installer/bootline-installer.efi', cmdline: good.cmdline, token: good.token });
    const l = lines(s);
    assert.equal(l[0], '#!ipxe');
    assert.ok(l.includes('chain --autofree http://10.0.0.5:8080/installer/bootline-installer.efi bootline.server=http://10.0.0.5:8080 bootline.token=dGhpcyBpcyBhIHRva2Vu_-.~ console=ttyS0,115200n8 quiet bootline.unattended || goto bootline_failed'), s);
    assert.ok(!/initrd/.test(s), s);
    assert.ok(l.includes('chain --replace --autofree http://10.0.0.5:8080/boot.ipxe'), 'starts over on failure');
    assert.equal(thrown(BootScriptError, () => deviceUkiBootScript({ baseUrl: good.baseUrl, ukiUrl: 'http://x/a.efi', cmdline: ['init=/bin/sh;reboot'], token: good.token })).message, 'kernel command line parameter 1 "init=/bin/sh;reboot" is refused: it contains ";"');
    assert.match(thrown(BootScriptError, () => deviceUkiBootScript({ baseUrl: good.baseUrl, ukiUrl: 'ftp://x/a.efi', cmdline: [], token: good.token })).message, /ukiUrl "ftp:\/\/x\/a.efi" must be http/);
    assert.match(thrown(BootScriptError, () => deviceUkiBootScript({ baseUrl: good.baseUrl, ukiUrl: 'http://x/a.efi', cmdline: ['bootline.token=x'], token: good.token })).message, /bootline sets bootline.token= itself/);
  });

  test('a trailing slash on the base URL is dropped; an empty cmdline adds nothing', () => {
    const s = deviceBootScript({ ...good, baseUrl: 'http://10.0.0.5:8080/', cmdline: [] });
    assert.ok(lines(s).includes('kernel http://10.0.0.5:8080/installer/vmlinuz initrd=initrd.img bootline.server=http://10.0.0.5:8080 bootline.token=dGhpcyBpcyBhIHRva2Vu_-.~ || goto bootline_failed'), s);
  });

  test('kernel parameters with whitespace, quotes or iPXE/shell metacharacters are refused', () => {
    const bad: [string, RegExp][] = [
      ['root=/dev/sda1 init=/bin/sh', /whitespace/],
      ['a=b\tc', /whitespace/],
      ['a=b\nshell', /whitespace/],
      ['init="/bin/sh"', /quote/],
      ["x='y'", /quote/],
      ['x=`id`', /quote/],
      ['x=${net0/ip}', /"\$\{"/],
      ['x=$(reboot)', /"\$"/],
      ['x=a;reboot', /";"/],
      ['x=a&&shell', /"&&"/],
      ['x=a||shell', /"\|\|"/],
      ['x=a|b', /"\|"/],
      ['x=a>b', /">"/],
      ['x=a\\b', /"\\"/],
      ['x=#', /"#"/],
      ['x=é', /"é" that is not allowed/],
      ['', /empty/],
    ];
    for (const [param, why] of bad) {
      const e = thrown(BootScriptError, () => deviceBootScript({ ...good, cmdline: ['quiet', param] }));
      assert.match(e.message, /^kernel command line parameter 2 /, param);
      assert.match(e.message, why, param);
    }
  });

  test('parameters bootline sets itself cannot be given again', () => {
    for (const p of ['initrd=evil.img', 'bootline.server=http://evil', 'bootline.token=x']) {
      const e = thrown(BootScriptError, () => deviceBootScript({ ...good, cmdline: [p] }));
      assert.match(e.message, /bootline sets .*= itself/, p);
    }
    // Only the exact names: other bootline.* keys are fine.
    assert.ok(deviceBootScript({ ...good, cmdline: ['bootline.server2=x', 'initrdx=1'] }));
  });

  test('token, initrd name and URLs are checked too', () => {
    assert.match(thrown(BootScriptError, () => deviceBootScript({ ...good, token: 'a b' })).message, /^token .*whitespace/);
    assert.match(thrown(BootScriptError, () => deviceBootScript({ ...good, token: 'a/b' })).message, /^token /);
    assert.match(thrown(BootScriptError, () => deviceBootScript({ ...good, token: '${x}' })).message, /^token .*"\$\{"/);
    assert.match(thrown(BootScriptError, () => deviceBootScript({ ...good, initrdName: '../x' })).message, /^initrdName /);
    assert.match(thrown(BootScriptError, () => deviceBootScript({ ...good, initrdName: 'a b' })).message, /^initrdName .*whitespace/);
    assert.match(thrown(BootScriptError, () => deviceBootScript({ ...good, kernelUrl: 'http://x/vmlinuz quiet' })).message, /^kernelUrl .*whitespace/);
    assert.match(thrown(BootScriptError, () => deviceBootScript({ ...good, initrdUrl: 'tftp://x/initrd' })).message, /^initrdUrl .*http/);
  });
});

describe('exit script', () => {
  test('echo and exit, with the reason made harmless', () => {
    assert.equal(exitScript('no action for this device'), '#!ipxe\necho bootline: no action for this device, booting from disk\nexit\n');
    const s = exitScript('rule "x"\n${net0/ip} && shell');
    assert.deepEqual(lines(s).slice(0, 1), ['#!ipxe']);
    assert.equal(lines(s).length, 4, 'still three lines and a final newline');
    assert.ok(!s.includes('${'), s);
    assert.ok(!s.includes('"'), s);
    assert.ok(!s.includes('&&'), s);
    assert.equal(lines(s)[2], 'exit');
    assert.equal(exitScript(''), '#!ipxe\necho bootline: nothing to do, booting from disk\nexit\n');
  });
});

describe('dnsmasq proxy-DHCP configuration', () => {
  const opts = { serverIp: '192.168.1.10', httpBaseUrl: 'http://192.168.1.10:8080/' };

  test('the common setup: no DNS, proxy range, iPXE by TFTP from bootline, then HTTP for iPXE', () => {
    const conf = dnsmasqProxyConfig(opts);
    const l = lines(conf);
    for (const expected of [
      'port=0',
      'dhcp-range=192.168.1.10,proxy',
      'dhcp-userclass=set:ipxe,iPXE',
      'dhcp-match=set:ipxe,175',
      'pxe-service=tag:!ipxe,x86PC,"bootline iPXE (BIOS)",undionly.kpxe,192.168.1.10',
      'pxe-service=tag:!ipxe,BC_EFI,"bootline iPXE (UEFI)",ipxe.efi,192.168.1.10',
      'pxe-service=tag:!ipxe,x86-64_EFI,"bootline iPXE (UEFI)",ipxe.efi,192.168.1.10',
      'dhcp-boot=tag:ipxe,http://192.168.1.10:8080/boot.ipxe',
    ])
      assert.ok(l.includes(expected), `missing line: ${expected}\n${conf}`);
    // bootline serves TFTP: dnsmasq's own stays off.
    assert.ok(!l.some((x) => /^enable-tftp|^tftp-root/.test(x)), conf);
    assert.ok(!l.some((x) => x.startsWith('interface=')));
    // Every non-comment line is key=value or a bare flag, one option per line.
    for (const x of l.filter((x) => x !== '' && !x.startsWith('#'))) assert.match(x, /^[a-z-]+(=.*)?$/, x);
  });

  test('subnet, interface and dnsmasq-served TFTP', () => {
    const conf = dnsmasqProxyConfig({ ...opts, subnet: '192.168.1.0/24', interface: 'enp3s0', tftpRoot: '/usr/lib/ipxe' });
    const l = lines(conf);
    assert.ok(l.includes('dhcp-range=192.168.1.0,proxy,255.255.255.0'), conf);
    assert.ok(l.includes('interface=enp3s0'));
    assert.ok(l.includes('enable-tftp'));
    assert.ok(l.includes('tftp-root=/usr/lib/ipxe'));
    assert.ok(l.includes('pxe-service=tag:!ipxe,x86PC,"bootline iPXE (BIOS)",undionly.kpxe'), 'no server address: dnsmasq serves it');
    assert.equal(lines(dnsmasqProxyConfig({ ...opts, subnet: '192.168.0.0/22' })).find((x) => x.startsWith('dhcp-range=')), 'dhcp-range=192.168.0.0,proxy,255.255.252.0');
    assert.equal(lines(dnsmasqProxyConfig({ ...opts, subnet: '192.168.1.77/24' })).find((x) => x.startsWith('dhcp-range=')), 'dhcp-range=192.168.1.0,proxy,255.255.255.0');
  });

  test('bad input is refused', () => {
    const bad: [object, RegExp][] = [
      [{ serverIp: 'fe80::1' }, /IPv4/],
      [{ serverIp: '10.0.0.300' }, /IPv4/],
      [{ httpBaseUrl: 'http://x/a,b' }, /httpBaseUrl/],
      [{ httpBaseUrl: 'http://x/a b' }, /httpBaseUrl/],
      [{ httpBaseUrl: 'http://x/#frag' }, /httpBaseUrl/],
      [{ httpBaseUrl: 'tftp://x/' }, /http/],
      [{ httpBaseUrl: `http://10.0.0.1/${'a'.repeat(BOOTP_FILE_MAX)}` }, /at most 127/],
      [{ subnet: '10.0.0.0/24' }, /not in subnet/],
      [{ subnet: '192.168.1.0' }, /not an IPv4 network/],
      [{ interface: 'eth0,lo' }, /interface/],
      [{ tftpRoot: 'relative/dir' }, /tftpRoot/],
      [{ biosFile: 'undionly' }, /biosFile/],
    ];
    for (const [extra, why] of bad) assert.match(thrown(DnsmasqConfigError, () => dnsmasqProxyConfig({ ...opts, ...extra })).message, why, JSON.stringify(extra));
  });

  const dnsmasq = spawnSync('sh', ['-c', 'command -v dnsmasq'], { encoding: 'utf8' }).stdout.trim();
  test('dnsmasq --test accepts the generated file', { skip: dnsmasq === '' && 'dnsmasq is not installed' }, () => {
    const dir = tempDir('bootline-dnsmasq-');
    for (const [name, conf] of [
      ['plain.conf', dnsmasqProxyConfig(opts)],
      ['full.conf', dnsmasqProxyConfig({ ...opts, subnet: '192.168.1.0/24', interface: 'lo', tftpRoot: dir })],
    ] as const) {
      const path = join(dir, name);
      writeFileSync(path, conf);
      // dnsmasq says "syntax check OK." on stderr, and exits non-zero on a bad file.
      const r = spawnSync(dnsmasq, ['--test', `--conf-file=${path}`], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
      assert.match(r.stdout + r.stderr, /syntax check OK/i, name);
    }
  });
});
