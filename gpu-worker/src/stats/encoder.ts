/**
 * Encodes a decoded clip into X0 with the bundle's `vae_encoder` (docs/bundles.md): frames in
 * [−1, 1] go in as [batch, 3, H, W], the unscaled posterior mean comes out as [batch, C, h, w], and
 * X0 = mean × latent.scaleFactor laid out as the model's latent: [1, C, F, h, w] for DynamiCrafter
 * and VideoCrafter1, [1, F, C, h, w] for SVD.
 *
 * The reference draws a posterior *sample* (mean + std·ε) before scaling; we use the mean (the
 * exported encoder's only output). E[X0] is unchanged in expectation; tr(Cov)/d is lower by the
 * mean posterior variance × scaleFactor², small for these VAEs (docs/statistics.md).
 */
import { join } from 'node:path';
import type { Family } from '#shared/schemas';
import { tensor } from '#shared/sampler';
import type { Bundle } from '../bundle.ts';
import { checkSessionAgainstManifest } from '../bundle.ts';
import { FAMILY_ADAPTERS } from '../families/index.ts';
import { OnnxSessions } from '../runtime/sessions.ts';
import type { SessionsOptions } from '../runtime/sessions.ts';

export interface ClipGeometry {
  readonly family: Family;
  readonly channels: number;
  readonly downsample: number;
  readonly scaleFactor: number;
  readonly height: number;
  readonly width: number;
  readonly frames: number;
}

/** The model's latent dims for a clip (batch 1), as the generate job builds them. */
export function latentShapeFor(g: ClipGeometry): number[] {
  const h = g.height / g.downsample;
  const w = g.width / g.downsample;
  return FAMILY_ADAPTERS[g.family].layout.dims({ channels: g.channels, frames: g.frames, h, w });
}

/** Frames [f0, f0+count) of an RGB clip (F×H×W×3 bytes) as [count, 3, H, W] float32 in [−1, 1]. */
export function rgbToChw(rgb: Uint8Array, f0: number, count: number, height: number, width: number, out?: Float32Array): Float32Array {
  const plane = height * width;
  const o = out ?? new Float32Array(count * 3 * plane);
  for (let f = 0; f < count; f++) {
    const src = (f0 + f) * plane * 3;
    const dst = f * 3 * plane;
    for (let i = 0; i < plane; i++) {
      // Same mapping as the generate job's image input (x/127.5 − 1).
      o[dst + i] = rgb[src + 3 * i] / 127.5 - 1;
      o[dst + plane + i] = rgb[src + 3 * i + 1] / 127.5 - 1;
      o[dst + 2 * plane + i] = rgb[src + 3 * i + 2] / 127.5 - 1;
    }
  }
  return o;
}

/**
 * Writes `count` encoder outputs [count, C, h, w] (frames f0 …) into the clip latent `x0` in the
 * family's layout, multiplied by the scale factor.
 */
export function scatterLatent(x0: Float32Array, lat: Float32Array, f0: number, count: number, g: ClipGeometry): void {
  const C = g.channels;
  const F = g.frames;
  const hw = (g.height / g.downsample) * (g.width / g.downsample);
  const s = g.scaleFactor;
  const layout = FAMILY_ADAPTERS[g.family].layout;
  for (let b = 0; b < count; b++) {
    const f = f0 + b;
    for (let c = 0; c < C; c++) {
      const src = (b * C + c) * hw;
      const dst = layout.plane(c, f, { channels: C, frames: F }) * hw;
      for (let i = 0; i < hw; i++) x0[dst + i] = lat[src + i] * s;
    }
  }
}

export interface ClipEncoder {
  /** Frames per encoder call. */
  readonly batch: number;
  readonly provider: string;
  /** X0 of a clip (RGB bytes F×H×W×3) in the model's latent layout, × scaleFactor. */
  encode(rgb: Uint8Array): Promise<Float32Array>;
  close(): Promise<void>;
}

export interface EncoderOptions extends SessionsOptions {
  /** Frames per encoder call when the graph's batch axis is dynamic (default min(frames, 8)). */
  readonly batch?: number;
}

/** Opens only the bundle's vae_encoder (checked against the manifest) and returns a clip encoder. */
export async function openClipEncoder(bundle: Bundle, g: ClipGeometry, o: EncoderOptions = {}): Promise<ClipEncoder> {
  const m = bundle.manifest;
  const comp = m.components.vae_encoder;
  const sessions = new OnnxSessions(o);
  try {
    const info = await sessions.open('vae_encoder', join(bundle.root, comp.file));
    checkSessionAgainstManifest(m, 'vae_encoder', comp.file, info.inputs, info.outputs);
    const fixed = info.inputs.find((i) => i.name === 'image')?.shape[0];
    const batch = typeof fixed === 'number' && fixed > 0 ? fixed : Math.max(1, Math.min(o.batch ?? 8, g.frames));
    const { height: H, width: W, channels: C, frames: F } = g;
    const h = H / g.downsample;
    const w = W / g.downsample;
    const x0Size = C * F * h * w;
    const buf = new Float32Array(batch * 3 * H * W);
    return {
      batch,
      provider: info.provider,
      encode: async (rgb) => {
        if (rgb.length !== F * H * W * 3) throw new Error(`clip has ${rgb.length} bytes, expected ${F}×${H}×${W}×3`);
        const x0 = new Float32Array(x0Size);
        for (let f0 = 0; f0 < F; f0 += batch) {
          const count = Math.min(batch, F - f0);
          // A fixed-batch graph gets a full batch (the last one padded with repeats of real frames).
          const n = typeof fixed === 'number' ? batch : count;
          rgbToChw(rgb, f0, count, H, W, buf);
          for (let k = count; k < n; k++) buf.copyWithin(k * 3 * H * W, 0, 3 * H * W);
          const r = await sessions.run('vae_encoder', { image: tensor(buf.subarray(0, n * 3 * H * W), [n, 3, H, W], 'vae_encoder.image') });
          const lat = r.latent;
          if (!lat || lat.data.length !== n * C * h * w) {
            throw new Error(`vae_encoder output 'latent' has dims [${lat?.dims.join(', ') ?? ''}], expected [${n}, ${C}, ${h}, ${w}]`);
          }
          scatterLatent(x0, lat.data, f0, count, g);
        }
        return x0;
      },
      close: () => sessions.close(),
    };
  } catch (e) {
    await sessions.close();
    throw e;
  }
}
