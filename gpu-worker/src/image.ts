/** Image ↔ tensor conversions for the worker (sharp does decoding, resizing and PNG encoding). */
import sharp from 'sharp';
import { decodeFailureReason } from '#shared/formats';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';

export class ImageDecodeError extends Error {
  override readonly name = 'ImageDecodeError';
}

/**
 * Decodes an image, applies EXIF orientation, resizes-then-centre-crops to height×width (the
 * reference pipelines' behaviour) and returns RGB in [−1, 1] as [1, 3, H, W].
 */
export async function imageToTensor(bytes: Uint8Array, height: number, width: number, where: string): Promise<Tensor> {
  let raw: Buffer;
  try {
    raw = await sharp(bytes, { failOn: 'error' })
      .rotate()
      .toColourspace('srgb')
      .removeAlpha()
      .resize(width, height, { fit: 'cover', position: 'centre' })
      .raw()
      .toBuffer();
  } catch (e) {
    // libvips may report a decode failure as "Unknown error": name the real cause.
    throw new ImageDecodeError(`${where}: cannot decode the image: ${decodeFailureReason(bytes, (e as Error).message)}`);
  }
  if (raw.length !== height * width * 3) throw new ImageDecodeError(`${where}: decoded ${raw.length} bytes, expected ${height * width * 3} (RGB ${width}×${height})`);
  const plane = height * width;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    out[i] = raw[3 * i] / 127.5 - 1;
    out[plane + i] = raw[3 * i + 1] / 127.5 - 1;
    out[2 * plane + i] = raw[3 * i + 2] / 127.5 - 1;
  }
  return tensor(out, [1, 3, height, width], 'image');
}

/** One frame [3, H, W] in [−1, 1] (at `offset` in `data`) → PNG bytes. */
export async function frameToPng(data: Float32Array, offset: number, height: number, width: number): Promise<Buffer> {
  const plane = height * width;
  const rgb = Buffer.alloc(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let k = 0; k < 3; k++) {
      const v = Math.round((data[offset + k * plane + i] + 1) * 127.5);
      rgb[3 * i + k] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return sharp(rgb, { raw: { width, height, channels: 3 } }).png({ compressionLevel: 6 }).toBuffer();
}
