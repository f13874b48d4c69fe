// TFTP packets (RFC 1350, with RFC 2347's OACK): pure encoding and decoding, no I/O.
//
//   RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ...
//   DATA     | 03 | block# (2) | 0..blksize bytes
//   ACK      | 04 | block# (2)
//   ERROR    | 05 | code (2) | message | 0
//   OACK     | 06 | opt1 | 0 | value1 | 0 | ...
//
// Strings are NUL-terminated. Option names are case-insensitive (RFC 2347) and are
// returned lower-cased; the mode is returned lower-cased too.

export const Opcode = {
  RRQ: 1,
  WRQ: 2,
  DATA: 3,
  ACK: 4,
  ERROR: 5,
  OACK: 6,
} as const;
export type Opcode = (typeof Opcode)[keyof typeof Opcode];

/** RFC 1350 error codes, plus 8 from RFC 2347. */
export const ErrorCode = {
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_REFUSED: 8,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export type TftpPacket =
  | { op: 'RRQ' | 'WRQ'; filename: string; mode: string; options: Record<string, string> }
  | { op: 'DATA'; block: number; data: Buffer }
  | { op: 'ACK'; block: number }
  | { op: 'ERROR'; code: number; message: string }
  | { op: 'OACK'; options: Record<string, string> };

/** A packet that cannot be decoded; `message` says why (it is sent back in an ERROR 4). */
export class TftpDecodeError extends Error {
  override name = 'TftpDecodeError';
}

/** Splits `buf` at NULs into strings; every string must be terminated. */
function nulStrings(buf: Buffer, what: string): string[] {
  const out: string[] = [];
  let start = 0;
  while (start < buf.length) {
    const end = buf.indexOf(0, start);
    if (end < 0) throw new TftpDecodeError(`${what}: a string is not NUL-terminated`);
    out.push(buf.toString('utf8', start, end));
    start = end + 1;
  }
  return out;
}

function optionsFrom(strings: string[], what: string): Record<string, string> {
  if (strings.length % 2 !== 0) throw new TftpDecodeError(`${what}: option "${strings[strings.length - 1]}" has no value`);
  const options: Record<string, string> = {};
  for (let i = 0; i < strings.length; i += 2) {
    const name = strings[i]!.toLowerCase();
    if (name === '') throw new TftpDecodeError(`${what}: empty option name`);
    // RFC 2347 does not say what a repeated option means: the first one counts.
    if (!(name in options)) options[name] = strings[i + 1]!;
  }
  return options;
}

/** Decodes one datagram. Throws TftpDecodeError on anything malformed. */
export function decodePacket(buf: Buffer): TftpPacket {
  if (buf.length < 2) throw new TftpDecodeError('packet shorter than an opcode');
  const op = buf.readUInt16BE(0);
  const body = buf.subarray(2);
  switch (op) {
    case Opcode.RRQ:
    case Opcode.WRQ: {
      const kind = op === Opcode.RRQ ? 'RRQ' : 'WRQ';
      const strings = nulStrings(body, kind);
      if (strings.length < 2) throw new TftpDecodeError(`${kind}: needs a file name and a mode`);
      const [filename, mode, ...rest] = strings as [string, string, ...string[]];
      return { op: kind, filename, mode: mode.toLowerCase(), options: optionsFrom(rest, kind) };
    }
    case Opcode.DATA:
      if (body.length < 2) throw new TftpDecodeError('DATA: no block number');
      return { op: 'DATA', block: body.readUInt16BE(0), data: body.subarray(2) };
    case Opcode.ACK:
      if (body.length < 2) throw new TftpDecodeError('ACK: no block number');
      // Some clients pad ACKs; the RFC packet is 4 bytes but trailing bytes are harmless.
      return { op: 'ACK', block: body.readUInt16BE(0) };
    case Opcode.ERROR: {
      if (body.length < 2) throw new TftpDecodeError('ERROR: no error code');
      const text = body.subarray(2);
      const end = text.indexOf(0);
      return { op: 'ERROR', code: body.readUInt16BE(0), message: text.toString('utf8', 0, end < 0 ? text.length : end) };
    }
    case Opcode.OACK:
      return { op: 'OACK', options: optionsFrom(nulStrings(body, 'OACK'), 'OACK') };
    default:
      throw new TftpDecodeError(`unknown opcode ${op}`);
  }
}

const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff, 0);
  return b;
};

const cstr = (s: string): Buffer => {
  if (s.includes('\0')) throw new RangeError(`a TFTP string cannot contain a NUL byte: ${JSON.stringify(s)}`);
  return Buffer.from(`${s}\0`, 'utf8');
};

function optionBytes(options: Record<string, string>): Buffer[] {
  return Object.entries(options).flatMap(([k, v]) => [cstr(k), cstr(v)]);
}

export function encodeRequest(kind: 'RRQ' | 'WRQ', filename: string, mode: string, options: Record<string, string> = {}): Buffer {
  return Buffer.concat([u16(kind === 'RRQ' ? Opcode.RRQ : Opcode.WRQ), cstr(filename), cstr(mode), ...optionBytes(options)]);
}

/** DATA for `block` (taken modulo 65536: the block number wraps). */
export function encodeData(block: number, data: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt16BE(Opcode.DATA, 0);
  head.writeUInt16BE(block & 0xffff, 2);
  return Buffer.concat([head, data]);
}

export function encodeAck(block: number): Buffer {
  return Buffer.concat([u16(Opcode.ACK), u16(block)]);
}

export function encodeError(code: number, message: string): Buffer {
  return Buffer.concat([u16(Opcode.ERROR), u16(code), cstr(message.replace(/\0/g, ''))]);
}

export function encodeOack(options: Record<string, string>): Buffer {
  return Buffer.concat([u16(Opcode.OACK), ...optionBytes(options)]);
}

export function encodePacket(p: TftpPacket): Buffer {
  switch (p.op) {
    case 'RRQ':
    case 'WRQ':
      return encodeRequest(p.op, p.filename, p.mode, p.options);
    case 'DATA':
      return encodeData(p.block, p.data);
    case 'ACK':
      return encodeAck(p.block);
    case 'ERROR':
      return encodeError(p.code, p.message);
    case 'OACK':
      return encodeOack(p.options);
  }
}

/**
 * netascii (RFC 764 as used by RFC 1350), byte by byte: LF becomes CR LF and a bare CR
 * becomes CR NUL; every other byte is kept. Stateless, so chunks can be encoded
 * independently and concatenated.
 */
export function netasciiEncode(data: Buffer): Buffer {
  let extra = 0;
  for (const b of data) if (b === 0x0a || b === 0x0d) extra++;
  if (extra === 0) return data;
  const out = Buffer.alloc(data.length + extra);
  let j = 0;
  for (const b of data) {
    if (b === 0x0a) {
      out[j++] = 0x0d;
      out[j++] = 0x0a;
    } else if (b === 0x0d) {
      out[j++] = 0x0d;
      out[j++] = 0x00;
    } else out[j++] = b;
  }
  return out;
}

/** The inverse of netasciiEncode (for tests and clients): CR LF → LF, CR NUL → CR. */
export function netasciiDecode(data: Buffer): Buffer {
  const out = Buffer.alloc(data.length);
  let j = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === 0x0d && i + 1 < data.length && (data[i + 1] === 0x0a || data[i + 1] === 0x00)) {
      out[j++] = data[i + 1] === 0x0a ? 0x0a : 0x0d;
      i++;
    } else out[j++] = b;
  }
  return out.subarray(0, j);
}
