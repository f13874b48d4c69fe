// Just enough DER to build and read the PKCS#7 SignedData and X.509 certificates Secure
// Boot uses: definite lengths, minimal encoding (what OpenSSL's i2d_* writes), and a
// reader that keeps each element's raw bytes so that names and serials are copied, never
// re-encoded. No dependency: the enroll task runs in the agent bundle.

export class DerError extends Error {
  override name = 'DerError';
}

/** A decoded element: tag byte, content, and the whole TLV as it was in the input. */
export interface DerNode {
  tag: number;
  /** Offset of the TLV in the buffer it was read from. */
  offset: number;
  content: Buffer;
  raw: Buffer;
}

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific constructed tag [n]. */
export const ctx = (n: number): number => 0xa0 | n;

// ---------------------------------------------------------------- writing

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(content.length), content]);
}

export const seq = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, Buffer.concat(items));
/** A SET OF, its elements sorted as DER wants. */
export const setOf = (...items: Buffer[]): Buffer => tlv(TAG.SET, Buffer.concat([...items].sort(Buffer.compare)));
export const nullValue = (): Buffer => Buffer.from([TAG.NULL, 0]);
export const octetString = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
export const bitString = (b: Buffer): Buffer => tlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([0]), b]));
export const utf8String = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
export const explicit = (n: number, inner: Buffer): Buffer => tlv(ctx(n), inner);

/** A non-negative INTEGER from big-endian magnitude bytes (a leading 0 added when the top bit is set). */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let b = magnitude.subarray(i);
  if (b.length === 0) b = Buffer.from([0]);
  if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(TAG.INTEGER, b);
}

export const smallInteger = (n: number): Buffer => unsignedInteger(Buffer.from([n >> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]));

export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [parts[0]! * 40 + parts[1]!];
  for (const p of parts.slice(2)) {
    const groups: number[] = [];
    let v = p;
    do {
      groups.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let i = 0; i < groups.length - 1; i++) groups[i]! |= 0x80;
    out.push(...groups);
  }
  return tlv(TAG.OID, Buffer.from(out));
}

/** UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280). */
export function time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  const year = d.getUTCFullYear();
  return year < 2050 ? tlv(TAG.UTC_TIME, Buffer.from(`${digits.slice(2)}Z`)) : tlv(TAG.GENERALIZED_TIME, Buffer.from(`${digits}Z`));
}

// ---------------------------------------------------------------- reading

/** Reads one TLV at `offset`; `what` names the structure in errors. */
export function readNode(buf: Buffer, offset: number, what: string): DerNode {
  if (offset + 2 > buf.length) throw new DerError(`${what}: truncated at byte ${offset}`);
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`${what}: multi-byte tags are not supported (byte ${offset})`);
  let len = buf[offset + 1]!;
  let hdr = 2;
  if (len === 0x80) throw new DerError(`${what}: indefinite length (BER, not DER) at byte ${offset}`);
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n > 4 || offset + 2 + n > buf.length) throw new DerError(`${what}: bad length at byte ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[offset + 2 + i]!;
    hdr += n;
  }
  const end = offset + hdr + len;
  if (end > buf.length) throw new DerError(`${what}: element at byte ${offset} claims ${len} bytes, only ${buf.length - offset - hdr} follow`);
  return { tag, offset, content: buf.subarray(offset + hdr, end), raw: buf.subarray(offset, end) };
}

/** The elements inside a constructed node. */
export function children(node: DerNode, what: string): DerNode[] {
  const out: DerNode[] = [];
  for (let off = 0; off < node.content.length; ) {
    const c = readNode(node.content, off, what);
    out.push(c);
    off += c.raw.length;
  }
  return out;
}

/** Reads a whole buffer as exactly one element of the expected tag. */
export function readOne(buf: Buffer, tag: number, what: string): DerNode {
  const n = readNode(buf, 0, what);
  if (n.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${n.tag.toString(16)}`);
  if (n.raw.length !== buf.length) throw new DerError(`${what}: ${buf.length - n.raw.length} stray byte(s) after the DER element`);
  return n;
}

export function expectTag(node: DerNode | undefined, tag: number, what: string): DerNode {
  if (!node) throw new DerError(`${what}: missing`);
  if (node.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${node.tag.toString(16)}`);
  return node;
}

export function decodeOid(content: Buffer): string {
  const out: number[] = [Math.floor(content[0]! / 40), content[0]! % 40];
  let v = 0;
  for (const b of content.subarray(1)) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      out.push(v);
      v = 0;
    }
  }
  return out.join('.');
}
