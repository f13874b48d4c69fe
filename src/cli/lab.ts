// `bootline lab`: the installer and virtual devices, so that a line can be tried without
// hardware. Option parsing only; the lab lives in src/lab/.
import type { Command } from 'commander';
import { registerBuildInstaller } from './lab-installer.ts';
import { registerLabDevices } from './lab-devices.ts';
import { registerLabDemo } from './lab-demo.ts';
import { registerLabSim } from './lab-sim.ts';
import { registerLabPowerLoss } from './lab-power-loss.ts';

export function registerLab(program: Command): void {
  const lab = program.command('lab').description('build the installer and run virtual devices (QEMU, OVMF, swtpm) that boot it');
  registerBuildInstaller(lab);
  registerLabDevices(lab);
  registerLabDemo(lab);
  registerLabSim(lab);
  registerLabPowerLoss(lab);
}
