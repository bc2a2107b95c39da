/**
 * Stable Video Diffusion, as diffusers' pipeline (and the CIL authors' SVD pipeline) conditions
 * it: the noise-augmented image latent (the VAE's unscaled mode) concatenated to every frame, the
 * CLIP image embedding, added time ids (fps − 1, motion bucket, augmentation strength), zeros for
 * the unconditional branch; a frames-first latent [1, F, C, h, w]; guidance that grows linearly
 * over the frames; and a temporal VAE decoder that decodes all frames in one call.
 */
import { perFrameGuidance, tensor } from '#shared/sampler';
import { CLIP_SIZE } from '#shared/schemas';
import { clipResize } from '../clipResize.ts';
import { branchedUnet, encodeImageLatent } from '../conditioning.ts';
import { required } from '../params.ts';
import { latentAxesOf } from './adapter.ts';
import type { Conditioned, EncodeInput, FamilyAdapter } from './adapter.ts';
import { FRAMES_FIRST } from './layout.ts';

async function condition({ bundle, sessions, image, params: p, gen }: EncodeInput): Promise<Conditioned> {
  const m = bundle.manifest;
  const t0 = performance.now();
  const axes = latentAxesOf(m, p.frames);
  const { channels: C, frames: F, h, w } = axes;
  const aug = required(p, 'noiseAugStrength');
  // The noise-augmentation noise is the generator's first draw (docs/rng.md: stream layout).
  const z = new Float32Array(image.data.length);
  gen.fill(z);
  const noisy = Float32Array.from(image.data, (v, i) => v + aug * z[i]);
  const lat = await encodeImageLatent(sessions, tensor(noisy, image.dims, 'image'), m);
  const emb = (await sessions.run('image_encoder', { image: clipResize(image, CLIP_SIZE) })).image_embeds;
  const dim = emb.dims[emb.dims.length - 1];
  const timeIds = Float32Array.of(p.fps - 1, required(p, 'motionBucketId'), aug);
  const encodeMs = performance.now() - t0;
  const plane = C * h * w;
  const { model, unetCalls } = branchedUnet(sessions, FRAMES_FIRST.dims(axes), (input, branches) => {
    const B = branches.length;
    const sample = new Float32Array(B * F * 2 * plane);
    const ehs = new Float32Array(B * dim);
    const ids = new Float32Array(B * 3);
    const s = input.inputScale;
    branches.forEach((br, b) => {
      for (let f = 0; f < F; f++) {
        const o = (b * F + f) * 2 * plane;
        for (let i = 0; i < plane; i++) sample[o + i] = s * input.x.data[f * plane + i];
        if (br === 'cond') sample.set(lat.data, o + plane);
      }
      if (br === 'cond') ehs.set(emb.data, b * dim);
      ids.set(timeIds, b * 3);
    });
    return {
      sample: tensor(sample, [B, F, 2 * C, h, w], 'unet.sample'),
      timestep: tensor(Float32Array.from(branches, () => input.modelTime), [B], 'unet.timestep'),
      encoder_hidden_states: tensor(ehs, [B, 1, dim], 'unet.encoder_hidden_states'),
      added_time_ids: tensor(ids, [B, 3], 'unet.added_time_ids'),
    };
  });
  return { model, unetCalls, encodeMs };
}

export const SVD: FamilyAdapter = {
  name: 'svd',
  layout: FRAMES_FIRST,
  condition,
  guidance: (p, model) => ({
    denoiser: perFrameGuidance(model, { min: required(p, 'minGuidanceScale'), max: required(p, 'maxGuidanceScale') }),
    branches: 2,
  }),
  // The temporal decoder mixes the frames of one call (its batch axis is num_frames), so chunking
  // would change them: all frames at once, as diffusers' and the CIL authors' pipelines do by
  // default (decode_chunk_size = num_frames).
  decodeBatch: (frames) => frames,
  authorStatistics: { expectation: 'Expectation_x_0', trCovD: 'trCov_d' },
};
