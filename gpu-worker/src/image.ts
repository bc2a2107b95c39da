/** Image ↔ tensor conversions for the worker (sharp does decoding, resizing and PNG encoding). */
import sharp from 'sharp';
import { tensor } from '../../shared/src/tensor.ts';
import type { Tensor } from '../../shared/src/tensor.ts';

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
    throw new ImageDecodeError(`${where}: cannot decode the image (${(e as Error).message})`);
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

/** Bilinear resize of a [1, 3, H, W] tensor to size×size (for the CLIP image encoder's 224×224). */
export function resizeChw(t: Tensor, size: number): Tensor {
  const [, c, h, w] = t.dims;
  const out = new Float32Array(c * size * size);
  // align_corners = false sampling, as torch.nn.functional.interpolate(mode='bilinear')
  for (let y = 0; y < size; y++) {
    const sy = Math.min(Math.max((y + 0.5) * (h / size) - 0.5, 0), h - 1);
    const y0 = Math.floor(sy);
    const y1 = Math.min(y0 + 1, h - 1);
    const fy = sy - y0;
    for (let x = 0; x < size; x++) {
      const sx = Math.min(Math.max((x + 0.5) * (w / size) - 0.5, 0), w - 1);
      const x0 = Math.floor(sx);
      const x1 = Math.min(x0 + 1, w - 1);
      const fx = sx - x0;
      for (let k = 0; k < c; k++) {
        const b = k * h * w;
        const v =
          (1 - fy) * ((1 - fx) * t.data[b + y0 * w + x0] + fx * t.data[b + y0 * w + x1]) + fy * ((1 - fx) * t.data[b + y1 * w + x0] + fx * t.data[b + y1 * w + x1]);
        out[k * size * size + y * size + x] = v;
      }
    }
  }
  return tensor(out, [1, c, size, size], 'image_224');
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
