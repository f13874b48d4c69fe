// `bootline lab up|down|status`: virtual devices. Option parsing and printing only; the
// lab lives in src/lab/vm/.
import { Option, type Command } from 'commander';
import { DEFAULTS, labStatus, startLab, stopLabInDir, type Lab } from '../lab/vm/lab.ts';
import { LogFollower } from '../lab/vm/serial-console.ts';
import { sleep } from '../lab/vm/processes.ts';

const DEFAULT_DIR = './bootline-lab';

const int = (name: string) => (v: string) => {
  if (!/^\d+$/.test(v)) throw new Error(`${name} must be a whole number, not ${JSON.stringify(v)}`);
  return Number(v);
};

export function registerLabDevices(lab: Command): void {
  lab
    .command('up')
    .description('start virtual devices (QEMU with OVMF, iPXE, a TPM, a sparse disk) that network-boot from the server')
    .option('--devices <n>', 'how many devices', int('--devices'), 1)
    .option('--server <url>', 'the line server as this host reaches it', 'http://127.0.0.1:8080')
    .option('--dir <dir>', "the lab's files: disks, TPM state, sockets, serial logs", DEFAULT_DIR)
    .option('--id <id>', 'seeds MACs, serial numbers and UUIDs (letters, digits, "-"; default random)')
    .option('--disk-size <size>', 'each device\'s disk (sparse raw file), e.g. 8G or 512M', DEFAULTS.diskSize)
    .option('--disk-image <file>', 'each disk starts as a sparse copy of this raw image (devices that already have an OS)')
    .option('--memory <MiB>', 'memory per device', int('--memory'), DEFAULTS.memoryMiB)
    .option('--cpus <n>', 'virtual CPUs per device', int('--cpus'), DEFAULTS.cpus)
    .option('--secure-boot', 'secure-boot capable firmware (OVMF_CODE_4M.secboot.fd, SMM)')
    .addOption(new Option('--vars <template>', 'UEFI variables: empty keys (Setup Mode) or Microsoft keys').choices(['empty', 'ms']).default('empty'))
    .option('--usb <image>', 'attach a raw installer image as a read-only USB stick, booted before the network')
    .option('--no-tpm', 'no TPM')
    .addOption(new Option('--accel <accel>', 'auto probes KVM once and falls back to TCG').choices(['auto', 'kvm', 'tcg']).default('auto'))
    .option('--foreground', 'stay attached: show the serial consoles, stop the devices on Ctrl-C or when all have powered off')
    .action(async (o: { devices: number; server: string; dir: string; id?: string; diskSize: string; diskImage?: string; memory: number; cpus: number; secureBoot?: boolean; vars: 'empty' | 'ms'; usb?: string; tpm: boolean; accel: 'auto' | 'kvm' | 'tcg'; foreground?: boolean }) => {
      const lab = await startLab({
        devices: o.devices,
        serverUrl: o.server,
        dir: o.dir,
        ...(o.id ? { id: o.id } : {}),
        diskSize: o.diskSize,
        ...(o.diskImage ? { diskImage: o.diskImage } : {}),
        memoryMiB: o.memory,
        cpus: o.cpus,
        secureBoot: o.secureBoot === true,
        vars: o.vars,
        ...(o.usb ? { usb: o.usb } : {}),
        tpm: o.tpm,
        accel: o.accel,
        detach: !o.foreground,
        keepLogs: true,
        log: (l) => console.error(l),
      });
      printDevices(lab);
      if (!o.foreground) {
        console.log(`stop them with: bootline lab down --dir ${o.dir}`);
        return;
      }
      await followConsoles(lab);
      await lab.stop({ keepLogs: true });
      console.error('lab: all devices have powered off; logs kept in', lab.dir);
    });

  lab
    .command('down')
    .description('stop the virtual devices of a lab (QMP quit, then SIGTERM, then SIGKILL) and their TPMs; the logs stay')
    .option('--dir <dir>', 'the lab directory', DEFAULT_DIR)
    .option('--purge', 'also remove the serial and QEMU logs')
    .action(async (o: { dir: string; purge?: boolean }) => {
      const state = await stopLabInDir(o.dir, { keepLogs: !o.purge });
      if (!state) {
        console.error(`no lab in ${o.dir} (no lab.json): nothing to stop`);
        return;
      }
      console.log(`stopped ${state.devices.length} device(s) of lab ${state.id}${o.purge ? '' : `; logs kept in ${state.dir}`}`);
    });

  lab
    .command('status')
    .description('the devices of a lab and their state')
    .option('--dir <dir>', 'the lab directory', DEFAULT_DIR)
    .option('--json', 'as JSON')
    .action(async (o: { dir: string; json?: boolean }) => {
      const st = await labStatus(o.dir);
      if (!st) {
        console.error(`no lab in ${o.dir}`);
        process.exitCode = 1;
        return;
      }
      if (o.json) {
        console.log(JSON.stringify(st, null, 2));
        return;
      }
      console.log(`lab ${st.state.id} in ${st.state.dir}, ${st.state.accel.toUpperCase()}, server ${st.state.serverUrl}`);
      for (const { device: d, status, swtpm } of st.devices)
        console.log(`${d.name}  ${d.mac}  ${d.serial}  ${status}${d.swtpmPid !== undefined ? `  tpm ${swtpm ? 'up' : 'down'}` : ''}  ${d.serialLog}`);
    });
}

function printDevices(lab: Lab): void {
  console.log(`lab ${lab.id} in ${lab.dir} (${lab.accel.accel.toUpperCase()}), server ${lab.serverUrl} (guests: ${lab.guestServerUrl})`);
  for (const d of lab.devices) console.log(`${d.name}  MAC ${d.mac}  serial ${d.serial}  UUID ${d.uuid}  console ${d.serialLog}`);
}

/** Prints every device's serial console, prefixed with its name, until all have exited. */
async function followConsoles(lab: Lab): Promise<void> {
  const followers = lab.devices.map((d) => ({ d, f: new LogFollower(d.serialLog) }));
  for (;;) {
    for (const { d, f } of followers) for (const line of f.lines()) console.log(`[${d.name}] ${line}`);
    if (lab.devices.every((d) => !lab.isRunning(d))) return;
    await sleep(250);
  }
}
