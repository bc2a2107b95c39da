/**
 * Decoding the final latent to frames, in chunks of frames (bounded memory): returns [F, 3, H, W]
 * in [−1, 1]. The latent is divided by the scale factor first; the family adapter says the latent's
 * layout and how many frames one vae_decoder call may take.
 */
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import type { Bundle } from './bundle.ts';
import { batchable } from './conditioning.ts';
import type { FamilyAdapter } from './families/index.ts';
import type { OnnxSessions } from './runtime/sessions.ts';

export async function decodeFrames(bundle: Bundle, sessions: OnnxSessions, family: FamilyAdapter, latent: Tensor, chunk = 4, signal?: AbortSignal): Promise<Float32Array> {
  const m = bundle.manifest;
  const axes = family.layout.axes(latent.dims);
  if (!axes || axes.channels !== m.latent.channels) {
    throw new Error(`latent dims [${latent.dims.join(', ')}] are not a ${family.name} latent [1, ${family.layout.axisNames.join(', ')}] with C = ${m.latent.channels}`);
  }
  const { channels: C, frames: F, h, w } = axes;
  const H = m.resolution.height;
  const W = m.resolution.width;
  const step = batchable(sessions, 'vae_decoder') ? family.decodeBatch(F, chunk) : 1;
  const out = new Float32Array(F * 3 * H * W);
  const inv = 1 / m.latent.scaleFactor;
  for (let f0 = 0; f0 < F; f0 += step) {
    const n = Math.min(step, F - f0);
    const buf = new Float32Array(n * C * h * w);
    for (let k = 0; k < n; k++) {
      for (let c = 0; c < C; c++) {
        const src = family.layout.plane(c, f0 + k, axes) * h * w;
        for (let i = 0; i < h * w; i++) buf[(k * C + c) * h * w + i] = latent.data[src + i] * inv;
      }
    }
    const r = await sessions.run('vae_decoder', { latent: tensor(buf, [n, C, h, w], 'vae_decoder.latent') }, signal);
    const img = r.image;
    if (img.data.length !== n * 3 * H * W) throw new Error(`vae_decoder output 'image' has dims [${img.dims.join(', ')}], expected [${n}, 3, ${H}, ${W}]`);
    out.set(img.data, f0 * 3 * H * W);
  }
  return out;
}
