// Secrets the server hands out. Every secret is 256 random bits, so a plain sha256 is a
// safe stored form (no dictionary to attack); passwords, chosen by people, use scrypt.
// A prefix tells the kind apart in logs and mistakes ("that's a device credential").
import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export const PREFIX = { admin: 'bla_', device: 'bld_', enrollment: 'ble_', boot: 'blb_' } as const;
export type SecretKind = keyof typeof PREFIX;

export function newSecret(kind: SecretKind): string {
  return PREFIX[kind] + randomBytes(32).toString('base64url');
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function kindOf(secret: string): SecretKind | undefined {
  return (Object.keys(PREFIX) as SecretKind[]).find((k) => secret.startsWith(PREFIX[k]));
}

const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 };

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function checkPassword(password: string, stored: string): Promise<boolean> {
  const [tag, n, r, p, salt, key] = stored.split('$');
  if (tag !== 'scrypt' || !salt || !key) return false;
  const want = Buffer.from(key, 'base64url');
  const got = await scryptAsync(password, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p) });
  return got.length === want.length && timingSafeEqual(got, want);
}

function scryptAsync(password: string, salt: Buffer, o: { N: number; r: number; p: number } = SCRYPT): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, SCRYPT.keylen, { ...o, maxmem: 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/**
 * A short-lived enrollment token for one network-booted device, put on its kernel command
 * line by the per-device iPXE script: stateless (an HMAC of the MAC and the expiry under the
 * server's secret), so a boot does not add a row, and useless after it expires.
 */
export function bootToken(secret: Buffer, mac: string, expiresAtMs: number): string {
  const body = `${mac.replace(/:/g, '')}.${Math.floor(expiresAtMs / 1000)}`;
  return `${PREFIX.boot}${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

export type BootTokenCheck = { ok: true; mac: string } | { ok: false; reason: string };

export function checkBootToken(secret: Buffer, token: string, nowMs: number): BootTokenCheck {
  const m = /^blb_([0-9a-f]{12})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m) return { ok: false, reason: 'malformed' };
  const [, hex, exp, mac] = m as unknown as [string, string, string, string];
  const want = createHmac('sha256', secret).update(`${hex}.${exp}`).digest();
  const got = Buffer.from(mac, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want)) return { ok: false, reason: 'bad signature' };
  if (Number(exp) * 1000 <= nowMs) return { ok: false, reason: 'expired' };
  return { ok: true, mac: hex.match(/../g)!.join(':') };
}
