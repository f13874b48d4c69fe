// Virtual devices, the pure parts: QEMU's argv from a device spec, identities, disk
// sizes, the lab's iPXE chain script, QMP framing, the KVM verdict, requirements.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { qemuArgs, qemuValue, OVMF_NETWORK_OFF, type QemuDeviceSpec } from '../../src/lab/vm/qemu-args.ts';
import { deviceIdentity, LabIdentityError, MAX_DEVICES } from '../../src/lab/vm/identity.ts';
import { DiskSizeError, parseDiskSize } from '../../src/lab/vm/disk-size.ts';
import { chainScript, ChainScriptError, guestServerUrl } from '../../src/lab/vm/ipxe-chain.ts';
import { classifyMessage, encodeCommand, QmpDecoder, QmpError } from '../../src/lab/vm/qmp.ts';
import { kvmVerdict, precheck, probeArgs, probeBootSector, PROBE_EXIT_STATUS } from '../../src/lab/vm/kvm-probe.ts';
import { chooseFirmware } from '../../src/lab/vm/ovmf.ts';
import { assertRequirements, labRequirements, LabRequirementError } from '../../src/lab/vm/requirements.ts';
import { swtpmArgs, swtpmSetupArgs } from '../../src/lab/vm/swtpm.ts';
import { checkLabOptions, LabError } from '../../src/lab/vm/lab.ts';
import { thrown } from '../helpers.ts';

const base: QemuDeviceSpec = {
  name: 'bootline-lab-dev1',
  accel: 'tcg',
  memoryMiB: 1024,
  cpus: 1,
  firmware: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/lab/dev1/OVMF_VARS.fd', secureBoot: false },
  disk: '/lab/dev1/disk.raw',
  net: { mac: '52:54:00:ab:cd:01', tftpDir: '/lab/tftp', bootfile: 'boot.ipxe', romfile: '/usr/lib/ipxe/qemu/efi-virtio.rom' },
  smbios: { serial: 'LAB-X-001', uuid: '5f0c1a2b-3c4d-5e6f-8a9b-0c1d2e3f4a5b', manufacturer: 'bootline', product: 'lab-device' },
  serialLog: '/lab/dev1/serial.log',
  qmpSocket: '/lab/dev1/qmp.sock',
};

/** The value following each occurrence of `flag`. */
const values = (args: string[], flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));

describe('QEMU command line', () => {
  test('UEFI, network first then disk, SMBIOS identity, serial log and QMP: the exact arguments', () => {
    assert.deepEqual(qemuArgs(base), [
      '-name', 'bootline-lab-dev1,process=bootline-lab-dev1',
      '-machine', 'q35,accel=tcg',
      '-cpu', 'max',
      '-smp', '1',
      '-m', '1024',
      '-nodefaults', '-no-user-config', '-display', 'none',
      '-drive', 'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd',
      '-drive', 'if=pflash,format=raw,unit=1,file=/lab/dev1/OVMF_VARS.fd',
      '-fw_cfg', 'name=opt/org.tianocore/IPv4PXESupport,string=no',
      '-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=no',
      '-fw_cfg', 'name=opt/org.tianocore/IPv4Support,string=no',
      '-fw_cfg', 'name=opt/org.tianocore/IPv6Support,string=no',
      '-netdev', 'user,id=net0,tftp=/lab/tftp,bootfile=boot.ipxe',
      '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:ab:cd:01,romfile=/usr/lib/ipxe/qemu/efi-virtio.rom,bootindex=0',
      '-drive', 'if=none,id=disk0,format=raw,discard=unmap,file=/lab/dev1/disk.raw',
      '-device', 'virtio-blk-pci,drive=disk0,bootindex=1',
      '-smbios', 'type=1,manufacturer=bootline,product=lab-device,serial=LAB-X-001,uuid=5f0c1a2b-3c4d-5e6f-8a9b-0c1d2e3f4a5b',
      '-smbios', 'type=2,manufacturer=bootline,product=lab-device,serial=LAB-X-001',
      '-smbios', 'type=3,manufacturer=bootline,serial=LAB-X-001',
      '-chardev', 'file,id=serial0,path=/lab/dev1/serial.log',
      '-serial', 'chardev:serial0',
      '-qmp', 'unix:/lab/dev1/qmp.sock,server=on,wait=off',
    ]);
  });

  test('secure boot firmware: SMM on, secure pflash, the secboot code image', () => {
    const fw = chooseFirmware({ secureBoot: true, vars: 'empty' });
    const a = qemuArgs({ ...base, firmware: { code: fw.code, vars: '/lab/dev1/OVMF_VARS.fd', secureBoot: true } });
    assert.deepEqual(values(a, '-machine'), ['q35,accel=tcg,smm=on']);
    assert.deepEqual(values(a, '-global'), ['driver=cfi.pflash01,property=secure,value=on']);
    assert.ok(a.indexOf('-global') < a.indexOf('-drive'), 'the secure pflash is declared before the flash drives');
    assert.equal(values(a, '-drive')[0], 'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd');
  });

  test("TCG's code buffer: set with -accel (which -machine accel= cannot be mixed with), only under TCG", () => {
    const a = qemuArgs({ ...base, tcgCodeBufferMiB: 128, firmware: { ...base.firmware, secureBoot: true } });
    assert.deepEqual(values(a, '-machine'), ['q35,smm=on']);
    assert.deepEqual(values(a, '-accel'), ['tcg,tb-size=128']);
    const k = qemuArgs({ ...base, accel: 'kvm', tcgCodeBufferMiB: 128 });
    assert.deepEqual(values(k, '-machine'), ['q35,accel=kvm']);
    assert.deepEqual(values(k, '-accel'), []);
  });

  test('firmware choice: empty VARS (Setup Mode) by default, Microsoft keys on request', () => {
    assert.deepEqual(chooseFirmware({ secureBoot: false, vars: 'empty' }), { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd', secureBoot: false });
    assert.equal(chooseFirmware({ secureBoot: true, vars: 'ms' }).varsTemplate, '/usr/share/OVMF/OVMF_VARS_4M.ms.fd');
  });

  test('TPM: swtpm socket as an emulator chardev, CRB or TIS', () => {
    const a = qemuArgs({ ...base, tpm: { socket: '/lab/dev1/tpm.sock', model: 'tpm-crb' } });
    assert.deepEqual(values(a, '-chardev')[0], 'socket,id=tpmchr0,path=/lab/dev1/tpm.sock');
    assert.deepEqual(values(a, '-tpmdev'), ['emulator,id=tpm0,chardev=tpmchr0']);
    assert.ok(values(a, '-device').includes('tpm-crb,tpmdev=tpm0'));
    const tis = qemuArgs({ ...base, tpm: { socket: '/s', model: 'tpm-tis' } });
    assert.ok(values(tis, '-device').includes('tpm-tis,tpmdev=tpm0'));
    assert.ok(!qemuArgs(base).includes('-tpmdev'), 'no TPM unless asked');
  });

  test('USB stick: read-only, on an xHCI controller, booted before the network and the disk', () => {
    const a = qemuArgs({ ...base, usb: '/images/installer.img' });
    assert.ok(values(a, '-drive').includes('if=none,id=usb0,format=raw,readonly=on,file=/images/installer.img'));
    const devices = values(a, '-device');
    assert.deepEqual(devices.slice(0, 4), [
      'qemu-xhci,id=xhci',
      'usb-storage,bus=xhci.0,drive=usb0,bootindex=0',
      'virtio-net-pci,netdev=net0,mac=52:54:00:ab:cd:01,romfile=/usr/lib/ipxe/qemu/efi-virtio.rom,bootindex=1',
      'virtio-blk-pci,drive=disk0,bootindex=2',
    ]);
    // Several sticks boot in their order (the Secure Boot test: refused ones first).
    const two = qemuArgs({ ...base, usb: ['/a.img', '/b.img'] });
    assert.deepEqual(values(two, '-device').slice(0, 4), [
      'qemu-xhci,id=xhci',
      'usb-storage,bus=xhci.0,drive=usb0,bootindex=0',
      'usb-storage,bus=xhci.0,drive=usb1,bootindex=1',
      'virtio-net-pci,netdev=net0,mac=52:54:00:ab:cd:01,romfile=/usr/lib/ipxe/qemu/efi-virtio.rom,bootindex=2',
    ]);
    assert.ok(values(two, '-drive').includes('if=none,id=usb1,format=raw,readonly=on,file=/b.img'));
  });

  test('KVM: the host CPU; commas in paths are doubled, as QEMU reads them', () => {
    const a = qemuArgs({ ...base, accel: 'kvm', disk: '/a,b/disk.raw', cpus: 2, memoryMiB: 2048 });
    assert.deepEqual(values(a, '-machine'), ['q35,accel=kvm']);
    assert.deepEqual(values(a, '-cpu'), ['host']);
    assert.deepEqual(values(a, '-smp'), ['2']);
    assert.deepEqual(values(a, '-m'), ['2048']);
    assert.ok(values(a, '-drive').includes('if=none,id=disk0,format=raw,discard=unmap,file=/a,,b/disk.raw'));
    assert.equal(qemuValue('x,y,,z'), 'x,,y,,,,z');
    assert.equal(OVMF_NETWORK_OFF.length, 4);
  });
});

describe('device identity', () => {
  test('MAC in 52:54:00, serial and UUID: stable for a lab id and index, distinct across both', () => {
    const a = deviceIdentity('line1', 1);
    assert.deepEqual(deviceIdentity('line1', 1), a, 'the same lab id gives the same device');
    assert.match(a.mac, /^52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:01$/);
    assert.equal(a.serial, 'LAB-LINE1-001');
    assert.equal(a.name, 'dev1');
    assert.match(a.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const b = deviceIdentity('line1', 2);
    assert.notEqual(a.mac, b.mac);
    assert.notEqual(a.uuid, b.uuid);
    assert.equal(b.mac.slice(0, 14), a.mac.slice(0, 14), 'one lab shares the MAC prefix');
    assert.notEqual(deviceIdentity('line2', 1).mac, a.mac);
    const all = new Set(Array.from({ length: MAX_DEVICES }, (_, i) => deviceIdentity('x', i + 1).mac));
    assert.equal(all.size, MAX_DEVICES);
  });

  test('refuses indexes out of range and lab ids that cannot go into a serial number', () => {
    thrown(LabIdentityError, () => deviceIdentity('x', 0));
    thrown(LabIdentityError, () => deviceIdentity('x', MAX_DEVICES + 1));
    assert.match(thrown(LabIdentityError, () => deviceIdentity('a b', 1)).message, /letters, digits/);
  });
});

describe('disk size', () => {
  test('K, M, G, T in powers of 1024, with or without "iB"/"B"', () => {
    assert.equal(parseDiskSize('8G'), 8 * 2 ** 30);
    assert.equal(parseDiskSize('512M'), 512 * 2 ** 20);
    assert.equal(parseDiskSize('2GiB'), 2 * 2 ** 30);
    assert.equal(parseDiskSize('1t'), 2 ** 40);
    assert.equal(parseDiskSize('67108864'), 64 * 2 ** 20);
  });
  test('refuses what is not a size, too small, too large, or not whole sectors', () => {
    assert.match(thrown(DiskSizeError, () => parseDiskSize('eight')).message, /not a size: write e.g. 8G/);
    assert.match(thrown(DiskSizeError, () => parseDiskSize('1.5G')).message, /not a size/);
    assert.match(thrown(DiskSizeError, () => parseDiskSize('1M')).message, /too small/);
    assert.match(thrown(DiskSizeError, () => parseDiskSize('100T')).message, /too large/);
    assert.match(thrown(DiskSizeError, () => parseDiskSize('16777217')).message, /multiple of 512/);
  });
});

describe('the lab\'s iPXE chain script', () => {
  test('a server on the host\'s loopback is 10.0.2.2 for guests; other hosts stay', () => {
    assert.equal(guestServerUrl('http://127.0.0.1:8080'), 'http://10.0.2.2:8080');
    assert.equal(guestServerUrl('http://localhost:8080/'), 'http://10.0.2.2:8080');
    assert.equal(guestServerUrl('https://[::1]:8443'), 'https://10.0.2.2:8443');
    assert.equal(guestServerUrl('http://192.168.1.5:8080'), 'http://192.168.1.5:8080');
    assert.match(thrown(ChainScriptError, () => guestServerUrl('127.0.0.1:8080')).message, /http/);
    thrown(ChainScriptError, () => guestServerUrl('ftp://x'));
    thrown(ChainScriptError, () => guestServerUrl('http://u:p@x'));
  });

  test('chains to the server\'s /boot.ipxe, retries while it is unreachable, then exits to the next boot device', () => {
    const s = chainScript('http://10.0.2.2:8080', { attempts: 3, retryDelaySeconds: 2 });
    assert.equal(
      s,
      [
        '#!ipxe',
        '# bootline lab: hand over to the line server, retrying while it is unreachable.',
        'set lab_try:int32 0',
        ':lab_chain',
        'chain --replace --autofree http://10.0.2.2:8080/boot.ipxe || goto lab_retry',
        ':lab_retry',
        'inc lab_try',
        'iseq ${lab_try} 3 && goto lab_give_up ||',
        'echo bootline lab: http://10.0.2.2:8080/boot.ipxe unreachable (attempt ${lab_try} of 3), retrying in 2 s',
        'sleep 2',
        'goto lab_chain',
        ':lab_give_up',
        'echo bootline lab: no answer from http://10.0.2.2:8080, booting from the next device',
        'exit 1',
        '',
      ].join('\n'),
    );
    thrown(ChainScriptError, () => chainScript('http://x/${net0/mac}'));
  });
});

describe('QMP framing', () => {
  test('commands are one JSON object per line with an id', () => {
    assert.equal(encodeCommand('quit', undefined, 'bl1'), '{"execute":"quit","id":"bl1"}\r\n');
    assert.equal(encodeCommand('system_reset', {}, 'bl2'), '{"execute":"system_reset","arguments":{},"id":"bl2"}\r\n');
  });

  test('the decoder splits lines across chunks and tells greetings, answers, errors and events apart', () => {
    const d = new QmpDecoder();
    assert.deepEqual(d.push('{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}\r\n{"return": {}, "id"'), [
      { kind: 'greeting', version: { qemu: { major: 7 } } },
    ]);
    assert.deepEqual(d.push(': "bl1"}\r\n{"timestamp": {"seconds": 1}, "event": "SHUTDOWN", "data": {"guest": true}}\r\n'), [
      { kind: 'return', id: 'bl1', value: {} },
      { kind: 'event', event: 'SHUTDOWN', data: { guest: true } },
    ]);
    assert.deepEqual(d.push('{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": "bl2"}\n'), [
      { kind: 'error', id: 'bl2', errorClass: 'CommandNotFound', desc: 'The command nope has not been found' },
    ]);
    assert.deepEqual(classifyMessage({ something: 1 }), { kind: 'unknown', raw: { something: 1 } });
    thrown(QmpError, () => new QmpDecoder().push('not json\n'));
  });
});

describe('KVM verdict', () => {
  test('the probe is a boot sector that writes to isa-debug-exit', () => {
    const s = probeBootSector();
    assert.equal(s.length, 512);
    assert.deepEqual([...s.subarray(0, 4)], [0xb0, 0x31, 0xe6, 0xf4], 'mov al,0x31; out 0xf4,al');
    assert.deepEqual([s[510], s[511]], [0x55, 0xaa]);
    assert.equal(PROBE_EXIT_STATUS, 99);
    const a = probeArgs('/tmp/p.img');
    assert.ok(a.includes('pc,accel=kvm') && a.includes('host') && a.includes('isa-debug-exit,iobase=0xf4,iosize=0x01'));
  });

  test('KVM only when the guest reached the exit port; a hang, an abort or a missing /dev/kvm mean TCG, each with its reason', () => {
    assert.deepEqual(kvmVerdict({ exitStatus: 99, signal: null, timedOut: false, stderr: '', elapsedMs: 120 }), { accel: 'kvm', reason: 'kvm-works', detail: 'a KVM guest ran the probe and exited in 120 ms' });
    assert.equal(kvmVerdict({ exitStatus: null, signal: 'SIGKILL', timedOut: true, stderr: '', elapsedMs: 4000 }).reason, 'kvm-guest-hangs');
    const abort = kvmVerdict({ exitStatus: null, signal: 'SIGABRT', timedOut: false, stderr: 'error: failed to set MSR 0x10a to 0x69\nAssertion failed.\n', elapsedMs: 80 });
    assert.equal(abort.accel, 'tcg');
    assert.equal(abort.reason, 'kvm-refused');
    assert.match(abort.detail, /signal SIGABRT: error: failed to set MSR 0x10a to 0x69 \/ Assertion failed\./);
    assert.equal(kvmVerdict({ exitStatus: 1, signal: null, timedOut: false, stderr: 'Could not access KVM kernel module', elapsedMs: 5 }).reason, 'kvm-refused');
    assert.equal(precheck({ exists: false, accessible: false })?.reason, 'no-dev-kvm');
    assert.equal(precheck({ exists: true, accessible: false })?.reason, 'dev-kvm-not-accessible');
    assert.equal(precheck({ exists: true, accessible: true }), null);
  });
});

describe('requirements and options, before anything starts', () => {
  test('each missing program or file is named with the Debian package that brings it', () => {
    const reqs = labRequirements(chooseFirmware({ secureBoot: false, vars: 'empty' }), { tpm: true });
    const err = thrown(LabRequirementError, () => assertRequirements(reqs, (need) => !['qemu-system-x86_64', 'swtpm_setup', '/usr/share/OVMF/OVMF_VARS_4M.fd'].includes(need)));
    assert.match(err.message, /QEMU \(qemu-system-x86_64\) is missing/);
    assert.match(err.message, /OVMF variables template \(\/usr\/share\/OVMF\/OVMF_VARS_4M.fd\) is missing/);
    assert.match(err.message, /Install with: apt-get install qemu-system-x86 ovmf swtpm-tools$/);
    assert.doesNotThrow(() => assertRequirements(reqs, () => true));
    assert.ok(!labRequirements(chooseFirmware({ secureBoot: false, vars: 'empty' }), { tpm: false }).some((r) => r.debianPackage.startsWith('swtpm')));
  });

  test('swtpm: a TPM 2.0 on a unix control socket, manufactured with only the SHA-256 bank', () => {
    assert.deepEqual(swtpmArgs({ stateDir: '/l/tpm', socket: '/l/tpm.sock', log: '/l/swtpm.log' }), [
      'socket', '--tpm2', '--tpmstate', 'dir=/l/tpm', '--ctrl', 'type=unixio,path=/l/tpm.sock', '--log', 'file=/l/swtpm.log,level=1', '--terminate',
    ]);
    assert.deepEqual(swtpmSetupArgs('/l/tpm', 'sha256'), ['--tpm2', '--tpmstate', '/l/tpm', '--pcr-banks', 'sha256', '--createek', '--overwrite']);
  });

  test('bad counts, memory, disk sizes and URLs are refused with the option\'s name', () => {
    const ok = { devices: 2, serverUrl: 'http://127.0.0.1:8080' };
    assert.equal(checkLabOptions(ok).guestUrl, 'http://10.0.2.2:8080');
    assert.equal(checkLabOptions({ ...ok, diskSize: '2G' }).diskBytes, 2 ** 31);
    assert.match(thrown(LabError, () => checkLabOptions({ ...ok, devices: 0 })).message, /--devices must be a whole number from 1 to 250/);
    assert.match(thrown(LabError, () => checkLabOptions({ ...ok, memoryMiB: 64 })).message, /--memory/);
    assert.match(thrown(LabError, () => checkLabOptions({ ...ok, tcgCodeBufferMiB: 0.5 })).message, /tcgCodeBufferMiB must be a whole number of MiB, at least 1, not 0.5/);
    assert.equal(checkLabOptions({ ...ok, tcgCodeBufferMiB: 128 }).memoryMiB, 1024);
    assert.match(thrown(DiskSizeError, () => checkLabOptions({ ...ok, diskSize: 'big' })).message, /disk size "big"/);
    assert.match(thrown(LabError, () => checkLabOptions({ ...ok, usb: '/nonexistent/installer.img' })).message, /--usb \/nonexistent\/installer.img: no such file/);
    thrown(ChainScriptError, () => checkLabOptions({ ...ok, serverUrl: 'nope' }));
  });
});
