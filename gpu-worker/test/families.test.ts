/**
 * The family adapters (gpu-worker/src/families): each family's latent layout, the UNet feeds it
 * builds (on the committed stand-in bundles of test/fixtures/golden, real ONNX graphs), its
 * guidance choice and its decode batching.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAMILY_NAMES, NormalGenerator, randn, tensor } from '#shared/sampler';
import type { BranchedModel, FamilyName, Tensor } from '#shared/sampler';
import { parseJobRequest, resolveRequest } from '#shared/schemas';
import { openBundle } from '../src/bundle.ts';
import type { Bundle } from '../src/bundle.ts';
import { decodeFrames } from '../src/decode.ts';
import { CHANNELS_FIRST, FAMILY_ADAPTERS, FRAMES_FIRST, latentAxesOf } from '../src/families/index.ts';
import { imageToTensor } from '../src/image.ts';
import type { GenerateParams } from '../src/params.ts';
import { GenerateInputError } from '../src/params.ts';
import { OnnxSessions } from '../src/runtime/sessions.ts';
import type { BoundSpec, Feed } from '../src/runtime/sessions.ts';
import { testImage } from '../../test/golden/cases.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUNDLES = join(ROOT, 'test', 'fixtures', 'golden', 'bundles');
const open: OnnxSessions[] = [];
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cil-families-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

function params(bundle: Bundle, request: Record<string, unknown> = {}): GenerateParams {
  const json = { model: bundle.manifest.id, analyticInit: false, seed: 1, ...request };
  return { ...resolveRequest({ request: parseJobRequest(json, 'test'), explicit: new Set(Object.keys(json)) }, bundle.manifest, () => 1, 'test'), saveLatent: false };
}

/** The stand-in bundle of a family, its sessions (every `run` recorded) and its input image. */
async function standIn(family: FamilyName) {
  const bundle = await openBundle(join(BUNDLES, family));
  const sessions = new OnnxSessions({ provider: 'cpu', threads: 1 });
  open.push(sessions);
  for (const [name, c] of Object.entries(bundle.manifest.components)) await sessions.open(name, join(bundle.root, c.file));
  const runs: { component: string; feeds: Record<string, Feed> }[] = [];
  const run = sessions.run.bind(sessions);
  sessions.run = (component, feeds, signal) => {
    runs.push({ component, feeds });
    return run(component, feeds, signal);
  };
  // The UNet's bound feeds (shared memory, rewritten each step): recorded as they are at the call.
  const runBound = sessions.runBound.bind(sessions);
  sessions.runBound = (b, signal) => {
    const feeds: Record<string, Feed> = {};
    const specs = boundSpecs.get(b.id)!;
    for (const [k, v] of Object.entries(b.inputs)) {
      feeds[k] = v instanceof Float32Array ? tensor(v.slice(), specs[k].dims) : { ints: Array.from(v, Number), dims: specs[k].dims };
    }
    runs.push({ component: b.component, feeds });
    return runBound(b, signal);
  };
  const boundSpecs = new Map<number, Readonly<Record<string, BoundSpec>>>();
  const bind = sessions.bind.bind(sessions);
  sessions.bind = async (component, specs) => {
    const b = await bind(component, specs);
    boundSpecs.set(b.id, specs);
    return b;
  };
  const { height: H, width: W } = bundle.manifest.resolution;
  const file = join(dir, `${family}.png`);
  await testImage(file, W, H);
  const image = await imageToTensor(await readFile(file), H, W, file);
  return { bundle, sessions, runs, image };
}

const dimsOf = (f: Feed): readonly number[] => f.dims;
const intsOf = (f: Feed): readonly number[] => ('ints' in f ? f.ints : []);

describe('latent layouts', () => {
  it('channels first and frames first place each (channel, frame) plane where the dims say', () => {
    const axes = { channels: 3, frames: 5, h: 2, w: 4 };
    for (const layout of [CHANNELS_FIRST, FRAMES_FIRST]) {
      const dims = layout.dims(axes);
      expect(layout.axes(dims)).toEqual(axes);
      expect(layout.axes(dims.slice(1))).toEqual(axes);
      expect(layout.axes([2, ...dims.slice(1)])).toBeNull();
      // Every plane index once, in row-major order of the two outer axes.
      const seen = new Set<number>();
      for (let c = 0; c < 3; c++) for (let f = 0; f < 5; f++) seen.add(layout.plane(c, f, axes));
      expect([...seen].sort((a, b) => a - b)).toEqual([...Array(15).keys()]);
    }
    expect(CHANNELS_FIRST.dims(axes)).toEqual([1, 3, 5, 2, 4]);
    expect(FRAMES_FIRST.dims(axes)).toEqual([1, 5, 3, 2, 4]);
    expect(CHANNELS_FIRST.plane(2, 1, axes)).toBe(2 * 5 + 1);
    expect(FRAMES_FIRST.plane(2, 1, axes)).toBe(1 * 3 + 2);
  });

  it('the VP families sample channels first, SVD frames first; SVD decodes all frames in one call', () => {
    expect(FAMILY_ADAPTERS.dynamicrafter.layout).toBe(CHANNELS_FIRST);
    expect(FAMILY_ADAPTERS.videocrafter.layout).toBe(CHANNELS_FIRST);
    expect(FAMILY_ADAPTERS.svd.layout).toBe(FRAMES_FIRST);
    expect(FAMILY_ADAPTERS.dynamicrafter.decodeBatch(16, 4)).toBe(4);
    expect(FAMILY_ADAPTERS.videocrafter.decodeBatch(16, 4)).toBe(4);
    expect(FAMILY_ADAPTERS.svd.decodeBatch(14, 4)).toBe(14);
    for (const f of FAMILY_NAMES) expect(FAMILY_ADAPTERS[f].name).toBe(f);
  });
});

describe('UNet feeds per family (stand-in bundles)', () => {
  async function feedsFor(family: FamilyName, request: Record<string, unknown> = {}) {
    const s = await standIn(family);
    const p = params(s.bundle, request);
    const adapter = FAMILY_ADAPTERS[family];
    const cond = await adapter.condition({ bundle: s.bundle, sessions: s.sessions, image: s.image, params: p, gen: NormalGenerator.fromSeed(3) });
    const dims = adapter.layout.dims(latentAxesOf(s.bundle.manifest, p.frames));
    const x = randn(dims, NormalGenerator.fromSeed(4));
    const out = await cond.model({ x, modelTime: 500, inputScale: 0.5, step: 0 }, ['cond', 'uncond']);
    const unet = s.runs.filter((r) => r.component === 'unet');
    expect(unet.length, 'one batch-2 call').toBe(1);
    expect(cond.unetCalls(2)).toBe(1);
    expect(out.cond!.dims).toEqual(dims);
    return { ...s, p, feeds: unet[0].feeds, x, dims };
  }

  it('dynamicrafter: x with the image latent concatenated (2C channels), context, frame stride fs', async () => {
    const { feeds, p, x, dims, bundle } = await feedsFor('dynamicrafter');
    const C = bundle.manifest.latent.channels;
    expect(Object.keys(feeds).sort()).toEqual(['context', 'fs', 'timestep', 'x']);
    expect(dimsOf(feeds.x)).toEqual([2, 2 * C, ...dims.slice(2)]);
    expect(intsOf(feeds.fs)).toEqual([p.frameStride, p.frameStride]);
    expect(intsOf(feeds.timestep)).toEqual([500, 500]);
    // The latent itself (DDIM feeds x unscaled) in the first C channels of each branch.
    expect(Array.from((feeds.x as Tensor).data.subarray(0, x.data.length))).toEqual(Array.from(x.data));
  });

  it('videocrafter: x alone (C channels), context, fps', async () => {
    const { feeds, p, dims } = await feedsFor('videocrafter', { fps: 12 });
    expect(Object.keys(feeds).sort()).toEqual(['context', 'fps', 'timestep', 'x']);
    expect(dimsOf(feeds.x)).toEqual([2, ...dims.slice(1)]);
    expect(intsOf(feeds.fps)).toEqual([12, 12]);
    expect(p.fps).toBe(12);
  });

  it('svd: scaled sample with the image latent on every frame, CLIP embedding (zeros uncond), added time ids', async () => {
    const { feeds, p, x, dims, bundle } = await feedsFor('svd', { motionBucketId: 60, noiseAugStrength: 0.05 });
    const C = bundle.manifest.latent.channels;
    const [, F, , h, w] = dims;
    expect(Object.keys(feeds).sort()).toEqual(['added_time_ids', 'encoder_hidden_states', 'sample', 'timestep']);
    expect(dimsOf(feeds.sample)).toEqual([2, F, 2 * C, h, w]);
    const ids = Array.from((feeds.added_time_ids as Tensor).data);
    expect(ids).toEqual(Array.from(Float32Array.of(p.fps - 1, 60, 0.05, p.fps - 1, 60, 0.05)));
    const ehs = (feeds.encoder_hidden_states as Tensor).data;
    const dim = ehs.length / 2;
    expect(ehs.subarray(0, dim).some((v) => v !== 0)).toBe(true);
    expect(ehs.subarray(dim).every((v) => v === 0)).toBe(true);
    const sample = (feeds.sample as Tensor).data;
    expect(sample[0]).toBeCloseTo(0.5 * x.data[0], 6);
    // The uncond branch has no image latent: zeros in the second half of its channels.
    const plane = C * h * w;
    expect(sample.subarray(F * 2 * plane + plane, F * 2 * plane + 2 * plane).every((v) => v === 0)).toBe(true);
  });
});

describe('guidance choice', () => {
  const model: BranchedModel = () => Promise.resolve({});
  const base = (family: FamilyName, over: Partial<GenerateParams>): GenerateParams => ({
    model: 'm', family, prompt: '', steps: 4, start: 900, analyticInit: false, statistics: null, guidanceScale: null, imageGuidanceScale: null,
    guidanceRescale: null, eta: null, seed: 0, frames: 4, fps: 8, frameStride: null, motionBucketId: null, noiseAugStrength: null,
    minGuidanceScale: null, maxGuidanceScale: null, outputs: ['png-frames'], compat: 'paper', saveLatent: false, ...over,
  });

  it('VP: CFG with two branches, one at scale 1; DynamiCrafter with an image scale: three (two-scale guidance)', () => {
    for (const f of ['dynamicrafter', 'videocrafter'] as const) {
      expect(FAMILY_ADAPTERS[f].guidance(base(f, { guidanceScale: 7.5, eta: 1 }), model).branches).toBe(2);
      expect(FAMILY_ADAPTERS[f].guidance(base(f, { guidanceScale: 1, eta: 1 }), model).branches).toBe(1);
    }
    expect(FAMILY_ADAPTERS.dynamicrafter.guidance(base('dynamicrafter', { guidanceScale: 7.5, imageGuidanceScale: 3 }), model).branches).toBe(3);
    // VideoCrafter1 has no image guidance (the request schema refuses the field for it).
    expect(FAMILY_ADAPTERS.videocrafter.guidance(base('videocrafter', { guidanceScale: 7.5, imageGuidanceScale: 3 }), model).branches).toBe(2);
  });

  it('SVD: per-frame guidance, two branches', () => {
    expect(FAMILY_ADAPTERS.svd.guidance(base('svd', { minGuidanceScale: 1, maxGuidanceScale: 3 }), model).branches).toBe(2);
  });

  it('a value the family needs but the parameters lack (not resolved against the manifest) is a GenerateInputError', () => {
    expect(() => FAMILY_ADAPTERS.dynamicrafter.guidance(base('dynamicrafter', {}), model)).toThrow(GenerateInputError);
    expect(() => FAMILY_ADAPTERS.svd.guidance(base('svd', { minGuidanceScale: 1 }), model)).toThrow(/maxGuidanceScale is null, but svd models need it/);
  });
});

describe('decodeFrames', () => {
  it('reads each frame from its planes in the family layout (svd: frames first, one call for all frames)', async () => {
    const s = await standIn('svd');
    const m = s.bundle.manifest;
    const F = 3;
    const axes = latentAxesOf(m, F);
    const latent = randn(FRAMES_FIRST.dims(axes), NormalGenerator.fromSeed(9));
    const frames = await decodeFrames(s.bundle, s.sessions, FAMILY_ADAPTERS.svd, latent, 1);
    const calls = s.runs.filter((r) => r.component === 'vae_decoder');
    expect(calls.length).toBe(1);
    const fed = calls[0].feeds.latent as Tensor;
    expect(fed.dims).toEqual([F, axes.channels, axes.h, axes.w]);
    // Frame-major input: the decoder's input is the latent (÷ scale factor) in the same order.
    const inv = 1 / m.latent.scaleFactor;
    expect(Array.from(fed.data)).toEqual(Array.from(latent.data, (v) => Math.fround(v * inv)));
    expect(frames.length).toBe(F * 3 * m.resolution.height * m.resolution.width);
  });

  it('channels-first latents are regrouped per frame and decoded in chunks', async () => {
    const s = await standIn('videocrafter');
    const m = s.bundle.manifest;
    const F = 3;
    const axes = latentAxesOf(m, F);
    const { channels: C, h, w } = axes;
    const data = new Float32Array(C * F * h * w);
    for (let c = 0; c < C; c++) for (let f = 0; f < F; f++) data.fill(100 * c + f, (c * F + f) * h * w, (c * F + f + 1) * h * w);
    await decodeFrames(s.bundle, s.sessions, FAMILY_ADAPTERS.videocrafter, tensor(data, CHANNELS_FIRST.dims(axes)), 2);
    const calls = s.runs.filter((r) => r.component === 'vae_decoder').map((r) => r.feeds.latent as Tensor);
    expect(calls.map((t) => t.dims[0])).toEqual([2, 1]);
    const inv = 1 / m.latent.scaleFactor;
    // Second call: frame 2, channel c is the constant 100·c + 2.
    for (let c = 0; c < C; c++) expect(calls[1].data[c * h * w]).toBeCloseTo((100 * c + 2) * inv, 4);
  });
});
