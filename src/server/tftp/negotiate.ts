// TFTP option negotiation (RFC 2347) for a read request: pure, no I/O.
//
//   blksize  (RFC 2348)  8..65464 octets. A valid request above the server's cap is
//                        answered with the cap (the server may lower it, never raise it);
//                        a value that is not a number or below 8 is left out of the OACK.
//   timeout  (RFC 2349)  1..255 seconds. The server may only accept it as asked or leave
//                        it out; accepted, it becomes the retransmission interval.
//   tsize    (RFC 2349)  the client sends 0 in an RRQ and the server answers with the
//                        file's size. Only in octet mode: the size of a netascii transfer
//                        is not the file's size (dnsmasq does the same). Left out for an
//                        empty file: curl fails a download whose OACK says "tsize 0"
//                        ("invalid tsize", lib/tftp.c tftp_parse_option_ack).
//   anything else        ignored (left out of the OACK), as RFC 2347 allows.
//
// When no option is accepted, no OACK is sent and the transfer starts with DATA 1.

export const DEFAULT_BLKSIZE = 512;
export const MIN_BLKSIZE = 8;
export const MAX_BLKSIZE = 65464;
/** 1500-byte Ethernet MTU minus IP (20), UDP (8) and TFTP (4) headers. */
export const DEFAULT_MAX_BLKSIZE = 1468;
export const MIN_TIMEOUT_S = 1;
export const MAX_TIMEOUT_S = 255;

export interface NegotiationInput {
  /** Options as decoded (names lower-cased). */
  requested: Record<string, string>;
  mode: 'octet' | 'netascii';
  /** Size of the file in bytes. */
  fileSize: number;
  /** The server's blksize cap (8..65464). */
  maxBlksize: number;
  /** The server's retransmission interval when the client does not ask for one. */
  defaultTimeoutMs: number;
}

export interface Negotiated {
  blksize: number;
  timeoutMs: number;
  /** The file size, when tsize was negotiated. */
  tsize?: number;
  /** Options to send in an OACK, in the order the client sent them; null: send no OACK. */
  oack: Record<string, string> | null;
  /** Options left out, with the reason (for logs). */
  ignored: Record<string, string>;
}

/** A decimal integer without sign, spaces or exponent; NaN otherwise. */
function decimal(value: string): number {
  return /^[0-9]{1,10}$/.test(value) ? Number(value) : Number.NaN;
}

export function negotiate(input: NegotiationInput): Negotiated {
  const { requested, mode, fileSize, maxBlksize, defaultTimeoutMs } = input;
  if (!Number.isInteger(maxBlksize) || maxBlksize < MIN_BLKSIZE || maxBlksize > MAX_BLKSIZE)
    throw new RangeError(`maxBlksize must be an integer from ${MIN_BLKSIZE} to ${MAX_BLKSIZE}, not ${maxBlksize}`);
  const out: Negotiated = { blksize: DEFAULT_BLKSIZE, timeoutMs: defaultTimeoutMs, oack: null, ignored: {} };
  const oack: Record<string, string> = {};
  for (const [name, value] of Object.entries(requested)) {
    switch (name) {
      case 'blksize': {
        const n = decimal(value);
        if (!(n >= MIN_BLKSIZE)) {
          out.ignored[name] = `"${value}" is not a block size of at least ${MIN_BLKSIZE}`;
          break;
        }
        out.blksize = Math.min(n, MAX_BLKSIZE, maxBlksize);
        oack[name] = String(out.blksize);
        break;
      }
      case 'timeout': {
        const n = decimal(value);
        if (!(n >= MIN_TIMEOUT_S && n <= MAX_TIMEOUT_S)) {
          out.ignored[name] = `"${value}" is not a timeout of ${MIN_TIMEOUT_S} to ${MAX_TIMEOUT_S} seconds`;
          break;
        }
        out.timeoutMs = n * 1000;
        oack[name] = String(n);
        break;
      }
      case 'tsize': {
        if (mode !== 'octet') {
          out.ignored[name] = 'tsize is only given in octet mode';
          break;
        }
        if (!Number.isFinite(decimal(value))) {
          out.ignored[name] = `"${value}" is not a size`;
          break;
        }
        if (fileSize === 0) {
          out.ignored[name] = 'the file is empty (curl refuses tsize 0)';
          break;
        }
        out.tsize = fileSize;
        oack[name] = String(fileSize);
        break;
      }
      default:
        out.ignored[name] = 'option not supported';
    }
  }
  if (Object.keys(oack).length > 0) out.oack = oack;
  return out;
}
