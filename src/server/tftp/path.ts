// Which file a TFTP request names, checked before touching the disk: pure, no I/O.
//
// Every request is confined to one root directory:
//   - a NUL byte or another control character in the name is refused (ERROR 2);
//   - "\" is read as "/" (Windows-style clients; dnsmasq does the same);
//   - a ".." segment is refused outright (ERROR 2), even one that would stay inside;
//   - an absolute name is read relative to the root: "/ipxe.efi" is <root>/ipxe.efi, and
//     "<root>/ipxe.efi" spelled out in full is accepted too. "/etc/passwd" therefore
//     names <root>/etc/passwd and can never reach the real /etc/passwd.
// The server then resolves symlinks (realpath) and refuses a file that resolves outside
// the root (see isWithinRoot).
import { posix, sep } from 'node:path';
import { ErrorCode } from './packet.ts';

export type PathCheck = { ok: true; relative: string } | { ok: false; code: ErrorCode; message: string };

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** The path under `root` that `filename` names, or why it is refused. `root` is absolute. */
export function checkRequestPath(root: string, filename: string): PathCheck {
  if (filename.includes('\0')) return { ok: false, code: ErrorCode.ACCESS_VIOLATION, message: 'file name contains a NUL byte' };
  if (CONTROL.test(filename)) return { ok: false, code: ErrorCode.ACCESS_VIOLATION, message: 'file name contains a control character' };
  let name = filename.replace(/\\/g, '/');
  const rootSlash = root.replace(/\/+$/, '') + '/';
  if (name.startsWith(rootSlash)) name = name.slice(rootSlash.length);
  const segments = name.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..'))
    return { ok: false, code: ErrorCode.ACCESS_VIOLATION, message: `"..": a path leaving the TFTP root is refused (${filename})` };
  if (segments.length === 0) return { ok: false, code: ErrorCode.FILE_NOT_FOUND, message: 'no file name' };
  return { ok: true, relative: posix.join(...segments) };
}

/** True when `real` (a realpath) is `rootReal` or inside it. */
export function isWithinRoot(rootReal: string, real: string): boolean {
  if (real === rootReal) return true;
  const prefix = rootReal.endsWith(sep) ? rootReal : rootReal + sep;
  return real.startsWith(prefix);
}
