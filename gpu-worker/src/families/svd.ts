/**
 * Stable Video Diffusion, as diffusers' pipeline (and the CIL authors' SVD pipeline) conditions
 * it: the noise-augmented image latent (the VAE's unscaled mode) concatenated to every frame, the
 * CLIP image embedding, added time ids (fps − 1, motion bucket, augmentation strength), zeros for
 * the unconditional branch; a frames-first latent [1, F, C, h, w]; guidance that grows linearly
 * over the frames; and a temporal VAE decoder that decodes all frames in one call.
 */
import { perFrameGuidance, tensor } from '#shared/sampler';
import type { BranchName } from '#shared/sampler';
import { CLIP_SIZE } from '#shared/schemas';
import { clipResize } from '../clipResize.ts';
import { branchedUnet, encodeImageLatent } from '../conditioning.ts';
import type { UnetBatch } from '../conditioning.ts';
import { required } from '../params.ts';
import { latentAxesOf } from './adapter.ts';
import type { Conditioned, EncodeInput, FamilyAdapter } from './adapter.ts';
import { FRAMES_FIRST } from './layout.ts';
import type { LatentAxes } from './layout.ts';

/** What SVD's UNet batch is made of (`svdUnetBatch`). */
export interface SvdBatchParts {
  readonly axes: LatentAxes;
  readonly branches: readonly BranchName[];
  /** The noise-augmented image latent, [C, h, w]. */
  readonly imageLatent: Float32Array;
  /** The CLIP image embedding, [dim]. */
  readonly embedding: Float32Array;
  /** fps − 1, motion bucket, augmentation strength. */
  readonly timeIds: Float32Array;
}

/** SVD's batched feeds: the scaled sample with the image latent per frame, timestep, CLIP embedding, time ids. */
export function svdUnetBatch(p: SvdBatchParts): UnetBatch {
  const { channels: C, frames: F, h, w } = p.axes;
  const B = p.branches.length;
  const plane = C * h * w;
  const dim = p.embedding.length;
  return {
    specs: {
      sample: { dtype: 'float32', dims: [B, F, 2 * C, h, w] },
      timestep: { dtype: 'float32', dims: [B] },
      encoder_hidden_states: { dtype: 'float32', dims: [B, 1, dim] },
      added_time_ids: { dtype: 'float32', dims: [B, 3] },
    },
    // The image latent on every frame of the conditional branch (zeros for the other), the CLIP
    // embedding likewise, and the time ids: written once.
    init: (fd) => {
      const sample = fd.sample as Float32Array;
      p.branches.forEach((br, b) => {
        if (br === 'cond') {
          for (let f = 0; f < F; f++) sample.set(p.imageLatent, (b * F + f) * 2 * plane + plane);
          (fd.encoder_hidden_states as Float32Array).set(p.embedding, b * dim);
        }
        (fd.added_time_ids as Float32Array).set(p.timeIds, b * 3);
      });
    },
    step: (fd, input) => {
      const sample = fd.sample as Float32Array;
      const s = input.inputScale;
      const x = input.x.data;
      for (let b = 0; b < B; b++) {
        for (let f = 0; f < F; f++) {
          const o = (b * F + f) * 2 * plane;
          const xo = f * plane;
          for (let i = 0; i < plane; i++) sample[o + i] = s * x[xo + i];
        }
      }
      (fd.timestep as Float32Array).fill(input.modelTime);
    },
  };
}

async function condition({ bundle, sessions, image, params: p, gen }: EncodeInput): Promise<Conditioned> {
  const m = bundle.manifest;
  const t0 = performance.now();
  const axes = latentAxesOf(m, p.frames);
  const aug = required(p, 'noiseAugStrength');
  // The noise-augmentation noise is the generator's first draw (docs/rng.md: stream layout).
  const z = new Float32Array(image.data.length);
  gen.fill(z);
  const noisy = Float32Array.from(image.data, (v, i) => v + aug * z[i]);
  const lat = await encodeImageLatent(sessions, tensor(noisy, image.dims, 'image'), m);
  const emb = (await sessions.run('image_encoder', { image: clipResize(image, CLIP_SIZE) })).image_embeds;
  const timeIds = Float32Array.of(p.fps - 1, required(p, 'motionBucketId'), aug);
  const encodeMs = performance.now() - t0;
  const { model, unetCalls } = branchedUnet(sessions, FRAMES_FIRST.dims(axes), (branches) =>
    svdUnetBatch({ axes, branches, imageLatent: lat.data, embedding: emb.data, timeIds }),
  );
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
