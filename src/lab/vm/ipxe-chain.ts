// The iPXE script QEMU's own TFTP hands each device (-netdev user,tftp=DIR,bootfile=...):
// it chains to the line server's generic /boot.ipxe. Inside QEMU's user network the host
// is 10.0.2.2, so a server on the host's loopback is reached there.

export class ChainScriptError extends Error {
  override name = 'ChainScriptError';
}

/** The host's address as seen from a guest on QEMU's user network. */
export const USER_NET_HOST = '10.0.2.2';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/** `serverUrl` as a guest reaches it: loopback becomes 10.0.2.2; anything else is kept (QEMU NATs it). */
export function guestServerUrl(serverUrl: string): string {
  let u: URL;
  try {
    u = new URL(serverUrl);
  } catch {
    throw new ChainScriptError(`server URL ${JSON.stringify(serverUrl)} is not a URL: give e.g. http://127.0.0.1:8080`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ChainScriptError(`server URL ${JSON.stringify(serverUrl)} must be http:// or https://`);
  if (u.username || u.password || u.search || u.hash) throw new ChainScriptError(`server URL ${JSON.stringify(serverUrl)} must be a plain base URL (no credentials, query or fragment)`);
  if (LOOPBACK.has(u.hostname)) u.hostname = USER_NET_HOST;
  return u.toString().replace(/\/+$/, '');
}

/** Characters that iPXE would expand or split on are refused rather than escaped. */
const SAFE_URL = /^[A-Za-z0-9_.,:/=+@%~[\]-]+$/;

export function chainScript(guestUrl: string, o: { attempts?: number; retryDelaySeconds?: number } = {}): string {
  if (!SAFE_URL.test(guestUrl)) throw new ChainScriptError(`server URL ${JSON.stringify(guestUrl)} has characters an iPXE script cannot carry`);
  const attempts = o.attempts ?? 10;
  const delay = o.retryDelaySeconds ?? 3;
  return [
    '#!ipxe',
    '# bootline lab: hand over to the line server, retrying while it is unreachable.',
    'set lab_try:int32 0',
    ':lab_chain',
    `chain --replace --autofree ${guestUrl}/boot.ipxe || goto lab_retry`,
    ':lab_retry',
    'inc lab_try',
    `iseq \${lab_try} ${attempts} && goto lab_give_up ||`,
    `echo bootline lab: ${guestUrl}/boot.ipxe unreachable (attempt \${lab_try} of ${attempts}), retrying in ${delay} s`,
    `sleep ${delay}`,
    'goto lab_chain',
    ':lab_give_up',
    `echo bootline lab: no answer from ${guestUrl}, booting from the next device`,
    'exit 1',
    '',
  ].join('\n');
}
