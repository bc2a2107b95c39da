/**
 * The image check and normalisation of Validate (pure: bytes in, PNG bytes out). The format is
 * decided by content (magic bytes), never by the file name; dimensions come from the header
 * (sharp metadata) before any full decode, so a decompression bomb is refused without decoding
 * it. The decode itself runs with sharp's own pixel limit as a second guard and fails on
 * truncated or corrupt data. Documented in docs/functions.md.
 */
import sharp from 'sharp';
import type { Metadata, OutputInfo } from 'sharp';
import { decodeFailureReason, pngDamage } from '#shared/formats';
import { InvalidImage } from '../errors.ts';

export interface ImageLimits {
  /** Largest upload accepted, in bytes. */
  readonly maxBytes: number;
  /** Largest width × height accepted (decompression-bomb guard). */
  readonly maxPixels: number;
  /** Smallest side accepted, in pixels (after EXIF orientation). */
  readonly minSide: number;
  /** Largest ratio of the longer side to the shorter. */
  readonly maxAspect: number;
}

/**
 * 20 MB covers any camera JPEG; 40 MP covers 8K×5K; 64 px on each side: anything smaller
 * upscales to mush at the models' resolutions (256–1024 px), so it is refused as a likely mistake.
 * 8:1 covers phone panoramas. A strip beyond it keeps under a quarter of itself in the centre crop,
 * and its cover resize is costly: the short side is upscaled to the model's, so a 25 KB 65500×64
 * JPEG (EXIF-rotated) took a minute of CPU to normalise (the fuzz suite found it).
 */
export const IMAGE_LIMITS: ImageLimits = Object.freeze({ maxBytes: 20 * 1024 * 1024, maxPixels: 40_000_000, minSide: 64, maxAspect: 8 });

export type ImageFormat = 'png' | 'jpeg' | 'webp';

/** The format by magic bytes: PNG signature, JPEG SOI + marker, RIFF….WEBP; null otherwise. */
export function sniffImageFormat(b: Uint8Array): ImageFormat | null {
  const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (b.length >= 8 && PNG.every((v, i) => b[i] === v)) return 'png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  const ascii = (from: number, to: number): string => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  return null;
}

/**
 * True when a PNG has an `acTL` chunk before its first IDAT (an APNG). libvips reads only the
 * default image of an APNG and reports one page, so this walks the chunk list itself.
 */
export function isAnimatedPng(b: Uint8Array): boolean {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 8;
  while (p + 8 <= b.length) {
    const len = view.getUint32(p);
    const type = String.fromCharCode(b[p + 4], b[p + 5], b[p + 6], b[p + 7]);
    if (type === 'acTL') return true;
    if (type === 'IDAT' || type === 'IEND') return false;
    p += 12 + len;
  }
  return false;
}

export interface SourceImageInfo {
  readonly format: ImageFormat;
  readonly bytes: number;
  /** Stored (header) size, before orientation. */
  readonly width: number;
  readonly height: number;
  /** EXIF orientation 1–8 (1 when absent). */
  readonly orientation: number;
  /** libvips interpretation of the source ('srgb', 'cmyk', 'b-w', 'rgb16', …). */
  readonly space: string;
  readonly channels: number;
  readonly hasAlpha: boolean;
  readonly hasProfile: boolean;
}

export interface NormalisedImage {
  /** 8-bit sRGB RGB PNG (no alpha, no metadata) at exactly width × height. */
  readonly png: Buffer;
  readonly width: number;
  readonly height: number;
  readonly source: SourceImageInfo;
}

function describe(where: string): string {
  return where === '' ? 'image' : where;
}

/**
 * Reads and checks the header of an upload: magic bytes, byte and pixel limits, minimum size,
 * animation. Throws InvalidImage with the reason; returns what it found.
 */
export async function inspectImage(bytes: Uint8Array, where: string, limits: ImageLimits = IMAGE_LIMITS): Promise<SourceImageInfo> {
  const w = describe(where);
  if (bytes.length === 0) throw new InvalidImage(`${w}: the file is empty (0 bytes)`);
  if (bytes.length > limits.maxBytes) {
    throw new InvalidImage(`${w}: ${bytes.length} bytes is over the limit of ${limits.maxBytes} bytes`);
  }
  const format = sniffImageFormat(bytes);
  if (format === null) {
    throw new InvalidImage(`${w}: not a PNG, JPEG or WebP image (checked by content, not by file name)`);
  }
  if (format === 'png' && isAnimatedPng(bytes)) {
    throw new InvalidImage(`${w}: animated PNG (APNG) is not supported; upload a single still image`);
  }
  let meta: Metadata;
  try {
    // Header only; the pixel limit is ours, checked below with a clearer message than sharp's.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    const damage = pngDamage(bytes);
    throw new InvalidImage(`${w}: unreadable ${format.toUpperCase()} header${damage !== null ? `: ${damage}` : ` (${(e as Error).message})`}`);
  }
  if (meta.format !== format) {
    throw new InvalidImage(`${w}: content starts like ${format.toUpperCase()} but decodes as ${String(meta.format)}`);
  }
  const width = meta.width;
  const height = meta.height;
  if (!width || !height) throw new InvalidImage(`${w}: the header declares no dimensions`);
  if (width * height > limits.maxPixels) {
    throw new InvalidImage(
      `${w}: ${width}×${height} = ${width * height} pixels is over the limit of ${limits.maxPixels} pixels (possible decompression bomb)`,
    );
  }
  if ((meta.pages ?? 1) > 1) {
    throw new InvalidImage(`${w}: ${format.toUpperCase()} with ${meta.pages} frames/pages; upload a single still image`);
  }
  if (Math.min(width, height) < limits.minSide) {
    throw new InvalidImage(`${w}: ${width}×${height} is too small; each side must be at least ${limits.minSide} pixels`);
  }
  if (Math.max(width, height) > limits.maxAspect * Math.min(width, height)) {
    throw new InvalidImage(`${w}: ${width}×${height} is too elongated; the longer side may be at most ${limits.maxAspect} times the shorter`);
  }
  return {
    format,
    bytes: bytes.length,
    width,
    height,
    orientation: meta.orientation ?? 1,
    space: meta.space ?? 'unknown',
    channels: meta.channels ?? 0,
    hasAlpha: meta.hasAlpha ?? false,
    hasProfile: meta.hasProfile ?? false,
  };
}

/**
 * Checks an upload and normalises it for a model: EXIF orientation applied, alpha flattened onto
 * white (transparent pixels carry no defined colour), converted to 8-bit sRGB RGB (CMYK and
 * embedded ICC profiles included), scaled to cover width × height and centre-cropped (the
 * reference pipelines' resize-then-centre-crop), written as a PNG without metadata.
 */
export async function normaliseImage(
  bytes: Uint8Array,
  size: { readonly width: number; readonly height: number },
  where: string,
  limits: ImageLimits = IMAGE_LIMITS,
): Promise<NormalisedImage> {
  const source = await inspectImage(bytes, where, limits);
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await sharp(bytes, { failOn: 'error', limitInputPixels: limits.maxPixels })
      .autoOrient()
      .flatten({ background: '#ffffff' })
      .toColourspace('srgb')
      .resize(size.width, size.height, { fit: 'cover', position: 'centre', kernel: 'lanczos3' })
      .png({ compressionLevel: 6, adaptiveFiltering: false })
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    // libvips may report a decode failure as an output error ("unable to write to target"):
    // name the real cause (shared/src/formats/imageDamage.ts).
    throw new InvalidImage(`${describe(where)}: ${decodeFailureReason(bytes, (e as Error).message, source.format.toUpperCase())}`);
  }
  if (out.info.width !== size.width || out.info.height !== size.height || out.info.channels !== 3) {
    // Not expected from sharp; refuse rather than hand the worker a wrong-shaped image.
    throw new InvalidImage(
      `${describe(where)}: normalised to ${out.info.width}×${out.info.height}×${out.info.channels}, expected ${size.width}×${size.height}×3`,
    );
  }
  return { png: out.data, width: size.width, height: size.height, source };
}
