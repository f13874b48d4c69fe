// EFI_SIGNATURE_LIST: what db, dbx, KEK and PK hold. A list has one signature type and
// one signature size; a variable's value is one or more lists back to back:
//
//   SignatureType GUID(16) | SignatureListSize u32 | SignatureHeaderSize u32 (0) | SignatureSize u32
//   then N x EFI_SIGNATURE_DATA: SignatureOwner GUID(16) | SignatureData (SignatureSize - 16 bytes)
//
// Certificates of different lengths need a list each: cert-to-efi-sig-list writes one
// list per certificate and several are concatenated (`cat a.esl b.esl`), as here.
import { formatGuid, GUIDS, parseGuid } from './guid.ts';

export class EslError extends Error {
  override name = 'EslError';
}

export type SignatureKind = 'x509' | 'sha256' | 'other';

/** One signature of a list, flattened: what "the same certificates" compares. */
export interface EslEntry {
  /** The list's SignatureType GUID, as text. */
  type: string;
  kind: SignatureKind;
  owner: string;
  data: Buffer;
}

const HEADER = 28;
const OWNER = 16;

function kindOf(type: string): SignatureKind {
  return type === GUIDS.certX509 ? 'x509' : type === GUIDS.certSha256 ? 'sha256' : 'other';
}

function list(type: string, owner: string, payloads: readonly Buffer[]): Buffer {
  const size = OWNER + payloads[0]!.length;
  const head = Buffer.alloc(HEADER);
  parseGuid(type).copy(head, 0);
  head.writeUInt32LE(HEADER + size * payloads.length, 16);
  head.writeUInt32LE(0, 20);
  head.writeUInt32LE(size, 24);
  const ownerBytes = parseGuid(owner, 'owner GUID');
  return Buffer.concat([head, ...payloads.flatMap((p) => [ownerBytes, p])]);
}

/** A list holding one DER certificate: byte for byte what `cert-to-efi-sig-list -g OWNER` writes. */
export function x509List(certDer: Buffer, owner: string = GUIDS.zero): Buffer {
  return list(GUIDS.certX509, owner, [certDer]);
}

/** One list of SHA-256 hashes (dbx entries for images): 48-byte signatures. */
export function sha256List(hashes: readonly Buffer[], owner: string = GUIDS.zero): Buffer {
  if (hashes.length === 0) throw new EslError('a SHA-256 signature list needs at least one hash');
  for (const h of hashes) if (h.length !== 32) throw new EslError(`a SHA-256 hash is 32 bytes, got ${h.length}`);
  return list(GUIDS.certSha256, owner, hashes);
}

/** Every signature of every list, in order. `what` names the data in errors (a file, a variable). */
export function decodeEsl(buf: Buffer, what = 'signature list'): EslEntry[] {
  const out: EslEntry[] = [];
  let off = 0;
  let n = 0;
  while (off < buf.length) {
    n++;
    const at = `${what}: list ${n} at byte ${off}`;
    if (buf.length - off < HEADER) throw new EslError(`${at}: only ${buf.length - off} byte(s) left, a list header needs ${HEADER}`);
    const type = formatGuid(buf.subarray(off, off + 16));
    const listSize = buf.readUInt32LE(off + 16);
    const headerSize = buf.readUInt32LE(off + 20);
    const sigSize = buf.readUInt32LE(off + 24);
    if (listSize > buf.length - off) throw new EslError(`${at}: claims ${listSize} bytes, only ${buf.length - off} left (truncated or not an EFI signature list)`);
    if (sigSize <= OWNER) throw new EslError(`${at}: signature size ${sigSize} is too small (at least 17)`);
    const body = listSize - HEADER - headerSize;
    if (listSize < HEADER + headerSize || body % sigSize !== 0) {
      throw new EslError(`${at}: list size ${listSize} is not header ${HEADER} + ${headerSize} + a multiple of the signature size ${sigSize} (not an EFI signature list?)`);
    }
    if (type === GUIDS.certSha256 && sigSize !== OWNER + 32) throw new EslError(`${at}: a SHA-256 list must have 48-byte signatures, has ${sigSize}`);
    for (let s = off + HEADER + headerSize; s < off + listSize; s += sigSize) {
      out.push({ type, kind: kindOf(type), owner: formatGuid(buf.subarray(s, s + OWNER)), data: Buffer.from(buf.subarray(s + OWNER, s + sigSize)) });
    }
    off += listSize;
  }
  return out;
}

const key = (e: EslEntry) => `${e.type}/${e.owner}/${e.data.toString('hex')}`;

export interface EslComparison {
  same: boolean;
  /** Intended but not there. */
  missing: EslEntry[];
  /** There but not intended. */
  unexpected: EslEntry[];
}

/**
 * Whether `actual` holds exactly the `intended` signatures (type, owner, data), in any
 * list layout and order; with `subset`, whether it holds at least them (after an append).
 */
export function compareEsl(intended: readonly EslEntry[], actual: readonly EslEntry[], subset = false): EslComparison {
  const have = new Map<string, number>();
  for (const e of actual) have.set(key(e), (have.get(key(e)) ?? 0) + 1);
  const missing: EslEntry[] = [];
  for (const e of intended) {
    const n = have.get(key(e)) ?? 0;
    if (n === 0) missing.push(e);
    else have.set(key(e), n - 1);
  }
  const unexpected = subset ? [] : actual.filter((e) => {
    const n = have.get(key(e)) ?? 0;
    if (n === 0) return false;
    have.set(key(e), n - 1);
    return true;
  });
  return { same: missing.length === 0 && unexpected.length === 0, missing, unexpected };
}
