// The server's settings: one schema for server.yaml and the `bootline serve` options
// (options win), validated before anything starts.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { BootScriptError, deviceBootScript } from './boot/ipxe.ts';

export const ServerConfigSchema = Type.Object(
  {
    data: Type.String({ minLength: 1, default: './bootline-data', description: 'directory for the database, images, installer and secret' }),
    listen: Type.String({ pattern: '^(\\[[0-9a-fA-F:]+\\]|[^:]*):\\d{1,5}$', default: '127.0.0.1:8080', description: 'HOST:PORT' }),
    db: Type.Optional(Type.String({ minLength: 1, description: 'sqlite:PATH or postgres://…; default sqlite:<data>/bootline.db' })),
    publicUrl: Type.Optional(Type.String({ pattern: '^https?://', description: 'URL devices reach this server at (default: from each request)' })),
    tls: Type.Optional(Type.Object({ cert: Type.String({ minLength: 1 }), key: Type.String({ minLength: 1 }) }, { additionalProperties: false })),
    tftp: Type.Optional(
      Type.Object(
        {
          listen: Type.String({ default: '0.0.0.0:69', description: 'HOST:PORT of the built-in TFTP server' }),
          root: Type.Optional(Type.String({ description: 'directory served (default: <data>/tftp, then /usr/lib/ipxe)' })),
        },
        { additionalProperties: false },
      ),
    ),
    /**
     * Kernel parameters the installer boots with (before bootline.server and the token). The
     * last console= is /dev/console, where the installer's own output goes: the first serial
     * port by default (the lab's virtual devices, most boards); put console=tty0 last for a
     * line that watches screens.
     */
    installerCmdline: Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { default: ['console=tty0', 'console=ttyS0,115200'], maxItems: 32 }),
    /** Seconds a boot token on an iPXE command line stays valid. */
    bootTokenTtl: Type.Integer({ minimum: 60, default: 3600 }),
    /** A running device with no event for this many seconds is shown as stalled. */
    stalledAfter: Type.Integer({ minimum: 5, default: 120 }),
    /** Largest request body (event batches, reports, inventory), bytes. */
    bodyLimit: Type.Integer({ minimum: 1024, default: 4 * 1024 * 1024 }),
    /** Largest uploaded run log, bytes. */
    logLimit: Type.Integer({ minimum: 1024, default: 64 * 1024 * 1024 }),
    logLevel: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
  },
  { additionalProperties: false },
);
export type ServerConfig = Static<typeof ServerConfigSchema> & { db: string };

export class ServerConfigError extends Error {
  override name = 'ServerConfigError';
}

/** Merges file < options, applies defaults, validates; errors name the key and the source. */
export function resolveServerConfig(options: Record<string, unknown>, configFile?: string): ServerConfig {
  let fromFile: Record<string, unknown> = {};
  if (configFile) {
    let text: string;
    try {
      text = readFileSync(configFile, 'utf8');
    } catch (e) {
      throw new ServerConfigError(`cannot read server config ${configFile}: ${(e as Error).message}`);
    }
    const parsed: unknown = parseYaml(text);
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new ServerConfigError(`${configFile}: expected a mapping of settings (data:, listen:, db:, …)`);
    }
    fromFile = (parsed ?? {}) as Record<string, unknown>;
  }
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const merged = Value.Default(ServerConfigSchema, { ...fromFile, ...defined }) as Static<typeof ServerConfigSchema>;
  const errors = [...Value.Errors(ServerConfigSchema, merged)];
  if (errors.length > 0) {
    const lines = errors.slice(0, 5).map((e) => {
      const key = e.path.replace(/^\//, '').replace(/\//g, '.') || '(top level)';
      const from = key.split('.')[0]! in defined ? 'command line' : (configFile ?? 'defaults');
      return `${key} (${from}): ${e.message}`;
    });
    throw new ServerConfigError(`invalid server settings:\n  ${lines.join('\n  ')}`);
  }
  // The installer's kernel parameters go into iPXE scripts: refused now, not at a device's boot.
  try {
    deviceBootScript({ baseUrl: 'http://server', kernelUrl: 'http://server/k', initrdUrl: 'http://server/i', initrdName: 'initrd.img', cmdline: merged.installerCmdline, token: 'check' });
  } catch (e) {
    if (e instanceof BootScriptError) throw new ServerConfigError(`invalid server settings:\n  installerCmdline (${configFile ?? 'defaults'}): ${e.message}`);
    throw e;
  }
  const data = resolve(merged.data);
  return { ...merged, data, db: merged.db ?? `sqlite:${resolve(data, 'bootline.db')}` };
}

export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0';
  return { host, port: Number(listen.slice(i + 1)) };
}
