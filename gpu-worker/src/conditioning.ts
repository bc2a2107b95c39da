/**
 * Per-family conditioning, as the reference pipelines build it (docs/bundles.md), turned into a
 * `BranchedModel` for the shared sampler. The UNet runs every requested branch as ONE call with
 * batch = number of branches when its batch axis is dynamic, else one call per branch.
 */
import { join } from 'node:path';
import type { BranchName, BranchedModel, Branches, DenoiserInput } from '#shared/sampler';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import type { NormalGenerator } from '#shared/sampler';
import type { Manifest } from '#shared/schemas';
import { CLIP_SIZE } from '#shared/schemas';
import type { Bundle } from './bundle.ts';
import { clipResize } from './clipResize.ts';
import type { Feed, OnnxSessions } from './runtime/sessions.ts';
import { loadTokenizer } from './tokenizer.ts';

/** The parameters conditioning needs (resolved from the job request and the manifest). */
export interface ConditioningParams {
  readonly prompt: string;
  readonly frames: number;
  readonly fps: number;
  readonly frameStride: number | null;
  readonly motionBucketId: number | null;
  readonly noiseAugStrength: number | null;
}

export interface Conditioned {
  /** The latent the sampler works on ([1, C, F, h, w] for DDIM families, [1, F, C, h, w] for SVD). */
  readonly latentDims: readonly number[];
  readonly model: BranchedModel;
  /** UNet calls per step for a given number of branches. */
  unetCalls(branches: number): number;
  /** Timings (ms) of the encode phase. */
  readonly encodeMs: number;
}

const concat = (parts: readonly Float32Array[]): Float32Array => {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

function unetBatchable(sessions: OnnxSessions): boolean {
  const first = sessions.info('unet').inputs[0];
  return typeof first.shape[0] === 'string';
}

/** Splits a [B, …] output into B tensors of [1, …]. */
function splitBatch(t: Tensor, n: number, dims: readonly number[]): Tensor[] {
  const per = t.data.length / n;
  return Array.from({ length: n }, (_, b) => tensor(t.data.subarray(b * per, (b + 1) * per), dims, `unet.out[${b}]`));
}

/**
 * Runs the UNet over the requested branches; `feedsFor(branches)` builds the batched feeds.
 * Batch-2 (or 3) when possible, else one call per branch.
 */
function branchedUnet(
  sessions: OnnxSessions,
  latentDims: readonly number[],
  feedsFor: (input: DenoiserInput, branches: readonly BranchName[]) => Record<string, Feed>,
): { model: BranchedModel; unetCalls: (n: number) => number } {
  const batchable = unetBatchable(sessions);
  const model: BranchedModel = async (input, branches) => {
    const groups = batchable ? [branches] : branches.map((b) => [b]);
    const out: Branches = {};
    for (const g of groups) {
      const r = await sessions.run('unet', feedsFor(input, g), input.signal);
      const o = r.out;
      if (!o) throw new Error('unet produced no output named "out"');
      if (o.data.length !== g.length * latentDims.reduce((a, b) => a * b, 1)) {
        throw new Error(`unet output 'out' has dims [${o.dims.join(', ')}], expected [${g.length}, ${latentDims.slice(1).join(', ')}]`);
      }
      splitBatch(o, g.length, latentDims).forEach((t, i) => (out[g[i]] = t));
    }
    return out;
  };
  return { model, unetCalls: (n) => (batchable ? 1 : n) };
}

async function encodeImageLatent(sessions: OnnxSessions, image: Tensor, m: Manifest): Promise<Tensor> {
  const r = await sessions.run('vae_encoder', { image });
  const lat = r.latent;
  const h = m.resolution.height / m.latent.downsample;
  const w = m.resolution.width / m.latent.downsample;
  if (lat.data.length !== m.latent.channels * h * w) {
    throw new Error(`vae_encoder output 'latent' has dims [${lat.dims.join(', ')}], expected [1, ${m.latent.channels}, ${h}, ${w}]`);
  }
  return lat;
}

async function textEmbeds(bundle: Bundle, sessions: OnnxSessions, prompts: readonly string[]): Promise<Tensor[]> {
  const m = bundle.manifest;
  if (!m.tokenizer) throw new Error(`${bundle.source}: manifest has no tokenizer`);
  const tok = await loadTokenizer(join(bundle.root, m.tokenizer.file), m.tokenizer.maxLength);
  const out: Tensor[] = [];
  for (const p of prompts) {
    const ids = tok.encode(p);
    const r = await sessions.run('text_encoder', { input_ids: { ints: ids, dims: [1, ids.length] } });
    out.push(r.text_embeds);
  }
  return out;
}

/** DynamiCrafter and VideoCrafter1: text + CLIP-image cross-attention context; DynamiCrafter adds the concat latent. */
async function vpConditioning(bundle: Bundle, sessions: OnnxSessions, image: Tensor, p: ConditioningParams): Promise<Conditioned> {
  const m = bundle.manifest;
  const t0 = performance.now();
  const C = m.latent.channels;
  const F = p.frames;
  const h = m.resolution.height / m.latent.downsample;
  const w = m.resolution.width / m.latent.downsample;
  const latentDims = [1, C, F, h, w];
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
  let concatLatent: Float32Array | null = null;
  if (m.family === 'dynamicrafter') {
    // The image latent (× scale factor, as encode_first_stage) repeated over frames: [C, F, h, w].
    const lat = await encodeImageLatent(sessions, image, m);
    concatLatent = new Float32Array(C * F * h * w);
    for (let c = 0; c < C; c++) {
      for (let f = 0; f < F; f++) {
        for (let i = 0; i < h * w; i++) concatLatent[(c * F + f) * h * w + i] = lat.data[c * h * w + i] * m.latent.scaleFactor;
      }
    }
  }
  const encodeMs = performance.now() - t0;
  const perX = C * F * h * w;
  const { model, unetCalls } = branchedUnet(sessions, latentDims, (input, branches) => {
    const B = branches.length;
    const chans = concatLatent ? 2 * C : C;
    const x = new Float32Array(B * chans * F * h * w);
    for (let b = 0; b < B; b++) {
      const base = b * chans * F * h * w;
      x.set(input.x.data, base);
      if (concatLatent) x.set(concatLatent, base + perX);
    }
    const context = concat(branches.map((br) => contexts[br]));
    const feeds: Record<string, Feed> = {
      x: tensor(x, [B, chans, F, h, w], 'unet.x'),
      timestep: { ints: branches.map(() => input.modelTime), dims: [B] },
      context: tensor(context, [B, ctxTokens, dim], 'unet.context'),
    };
    if (m.family === 'dynamicrafter') feeds.fs = { ints: branches.map(() => p.frameStride ?? 1), dims: [B] };
    else feeds.fps = { ints: branches.map(() => p.fps), dims: [B] };
    return feeds;
  });
  return { latentDims, model, unetCalls, encodeMs };
}

/** SVD: noise-augmented image latent (unscaled mode, as diffusers), CLIP image embedding, added time ids; zeros for uncond. */
async function svdConditioning(bundle: Bundle, sessions: OnnxSessions, image: Tensor, p: ConditioningParams, gen: NormalGenerator): Promise<Conditioned> {
  const m = bundle.manifest;
  const t0 = performance.now();
  const C = m.latent.channels;
  const F = p.frames;
  const h = m.resolution.height / m.latent.downsample;
  const w = m.resolution.width / m.latent.downsample;
  const latentDims = [1, F, C, h, w];
  const aug = p.noiseAugStrength ?? 0.02;
  // The noise-augmentation noise is the generator's first draw (docs/rng.md: stream layout).
  const z = new Float32Array(image.data.length);
  gen.fill(z);
  const noisy = Float32Array.from(image.data, (v, i) => v + aug * z[i]);
  const lat = await encodeImageLatent(sessions, tensor(noisy, image.dims, 'image'), m);
  const emb = (await sessions.run('image_encoder', { image: clipResize(image, CLIP_SIZE) })).image_embeds;
  const dim = emb.dims[emb.dims.length - 1];
  const timeIds = Float32Array.of(p.fps - 1, p.motionBucketId ?? 127, aug);
  const encodeMs = performance.now() - t0;
  const plane = C * h * w;
  const { model, unetCalls } = branchedUnet(sessions, latentDims, (input, branches) => {
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
  return { latentDims, model, unetCalls, encodeMs };
}

export function prepareConditioning(bundle: Bundle, sessions: OnnxSessions, image: Tensor, p: ConditioningParams, gen: NormalGenerator): Promise<Conditioned> {
  return bundle.manifest.family === 'svd' ? svdConditioning(bundle, sessions, image, p, gen) : vpConditioning(bundle, sessions, image, p);
}

/**
 * Decodes the final latent frame by frame in chunks (bounded memory): returns [F, 3, H, W] in
 * [−1, 1]. The latent is divided by the scale factor first.
 *
 * SVD's temporal decoder mixes the frames of one call (the batch axis is its num_frames), so
 * chunking changes the frames: it decodes all F frames in one call, as diffusers' and the CIL
 * authors' pipelines do by default (decode_chunk_size = num_frames). `chunk` applies to the
 * per-frame VAEs of DynamiCrafter and VideoCrafter1 only.
 */
export async function decodeFrames(bundle: Bundle, sessions: OnnxSessions, latent: Tensor, chunk = 4, signal?: AbortSignal): Promise<Float32Array> {
  const m = bundle.manifest;
  const svd = m.family === 'svd';
  const C = m.latent.channels;
  const F = svd ? latent.dims[1] : latent.dims[2];
  const h = latent.dims[3];
  const w = latent.dims[4];
  const H = m.resolution.height;
  const W = m.resolution.width;
  const batchable = typeof sessions.info('vae_decoder').inputs[0].shape[0] === 'string';
  const step = !batchable ? 1 : svd ? F : Math.max(1, chunk);
  const out = new Float32Array(F * 3 * H * W);
  const inv = 1 / m.latent.scaleFactor;
  for (let f0 = 0; f0 < F; f0 += step) {
    const n = Math.min(step, F - f0);
    const buf = new Float32Array(n * C * h * w);
    for (let k = 0; k < n; k++) {
      const f = f0 + k;
      for (let c = 0; c < C; c++) {
        const src = svd ? (f * C + c) * h * w : (c * F + f) * h * w;
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
