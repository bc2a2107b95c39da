/**
 * Hostile image bytes for the Validate image check: valid PNG/JPEG/WebP seeds made with sharp,
 * then mutated — blind (bit flips, inserts, deletes, truncation, splices) and structure-aware
 * (PNG chunk lengths, CRCs, IHDR fields; JPEG segment lengths and SOF dimensions; WebP RIFF and
 * VP8/VP8L/VP8X sizes), including huge declared dimensions with valid checksums so that the
 * header reaches the decoder.
 */
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import { FuzzRng } from './rng.ts';

export interface SeedImage {
  readonly name: string;
  readonly bytes: Buffer;
}

function noise(rng: FuzzRng, width: number, height: number, channels: 1 | 3 | 4, pageHeight?: number): Sharp {
  return sharp(rng.bytes(width * height * channels), { raw: { width, height, channels, ...(pageHeight ? { pageHeight } : {}) } });
}

/** A smooth gradient (compresses well, so mutations land in headers more often than in pixels). */
function gradient(width: number, height: number, channels: 3 | 4): Sharp {
  const b = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * channels;
      b[p] = (x * 255) / width;
      b[p + 1] = (y * 255) / height;
      b[p + 2] = ((x + y) * 127) / (width + height);
      if (channels === 4) b[p + 3] = (x * 7 + y * 3) & 0xff;
    }
  }
  return sharp(b, { raw: { width, height, channels } });
}

/** The valid seeds: every format, colour model and container variant the check must handle. */
export async function seedImages(seed = 1): Promise<SeedImage[]> {
  const rng = new FuzzRng(seed);
  const out: [string, Promise<Buffer>][] = [
    ['png-rgb-noise', noise(rng, 100, 80, 3).png().toBuffer()],
    ['png-rgba-gradient', gradient(96, 64, 4).png().toBuffer()],
    ['png-grey16', noise(rng, 72, 72, 3).greyscale().toColourspace('grey16').png().toBuffer()],
    ['png-palette', gradient(128, 96, 3).png({ palette: true }).toBuffer()],
    ['png-interlaced', gradient(80, 70, 3).png({ progressive: true }).toBuffer()],
    ['png-64x64', noise(rng, 64, 64, 3).png().toBuffer()],
    ['png-too-small', noise(rng, 48, 40, 3).png().toBuffer()],
    ['jpeg-noise', noise(rng, 120, 90, 3).jpeg({ quality: 80 }).toBuffer()],
    ['jpeg-progressive-exif6', gradient(160, 100, 3).withMetadata({ orientation: 6 }).jpeg({ progressive: true }).toBuffer()],
    ['jpeg-cmyk', gradient(80, 80, 3).toColourspace('cmyk').jpeg().toBuffer()],
    ['jpeg-large', gradient(400, 300, 3).jpeg().toBuffer()],
    ['webp-lossy', noise(rng, 128, 96, 3).webp({ quality: 70 }).toBuffer()],
    ['webp-lossless-alpha', gradient(90, 70, 4).webp({ lossless: true }).toBuffer()],
    ['webp-animated', noise(rng, 80, 160, 3, 80).webp({ quality: 50 }).toBuffer()],
  ];
  return Promise.all(out.map(async ([name, p]) => ({ name, bytes: await p })));
}

// ---------------------------------------------------------------- structure

interface PngChunk {
  readonly offset: number;
  readonly length: number;
  readonly type: string;
}

export function pngChunks(b: Buffer): PngChunk[] {
  const out: PngChunk[] = [];
  let p = 8;
  while (p + 12 <= b.length) {
    const length = b.readUInt32BE(p);
    out.push({ offset: p, length, type: b.toString('latin1', p + 4, p + 8) });
    if (p + 12 + length > b.length) break;
    p += 12 + length;
  }
  return out;
}

export function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** Recomputes the CRC of the chunk at `c` (so an edited field still passes the checksum). */
function fixCrc(b: Buffer, c: PngChunk): void {
  const end = c.offset + 8 + c.length;
  if (end + 4 <= b.length) b.writeUInt32BE(crc32(b.subarray(c.offset + 4, end)), end);
}

interface JpegSegment {
  readonly offset: number;
  readonly marker: number;
  readonly length: number;
}

export function jpegSegments(b: Buffer): JpegSegment[] {
  const out: JpegSegment[] = [];
  let p = 2;
  while (p + 4 <= b.length && b[p] === 0xff) {
    const marker = b[p + 1];
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9)) {
      p += 2;
      continue;
    }
    const length = b.readUInt16BE(p + 2);
    out.push({ offset: p, marker, length });
    if (marker === 0xda) break; // entropy-coded data follows
    p += 2 + length;
  }
  return out;
}

interface RiffChunk {
  readonly offset: number;
  readonly size: number;
  readonly fourcc: string;
}

export function webpChunks(b: Buffer): RiffChunk[] {
  const out: RiffChunk[] = [];
  let p = 12;
  while (p + 8 <= b.length) {
    const size = b.readUInt32LE(p + 4);
    out.push({ offset: p, size, fourcc: b.toString('latin1', p, p + 4) });
    p += 8 + size + (size & 1);
  }
  return out;
}

const HUGE = [0, 1, 63, 64, 65535, 65536, 100_000, 0x7fffffff, 0x80000000, 0xffffffff];

function interesting(rng: FuzzRng): number {
  return rng.pick([0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe]);
}

// ---------------------------------------------------------------- mutators

type Mutator = (rng: FuzzRng, b: Buffer, seeds: readonly SeedImage[]) => { bytes: Buffer; what: string };

const blind: Record<string, Mutator> = {
  flipBits: (rng, b) => {
    const c = Buffer.from(b);
    const n = rng.range(1, 16);
    for (let i = 0; i < n && c.length > 0; i++) c[rng.int(c.length)] ^= 1 << rng.int(8);
    return { bytes: c, what: `flip ${n} bits` };
  },
  setBytes: (rng, b) => {
    const c = Buffer.from(b);
    const n = rng.range(1, 8);
    for (let i = 0; i < n && c.length > 0; i++) c[rng.int(c.length)] = interesting(rng);
    return { bytes: c, what: `set ${n} bytes` };
  },
  insert: (rng, b) => {
    const at = rng.int(b.length + 1);
    const n = rng.range(1, 64);
    return { bytes: Buffer.concat([b.subarray(0, at), rng.bytes(n), b.subarray(at)]), what: `insert ${n} at ${at}` };
  },
  delete: (rng, b) => {
    const at = rng.int(b.length + 1);
    const n = rng.range(1, Math.max(1, Math.min(256, b.length - at)));
    return { bytes: Buffer.concat([b.subarray(0, at), b.subarray(at + n)]), what: `delete ${n} at ${at}` };
  },
  truncate: (rng, b) => {
    // Short cuts (inside the headers) as often as long ones.
    const at = rng.chance(0.5) ? rng.int(Math.min(b.length, 64)) : rng.int(b.length);
    return { bytes: Buffer.from(b.subarray(0, at)), what: `truncate at ${at}` };
  },
  duplicate: (rng, b) => {
    const at = rng.int(b.length);
    const n = rng.range(1, Math.min(512, b.length - at));
    return { bytes: Buffer.concat([b.subarray(0, at + n), b.subarray(at, at + n), b.subarray(at + n)]), what: `duplicate ${n} at ${at}` };
  },
  splice: (rng, b, seeds) => {
    const other = rng.pick(seeds).bytes;
    const at = rng.int(b.length);
    const from = rng.int(other.length);
    return { bytes: Buffer.concat([b.subarray(0, at), other.subarray(from)]), what: `splice at ${at} from ${from}` };
  },
};

const png: Record<string, Mutator> = {
  chunkLength: (rng, b) => {
    const cs = pngChunks(b);
    if (cs.length === 0) return { bytes: b, what: 'no chunks' };
    const c = rng.pick(cs);
    const out = Buffer.from(b);
    const v = rng.chance(0.5) ? rng.pick(HUGE) : (c.length + rng.range(-3, 3)) >>> 0;
    out.writeUInt32BE(v >>> 0, c.offset);
    return { bytes: out, what: `${c.type} length ${v}` };
  },
  chunkCrc: (rng, b) => {
    const cs = pngChunks(b).filter((c) => c.offset + 12 + c.length <= b.length);
    if (cs.length === 0) return { bytes: b, what: 'no chunks' };
    const c = rng.pick(cs);
    const out = Buffer.from(b);
    out.writeUInt32BE(rng.u32(), c.offset + 8 + c.length);
    return { bytes: out, what: `${c.type} crc` };
  },
  ihdrDims: (rng, b) => {
    const ihdr = pngChunks(b).find((c) => c.type === 'IHDR');
    if (!ihdr || ihdr.offset + 25 > b.length) return { bytes: b, what: 'no IHDR' };
    const out = Buffer.from(b);
    const w = rng.pick(HUGE);
    const h = rng.pick(HUGE);
    out.writeUInt32BE(w >>> 0, ihdr.offset + 8);
    out.writeUInt32BE(h >>> 0, ihdr.offset + 12);
    const crc = rng.chance(0.8);
    if (crc) fixCrc(out, ihdr);
    return { bytes: out, what: `IHDR ${w}x${h}${crc ? '' : ' bad crc'}` };
  },
  ihdrFormat: (rng, b) => {
    const ihdr = pngChunks(b).find((c) => c.type === 'IHDR');
    if (!ihdr || ihdr.offset + 25 > b.length) return { bytes: b, what: 'no IHDR' };
    const out = Buffer.from(b);
    const field = rng.range(8, 12); // depth, colour type, compression, filter, interlace
    out[ihdr.offset + 8 + field] = rng.chance(0.5) ? rng.pick([0, 1, 2, 3, 4, 6, 8, 16, 255]) : rng.int(256);
    fixCrc(out, ihdr);
    return { bytes: out, what: `IHDR byte ${field}` };
  },
  addChunk: (rng, b) => {
    const cs = pngChunks(b);
    const idat = cs.find((c) => c.type === 'IDAT');
    const at = idat ? idat.offset : 33;
    const kind = rng.pick(['acTL', 'IHDR', 'abCD', 'tEXt', 'iCCP', 'eXIf', 'PLTE']);
    const data = kind === 'acTL' ? Buffer.from([0, 0, 0, 2, 0, 0, 0, 0]) : rng.bytes(rng.skewedLength(4096));
    return { bytes: Buffer.concat([b.subarray(0, at), pngChunk(kind, data), b.subarray(at)]), what: `add ${kind}` };
  },
  idatGarbage: (rng, b) => {
    const idat = pngChunks(b).find((c) => c.type === 'IDAT' && c.offset + 12 + c.length <= b.length);
    if (!idat) return { bytes: b, what: 'no IDAT' };
    const data = rng.bytes(idat.length);
    return { bytes: Buffer.concat([b.subarray(0, idat.offset), pngChunk('IDAT', data), b.subarray(idat.offset + 12 + idat.length)]), what: 'IDAT garbage, valid crc' };
  },
  dropChunk: (rng, b) => {
    const cs = pngChunks(b).filter((c) => c.offset + 12 + c.length <= b.length);
    if (cs.length === 0) return { bytes: b, what: 'no chunks' };
    const c = rng.pick(cs);
    return { bytes: Buffer.concat([b.subarray(0, c.offset), b.subarray(c.offset + 12 + c.length)]), what: `drop ${c.type}` };
  },
};

const jpeg: Record<string, Mutator> = {
  sofDims: (rng, b) => {
    const sof = jpegSegments(b).find((s) => s.marker >= 0xc0 && s.marker <= 0xcf && s.marker !== 0xc4 && s.marker !== 0xc8 && s.marker !== 0xcc);
    if (!sof || sof.offset + 9 > b.length) return { bytes: b, what: 'no SOF' };
    const out = Buffer.from(b);
    const h = rng.pick([0, 1, 64, 8192, 65500, 65535]);
    const w = rng.pick([0, 1, 64, 8192, 65500, 65535]);
    out.writeUInt16BE(h, sof.offset + 5);
    out.writeUInt16BE(w, sof.offset + 7);
    return { bytes: out, what: `SOF ${w}x${h}` };
  },
  sofComponents: (rng, b) => {
    const sof = jpegSegments(b).find((s) => s.marker === 0xc0 || s.marker === 0xc2);
    if (!sof || sof.offset + 10 > b.length) return { bytes: b, what: 'no SOF' };
    const out = Buffer.from(b);
    out[sof.offset + 4 + rng.pick([0, 5, 6])] = rng.int(256); // precision, component count, first component id
    return { bytes: out, what: 'SOF fields' };
  },
  segmentLength: (rng, b) => {
    const segs = jpegSegments(b);
    if (segs.length === 0) return { bytes: b, what: 'no segments' };
    const s = rng.pick(segs);
    const out = Buffer.from(b);
    const v = rng.pick([0, 1, 2, 0xffff, s.length + 1, s.length - 1]) & 0xffff;
    out.writeUInt16BE(v, s.offset + 2);
    return { bytes: out, what: `segment ${s.marker.toString(16)} length ${v}` };
  },
  addMarker: (rng, b) => {
    const segs = jpegSegments(b);
    const at = segs.length > 0 ? rng.pick(segs).offset : 2;
    const marker = rng.pick([0xc0, 0xc4, 0xdb, 0xdd, 0xe1, 0xfe, 0xd8, 0xd9, 0xda]);
    const data = rng.bytes(rng.range(0, 128));
    const head = Buffer.from([0xff, marker, ((data.length + 2) >> 8) & 0xff, (data.length + 2) & 0xff]);
    return { bytes: Buffer.concat([b.subarray(0, at), head, data, b.subarray(at)]), what: `add marker ${marker.toString(16)}` };
  },
  dropEoi: (_rng, b) => ({ bytes: Buffer.from(b.subarray(0, Math.max(0, b.length - 2))), what: 'drop EOI' }),
};

const webp: Record<string, Mutator> = {
  riffSize: (rng, b) => {
    const out = Buffer.from(b);
    if (out.length >= 8) out.writeUInt32LE(rng.chance(0.5) ? rng.pick(HUGE) >>> 0 : rng.u32(), 4);
    return { bytes: out, what: 'RIFF size' };
  },
  chunkSize: (rng, b) => {
    const cs = webpChunks(b);
    if (cs.length === 0) return { bytes: b, what: 'no chunks' };
    const c = rng.pick(cs);
    const out = Buffer.from(b);
    if (c.offset + 8 <= out.length) out.writeUInt32LE(rng.pick(HUGE) >>> 0, c.offset + 4);
    return { bytes: out, what: `${c.fourcc} size` };
  },
  dims: (rng, b) => {
    const cs = webpChunks(b);
    const out = Buffer.from(b);
    const c = cs.find((x) => x.fourcc === 'VP8X') ?? cs.find((x) => x.fourcc === 'VP8 ') ?? cs.find((x) => x.fourcc === 'VP8L');
    if (!c) return { bytes: b, what: 'no VP8 chunk' };
    const d = c.offset + 8;
    if (c.fourcc === 'VP8X' && d + 10 <= out.length) {
      out.writeUIntLE(rng.pick([0, 63, 65535, 0xffffff]), d + 4, 3);
      out.writeUIntLE(rng.pick([0, 63, 65535, 0xffffff]), d + 7, 3);
    } else if (c.fourcc === 'VP8 ' && d + 10 <= out.length) {
      out.writeUInt16LE(rng.pick([0, 1, 0x3fff, 0xffff]), d + 6);
      out.writeUInt16LE(rng.pick([0, 1, 0x3fff, 0xffff]), d + 8);
    } else if (c.fourcc === 'VP8L' && d + 5 <= out.length) {
      // 14-bit width−1 and height−1 packed after the 0x2f signature.
      out.writeUInt32LE(rng.u32(), d + 1);
    }
    return { bytes: out, what: `${c.fourcc} dims` };
  },
};

/** Random bytes, optionally behind a format's magic (so they reach that format's decoder). */
function junk(rng: FuzzRng): { bytes: Buffer; what: string } {
  const body = rng.bytes(rng.skewedLength(8192));
  switch (rng.int(5)) {
    case 0:
      return { bytes: Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), body]), what: 'PNG magic + junk' };
    case 1:
      return { bytes: Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), body]), what: 'JPEG magic + junk' };
    case 2: {
      const head = Buffer.from('RIFF\0\0\0\0WEBP', 'latin1');
      head.writeUInt32LE(body.length + 4, 4);
      return { bytes: Buffer.concat([head, body]), what: 'WebP magic + junk' };
    }
    case 3:
      return { bytes: body, what: 'junk' };
    default:
      return { bytes: Buffer.from(body.subarray(0, rng.int(4))), what: 'a few bytes' };
  }
}

/** A handmade PNG whose IHDR declares the given size (valid CRC) over a tiny IDAT: a decompression bomb header. */
export function bombPng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width >>> 0, 0);
  ihdr.writeUInt32BE(height >>> 0, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** One fuzz case: a seed, one to three stacked mutations (or junk, or a bomb header). */
export function fuzzImage(rng: FuzzRng, seeds: readonly SeedImage[]): { bytes: Buffer; what: string } {
  const r = rng.int(100);
  if (r < 6) return junk(rng);
  if (r < 9) {
    const w = rng.pick(HUGE);
    const h = rng.pick(HUGE);
    return { bytes: bombPng(w, h), what: `bomb ${w}x${h}` };
  }
  const seed = rng.pick(seeds);
  let bytes = seed.bytes;
  const steps: string[] = [seed.name];
  const n = rng.chance(0.1) ? 0 : rng.range(1, 3);
  for (let i = 0; i < n; i++) {
    const fmt = bytes.subarray(0, 4).toString('latin1');
    const specific = fmt === '\x89PNG' ? png : fmt.startsWith('\xff\xd8') ? jpeg : fmt === 'RIFF' ? webp : {};
    const pool = rng.chance(0.6) && Object.keys(specific).length > 0 ? specific : blind;
    const name = rng.pick(Object.keys(pool));
    const m = pool[name](rng, bytes, seeds);
    bytes = m.bytes;
    steps.push(m.what);
  }
  return { bytes, what: steps.join(' → ') };
}
