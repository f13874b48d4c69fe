// Network boot: the generic iPXE script, the per-device script (kernel, initrd, command
// line with this server and a short-lived token), and the installer's files.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppContext } from '../app.ts';
import { bootToken } from '../credentials.ts';
import { chooseRule } from '../plan-resolve.ts';
import { deviceBootScript, deviceUkiBootScript, exitScript, genericBootScript } from '../boot/ipxe.ts';
import { serveFile } from '../images/serve.ts';

/** The installer's files in the data dir (`bootline lab build-installer` puts them there). */
export const INSTALLER_FILES = { kernel: 'vmlinuz', initrd: 'initrd.img' } as const;
/** The installer as a (signed) Unified Kernel Image: when it is there, devices boot it instead (Secure Boot needs it). */
export const INSTALLER_UKI = 'bootline-installer.efi';

export function bootRoutes(app: FastifyInstance, ctx: AppContext): void {
  const installerDir = join(ctx.config.data, 'installer');
  const ipxe = (reply: FastifyReply, text: string) => reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(text);

  app.get('/boot.ipxe', { schema: { summary: 'Generic iPXE script: chains to the per-device script by MAC', tags: ['boot'] } }, async (req, reply) =>
    ipxe(reply, genericBootScript(ctx.baseUrl(req))),
  );

  app.get<{ Params: { mac: string } }>(
    '/boot/:mac.ipxe',
    { schema: { summary: "A device's iPXE script (or `exit` to boot from disk)", tags: ['boot'], params: Type.Object({ mac: Type.String({ pattern: '^[0-9a-fA-F]{2}([-:][0-9a-fA-F]{2}){5}$' }) }) } },
    async (req, reply) => {
      const mac = req.params.mac.toLowerCase().replace(/-/g, ':');
      const known = await ctx.store.findDeviceByMac(mac);
      const rule = chooseRule(await ctx.store.listRules(), known ?? { serial: null, macs: [mac] });
      if (!rule) return ipxe(reply, exitScript(`no rule for ${mac}`));
      if (rule.action === 'none') return ipxe(reply, exitScript(`nothing to do for ${mac}`));
      // Provisioned: its disk holds the target, and booting the installer again would start
      // over (a device's firmware usually tries the network first). POST .../reprovision undoes it.
      if (known?.state === 'succeeded') return ipxe(reply, exitScript(`${known.serial ?? mac} is provisioned`));
      const base = ctx.baseUrl(req);
      const token = bootToken(ctx.secret, mac, Date.now() + ctx.config.bootTokenTtl * 1000);
      if (existsSync(join(installerDir, INSTALLER_UKI)))
        return ipxe(reply, deviceUkiBootScript({ baseUrl: base, ukiUrl: `${base}/installer/${INSTALLER_UKI}`, cmdline: ctx.config.installerCmdline, token }));
      const missing = Object.values(INSTALLER_FILES).filter((f) => !existsSync(join(installerDir, f)));
      if (missing.length) {
        req.log.warn({ missing, installerDir }, 'installer files missing');
        return ipxe(reply, exitScript(`the server has no installer (${missing.join(', ')} missing in ${installerDir})`));
      }
      return ipxe(
        reply,
        deviceBootScript({
          baseUrl: base,
          kernelUrl: `${base}/installer/${INSTALLER_FILES.kernel}`,
          initrdUrl: `${base}/installer/${INSTALLER_FILES.initrd}`,
          initrdName: INSTALLER_FILES.initrd,
          cmdline: ctx.config.installerCmdline,
          token,
        }),
      );
    },
  );

  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: '/installer/:file',
    exposeHeadRoute: false,
    schema: { summary: "The installer's kernel and initramfs, or its unified kernel image", tags: ['boot'], params: Type.Object({ file: Type.Union([...Object.values(INSTALLER_FILES), INSTALLER_UKI].map((f) => Type.Literal(f))) }) },
    handler: async (req, reply) => serveFile(req, reply, join(installerDir, req.params.file), (n) => ctx.metrics.bytesServed.inc({ kind: 'installer' }, n)),
  });
}
