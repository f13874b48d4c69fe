// `bootline lab build-installer`: option parsing only; the builder lives in src/lab/installer/.
import type { Command } from 'commander';

const collect = (v: string, all: string[]) => [...all, v];

export function registerBuildInstaller(lab: Command): void {
  lab
    .command('build-installer')
    .description('build the netboot installer (vmlinuz + one initramfs with node, the agent and its tools) from Debian packages, optionally as a signed Unified Kernel Image for Secure Boot and a bootable USB image of it')
    .option('--out <dir>', 'where vmlinuz, initrd.img and installer.json go; may be <server data>/installer', 'installer')
    .option('--cache <dir>', 'Debian package cache (default $BOOTLINE_LAB_CACHE or /var/cache/bootline-lab)')
    .option('--usb <file>', 'also write a bootable UEFI disk image (GPT, ESP with systemd-boot, BOOTLINE data partition)')
    .option('--usb-image <image>', 'a target image (and its .bmap beside it) to carry on the USB data partition; repeatable', collect, [])
    .option('--usb-auto-install <file>', "an Isar auto.install to put on the USB data partition (the offline case)")
    .option('--cmdline <params>', 'extra kernel parameters for the USB image\'s boot entry (e.g. "installer.unattended bootline.exit=poweroff")', '')
    .option('--module <name>', 'another kernel module to include and load at boot (with its dependencies); repeatable', collect, [])
    .option('--agent <file>', 'the agent bundle to install (default: dist/bootline.mjs of this bootline)')
    .option('--zstd-level <n>', 'zstd level of the initramfs (1-19; higher is smaller and slower to build)', '15')
    .option('--uki', 'also make the installer a Unified Kernel Image (bootline-installer.efi: systemd-stub with the kernel and initramfs; the USB image then boots it directly)')
    .option('--sign-key <db.key>', 'sign the UKI (netboot and USB) with this Secure Boot db key (PEM; implies --uki)')
    .option('--sign-cert <db.crt>', 'the certificate of --sign-key (PEM), the one enrolled in db')
    .option('--force', 'rebuild even when --out already holds an installer built from the same inputs')
    .action(async (opts: Record<string, string | string[] | boolean | undefined>) => {
      const { buildInstaller, parseBuildOptions } = await import('../lab/installer/build.ts');
      await buildInstaller(parseBuildOptions(opts));
    });
}
