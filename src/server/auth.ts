// Who is calling: the admin (a bearer token, or a user's password over basic auth) or a
// device (the credential it got at enrollment). Lookups are cached briefly, because a
// line of devices posts events several times a second.
import type { FastifyRequest } from 'fastify';
import type { Device } from '../api/admin.ts';
import type { Store } from './db/store.ts';
import { checkPassword, hashSecret, kindOf } from './credentials.ts';
import { unauthorized } from './errors.ts';

const CACHE_MS = 30_000;
const CACHE_MAX = 10_000;

export interface Authenticator {
  /** Who the admin is: the user's name, or `admin-token:` and the first 8 hex of the token's hash (for audit records). */
  admin(req: FastifyRequest): Promise<string>;
  device(req: FastifyRequest): Promise<Device>;
  /** Drops cached answers (after a revocation or re-enrollment). */
  forget(): void;
}

function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  return m?.[1];
}

function basic(req: FastifyRequest): { user: string; password: string } | undefined {
  const h = req.headers.authorization;
  const m = h ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h) : null;
  if (!m) return undefined;
  const text = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const i = text.indexOf(':');
  return i < 0 ? undefined : { user: text.slice(0, i), password: text.slice(i + 1) };
}

export function createAuthenticator(store: Store): Authenticator {
  const admins = new Map<string, number>();
  const devices = new Map<string, { device: Device; at: number }>();
  const remember = <V>(m: Map<string, V>, k: string, v: V) => {
    if (m.size >= CACHE_MAX) m.clear();
    m.set(k, v);
  };

  return {
    async admin(req) {
      const token = bearer(req);
      if (token) {
        if (kindOf(token) !== 'admin') throw unauthorized('this is not an admin token (admin tokens start with bla_)');
        const hash = hashSecret(token);
        const seen = admins.get(hash);
        const who = `admin-token:${hash.slice(0, 8)}`;
        if (seen !== undefined && Date.now() - seen < CACHE_MS) return who;
        if (!(await store.hasAdminToken(hash))) throw unauthorized('unknown admin token');
        remember(admins, hash, Date.now());
        return who;
      }
      const b = basic(req);
      if (b) {
        const stored = await store.getUserHash(b.user);
        if (!stored || !(await checkPassword(b.password, stored))) throw unauthorized('wrong user name or password');
        return b.user;
      }
      throw unauthorized('admin credentials needed: Authorization: Bearer <admin token> or basic auth with a user');
    },

    async device(req) {
      const token = bearer(req);
      if (!token) throw unauthorized('device credential needed: Authorization: Bearer <credential from /api/v1/enroll>');
      if (kindOf(token) !== 'device') throw unauthorized('this is not a device credential (they start with bld_): enroll first');
      const hash = hashSecret(token);
      const seen = devices.get(hash);
      if (seen && Date.now() - seen.at < CACHE_MS) return seen.device;
      const device = await store.findDeviceByCredential(hash);
      if (!device) throw unauthorized('unknown device credential: enroll again');
      remember(devices, hash, { device, at: Date.now() });
      return device;
    },

    forget() {
      admins.clear();
      devices.clear();
    },
  };
}
