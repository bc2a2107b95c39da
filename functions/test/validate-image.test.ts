import sharp from 'sharp';
import type { Sharp } from 'sharp';
import { describe, expect, it } from 'vitest';
import { InvalidImage } from '../src/errors.ts';
import { IMAGE_LIMITS, isAnimatedPng, normaliseImage, sniffImageFormat } from '../src/validate/image.ts';
import { actlChunk, handmadePng, meanRgb, noiseImage, pseudoRandomBytes } from './helpers/fixtures.ts';

const RED = { r: 255, g: 0, b: 0 };
const GREEN = { r: 0, g: 255, b: 0 };
const BLUE = { r: 0, g: 0, b: 255 };

/** An image of vertical (or horizontal) bands of solid colour, `sizes` pixels each. */
function bands(dir: 'x' | 'y', sizes: number[], colours: { r: number; g: number; b: number }[], other: number): Sharp {
  const total = sizes.reduce((a, b) => a + b, 0);
  const [w, h] = dir === 'x' ? [total, other] : [other, total];
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let pos = dir === 'x' ? x : y;
      let band = 0;
      while (pos >= sizes[band]) pos -= sizes[band++];
      const c = colours[band];
      raw.set([c.r, c.g, c.b], (y * w + x) * 3);
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } });
}

async function rawOf(png: Buffer): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

function close(a: readonly number[], b: readonly number[], tol: number): boolean {
  return a.every((v, i) => Math.abs(v - b[i]) <= tol);
}

describe('sniffImageFormat', () => {
  it('decides by magic bytes', async () => {
    expect(sniffImageFormat(await noiseImage(8, 8).png().toBuffer())).toBe('png');
    expect(sniffImageFormat(await noiseImage(8, 8).jpeg().toBuffer())).toBe('jpeg');
    expect(sniffImageFormat(await noiseImage(8, 8).webp().toBuffer())).toBe('webp');
    expect(sniffImageFormat(await noiseImage(8, 8).gif().toBuffer())).toBeNull();
    expect(sniffImageFormat(Buffer.from('RIFF\0\0\0\0WAVE'))).toBeNull();
    expect(sniffImageFormat(Buffer.alloc(0))).toBeNull();
  });

  it('finds an acTL chunk before IDAT (APNG)', () => {
    expect(isAnimatedPng(handmadePng(100, 100, [actlChunk()]))).toBe(true);
    expect(isAnimatedPng(handmadePng(100, 100))).toBe(false);
  });
});

describe('normaliseImage: refused inputs', () => {
  const size = { width: 96, height: 64 };
  const cases: [string, () => Promise<Buffer>, RegExp][] = [
    ['zero-byte file', () => Promise.resolve(Buffer.alloc(0)), /empty \(0 bytes\)/],
    ['random bytes', () => Promise.resolve(pseudoRandomBytes(5000, 99)), /not a PNG, JPEG or WebP/],
    ['a GIF', () => noiseImage(80, 80).gif().toBuffer(), /not a PNG, JPEG or WebP/],
    ['truncated PNG', async () => { const b = await noiseImage(200, 150).png().toBuffer(); return b.subarray(0, Math.floor(b.length * 0.6)); }, /truncated PNG: the IDAT chunk at byte/],
    ['truncated JPEG', async () => { const b = await noiseImage(200, 150).jpeg().toBuffer(); return b.subarray(0, Math.floor(b.length * 0.6)); }, /corrupt or truncated JPEG/],
    ['PNG declaring 50000×50000', () => Promise.resolve(handmadePng(50000, 50000)), /50000×50000 = 2500000000 pixels is over the limit of 40000000/],
    ['1×1 PNG', () => noiseImage(1, 1).png().toBuffer(), /1×1 is too small; each side must be at least 64/],
    ['63 px wide', () => noiseImage(63, 500).png().toBuffer(), /63×500 is too small/],
    ['APNG', () => Promise.resolve(handmadePng(100, 100, [actlChunk()])), /animated PNG/],
    ['animated WebP', async () => {
      // Two different frames: libwebp writes identical frames as a still image.
      const frames = [await noiseImage(80, 80, 1).png().toBuffer(), await noiseImage(80, 80, 2).png().toBuffer()];
      return sharp(frames, { join: { animated: true } }).webp({ delay: [100, 100] }).toBuffer();
    }, /WEBP with 2 frames/],
    ['PNG header, garbage after', () => Promise.resolve(Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pseudoRandomBytes(500, 3)])), /unreadable PNG header/],
  ];
  it.each(cases)('%s → InvalidImage', async (_name, make, reason) => {
    const bytes = await make();
    const copy = Buffer.from(bytes);
    const err = await normaliseImage(bytes, size, 'inputs/x.png').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidImage);
    expect((err as InvalidImage).name).toBe('InvalidImage');
    expect((err as InvalidImage).reason).toMatch(reason);
    expect((err as InvalidImage).toJSON()).toEqual({ error: 'InvalidImage', reason: (err as InvalidImage).message });
    expect(bytes.equals(copy)).toBe(true);
  });

  // Issue 19, defect 9: a flipped IHDR CRC was refused as "vips2png: unable to write to target".
  it('names a corrupt IHDR checksum as such, naming the file (not "unable to write to target")', async () => {
    const png = await noiseImage(100, 80).png().toBuffer();
    const bad = Buffer.from(png);
    bad[8 + 8 + 13] ^= 0xff; // the first byte of IHDR's CRC: signature, length + type, 13 data bytes
    const err = (await normaliseImage(bad, size, 'inputs/cat.png').then(() => null, (e: unknown) => e)) as InvalidImage;
    expect(err).toBeInstanceOf(InvalidImage);
    expect(err.reason).toMatch(/^inputs\/cat\.png: corrupt PNG: IHDR chunk CRC mismatch at byte 8 \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$/);
    expect(err.reason).not.toMatch(/write|target/);
  });

  it('names a truncated PNG by the chunk the file ends in, and one cut inside IHDR', async () => {
    const png = await noiseImage(200, 150).png().toBuffer();
    const cut = png.subarray(0, Math.floor(png.length * 0.6));
    const err = (await normaliseImage(cut, size, 'inputs/cat.png').then(() => null, (e: unknown) => e)) as InvalidImage;
    expect(err).toBeInstanceOf(InvalidImage);
    expect(err.reason).toMatch(/^inputs\/cat\.png: truncated PNG: the IDAT chunk at byte \d+ declares \d+ bytes, but the file ends \d+ bytes into it$/);
    const header = (await normaliseImage(png.subarray(0, 20), size, 'inputs/cat.png').then(() => null, (e: unknown) => e)) as InvalidImage;
    expect(header.reason).toMatch(/^inputs\/cat\.png: unreadable PNG header: truncated PNG: the IHDR chunk at byte 8 declares 13 bytes, but the file ends 4 bytes into it$/);
  });

  it('a damaged IDAT (valid structure aside from its CRC) is named; a PNG whose only fault is in an ancillary chunk still decodes', async () => {
    const png = await noiseImage(100, 80).png().toBuffer();
    const idat = png.indexOf('IDAT') - 4;
    const bad = Buffer.from(png);
    bad.fill(0x55, idat + 8 + 20, idat + 8 + 60);
    const err = (await normaliseImage(bad, size, 'inputs/cat.png').then(() => null, (e: unknown) => e)) as InvalidImage;
    expect(err.reason).toMatch(new RegExp(`^inputs/cat\\.png: corrupt PNG: IDAT chunk CRC mismatch at byte ${idat} `));
    // libpng drops an ancillary chunk with a bad CRC; such a file was accepted and still is.
    const text = Buffer.concat([Buffer.from([0, 0, 0, 4]), Buffer.from('tEXtabcd'), Buffer.from([0, 0, 0, 0])]);
    const withText = Buffer.concat([png.subarray(0, 33), text, png.subarray(33)]);
    const ok = await normaliseImage(withText, size, 'inputs/cat.png');
    expect(ok.png.equals((await normaliseImage(png, size, 'inputs/cat.png')).png)).toBe(true);
  });

  it('refuses a file over the byte limit', async () => {
    const png = await noiseImage(100, 100).png().toBuffer();
    await expect(normaliseImage(png, size, 'x', { ...IMAGE_LIMITS, maxBytes: png.length - 1 })).rejects.toThrow(/over the limit of/);
  });
});

describe('normaliseImage: normalised images', () => {
  it('scales to cover and centre-crops a wide image (keeps the middle half)', async () => {
    // 200×100: red | green | blue in 50/100/50 columns. Cover 64×64 scales to 128×64 and keeps
    // columns 32..96 of it = source columns 50..150: all green.
    const src = await bands('x', [50, 100, 50], [RED, GREEN, BLUE], 100).png().toBuffer();
    const out = await normaliseImage(src, { width: 64, height: 64 }, 'wide');
    const r = await rawOf(out.png);
    expect([r.width, r.height, r.channels]).toEqual([64, 64, 3]);
    expect(close(meanRgb(r.data, 64, 2, 0, 62, 64), [0, 255, 0], 3)).toBe(true);
    expect(out.source).toMatchObject({ format: 'png', width: 200, height: 100, orientation: 1 });
  });

  it('scales to cover and centre-crops a tall image (keeps the middle third)', async () => {
    // 100×300: red/green/blue rows of 100. Cover 96×64 scales to 96×288, keeps rows 112..176 =
    // source rows 116.7..183.3: green.
    const src = await bands('y', [100, 100, 100], [RED, GREEN, BLUE], 100).png().toBuffer();
    const r = await rawOf((await normaliseImage(src, { width: 96, height: 64 }, 'tall')).png);
    expect([r.width, r.height]).toEqual([96, 64]);
    expect(close(meanRgb(r.data, 96, 0, 0, 96, 64), [0, 255, 0], 3)).toBe(true);
  });

  // Stored 120×80, left half red, right half blue. Orientation 6 displays it turned 90° clockwise
  // (the stored left edge becomes the top), 8 turned 90° anticlockwise (left becomes bottom).
  it.each([
    [6, RED, BLUE],
    [8, BLUE, RED],
  ])('applies EXIF orientation %i', async (orientation, top, bottom) => {
    const jpg = await bands('x', [60, 60], [RED, BLUE], 80).jpeg({ quality: 95 }).withMetadata({ orientation }).toBuffer();
    const out = await normaliseImage(jpg, { width: 64, height: 96 }, 'rotated');
    expect(out.source.orientation).toBe(orientation);
    const r = await rawOf(out.png);
    expect([r.width, r.height]).toEqual([64, 96]);
    expect(close(meanRgb(r.data, 64, 0, 0, 64, 40), [top.r, top.g, top.b], 12)).toBe(true);
    expect(close(meanRgb(r.data, 64, 0, 56, 64, 96), [bottom.r, bottom.g, bottom.b], 12)).toBe(true);
    expect((await sharp(out.png).metadata()).orientation).toBeUndefined();
  });

  it('converts a CMYK JPEG to sRGB RGB', async () => {
    const cmyk = await sharp({ create: { width: 100, height: 100, channels: 3, background: { r: 200, g: 50, b: 50 } } }).toColourspace('cmyk').jpeg().toBuffer();
    const out = await normaliseImage(cmyk, { width: 96, height: 64 }, 'cmyk');
    expect(out.source.space).toBe('cmyk');
    const meta = await sharp(out.png).metadata();
    expect([meta.space, meta.channels, meta.depth]).toEqual(['srgb', 3, 'uchar']);
    // CMYK has no exact inverse without a profile: the colour only has to stay a clear red.
    const r = await rawOf(out.png);
    expect(close(meanRgb(r.data, 96, 0, 0, 96, 64), [200, 50, 50], 30)).toBe(true);
  });

  it('flattens transparency onto white and converts grey and 16-bit to 8-bit RGB', async () => {
    const rgba = await sharp({ create: { width: 80, height: 80, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 0 } } }).png().toBuffer();
    const a = await rawOf((await normaliseImage(rgba, { width: 64, height: 64 }, 'alpha')).png);
    expect(a.channels).toBe(3);
    expect(meanRgb(a.data, 64, 0, 0, 64, 64)).toEqual([255, 255, 255]);

    const grey = await sharp({ create: { width: 80, height: 80, channels: 3, background: { r: 128, g: 128, b: 128 } } }).toColourspace('b-w').png().toBuffer();
    expect((await sharp(grey).metadata()).channels).toBe(1);
    const g = await rawOf((await normaliseImage(grey, { width: 64, height: 64 }, 'grey')).png);
    expect(g.channels).toBe(3);
    expect(close(meanRgb(g.data, 64, 0, 0, 64, 64), [128, 128, 128], 1)).toBe(true);

    const deep = await sharp({ create: { width: 80, height: 80, channels: 3, background: { r: 40, g: 80, b: 120 } } }).toColourspace('rgb16').png().toBuffer();
    expect((await sharp(deep).metadata()).depth).toBe('ushort');
    const outDeep = await normaliseImage(deep, { width: 64, height: 64 }, 'deep');
    expect((await sharp(outDeep.png).metadata()).depth).toBe('uchar');
    expect(close(meanRgb((await rawOf(outDeep.png)).data, 64, 0, 0, 64, 64), [40, 80, 120], 1)).toBe(true);
  });

  it('goes by content: JPEG bytes are a JPEG whatever the name; WebP is accepted', async () => {
    const jpg = await noiseImage(100, 100).jpeg().toBuffer();
    expect((await normaliseImage(jpg, { width: 64, height: 64 }, 'inputs/photo.png')).source.format).toBe('jpeg');
    const webp = await noiseImage(100, 100).webp().toBuffer();
    expect((await normaliseImage(webp, { width: 64, height: 64 }, 'inputs/photo.webp')).source.format).toBe('webp');
  });

  it('is deterministic and leaves the input bytes alone', async () => {
    const png = await noiseImage(150, 120).png().toBuffer();
    const copy = Buffer.from(png);
    const a = await normaliseImage(png, { width: 96, height: 64 }, 'x');
    const b = await normaliseImage(png, { width: 96, height: 64 }, 'x');
    expect(a.png.equals(b.png)).toBe(true);
    expect(png.equals(copy)).toBe(true);
  });
});
