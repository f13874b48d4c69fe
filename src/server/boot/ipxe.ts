// iPXE scripts the server hands to network-booting devices: pure text generation.
//
// GET /boot.ipxe (genericBootScript) is the same for every device. It chains to the
// device's own script, named by the MAC address of iPXE's net0 in the "hexhyp" form:
//
//     <base>/boot/${net0/mac:hexhyp}.ipxe     e.g. /boot/52-54-00-12-34-56.ipxe
//
// (iPXE's ${net0/mac} is "52:54:00:12:34:56"; the :hexhyp type gives hyphens instead,
// which need no URL encoding. The server maps it back with macFromBootScriptName.)
// If that request fails the script retries a few times, then exits so that the firmware
// boots the next device (the local disk).
//
// An installer built as a Unified Kernel Image (deviceUkiBootScript) is one EFI image that
// iPXE chain-loads with the same parameters; the firmware checks its signature.
//
// The per-device script (deviceBootScript) loads the installer's kernel with
// `initrd=<name>` (needed by EFI-stub kernels to find the initrd iPXE registered under
// that name), bootline.server and a short-lived bootline.token, then its initrd under the
// same name, and boots. A device with nothing to do gets exitScript: `exit`, boot from disk.
//
// Everything interpolated into a script is checked first. iPXE expands ${...} settings
// and splits on whitespace and quotes, and the kernel command line is handed to the
// installer, so a value with whitespace, quotes, "${", "&&", "||", ";", backslashes or
// other shell/iPXE metacharacters is refused with BootScriptError rather than escaped.

/** A value that must not be put into an iPXE script. */
export class BootScriptError extends Error {
  override name = 'BootScriptError';
}

/** Characters allowed in one kernel command-line parameter (name=value). */
const CMDLINE_PARAM = /^[A-Za-z0-9_.,:/=+@%~-]+$/;
/** Characters allowed in a URL put into a script (no &, $, {, quotes, spaces...). */
const URL_CHARS = /^[A-Za-z0-9_.,:/=+@%~?[\]-]+$/;
const TOKEN = /^[A-Za-z0-9_.~-]{1,512}$/;
const IMAGE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$/;

/** Why `value` is unsafe in a script, or null when it is safe for `allowed`. */
function unsafeBecause(value: string, allowed: RegExp): string | null {
  if (value === '') return 'it is empty';
  if (value.includes('${')) return 'it contains "${" (an iPXE settings expansion)';
  if (/\s/.test(value)) return 'it contains whitespace';
  if (/["'`]/.test(value)) return 'it contains a quote';
  for (const meta of ['&&', '||', '\\', ';', '$', '|', '&', '#', '<', '>', '(', ')', '*', '!', '{', '}'])
    if (value.includes(meta)) return `it contains "${meta}"`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) return 'it contains a control character';
  if (!allowed.test(value)) {
    const bad = [...value].find((c) => !allowed.test(c));
    return `it contains ${bad === undefined ? 'a character' : JSON.stringify(bad)} that is not allowed here`;
  }
  return null;
}

function check(what: string, value: string, allowed: RegExp): string {
  if (typeof value !== 'string') throw new BootScriptError(`${what} must be a string`);
  const why = unsafeBecause(value, allowed);
  if (why) throw new BootScriptError(`${what} ${JSON.stringify(value)} is refused: ${why}`);
  return value;
}

/** An http(s) URL safe to put into a script. */
function checkUrl(what: string, value: string): string {
  check(what, value, URL_CHARS);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new BootScriptError(`${what} ${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BootScriptError(`${what} ${JSON.stringify(value)} must be http:// or https://`);
  if (url.username || url.password) throw new BootScriptError(`${what} must not carry credentials`);
  return value;
}

/** The server's base URL, without a trailing slash. */
const checkBase = (value: string): string => checkUrl('baseUrl', value).replace(/\/+$/, '');

export interface GenericBootScriptOptions {
  /** Attempts at fetching the device's script before giving up (default 5). */
  attempts?: number;
  /** Seconds between attempts (default 5). */
  retryDelaySeconds?: number;
}

/** The script served at GET /boot.ipxe. */
export function genericBootScript(baseUrl: string, opts: GenericBootScriptOptions = {}): string {
  const base = checkBase(baseUrl);
  const attempts = opts.attempts ?? 5;
  const delay = opts.retryDelaySeconds ?? 5;
  if (!Number.isInteger(attempts) || attempts < 1 || attempts > 100) throw new BootScriptError(`attempts must be 1 to 100, not ${attempts}`);
  if (!Number.isInteger(delay) || delay < 0 || delay > 3600) throw new BootScriptError(`retryDelaySeconds must be 0 to 3600, not ${delay}`);
  return [
    '#!ipxe',
    '# bootline: generic boot script. Fetches this device\'s own script, named after the',
    '# MAC address of net0 with hyphens (${net0/mac:hexhyp}, e.g. 52-54-00-12-34-56).',
    'set bootline_try:int32 0',
    ':bootline_chain',
    `chain --replace --autofree ${base}/boot/\${net0/mac:hexhyp}.ipxe || goto bootline_retry`,
    ':bootline_retry',
    'inc bootline_try',
    `iseq \${bootline_try} ${attempts} && goto bootline_give_up ||`,
    `echo bootline: no boot script for \${net0/mac} from ${base} (attempt \${bootline_try} of ${attempts}), retrying in ${delay} s`,
    `sleep ${delay}`,
    'goto bootline_chain',
    ':bootline_give_up',
    `echo bootline: no boot script for \${net0/mac} after ${attempts} attempts, booting from the next device`,
    'exit 1',
    '',
  ].join('\n');
}

/** The per-device script's name for `mac` ("52:54:00:12:34:56" → "52-54-00-12-34-56.ipxe"). */
export function bootScriptName(mac: string): string {
  const norm = normalizeMac(mac);
  if (!norm) throw new BootScriptError(`${JSON.stringify(mac)} is not a MAC address`);
  return `${norm.replace(/:/g, '-')}.ipxe`;
}

/** The MAC address (lower case, colons) a per-device script name stands for, or null. */
export function macFromBootScriptName(name: string): string | null {
  const m = /^([0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5})\.ipxe$/.exec(name);
  return m ? m[1]!.toLowerCase().replace(/-/g, ':') : null;
}

function normalizeMac(mac: string): string | null {
  return /^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$/.test(mac) ? mac.toLowerCase().replace(/-/g, ':') : null;
}

export interface DeviceBootScriptInput {
  /** The server's base URL; becomes bootline.server= on the kernel command line. */
  baseUrl: string;
  kernelUrl: string;
  initrdUrl: string;
  /** The initrd's name in iPXE, also given to the kernel as initrd=<name>. */
  initrdName: string;
  /** Further kernel parameters, one per element (e.g. "console=ttyS0,115200n8"). */
  cmdline: string[];
  /** The device's short-lived token; becomes bootline.token= on the command line. */
  token: string;
}

/** Parameters bootline sets itself and that `cmdline` may therefore not repeat. */
const RESERVED_PARAMS = ['initrd', 'bootline.server', 'bootline.token'];

/** bootline.server, bootline.token and the further parameters, each checked. */
function deviceParams(base: string, tokenIn: string, cmdline: string[]): string[] {
  const token = check('token', tokenIn, TOKEN);
  if (!TOKEN.test(token)) throw new BootScriptError('token is refused: use letters, digits, "_", ".", "~" and "-" (at most 512)');
  if (!Array.isArray(cmdline)) throw new BootScriptError('cmdline must be an array of kernel parameters');
  const params = cmdline.map((p, i) => {
    check(`kernel command line parameter ${i + 1}`, p, CMDLINE_PARAM);
    const key = p.split('=', 1)[0]!;
    if (RESERVED_PARAMS.includes(key)) throw new BootScriptError(`kernel command line parameter ${JSON.stringify(p)} is refused: bootline sets ${key}= itself`);
    return p;
  });
  return [`bootline.server=${base}`, `bootline.token=${token}`, ...params];
}

/** What the script does when loading or starting the installer fails: start over. */
const failedTail = (base: string) => [
  ':bootline_failed',
  'echo bootline: could not boot the installer, starting over in 10 s',
  'sleep 10',
  `chain --replace --autofree ${base}/boot.ipxe`,
  '',
];

/** The per-device script: kernel, initrd, boot. */
export function deviceBootScript(input: DeviceBootScriptInput): string {
  const base = checkBase(input.baseUrl);
  const kernelUrl = checkUrl('kernelUrl', input.kernelUrl);
  const initrdUrl = checkUrl('initrdUrl', input.initrdUrl);
  const name = check('initrdName', input.initrdName, IMAGE_NAME);
  if (!IMAGE_NAME.test(name)) throw new BootScriptError(`initrdName ${JSON.stringify(name)} is refused: use letters, digits, "_", ".", "+" and "-"`);
  const kernelArgs = [`initrd=${name}`, ...deviceParams(base, input.token, input.cmdline)].join(' ');
  return [
    '#!ipxe',
    '# bootline: per-device boot script (the token in it expires soon).',
    'echo bootline: loading the installer',
    `kernel ${kernelUrl} ${kernelArgs} || goto bootline_failed`,
    `initrd --name ${name} ${initrdUrl} || goto bootline_failed`,
    'boot || goto bootline_failed',
    ...failedTail(base),
  ].join('\n');
}

export interface DeviceUkiBootScriptInput {
  baseUrl: string;
  /** The installer as a (signed) Unified Kernel Image. */
  ukiUrl: string;
  cmdline: string[];
  token: string;
}

/**
 * The per-device script for an installer built as a UKI (build-installer --sign-key): one
 * EFI image, which the firmware checks against db when Secure Boot is on. Its arguments
 * become the kernel command line: the netboot UKI has no built-in one, and systemd-stub
 * then passes on its loader's, with Secure Boot on too (docs/secureboot-lab.md says why).
 */
export function deviceUkiBootScript(input: DeviceUkiBootScriptInput): string {
  const base = checkBase(input.baseUrl);
  const ukiUrl = checkUrl('ukiUrl', input.ukiUrl);
  const args = deviceParams(base, input.token, input.cmdline).join(' ');
  return [
    '#!ipxe',
    '# bootline: per-device boot script (the token in it expires soon).',
    'echo bootline: loading the installer (unified kernel image)',
    `chain --autofree ${ukiUrl} ${args} || goto bootline_failed`,
    ...failedTail(base),
  ].join('\n');
}

/** The script for a device with nothing to do: leave iPXE and boot from disk. */
export function exitScript(reason: string): string {
  // The reason is shown with echo: keep it to one line of harmless characters.
  const text = String(reason)
    .replace(/\s+/g, ' ')
    .replace(/[^A-Za-z0-9 _.,:/=+@%~?-]/g, '_')
    .trim()
    .slice(0, 200);
  return ['#!ipxe', `echo bootline: ${text || 'nothing to do'}, booting from disk`, 'exit', ''].join('\n');
}
