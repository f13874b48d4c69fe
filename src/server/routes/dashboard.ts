// What the dashboard needs beyond the management API: the line view's first load in one
// call (devices with their runs' start times, counts, the stall setting, the server's clock)
// and the network-boot snippets to copy. Admin credentials, like the rest of /api/v1.
import type { FastifyInstance } from 'fastify';
import { API_PREFIX, ErrorBody } from '../../api/device.ts';
import { LineSnapshot, SetupSnippets } from '../../api/admin.ts';
import type { AppContext } from '../app.ts';
import { isStalled } from './admin.ts';
import { genericBootScript } from '../boot/ipxe.ts';
import { dnsmasqProxyConfig } from '../boot/dnsmasq.ts';

const security: { [label: string]: string[] }[] = [{ admin: [] }, { adminUser: [] }];
/** More devices than a line view shows at once; the rest are reached with the device list's filters. */
const LINE_MAX = 5000;

export function dashboardRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.addHook('onRequest', async (req) => {
    await ctx.auth.admin(req);
  });

  app.get(
    `${API_PREFIX}/line`,
    {
      schema: {
        summary: "The line view's first load: every device (newest activity first) with its current run's start, counts per state",
        tags: ['devices'],
        security,
        response: { 200: LineSnapshot, 401: ErrorBody },
      },
    },
    async () => {
      const [devices, counts] = await Promise.all([ctx.store.listDevices({ limit: LINE_MAX }), ctx.store.countDevicesByState()]);
      const starts = await ctx.store.runStarts(devices.flatMap((d) => (d.currentRun ? [d.currentRun] : [])));
      const now = Date.now();
      return {
        now: new Date(now).toISOString(),
        stalledAfter: ctx.config.stalledAfter,
        counts,
        devices: devices.map((d) => ({
          ...d,
          stalled: isStalled(d, ctx.config.stalledAfter, now),
          runStartedAt: d.currentRun ? (starts[d.currentRun] ?? null) : null,
        })),
      };
    },
  );

  app.get(
    `${API_PREFIX}/setup`,
    {
      schema: {
        summary: 'The iPXE script and the proxy-DHCP dnsmasq configuration for this server, to copy into the line\'s network setup',
        tags: ['boot'],
        security,
        response: { 200: SetupSnippets, 401: ErrorBody },
      },
    },
    async (req) => {
      const baseUrl = ctx.baseUrl(req);
      let dnsmasq: string | null = null;
      let dnsmasqError: string | null = null;
      try {
        dnsmasq = dnsmasqProxyConfig({ serverIp: new URL(baseUrl).hostname, httpBaseUrl: baseUrl });
      } catch (e) {
        dnsmasqError = `${(e as Error).message} — set the server's publicUrl to http://<its IPv4 address>:<port> (bootline serve --public-url)`;
      }
      return { baseUrl, ipxe: genericBootScript(baseUrl), dnsmasq, dnsmasqError };
    },
  );
}

