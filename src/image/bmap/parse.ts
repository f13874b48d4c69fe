// A strict reader for bmaptool's block map files (formats 1.0-1.4 and 2.x).
//
// bmap files are tiny, machine-written XML. Rather than a general XML parser
// we scan the small subset they use (declaration, comments, elements,
// attributes, text) ourselves: that rules out entity expansion, DOCTYPEs and
// external references by construction, keeps memory bounded for 10 million
// ranges, and lets every error name its line.
//
// Format facts (bmaptool 3.6, BmapCopy.py/BmapCreate.py):
// - 1.0-1.2: no checksum type; ranges may carry a `sha1` attribute.
// - 1.3: sha1; ranges use `sha1`; the file checksum is <BmapFileSHA1>.
// - 1.4 and 2.0 are the same format (1.4 was released by mistake):
//   <ChecksumType>, ranges use `chksum`, the file checksum is <BmapFileChecksum>.
// - The file checksum is the hash of the file's bytes with the checksum value
//   replaced by as many ASCII '0' as it has characters.
// - BlocksCount must equal ceil(ImageSize / BlockSize).
// - A range is "first-last" or a single block "n", surrounded by spaces.
import { createHash } from 'node:crypto';
import type { Bmap, BmapRange, ChecksumType } from '../types.ts';

export class BmapError extends Error {
  readonly source: string;
  readonly line: number | undefined;
  constructor(source: string, line: number | undefined, message: string) {
    super(`${source}${line !== undefined ? `:${line}` : ''}: ${message}`);
    this.name = 'BmapError';
    this.source = source;
    this.line = line;
  }
}

export const MAX_BMAP_BYTES = 64 * 1024 * 1024;
export const MAX_RANGES = 10_000_000;
const MIN_BLOCK_SIZE = 512;
const MAX_BLOCK_SIZE = 64 * 1024 * 1024;

export const CHECKSUM_HEX_LENGTH: Record<ChecksumType, number> = { sha256: 64, sha1: 40, md5: 32 };

const REGENERATE = 'regenerate it with `bmaptool create` or `bootline image create`';

interface Leaf {
  name: string;
  /** Offset of the '<' of the start tag. */
  pos: number;
  text: string;
  /** Offset of `text` in the document. */
  textPos: number;
  attrs: Map<string, string>;
}

const NAME = /[A-Za-z_][A-Za-z0-9_.-]*/y;
const WS = /[ \t\r\n]*/y;
const ATTR = /([A-Za-z_][A-Za-z0-9_.:-]*)[ \t\r\n]*=[ \t\r\n]*(?:"([^"<&]*)"|'([^'<&]*)')/y;
const DECIMAL = /^[0-9]+$/;
const RANGE = /^[ \t\r\n]*([0-9]+)[ \t\r\n]*(?:-[ \t\r\n]*([0-9]+)[ \t\r\n]*)?$/;

const HEADER_ELEMENTS = new Set([
  'ImageSize',
  'BlockSize',
  'BlocksCount',
  'MappedBlocksCount',
  'ChecksumType',
  'BmapFileChecksum',
  'BmapFileSHA1',
]);

function lineAt(text: string, pos: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < pos; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

export interface ParseLimits {
  /** Largest accepted document, in UTF-8 bytes (default 64 MiB). */
  maxBytes?: number;
  /** Most <Range> elements accepted (default 10 million). */
  maxRanges?: number;
}

/** Parse and validate a bmap; `source` names it in errors (a path or URL). */
export function parseBmap(text: string, source: string, limits: ParseLimits = {}): Bmap {
  const maxBytes = limits.maxBytes ?? MAX_BMAP_BYTES;
  const maxRanges = limits.maxRanges ?? MAX_RANGES;
  function fail(pos: number | undefined, msg: string): never {
    throw new BmapError(source, pos === undefined ? undefined : lineAt(text, pos), msg);
  }

  if (text.length > maxBytes || Buffer.byteLength(text, 'utf8') > maxBytes) {
    fail(undefined, `the bmap is larger than ${maxBytes} bytes, far beyond any real block map; check that this is a bmap file`);
  }
  if (text.trim() === '') fail(undefined, `the bmap is empty; ${REGENERATE}`);

  // Refuse the constructs behind entity expansion and external references
  // before anything looks at the document. The only "<?" allowed is the XML
  // declaration at the very start (after an optional byte order mark).
  const start = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const DANGEROUS = /<!DOCTYPE|<!ENTITY|<!\[CDATA\[|<\?/gi;
  for (let d = DANGEROUS.exec(text); d; d = DANGEROUS.exec(text)) {
    if (d.index === start) {
      const head = text.slice(start, start + 6);
      if (/^<\?xml[ \t\r\n]/.test(head)) continue;
      if (head.length < 6 && '<?xml '.startsWith(head)) fail(start, `the document ends inside the XML declaration: the file is truncated`);
    }
    fail(
      d.index,
      `"${d[0] === '<?' ? text.slice(d.index, d.index + 24).split(/[ \t\r\n>]/)[0] : d[0]}" is not allowed in a bmap: DOCTYPE, ENTITY, CDATA and processing instructions ` +
        `(other than the leading XML declaration) are refused for safety; ${REGENERATE}`,
    );
  }

  // ---- scan ----
  let root: { pos: number; version: string | undefined } | undefined;
  const header = new Map<string, Leaf>();
  let blockMapPos: number | undefined;
  const rawRanges: Leaf[] = [];
  // What an open element is to us: the root, a header value, the block map,
  // a range, or something unknown whose content we skip.
  type Kind = 'root' | 'header' | 'blockmap' | 'range' | 'ignored';
  const stack: Array<{ name: string; pos: number; kind: Kind; leaf: Leaf | undefined }> = [];

  let i = start;
  if (text.startsWith('<?xml', i)) {
    const end = text.indexOf('?>', i);
    if (end === -1) fail(i, `the XML declaration is not closed with "?>": the file is truncated or not a bmap`);
    i = end + 2;
  }

  while (i < text.length) {
    const lt = text.indexOf('<', i);
    const textEnd = lt === -1 ? text.length : lt;
    if (textEnd > i) {
      const chunk = text.slice(i, textEnd);
      const amp = chunk.indexOf('&');
      if (amp !== -1) fail(i + amp, `entity and character references ("&...;") are not allowed in a bmap; ${REGENERATE}`);
      const top = stack[stack.length - 1];
      if (!top) {
        if (chunk.trim() !== '') fail(i, `text "${chunk.trim().slice(0, 40)}" outside the <bmap> element; this is not a bmap file`);
      } else if (top.leaf) {
        if (top.leaf.text === '') {
          top.leaf.text = chunk;
          top.leaf.textPos = i;
        } else if (chunk.trim() !== '') {
          fail(i, `the value of <${top.name}> is split by a comment; write it in one piece`);
        }
      } else if (top.kind !== 'ignored' && chunk.trim() !== '') {
        fail(i, `unexpected text "${chunk.trim().slice(0, 40)}" inside <${top.name}>`);
      }
    }
    if (lt === -1) break;
    i = lt;

    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i + 4);
      if (end === -1) fail(i, `a comment is never closed with "-->": the file is truncated`);
      i = end + 3;
      continue;
    }
    // DOCTYPE and friends were refused above; this keeps the scanner safe on its own.
    if (text.startsWith('<!', i) || text.startsWith('<?', i)) fail(i, `"${text.slice(i, i + 9)}" is not allowed in a bmap; ${REGENERATE}`);

    if (text.startsWith('</', i)) {
      NAME.lastIndex = i + 2;
      const m = NAME.exec(text);
      if (!m) fail(i, i + 2 >= text.length ? `the document ends with "</": the file is truncated` : `malformed end tag`);
      const name = m[0];
      WS.lastIndex = NAME.lastIndex;
      WS.exec(text);
      if (text[WS.lastIndex] !== '>') {
        fail(i, WS.lastIndex >= text.length ? `the end tag </${name}> is cut off: the file is truncated` : `malformed end tag </${name}`);
      }
      const open = stack.pop();
      if (!open) fail(i, `end tag </${name}> without a start tag`);
      if (open.name !== name) fail(i, `end tag </${name}> does not match <${open.name}> opened on line ${lineAt(text, open.pos)}`);
      i = WS.lastIndex + 1;
      continue;
    }

    // A start tag and its attributes.
    NAME.lastIndex = i + 1;
    const m = NAME.exec(text);
    if (!m) fail(i, i + 1 >= text.length ? `the document ends with "<": the file is truncated` : `malformed tag (a "<" not followed by an element name)`);
    const name = m[0];
    const attrs = new Map<string, string>();
    let p = NAME.lastIndex;
    let selfClosing = false;
    for (;;) {
      WS.lastIndex = p;
      WS.exec(text);
      const hadSpace = WS.lastIndex > p;
      p = WS.lastIndex;
      if (p >= text.length) fail(i, `the start tag <${name}> is cut off: the file is truncated`);
      if (text[p] === '>') {
        p++;
        break;
      }
      if (text.startsWith('/>', p)) {
        selfClosing = true;
        p += 2;
        break;
      }
      ATTR.lastIndex = p;
      const a = hadSpace ? ATTR.exec(text) : null;
      if (!a) {
        if (text.indexOf('>', p) === -1) fail(i, `the start tag <${name}> is cut off: the file is truncated`);
        fail(p, `malformed attribute in <${name}> near "${text.slice(p, p + 30).split('\n')[0]}" (attributes are name="value"; "<" and "&" are not allowed in values)`);
      }
      const attrName = a[1]!;
      if (attrs.has(attrName)) fail(p, `<${name}> has the attribute "${attrName}" twice`);
      attrs.set(attrName, a[2] ?? a[3] ?? '');
      p = ATTR.lastIndex;
    }

    const parent = stack[stack.length - 1];
    let kind: Kind;
    let leaf: Leaf | undefined;
    if (!parent) {
      if (root) fail(i, `a second top-level element <${name}> after </bmap>; this is not a bmap file`);
      if (name !== 'bmap') fail(i, `the top-level element is <${name}>, expected <bmap>; this is not a bmap file`);
      for (const k of attrs.keys()) if (k !== 'version') fail(i, `<bmap> has an unknown attribute "${k}"`);
      root = { pos: i, version: attrs.get('version') };
      kind = 'root';
    } else if (parent.kind === 'root') {
      if (name === 'BlockMap') {
        if (blockMapPos !== undefined) fail(i, `<BlockMap> appears twice (first on line ${lineAt(text, blockMapPos)})`);
        if (attrs.size) fail(i, `<BlockMap> takes no attributes`);
        blockMapPos = i;
        kind = 'blockmap';
      } else if (HEADER_ELEMENTS.has(name)) {
        const prev = header.get(name);
        if (prev) fail(i, `<${name}> appears twice (first on line ${lineAt(text, prev.pos)})`);
        if (attrs.size) fail(i, `<${name}> takes no attributes`);
        leaf = { name, pos: i, text: '', textPos: p, attrs };
        header.set(name, leaf);
        kind = 'header';
      } else {
        // Minor versions may add elements; bmaptool ignores what it does not know.
        kind = 'ignored';
      }
    } else if (parent.kind === 'blockmap') {
      if (name !== 'Range') fail(i, `<${name}> inside <BlockMap>: only <Range> elements belong there`);
      if (rawRanges.length >= maxRanges) fail(i, `more than ${maxRanges} ranges; no real image is that fragmented, so this bmap is refused`);
      leaf = { name, pos: i, text: '', textPos: p, attrs };
      rawRanges.push(leaf);
      kind = 'range';
    } else if (parent.kind === 'ignored') {
      kind = 'ignored';
    } else {
      fail(i, `<${name}> inside <${parent.name}>, which holds only a value`);
    }
    if (stack.length >= 16) fail(i, `elements nested too deeply`);
    if (!selfClosing) stack.push({ name, pos: i, kind, leaf });
    i = p;
  }

  const unclosed = stack[stack.length - 1];
  if (unclosed) fail(text.length, `the document ends inside <${unclosed.name}> (opened on line ${lineAt(text, unclosed.pos)}): the file is truncated`);
  if (!root) fail(undefined, `no <bmap> element; this is not a bmap file`);
  const rootPos = root.pos;

  // ---- version ----
  const version = root.version?.trim();
  if (version === undefined || version === '') fail(rootPos, `<bmap> has no version attribute; ${REGENERATE}`);
  const vm = /^([0-9]{1,4})\.([0-9]{1,4})$/.exec(version);
  if (!vm) fail(rootPos, `version "${version}" is not "major.minor"; ${REGENERATE}`);
  const major = Number(vm[1]);
  const minor = Number(vm[2]);
  if (major !== 1 && major !== 2) {
    fail(rootPos, `bmap format version ${version} is not supported (this reader knows 1.0-1.4 and 2.x); use a bmap written for format 2.0`);
  }
  if (major === 1 && minor > 4) fail(rootPos, `bmap format version ${version} does not exist (1.4 was followed by 2.0); ${REGENERATE}`);

  // ---- header values ----
  const number = (name: string, required: boolean): number | undefined => {
    const el = header.get(name);
    if (!el) {
      if (required) fail(rootPos, `<${name}> is missing; ${REGENERATE}`);
      return undefined;
    }
    const t = el.text.trim();
    if (!DECIMAL.test(t)) fail(el.textPos, `<${name}> "${t.slice(0, 40)}" is not a decimal number`);
    const n = t.length > 16 ? Infinity : Number(t);
    if (!Number.isSafeInteger(n)) fail(el.textPos, `<${name}> ${t.slice(0, 40)} is too large (limit 2^53)`);
    return n;
  };
  const imageSize = number('ImageSize', true)!;
  const blockSize = number('BlockSize', true)!;
  const blocksCount = number('BlocksCount', true)!;
  const mappedDeclared = number('MappedBlocksCount', major > 1 || minor >= 3);
  const bsPos = header.get('BlockSize')!.textPos;
  if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    fail(bsPos, `<BlockSize> ${blockSize} is not a power of two between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE}`);
  }
  if (imageSize === 0) fail(header.get('ImageSize')!.textPos, `<ImageSize> is 0: there is no image to write`);
  const expectBlocks = Math.ceil(imageSize / blockSize);
  if (blocksCount !== expectBlocks) {
    fail(
      header.get('BlocksCount')!.textPos,
      `<BlocksCount> ${blocksCount} does not match <ImageSize> ${imageSize} / <BlockSize> ${blockSize} (expected ${expectBlocks}, rounded up); the bmap is inconsistent, ${REGENERATE}`,
    );
  }

  // ---- checksum type per version ----
  let checksumType: ChecksumType | undefined;
  let attrName: string;
  let fileElement: string | undefined;
  const misplaced = (name: string, belongs: string) => {
    const el = header.get(name);
    if (el) fail(el.pos, `<${name}> belongs to bmap format ${belongs}, but this file says version ${version}`);
  };
  if (major === 2 || minor === 4) {
    attrName = 'chksum';
    fileElement = 'BmapFileChecksum';
    misplaced('BmapFileSHA1', '1.3');
    const el = header.get('ChecksumType');
    if (!el) fail(rootPos, `<ChecksumType> is missing (required since format 1.4); ${REGENERATE}`);
    const t = el.text.trim().toLowerCase();
    if (!Object.hasOwn(CHECKSUM_HEX_LENGTH, t)) {
      fail(el.textPos, `<ChecksumType> "${t.slice(0, 40)}" is not supported (use sha256, sha1 or md5)`);
    }
    checksumType = t as ChecksumType;
  } else {
    attrName = 'sha1';
    misplaced('ChecksumType', '1.4/2.0');
    misplaced('BmapFileChecksum', '1.4/2.0');
    if (minor === 3) {
      checksumType = 'sha1';
      fileElement = 'BmapFileSHA1';
    } else {
      misplaced('BmapFileSHA1', '1.3');
    }
  }

  const hexOk = (value: string, type: ChecksumType) =>
    value.length === CHECKSUM_HEX_LENGTH[type] && /^[0-9a-fA-F]+$/.test(value);

  // ---- ranges ----
  const ranges: BmapRange[] = new Array(rawRanges.length);
  let mapped = 0;
  let prevLast = -1;
  let anyChecksum = false;
  for (let r = 0; r < rawRanges.length; r++) {
    const raw = rawRanges[r]!;
    const m = RANGE.exec(raw.text);
    const spec = raw.text.trim();
    if (!m) fail(raw.pos, `<Range> "${spec.slice(0, 40)}" is not "first-last" or a single block number`);
    const first = m[1]!.length > 16 ? Infinity : Number(m[1]);
    const last = m[2] === undefined ? first : m[2].length > 16 ? Infinity : Number(m[2]);
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last)) fail(raw.pos, `<Range> "${spec.slice(0, 40)}": block number too large`);
    if (first > last) fail(raw.pos, `<Range> "${spec}": the first block is after the last`);
    if (first <= prevLast) {
      fail(raw.pos, `<Range> "${spec}" starts at or before the end of the previous range (block ${prevLast}): ranges must be in order and not overlap`);
    }
    if (last >= blocksCount) fail(raw.pos, `<Range> "${spec}" reaches past the image, which has ${blocksCount} blocks (0-${blocksCount - 1})`);
    const range: BmapRange = { first, last };
    for (const [k, v] of raw.attrs) {
      if (k !== attrName) {
        fail(raw.pos, `<Range> has an unknown attribute "${k}" (format ${version} uses "${attrName}")`);
      }
      const type: ChecksumType = checksumType ?? 'sha1';
      if (!hexOk(v, type)) {
        fail(raw.pos, `<Range> "${spec}": checksum "${v.slice(0, 80)}" is not ${CHECKSUM_HEX_LENGTH[type]} hex digits (${type})`);
      }
      range.checksum = v.toLowerCase();
      anyChecksum = true;
    }
    ranges[r] = range;
    mapped += last - first + 1;
    prevLast = last;
  }
  if (blockMapPos === undefined) fail(rootPos, `<BlockMap> is missing; ${REGENERATE}`);
  if (mappedDeclared !== undefined && mappedDeclared !== mapped) {
    fail(
      header.get('MappedBlocksCount')!.textPos,
      `<MappedBlocksCount> ${mappedDeclared} does not equal the ${mapped} blocks the ranges cover; the bmap is inconsistent, ${REGENERATE}`,
    );
  }
  // 1.0-1.2 have no type element; their optional range checksums are sha1.
  if (!checksumType && anyChecksum) checksumType = 'sha1';

  // ---- file checksum ----
  let fileChecksum: string | undefined;
  const fileEl = fileElement ? header.get(fileElement) : undefined;
  if (fileEl) {
    const type: ChecksumType = checksumType ?? 'sha1';
    const value = fileEl.text.trim();
    if (!hexOk(value, type)) {
      fail(fileEl.textPos, `<${fileEl.name}> "${value.slice(0, 80)}" is not ${CHECKSUM_HEX_LENGTH[type]} hex digits (${type})`);
    }
    const at = fileEl.textPos + fileEl.text.indexOf(value);
    const h = createHash(type);
    h.update(text.slice(0, at), 'utf8');
    h.update('0'.repeat(value.length), 'utf8');
    h.update(text.slice(at + value.length), 'utf8');
    const actual = h.digest('hex');
    if (actual !== value.toLowerCase()) {
      fail(
        fileEl.textPos,
        `<${fileEl.name}> says ${value} but the file's ${type} is ${actual}: the bmap was modified or damaged after it was written; fetch it again or ${REGENERATE}`,
      );
    }
    fileChecksum = value.toLowerCase();
  }

  const bmap: Bmap = { version: version!, imageSize, blockSize, blocksCount, mappedBlocksCount: mapped, ranges };
  if (checksumType) bmap.checksumType = checksumType;
  if (fileChecksum) bmap.fileChecksum = fileChecksum;
  return bmap;
}
