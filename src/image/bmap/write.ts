// Writes a bmap in format 2.0, laid out byte for byte as `bmaptool create`
// (3.6) does, so that our bmaps and bmaptool's can be compared with `cmp` and
// any bmaptool version that reads 2.0 accepts ours.
import { createHash } from 'node:crypto';
import type { Bmap, ChecksumType } from '../types.ts';
import { CHECKSUM_HEX_LENGTH } from './parse.ts';

const HEADER_COMMENT = `<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->`;

/** Python's "%.1f": like toFixed(1) but ties (x.25, x.75 exactly) go to the even digit. */
function fixed1(x: number): string {
  const frac = x - Math.floor(x);
  if (frac === 0.25) return `${Math.floor(x)}.2`;
  return x.toFixed(1);
}

/** bmaptool's human_size(), for the comments. */
export function humanSize(size: number): string {
  if (size === 1) return '1 byte';
  if (size < 512) return `${size} bytes`;
  let s = size;
  for (const unit of ['KiB', 'MiB', 'GiB', 'TiB']) {
    s /= 1024;
    if (s < 1024) return `${fixed1(s)} ${unit}`;
  }
  return `${fixed1(s)} EiB`;
}

/** Throws when `b` could not be read back: we never write a bmap we would refuse. */
function check(b: Bmap, type: ChecksumType): void {
  const bad = (msg: string): never => {
    throw new Error(`formatBmap: ${msg}`);
  };
  const bs = b.blockSize;
  if (!Number.isSafeInteger(bs) || bs < 512 || (bs & (bs - 1)) !== 0) bad(`block size ${bs} is not a power of two >= 512`);
  if (!Number.isSafeInteger(b.imageSize) || b.imageSize <= 0) bad(`image size ${b.imageSize} is not a positive integer`);
  if (b.blocksCount !== Math.ceil(b.imageSize / bs)) bad(`blocksCount ${b.blocksCount} is not ceil(${b.imageSize} / ${bs})`);
  const hex = new RegExp(`^[0-9a-f]{${CHECKSUM_HEX_LENGTH[type]}}$`);
  let prev = -1;
  let mapped = 0;
  for (const r of b.ranges) {
    if (!Number.isSafeInteger(r.first) || !Number.isSafeInteger(r.last) || r.first > r.last || r.first <= prev || r.last >= b.blocksCount) {
      bad(`range ${r.first}-${r.last} is out of order, overlapping, reversed or past block ${b.blocksCount - 1}`);
    }
    if (r.checksum !== undefined && !hex.test(r.checksum)) {
      bad(`range ${r.first}-${r.last} has checksum "${r.checksum}", not ${type} in lowercase hex`);
    }
    mapped += r.last - r.first + 1;
    prev = r.last;
  }
  if (mapped !== b.mappedBlocksCount) bad(`mappedBlocksCount ${b.mappedBlocksCount} is not the ${mapped} blocks the ranges cover`);
}

/**
 * bmap format 2.0 text for `b`. The checksum type is `b.checksumType` (sha256
 * when absent); BmapFileChecksum is computed here, `b.fileChecksum` is ignored.
 */
export function formatBmap(b: Bmap): string {
  const type: ChecksumType = b.checksumType ?? 'sha256';
  check(b, type);
  const csLen = CHECKSUM_HEX_LENGTH[type];
  const imageHuman = humanSize(b.imageSize);

  // bmaptool writes blank placeholders sized for the image, then overwrites
  // them in place once the mapped count is known; leftover spaces stay.
  const mappedHuman = humanSize(b.mappedBlocksCount * b.blockSize);
  const percent = `${fixed1((b.mappedBlocksCount * 100) / b.blocksCount)}%`;
  const placeholder = `${' '.repeat(imageHuman.length)} or ${' '.repeat('100.0%'.length)}   -->\n`;
  const filled = `${mappedHuman} or ${percent}`;
  const mappedComment = filled + placeholder.slice(filled.length);
  const countText = String(b.mappedBlocksCount);
  const countField = countText + ' '.repeat(Math.max(0, String(b.blocksCount).length - countText.length));

  const head =
    `<?xml version="1.0" ?>\n${HEADER_COMMENT}\n\n<bmap version="2.0">\n` +
    `    <!-- Image size in bytes: ${imageHuman} -->\n` +
    `    <ImageSize> ${b.imageSize} </ImageSize>\n\n` +
    `    <!-- Size of a block in bytes -->\n` +
    `    <BlockSize> ${b.blockSize} </BlockSize>\n\n` +
    `    <!-- Count of blocks in the image file -->\n` +
    `    <BlocksCount> ${b.blocksCount} </BlocksCount>\n\n` +
    `    <!-- Count of mapped blocks: ${mappedComment}` +
    `    <MappedBlocksCount> ${countField} </MappedBlocksCount>\n\n` +
    `    <!-- Type of checksum used in this file -->\n` +
    `    <ChecksumType> ${type} </ChecksumType>\n\n` +
    `    <!-- The checksum of this bmap file. When it is calculated, the value of\n` +
    `         the checksum has be zero (all ASCII "0" symbols).  -->\n` +
    `    <BmapFileChecksum> `;
  const afterChecksum =
    ` </BmapFileChecksum>\n\n` +
    `    <!-- The block map which consists of elements which may either be a\n` +
    `         range of blocks or a single block. The 'chksum' attribute\n` +
    `         (if present) is the checksum of this blocks range. -->\n` +
    `    <BlockMap>\n`;

  const lines: string[] = new Array(b.ranges.length);
  for (let k = 0; k < b.ranges.length; k++) {
    const r = b.ranges[k]!;
    const attr = r.checksum ? ` chksum="${r.checksum}"` : '';
    lines[k] = r.first === r.last ? `        <Range${attr}> ${r.first} </Range>\n` : `        <Range${attr}> ${r.first}-${r.last} </Range>\n`;
  }
  const tail = lines.join('') + `    </BlockMap>\n</bmap>\n`;

  // The file checksum covers the whole file with its own value as zeros.
  const h = createHash(type);
  h.update(head);
  h.update('0'.repeat(csLen));
  h.update(afterChecksum);
  h.update(tail);
  return head + h.digest('hex') + afterChecksum + tail;
}
