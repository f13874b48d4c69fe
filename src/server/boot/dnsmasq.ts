// The common proxy-DHCP dnsmasq configuration for a bootline line (printed by
// `bootline serve --print-dnsmasq-config`): pure text generation.
//
// The line's own DHCP server keeps leasing addresses; dnsmasq in proxy mode
// (dhcp-range=<net>,proxy) only answers PXE clients with boot information:
//   1. PXE firmware that is not iPXE yet gets iPXE over TFTP from bootline's built-in TFTP
//      server (pxe-service, with the server's address so that dnsmasq does not need its
//      own TFTP: enable-tftp stays off). BIOS (x86PC, client arch 0) gets undionly.kpxe;
//      x86-64 UEFI gets ipxe.efi, both as BC_EFI (arch 7, what most x86-64 UEFI firmware
//      and OVMF send) and x86-64_EFI (arch 9).
//   2. iPXE itself is recognised by its DHCP user class "iPXE" and its option 175 and is
//      sent bootline's boot script URL instead (dhcp-boot; in proxy mode dnsmasq puts the
//      dhcp-boot file into the reply when no pxe-service matches), so it does not load
//      iPXE again in a loop.
//
// Facts from dnsmasq's man page and source (rfc2131.c): pxe-service=[tag:<tag>,]<CSA>,
// <menu text>[,<basename>][,<server address>]; a basename containing "." is used as the
// file name as is (no ".0" layer suffix); without a server address dnsmasq serves the file
// itself and needs --enable-tftp. The BOOTP file field holds 127 characters, so the boot
// script URL must fit. PXE firmware always uses TFTP port 69: bootline's TFTP server must
// listen there.
import { isIPv4 } from 'node:net';

export class DnsmasqConfigError extends Error {
  override name = 'DnsmasqConfigError';
}

export interface DnsmasqProxyOptions {
  /** IPv4 address of the bootline host: the TFTP server PXE firmware is sent to. */
  serverIp: string;
  /** bootline's HTTP base URL; iPXE is sent <httpBaseUrl>/boot.ipxe. */
  httpBaseUrl: string;
  /**
   * The subnet to serve, e.g. "192.168.1.0/24". Default: serverIp's own network (dnsmasq
   * takes the netmask from the interface that has that address).
   */
  subnet?: string;
  /** Listen on this interface only. */
  interface?: string;
  /**
   * Let dnsmasq serve the iPXE binaries itself from this directory (enable-tftp) instead of
   * bootline's TFTP server.
   */
  tftpRoot?: string;
  /** File names on the TFTP server (defaults: undionly.kpxe, ipxe.efi). */
  biosFile?: string;
  efiFile?: string;
}

/** The longest file name a DHCP reply's BOOTP "file" field holds (128 bytes with the NUL). */
export const BOOTP_FILE_MAX = 127;

const ipv4ToInt = (ip: string): number => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const intToIpv4 = (n: number): string => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

function parseSubnet(subnet: string, serverIp: string): { network: string; netmask: string } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(subnet);
  if (!m || !isIPv4(m[1]!) || Number(m[2]) > 32 || Number(m[2]) < 1)
    throw new DnsmasqConfigError(`subnet ${JSON.stringify(subnet)} is not an IPv4 network like 192.168.1.0/24`);
  const bits = Number(m[2]);
  const mask = bits === 32 ? 0xffffffff : (0xffffffff - (2 ** (32 - bits) - 1)) >>> 0;
  const network = (ipv4ToInt(m[1]!) & mask) >>> 0;
  if (((ipv4ToInt(serverIp) & mask) >>> 0) !== network) throw new DnsmasqConfigError(`serverIp ${serverIp} is not in subnet ${subnet}`);
  return { network: intToIpv4(network), netmask: intToIpv4(mask) };
}

/** A value dnsmasq reads literally: no separators (","), quotes, comments or spaces. */
function plain(what: string, value: string, allowed: RegExp): string {
  if (typeof value !== 'string' || !allowed.test(value)) throw new DnsmasqConfigError(`${what} ${JSON.stringify(value)} is refused: unexpected characters`);
  return value;
}

export function dnsmasqProxyConfig(opts: DnsmasqProxyOptions): string {
  const { serverIp } = opts;
  if (!isIPv4(serverIp)) throw new DnsmasqConfigError(`serverIp ${JSON.stringify(serverIp)} must be an IPv4 address (proxy DHCP is IPv4 only)`);
  const base = plain('httpBaseUrl', opts.httpBaseUrl, /^[A-Za-z0-9_.:/=+@%~?[\]-]+$/).replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new DnsmasqConfigError(`httpBaseUrl ${JSON.stringify(opts.httpBaseUrl)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new DnsmasqConfigError(`httpBaseUrl must be http:// or https://, not ${url.protocol}`);
  const bootUrl = `${base}/boot.ipxe`;
  if (bootUrl.length > BOOTP_FILE_MAX)
    throw new DnsmasqConfigError(`the boot script URL ${bootUrl} is ${bootUrl.length} characters; a DHCP reply holds at most ${BOOTP_FILE_MAX}`);
  const file = /^[A-Za-z0-9_][A-Za-z0-9_./+-]*\.[A-Za-z0-9]+$/;
  const biosFile = plain('biosFile', opts.biosFile ?? 'undionly.kpxe', file);
  const efiFile = plain('efiFile', opts.efiFile ?? 'ipxe.efi', file);
  const iface = opts.interface === undefined ? undefined : plain('interface', opts.interface, /^[A-Za-z0-9_.:@*-]{1,15}$/);
  const tftpRoot = opts.tftpRoot === undefined ? undefined : plain('tftpRoot', opts.tftpRoot, /^\/[A-Za-z0-9_./+@-]*$/);
  const range = opts.subnet ? parseSubnet(opts.subnet, serverIp) : undefined;

  // With bootline serving TFTP, each pxe-service names it; with dnsmasq's own TFTP, none.
  const tftpServer = tftpRoot ? '' : `,${serverIp}`;
  const lines = [
    '# dnsmasq proxy-DHCP configuration for bootline (bootline serve --print-dnsmasq-config).',
    "# The network's DHCP server keeps leasing addresses; dnsmasq only adds boot information",
    '# for PXE clients: iPXE by TFTP to PXE firmware, then bootline\'s boot script by HTTP to iPXE.',
    '',
    '# No DNS service.',
    'port=0',
    ...(iface ? ['# Answer on this interface only.', `interface=${iface}`] : []),
    '# Proxy DHCP: boot information only, no address leases.',
    range ? `dhcp-range=${range.network},proxy,${range.netmask}` : `dhcp-range=${serverIp},proxy`,
    'log-dhcp',
    '',
    '# iPXE announces itself with DHCP user class "iPXE" and its own option 175.',
    'dhcp-userclass=set:ipxe,iPXE',
    'dhcp-match=set:ipxe,175',
    '',
    `# PXE firmware that is not running iPXE yet: load iPXE by TFTP from ${tftpRoot ? 'dnsmasq' : serverIp}.`,
    `pxe-service=tag:!ipxe,x86PC,"bootline iPXE (BIOS)",${biosFile}${tftpServer}`,
    `pxe-service=tag:!ipxe,BC_EFI,"bootline iPXE (UEFI)",${efiFile}${tftpServer}`,
    `pxe-service=tag:!ipxe,x86-64_EFI,"bootline iPXE (UEFI)",${efiFile}${tftpServer}`,
    '',
    "# iPXE: fetch bootline's boot script over HTTP (instead of loading iPXE again).",
    `dhcp-boot=tag:ipxe,${bootUrl}`,
    '',
    ...(tftpRoot
      ? ['# TFTP: dnsmasq serves the iPXE binaries itself.', 'enable-tftp', `tftp-root=${tftpRoot}`]
      : [
          `# TFTP: served by bootline's built-in TFTP server on ${serverIp}, UDP port 69 (PXE`,
          '# firmware uses no other port), so enable-tftp is deliberately left out.',
        ]),
    '',
  ];
  return lines.join('\n');
}
