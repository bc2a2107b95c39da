/**
 * The VP (DDIM) families, DynamiCrafter and VideoCrafter1, as the reference pipelines condition
 * them (docs/bundles.md): a text + CLIP-image cross-attention context, a channels-first latent
 * [1, C, F, h, w], classifier-free guidance (with rescale), and a per-frame VAE decoder.
 * DynamiCrafter adds the image latent concatenated to x, a frame-stride input and two-scale
 * guidance; VideoCrafter1 conditions on fps.
 */
import { cfg, REQUEST_FALLBACKS, tensor, twoScaleGuidance } from '#shared/sampler';
import type { BranchName, FamilyName, Tensor } from '#shared/sampler';
import { CLIP_SIZE } from '#shared/schemas';
import { clipResize } from '../clipResize.ts';
import { branchedUnet, concat, encodeImageLatent, fillInts, textEmbeds } from '../conditioning.ts';
import type { UnetBatch } from '../conditioning.ts';
import { required } from '../params.ts';
import { latentAxesOf } from './adapter.ts';
import type { Conditioned, EncodeInput, FamilyAdapter } from './adapter.ts';
import { CHANNELS_FIRST } from './layout.ts';
import type { LatentAxes } from './layout.ts';

export interface VpFamilyOptions {
  readonly name: FamilyName;
  /** DynamiCrafter: the image latent (× scale factor), repeated over frames, is concatenated to x on the channel axis. */
  readonly concatImageLatent: boolean;
  /** The UNet's frame-rate input: DynamiCrafter's frame stride `fs`, or VideoCrafter1's `fps`. */
  readonly rateInput: 'fs' | 'fps';
  /** DynamiCrafter: a set imageGuidanceScale switches to two-scale (text, image) guidance. */
  readonly twoScaleGuidance: boolean;
}

/** The image latent (× scale factor, as encode_first_stage) repeated over frames: [C, F, h, w]. */
function repeatedImageLatent(lat: Tensor, channels: number, frames: number, hw: number, scaleFactor: number): Float32Array {
  const out = new Float32Array(channels * frames * hw);
  for (let c = 0; c < channels; c++) {
    for (let f = 0; f < frames; f++) {
      for (let i = 0; i < hw; i++) out[(c * frames + f) * hw + i] = lat.data[c * hw + i] * scaleFactor;
    }
  }
  return out;
}

/** What a VP family's UNet batch is made of (`vpUnetBatch`). */
export interface VpBatchParts {
  readonly axes: LatentAxes;
  readonly branches: readonly BranchName[];
  /** Each branch's cross-attention context, [ctxTokens, dim]. */
  readonly contexts: Readonly<Record<BranchName, Float32Array>>;
  readonly ctxTokens: number;
  readonly dim: number;
  /** DynamiCrafter's repeated image latent [C, F, h, w], concatenated to x on the channel axis. */
  readonly concatLatent: Float32Array | null;
  readonly rateInput: 'fs' | 'fps';
  readonly rate: number;
}

/** The VP UNet's batched feeds: x (with the image latent), timestep, context and the rate. */
export function vpUnetBatch(p: VpBatchParts): UnetBatch {
  const { channels: C, frames: F, h, w } = p.axes;
  const B = p.branches.length;
  const perX = C * F * h * w;
  const chans = p.concatLatent ? 2 * C : C;
  return {
    specs: {
      x: { dtype: 'float32', dims: [B, chans, F, h, w] },
      timestep: { dtype: 'int64', dims: [B] },
      context: { dtype: 'float32', dims: [B, p.ctxTokens, p.dim] },
      [p.rateInput]: { dtype: 'int64', dims: [B] },
    },
    init: (f) => {
      const x = f.x as Float32Array;
      if (p.concatLatent) for (let b = 0; b < B; b++) x.set(p.concatLatent, b * chans * F * h * w + perX);
      (f.context as Float32Array).set(concat(p.branches.map((br) => p.contexts[br])));
      fillInts(f[p.rateInput], p.rate);
    },
    step: (f, input) => {
      const x = f.x as Float32Array;
      for (let b = 0; b < B; b++) x.set(input.x.data, b * chans * F * h * w);
      fillInts(f.timestep, input.modelTime);
    },
  };
}

async function condition(o: VpFamilyOptions, { bundle, sessions, image, params: p }: EncodeInput): Promise<Conditioned> {
  const m = bundle.manifest;
  const t0 = performance.now();
  const axes = latentAxesOf(m, p.frames);
  const { channels: C, frames: F, h, w } = axes;
  const [textCond, textEmpty] = await textEmbeds(bundle, sessions, [p.prompt, '']);
  const img224 = clipResize(image, CLIP_SIZE);
  const imgEmb = (await sessions.run('image_encoder', { image: img224 })).image_embeds;
  const zeroEmb = (await sessions.run('image_encoder', { image: tensor(new Float32Array(img224.data.length), img224.dims) })).image_embeds;
  const ctx = (text: Tensor, img: Tensor): Float32Array => concat([text.data, img.data]);
  const ctxTokens = textEmpty.dims[1] + imgEmb.dims[1];
  const dim = textEmpty.dims[2];
  if (imgEmb.dims[2] !== dim) throw new Error(`image_embeds dim ${imgEmb.dims[2]} differs from text_embeds dim ${dim}`);
  const contexts: Record<BranchName, Float32Array> = {
    cond: ctx(textCond, imgEmb),
    uncond: ctx(textEmpty, zeroEmb),
    uncondImage: ctx(textEmpty, imgEmb),
  };
  const concatLatent = o.concatImageLatent
    ? repeatedImageLatent(await encodeImageLatent(sessions, image, m), C, F, h * w, m.latent.scaleFactor)
    : null;
  const rate = o.rateInput === 'fs' ? required(p, 'frameStride') : p.fps;
  const encodeMs = performance.now() - t0;
  const { model, unetCalls } = branchedUnet(sessions, CHANNELS_FIRST.dims(axes), (branches) =>
    vpUnetBatch({ axes, branches, contexts, ctxTokens, dim, concatLatent, rateInput: o.rateInput, rate }),
  );
  return { model, unetCalls, encodeMs };
}

export function vpFamily(o: VpFamilyOptions): FamilyAdapter {
  return {
    name: o.name,
    layout: CHANNELS_FIRST,
    condition: (i) => condition(o, i),
    guidance: (p, model) => {
      const text = required(p, 'guidanceScale');
      if (o.twoScaleGuidance && p.imageGuidanceScale !== null) {
        return { denoiser: twoScaleGuidance(model, { text, image: p.imageGuidanceScale }), branches: 3 };
      }
      // A scale of 1 is the conditional branch alone (cfg skips the unconditional one).
      const rescale = p.guidanceRescale ?? REQUEST_FALLBACKS.guidanceRescale;
      return { denoiser: cfg(model, { scale: text, rescale }), branches: text === 1 ? 1 : 2 };
    },
    decodeBatch: (_frames, chunk) => Math.max(1, chunk),
    // DynamiCrafter's and VideoCrafter1's scripts share these names.
    authorStatistics: { expectation: 'Expectation_X0', trCovD: 'Tr_Cov_d' },
  };
}
