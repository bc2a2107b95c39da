/**
 * The demo's input image: a colourful test card drawn in code (so there is no image file and no
 * licence to ship): a diagonal rainbow, soft-edged colour bars, three soft discs and a grey ramp.
 * Every edge is a smooth ramp several pixels wide, because the demo model's VAE works on 8×8
 * blocks and hard edges would only blur. The same size gives the same bytes.
 */
import sharp from 'sharp';

/** Twice the demo model's 256×160, so the worker's resize keeps the whole card (same aspect, no crop). */
export const TEST_CARD_SIZE = Object.freeze({ width: 512, height: 320 });

export class TestCardError extends Error {
  override readonly name = 'TestCardError';
}

/** 0 → 1 between e0 and e1 (Hermite). */
function smoothstep(e0: number, e1: number, x: number): number {
  const t = Math.min(1, Math.max(0, (x - e0) / (e1 - e0)));
  return t * t * (3 - 2 * t);
}

/** HSV (h in turns) to RGB in [0, 1]. */
function hsv(h: number, s: number, v: number, out: Float64Array): void {
  const f = (n: number): number => {
    const k = (n + h * 6) % 6;
    return v - v * s * Math.max(0, Math.min(k, 4 - k, 1));
  };
  out[0] = f(5);
  out[1] = f(3);
  out[2] = f(1);
}

const BARS: readonly (readonly [number, number, number])[] = [
  [0.9, 0.9, 0.9],
  [0.9, 0.85, 0.1],
  [0.1, 0.85, 0.9],
  [0.1, 0.8, 0.2],
  [0.85, 0.15, 0.8],
  [0.9, 0.15, 0.1],
  [0.15, 0.2, 0.9],
];

const DISCS: readonly { cx: number; cy: number; r: number; rgb: readonly [number, number, number] }[] = [
  { cx: 0.28, cy: 0.62, r: 0.16, rgb: [1.0, 0.55, 0.1] },
  { cx: 0.55, cy: 0.58, r: 0.12, rgb: [0.2, 0.35, 1.0] },
  { cx: 0.78, cy: 0.66, r: 0.14, rgb: [0.95, 0.2, 0.55] },
];

/** The card as interleaved 8-bit RGB, row-major. */
export function testCardRgb(width: number = TEST_CARD_SIZE.width, height: number = TEST_CARD_SIZE.height): Uint8Array {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 64 || height < 64 || width > 4096 || height > 4096) {
    throw new TestCardError(`test card: width and height must be integers in [64, 4096], got ${width}×${height}`);
  }
  const out = new Uint8Array(width * height * 3);
  const c = new Float64Array(3);
  const soft = 6 / Math.min(width, height); // edge ramp width, in units of the short side
  const barTop = 0.08;
  const barBottom = 0.34;
  const rampTop = 0.86;
  for (let y = 0; y < height; y++) {
    const v = (y + 0.5) / height;
    for (let x = 0; x < width; x++) {
      const u = (x + 0.5) / width;
      // Background: a diagonal rainbow, not too saturated.
      hsv((u * 0.8 + v * 0.35) % 1, 0.55, 0.85, c);
      let r = c[0];
      let g = c[1];
      let b = c[2];
      // Colour bars across the top, with soft sides and soft top/bottom edges.
      const inBand = smoothstep(barTop - soft, barTop + soft, v) * (1 - smoothstep(barBottom - soft, barBottom + soft, v));
      if (inBand > 0) {
        const pos = ((u - 0.06) / 0.88) * BARS.length;
        const inside = smoothstep(-soft * BARS.length, soft * BARS.length, pos) * (1 - smoothstep(BARS.length - soft * BARS.length, BARS.length + soft * BARS.length, pos));
        const i = Math.min(BARS.length - 1, Math.max(0, Math.floor(pos)));
        const j = Math.min(BARS.length - 1, i + 1);
        const t = smoothstep(0.85, 1, pos - i);
        const w = inBand * inside;
        for (let k = 0; k < 3; k++) {
          const bar = BARS[i][k] * (1 - t) + BARS[j][k] * t;
          c[k] = bar;
        }
        r = r * (1 - w) + c[0] * w;
        g = g * (1 - w) + c[1] * w;
        b = b * (1 - w) + c[2] * w;
      }
      // Soft discs.
      for (const d of DISCS) {
        const dx = (u - d.cx) * (width / height);
        const dy = v - d.cy;
        const w = 1 - smoothstep(d.r - soft, d.r + soft, Math.hypot(dx, dy));
        if (w <= 0) continue;
        r = r * (1 - w) + d.rgb[0] * w;
        g = g * (1 - w) + d.rgb[1] * w;
        b = b * (1 - w) + d.rgb[2] * w;
      }
      // Grey ramp along the bottom.
      const wr = smoothstep(rampTop - soft, rampTop + soft, v) * (1 - smoothstep(0.97 - soft, 0.97 + soft, v));
      if (wr > 0) {
        const grey = 0.08 + 0.84 * u;
        r = r * (1 - wr) + grey * wr;
        g = g * (1 - wr) + grey * wr;
        b = b * (1 - wr) + grey * wr;
      }
      const o = 3 * (y * width + x);
      out[o] = Math.round(Math.min(1, Math.max(0, r)) * 255);
      out[o + 1] = Math.round(Math.min(1, Math.max(0, g)) * 255);
      out[o + 2] = Math.round(Math.min(1, Math.max(0, b)) * 255);
    }
  }
  return out;
}

/** The card as a PNG (no metadata, so the bytes depend on the size alone). */
export async function testCardPng(width: number = TEST_CARD_SIZE.width, height: number = TEST_CARD_SIZE.height): Promise<Buffer> {
  return sharp(testCardRgb(width, height), { raw: { width, height, channels: 3 } }).png({ compressionLevel: 9 }).toBuffer();
}
