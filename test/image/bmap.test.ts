import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BmapError, parseBmap, MAX_BMAP_BYTES } from '../../src/image/bmap/parse.ts';
import { formatBmap, humanSize } from '../../src/image/bmap/write.ts';
import type { Bmap } from '../../src/image/types.ts';
import { thrown, BMAPTOOL_FIXTURES } from '../helpers.ts';

const FIX = BMAPTOOL_FIXTURES;
const fixture = (v: string) => readFileSync(`${FIX}/test.image.bmap.v${v}`, 'utf8');

const bmapErrorOf = (fn: () => unknown): BmapError => thrown(BmapError, fn);

function rejects(text: string, pattern: RegExp): BmapError {
  const e = bmapErrorOf(() => parseBmap(text, 'bad.bmap'));
  assert.match(e.message, /^bad\.bmap/, 'the message names the source');
  assert.match(e.message, pattern);
  return e;
}

const H = 'a'.repeat(64);
/** A small valid 2.0 bmap without a file checksum, for mutating one thing at a time. */
function doc(o: { version?: string; imageSize?: string; blockSize?: string; blocksCount?: string; mapped?: string; type?: string; ranges?: string } = {}): string {
  const ranges = o.ranges ?? `    <Range chksum="${H}"> 0-1 </Range>\n    <Range chksum="${H}"> 5 </Range>\n`;
  return (
    `<?xml version="1.0" ?>\n<bmap version="${o.version ?? '2.0'}">\n` +
    `    <ImageSize> ${o.imageSize ?? '40000'} </ImageSize>\n` +
    `    <BlockSize> ${o.blockSize ?? '4096'} </BlockSize>\n` +
    `    <BlocksCount> ${o.blocksCount ?? '10'} </BlocksCount>\n` +
    `    <MappedBlocksCount> ${o.mapped ?? '3'} </MappedBlocksCount>\n` +
    `    <ChecksumType> ${o.type ?? 'sha256'} </ChecksumType>\n` +
    `  <BlockMap>\n${ranges}  </BlockMap>\n</bmap>\n`
  );
}

test('all four bmaptool fixture versions parse to the same ranges', () => {
  const maps = ['1.2', '1.3', '1.4', '2.0'].map((v) => parseBmap(fixture(v), `v${v}`));
  const shape = (b: Bmap) => b.ranges.map((r) => [r.first, r.last]);
  for (const b of maps) {
    assert.equal(b.imageSize, 821752);
    assert.equal(b.blockSize, 4096);
    assert.equal(b.blocksCount, 201);
    assert.equal(b.mappedBlocksCount, 117);
    assert.equal(b.ranges.length, 48);
    assert.deepEqual(shape(b), shape(maps[0]!));
  }
  assert.deepEqual(maps.map((b) => b.checksumType), ['sha1', 'sha1', 'sha256', 'sha256']);
  assert.deepEqual(maps[0]!.ranges[3], { first: 12, last: 12, checksum: '21338baaedb0976efbb075736820f6bd6ae43b97' });
  // 1.2 and 1.3 share sha1 range checksums; 1.4 and 2.0 share sha256 ones.
  assert.deepEqual(maps[0]!.ranges, maps[1]!.ranges);
  assert.deepEqual(maps[2]!.ranges, maps[3]!.ranges);
});

test('the bmap file checksum of the 1.3, 1.4 and 2.0 fixtures is verified', () => {
  assert.equal(parseBmap(fixture('1.3'), 'v1.3').fileChecksum, 'e235f7cd0c6b8c07a2e6f2538510fb763e7790a6');
  assert.equal(parseBmap(fixture('1.4'), 'v1.4').fileChecksum, '4310fd457a88d307abeeb593a7888e1fa3cae0cfc01d905158967c904c5375e5');
  assert.equal(parseBmap(fixture('2.0'), 'v2.0').fileChecksum, 'd9cf7d44790d04fcbb089c5eeec7700e9233439ab6e4bd759035906e20f90070');
  assert.equal(parseBmap(fixture('1.2'), 'v1.2').fileChecksum, undefined);
});

test('a one-character change anywhere in a checksummed bmap is detected', () => {
  for (const v of ['1.3', '2.0']) {
    const text = fixture(v);
    // In a comment, which no other check looks at.
    const inComment = text.replace('incompatible block map', 'incompatible block mop');
    assert.notEqual(inComment, text);
    rejects(inComment, /BmapFile(Checksum|SHA1)> says .* modified or damaged/);
    // In the checksum value itself.
    const v2 = text.replace(/(<BmapFile\w+> )([0-9a-f])/, (_m, a: string, c: string) => a + (c === '0' ? '1' : '0'));
    rejects(v2, /modified or damaged/);
  }
  // In a range checksum, with the error on the checksum's line.
  const e = rejects(fixture('2.0').replace('9eaf19215d55', '9eaf19215d56'), /modified or damaged/);
  assert.equal(e.line, 42, 'the line of <BmapFileChecksum>');
});

test('entity, DOCTYPE, CDATA and processing-instruction tricks are refused before parsing', () => {
  const laughs =
    '<?xml version="1.0"?>\n<!DOCTYPE bmap [\n <!ENTITY a "lol">\n <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n]>\n' +
    '<bmap version="2.0"><ImageSize>&b;</ImageSize></bmap>';
  rejects(laughs, /:2: "<!DOCTYPE" is not allowed.*refused for safety/);
  rejects('<?xml version="1.0"?>\n<!ENTITY x SYSTEM "file:///etc/passwd">\n' + doc().slice(22), /"<!ENTITY" is not allowed/);
  rejects(doc().replace('<bmap', '<?xml-stylesheet href="x"?>\n<bmap'), /"<\?xml-stylesheet" is not allowed/);
  rejects(doc().replace(' 40000 ', '<![CDATA[40000]]>'), /"<!\[CDATA\[" is not allowed/);
  rejects(doc().replace(' 40000 ', '&#52;0000'), /entity and character references/);
  rejects(' ' + doc(), /"<\?xml" is not allowed/);
});

test('a missing, malformed or unknown version is refused', () => {
  rejects(doc().replace(' version="2.0"', ''), /no version attribute/);
  rejects(doc({ version: '3.0' }), /version 3\.0 is not supported/);
  rejects(doc({ version: 'two' }), /"two" is not "major.minor"/);
  rejects(doc({ version: '1.7' }), /1\.7 does not exist/);
  rejects(doc().replace('<bmap version', '<map version').replace('</bmap>', '</map>'), /top-level element is <map>, expected <bmap>/);
});

test('numbers must be decimal and safe integers', () => {
  rejects(doc({ imageSize: '0x9c40' }), /<ImageSize> "0x9c40" is not a decimal number/);
  rejects(doc({ imageSize: '-40000' }), /not a decimal number/);
  rejects(doc({ imageSize: '4e4' }), /not a decimal number/);
  rejects(doc({ imageSize: '' }), /<ImageSize> "" is not a decimal number/);
  rejects(doc({ imageSize: '9007199254740993' }), /<ImageSize> 9007199254740993 is too large/);
  rejects(doc({ ranges: `<Range> 99999999999999999999 </Range>` }), /block number too large/);
  rejects(doc().replace(/ *<BlockSize>.*\n/, ''), /<BlockSize> is missing/);
  rejects(doc().replace(/ *<MappedBlocksCount>.*\n/, ''), /<MappedBlocksCount> is missing/);
});

test('the block size must be a sensible power of two', () => {
  rejects(doc({ blockSize: '4000' }), /<BlockSize> 4000 is not a power of two/);
  rejects(doc({ blockSize: '0' }), /<BlockSize> 0 is not a power of two/);
  rejects(doc({ blockSize: String(2 ** 40) }), /is not a power of two between 512 and 67108864/);
});

test('ImageSize must agree with BlocksCount * BlockSize, rounded up', () => {
  rejects(doc({ blocksCount: '11' }), /<BlocksCount> 11 does not match <ImageSize> 40000 \/ <BlockSize> 4096 \(expected 10/);
  rejects(doc({ imageSize: '36864' }), /expected 9/); // exactly 9 blocks
  assert.equal(parseBmap(doc({ imageSize: '36865' }), 'ok').blocksCount, 10);
  rejects(doc({ imageSize: '0', blocksCount: '0', mapped: '0', ranges: '' }), /<ImageSize> is 0/);
});

test('ranges must be well formed, in order, non-overlapping and inside the image', () => {
  const r = (spec: string) => `    <Range chksum="${H}"> ${spec} </Range>\n`;
  rejects(doc({ ranges: r('5-3'), mapped: '3' }), /<Range> "5-3": the first block is after the last/);
  rejects(doc({ ranges: r('5') + r('0-1') }), /"0-1" starts at or before the end of the previous range \(block 5\)/);
  rejects(doc({ ranges: r('0-4') + r('4-5'), mapped: '8' }), /"4-5" starts at or before .* not overlap/);
  rejects(doc({ ranges: r('0-1') + r('9-10') }), /"9-10" reaches past the image, which has 10 blocks/);
  rejects(doc({ ranges: r('1-') }), /"1-" is not "first-last" or a single block number/);
  rejects(doc({ ranges: r('a-b') }), /is not "first-last"/);
  rejects(doc({ ranges: r('-1') }), /is not "first-last"/);
  // Errors carry the line of the offending range.
  const e = rejects(doc({ ranges: r('0') + r('2') + r('7-3') }), /"7-3"/);
  assert.equal(e.line, 11);
  assert.match(e.message, /^bad\.bmap:11: /);
});

test('MappedBlocksCount must equal the blocks the ranges cover', () => {
  rejects(doc({ mapped: '4' }), /<MappedBlocksCount> 4 does not equal the 3 blocks the ranges cover/);
});

test('checksums must be hex of the length their type needs', () => {
  rejects(doc({ ranges: `<Range chksum="${'a'.repeat(63)}"> 0 </Range>`, mapped: '1' }), /checksum "a{63}" is not 64 hex digits \(sha256\)/);
  rejects(doc({ ranges: `<Range chksum="${'g'.repeat(64)}"> 0 </Range>`, mapped: '1' }), /is not 64 hex digits/);
  rejects(doc({ type: 'sha1', mapped: '3' }), /is not 40 hex digits \(sha1\)/);
  rejects(doc({ type: 'crc32' }), /<ChecksumType> "crc32" is not supported/);
  rejects(doc({ ranges: `<Range sha1="${'a'.repeat(40)}"> 0 </Range>`, mapped: '1' }), /unknown attribute "sha1" \(format 2\.0 uses "chksum"\)/);
  rejects(doc().replace(/ *<ChecksumType>.*\n/, ''), /<ChecksumType> is missing/);
  rejects(fixture('2.0').replace(/<BmapFileChecksum> [0-9a-f]+/, '<BmapFileChecksum> xyz'), /<BmapFileChecksum> "xyz" is not 64 hex digits/);
  rejects(fixture('1.3').replace('version="1.3"', 'version="2.0"'), /<BmapFileSHA1> belongs to bmap format 1\.3/);
});

test('a truncated bmap is refused as truncated', () => {
  const text = doc();
  const cuts = [text.length - 2, text.indexOf('</BlockMap>') + 3, text.indexOf('<Range') + 3, text.indexOf('<Range') + 20, text.indexOf('<Range') + 80];
  for (const cut of [...cuts, text.indexOf('<BlockSize>') + 12, 30, 3]) {
    rejects(text.slice(0, cut), /truncated/);
  }
  // Inside the fixture's long comment.
  rejects(fixture('2.0').slice(0, 300), /comment is never closed.*truncated/);
  // Losing only the final newline leaves well-formed XML: the file checksum catches it.
  rejects(fixture('2.0').slice(0, -1), /modified or damaged/);
  rejects('', /empty/);
});

test('oversized inputs and absurd range counts are refused', () => {
  rejects(' '.repeat(MAX_BMAP_BYTES + 1), /larger than 67108864 bytes/);
  const four = doc({ ranges: '<Range> 0 </Range><Range> 2 </Range><Range> 4 </Range><Range> 6 </Range>', mapped: '4' });
  assert.equal(parseBmap(four, 'ok').ranges.length, 4);
  const e = bmapErrorOf(() => parseBmap(four, 'bad.bmap', { maxRanges: 3 }));
  assert.match(e.message, /more than 3 ranges/);
});

test('ranges without checksums and unknown header elements are accepted, as bmaptool does', () => {
  const b = parseBmap(doc({ ranges: '<Range> 0-1 </Range><Range>5</Range>' }).replace('<BlockMap>', '<Future>x</Future><BlockMap>'), 'ok');
  assert.deepEqual(b.ranges, [
    { first: 0, last: 1 },
    { first: 5, last: 5 },
  ]);
});

test('formatBmap output round-trips through the parser', () => {
  for (const v of ['1.2', '1.3', '2.0']) {
    const b = parseBmap(fixture(v), v);
    const text = formatBmap(b);
    const again = parseBmap(text, 'formatted');
    assert.equal(again.version, '2.0');
    assert.equal(again.checksumType, b.checksumType);
    assert.deepEqual(again.ranges, b.ranges);
    assert.equal(again.imageSize, b.imageSize);
    assert.equal(again.mappedBlocksCount, b.mappedBlocksCount);
    assert.match(again.fileChecksum ?? '', /^[0-9a-f]+$/);
  }
  const text = formatBmap(parseBmap(fixture('2.0'), 'v2.0'));
  assert.match(text, /<Range chksum="[0-9a-f]{64}"> 12 <\/Range>/, 'a single block is written without "-"');
  assert.match(text, /<Range chksum="[0-9a-f]{64}"> 0-1 <\/Range>/);
  assert.match(text, /<!-- Count of mapped blocks: 468\.0 KiB or 58\.2%/);
});

test('formatBmap refuses a map it could not read back', () => {
  const b = parseBmap(fixture('2.0'), 'v2.0');
  assert.throws(() => formatBmap({ ...b, mappedBlocksCount: 1 }), /mappedBlocksCount 1 is not the 117 blocks/);
  assert.throws(() => formatBmap({ ...b, ranges: [...b.ranges].reverse() }), /out of order/);
});

test('sizes in comments are written like bmaptool (Python %.1f rounding)', () => {
  assert.equal(humanSize(1), '1 byte');
  assert.equal(humanSize(511), '511 bytes');
  assert.equal(humanSize(821752), '802.5 KiB');
  assert.equal(humanSize(1280), '1.2 KiB'); // 1.25 rounds to even, as Python does
  assert.equal(humanSize(1792), '1.8 KiB'); // 1.75
  assert.equal(humanSize(3 * 1024 ** 3), '3.0 GiB');
});
