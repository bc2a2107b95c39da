/**
 * The worker's host work per step around the UNet (issue 17, "zero-copy steps"): the real loop
 * (denoise → guidance → the family's UNet batch → the inference thread → onnxruntime) around a
 * stub UNet with the real model's tensor sizes, DynamiCrafter 320×512 × 16 frames (batch-2 CFG
 * with rescale) and SVD 576×1024 × 14 frames (batch-2 per-frame guidance). The stub's output is a
 * slice of its input, so onnxruntime's own time is small and measured apart (the thread's run time).
 *
 * - hostMsPerStep: step wall time − the network's run time − the sampler's own math (guidance
 *   reduction, noise, fused update: the same steps with the network's outputs precomputed), the
 *   median over steps: what the worker adds around each call (feeds, hand-off, outputs, progress,
 *   checkpoint bookkeeping).
 * - hostAllocMBPerStep: new memory per step, the median over steps: the main thread's ArrayBuffer
 *   growth during the step plus the output buffers the inference thread sends (onnxruntime-node
 *   returns every output in a new ArrayBuffer of its own, even into preallocated fetches, so the
 *   output's bytes are a floor for any caller of onnxruntime-node on the CPU).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cfg, makePlan, NormalGenerator, perFrameGuidance, randn, sample, tensor } from '#shared/sampler';
import type { BranchedModel, BranchName, GuidedDenoiser, StepCoefs } from '#shared/sampler';
import { encodeModel, GraphBuilder } from '../demo/src/onnx/graph.ts';
import { branchedUnet } from '../gpu-worker/src/conditioning.ts';
import { svdUnetBatch } from '../gpu-worker/src/families/svd.ts';
import { vpUnetBatch } from '../gpu-worker/src/families/vp.ts';
import { Checkpoints } from '../gpu-worker/src/generate/checkpoint.ts';
import { denoise } from '../gpu-worker/src/generate/denoise.ts';
import { OnnxSessions } from '../gpu-worker/src/runtime/sessions.ts';
import type { OutputSink } from '../gpu-worker/src/sink.ts';
import { median } from './util.ts';

/** DynamiCrafter 320×512, 16 frames: latent [1, 4, 16, 40, 64]; context 77 text + 256 image tokens × 1024. */
export const DC = { channels: 4, frames: 16, h: 40, w: 64, ctxTokens: 77 + 256, dim: 1024 } as const;
/** SVD 576×1024, 14 frames: latent [1, 14, 4, 72, 128]; CLIP embedding 1024. */
export const SVD = { channels: 4, frames: 14, h: 72, w: 128, dim: 1024 } as const;

/** Bench shapes (real sizes), named apart from the families so no family logic lives here. */
export type Shape = 'dc-320x512' | 'svd-576x1024';
/** A shape's latent and conditioning sizes (bench/gpu.ts passes other ones: tiny widths, real UNets). */
export interface Geom {
  readonly channels: number;
  readonly frames: number;
  readonly h: number;
  readonly w: number;
  readonly dim: number;
  readonly ctxTokens?: number;
}
const geomOf = (shape: Shape): Geom => (shape === 'dc-320x512' ? DC : SVD);

/** The stub UNet: the real inputs, out = the first C channels of the latent input. */
function stubUnet(shape: Shape): Uint8Array {
  const g = new GraphBuilder(`stub_unet_${shape}`);
  if (shape === 'dc-320x512') {
    const { channels: C, frames: F, h, w, ctxTokens, dim } = DC;
    const x = g.input('x', 'float32', ['batch', 2 * C, F, h, w]);
    g.input('timestep', 'int64', ['batch']);
    g.input('context', 'float32', ['batch', ctxTokens, dim]);
    g.input('fs', 'int64', ['batch']);
    const out = g.op('Slice', [x, g.constInt64([0]), g.constInt64([C]), g.constInt64([1])]);
    g.output(out, 'float32', ['batch', C, F, h, w], 'out');
  } else {
    const { channels: C, frames: F, h, w, dim } = SVD;
    const x = g.input('sample', 'float32', ['batch', F, 2 * C, h, w]);
    g.input('timestep', 'float32', ['batch']);
    g.input('encoder_hidden_states', 'float32', ['batch', 1, dim]);
    g.input('added_time_ids', 'float32', ['batch', 3]);
    const out = g.op('Slice', [x, g.constInt64([0]), g.constInt64([C]), g.constInt64([2])]);
    g.output(out, 'float32', ['batch', F, C, h, w], 'out');
  }
  return encodeModel(g);
}

const nullSink: OutputSink = { location: 'memory', put: () => Promise.resolve(), get: () => Promise.resolve(null), delete: () => Promise.resolve() };

export interface Setup {
  readonly steps: readonly StepCoefs[];
  readonly dims: number[];
  readonly guided: (model: BranchedModel) => GuidedDenoiser;
}

export function setup(shape: Shape, g: Geom = geomOf(shape), steps?: number): Setup {
  if (shape === 'dc-320x512') {
    const plan = makePlan({ family: 'dynamicrafter', steps: steps ?? 50, start: 940 });
    return { steps: plan.steps, dims: [1, g.channels, g.frames, g.h, g.w], guided: (m) => cfg(m, { scale: 7.5, rescale: 0.7 }) };
  }
  const plan = makePlan({ family: 'svd', steps: steps ?? 25, start: 700 });
  return { steps: plan.steps, dims: [1, g.frames, g.channels, g.h, g.w], guided: (m) => perFrameGuidance(m, { min: 1, max: 3 }) };
}

function unetModel(shape: Shape, sessions: OnnxSessions, dims: readonly number[], g: Geom): BranchedModel {
  const gen = NormalGenerator.fromSeed(11);
  const rnd = (n: number): Float32Array => {
    const a = new Float32Array(n);
    gen.fill(a);
    return a;
  };
  if (shape === 'dc-320x512') {
    const { channels: C, frames: F, h, w, dim } = g;
    const ctxTokens = g.ctxTokens ?? DC.ctxTokens;
    const ctx = (): Float32Array => rnd(ctxTokens * dim);
    const contexts: Record<BranchName, Float32Array> = { cond: ctx(), uncond: ctx(), uncondImage: ctx() };
    const concatLatent = rnd(C * F * h * w);
    const axes = { channels: C, frames: F, h, w };
    return branchedUnet(sessions, dims, (branches) => vpUnetBatch({ axes, branches, contexts, ctxTokens, dim, concatLatent, rateInput: 'fs', rate: 24 })).model;
  }
  const { channels: C, frames: F, h, w, dim } = g;
  const axes = { channels: C, frames: F, h, w };
  return branchedUnet(sessions, dims, (branches) =>
    svdUnetBatch({ axes, branches, imageLatent: rnd(C * h * w), embedding: rnd(dim), timeIds: Float32Array.of(6, 127, 0.02) }),
  ).model;
}

export interface HostBench {
  readonly hostMsPerStep: number;
  readonly hostAllocMBPerStep: number;
  /** Of hostAllocMBPerStep, the output buffers onnxruntime-node allocated (median per step): the floor. */
  readonly ortOutputMBPerStep: number;
  /** Parts, for reading the numbers: step wall, network run and sampler math (ms, medians). */
  readonly stepMs: number;
  readonly networkMs: number;
  readonly samplerMs: number;
}

/** One job's steps through the real loop; per-step wall, network and new-memory figures. */
export async function loop(shape: Shape, sessions: OnnxSessions, s: Setup, withMemory: boolean, g: Geom = geomOf(shape)): Promise<{ wall: number[]; net: number[]; mb: number[]; ortMb: number[] }> {
  const model = unetModel(shape, sessions, s.dims, g);
  // The output buffers the inference thread sends (each one new, see the header).
  let outBytes = 0;
  const runBound = sessions.runBound.bind(sessions);
  sessions.runBound = async (b, signal) => {
    const r = await runBound(b, signal);
    for (const t of Object.values(r)) outBytes += t.data.buffer.byteLength;
    return r;
  };
  const wall: number[] = [];
  const net: number[] = [];
  const mb: number[] = [];
  const ortMb: number[] = [];
  let t = performance.now();
  let ms = sessions.runMs.get('unet') ?? 0;
  let ab = withMemory ? process.memoryUsage().arrayBuffers : 0;
  let ob = 0;
  await denoise({
    steps: s.steps,
    x0: randn(s.dims, NormalGenerator.fromSeed(1)),
    resume: null,
    denoiser: s.guided(model),
    gen: NormalGenerator.fromSeed(2),
    checkpoints: new Checkpoints(nullSink, 'bench', s.dims),
    checkpointEvery: 10,
    onStep: () => {
      const now = performance.now();
      const m = sessions.runMs.get('unet') ?? 0;
      wall.push(now - t);
      net.push(m - ms);
      if (withMemory) {
        const a = process.memoryUsage().arrayBuffers;
        mb.push((a - ab + outBytes - ob) / 1e6);
        ortMb.push((outBytes - ob) / 1e6);
        ab = a;
        ob = outBytes;
      }
      ms = m;
      t = performance.now();
    },
  });
  return { wall, net, mb, ortMb };
}

/** The same steps with the network's outputs precomputed: the sampler's own math per step. */
async function samplerOnly(s: Setup): Promise<number[]> {
  const n = s.dims.reduce((a, b) => a * b, 1);
  const out = randn([2 * n], NormalGenerator.fromSeed(3)).data;
  const branches = { cond: tensor(out.subarray(0, n), s.dims), uncond: tensor(out.subarray(n), s.dims) };
  const model: BranchedModel = () => Promise.resolve(branches);
  const times: number[] = [];
  let t = performance.now();
  await sample({
    steps: s.steps,
    x: randn(s.dims, NormalGenerator.fromSeed(1)),
    denoiser: s.guided(model),
    noise: NormalGenerator.fromSeed(2),
    onStep: () => {
      const now = performance.now();
      times.push(now - t);
      t = now;
    },
  });
  return times;
}

export async function benchHost(shape: Shape): Promise<HostBench> {
  const dir = mkdtempSync(join(tmpdir(), 'cil-bench-host-'));
  const sessions = new OnnxSessions({ provider: 'cpu', threads: 1 });
  try {
    const file = join(dir, 'unet.onnx');
    writeFileSync(file, stubUnet(shape));
    await sessions.open('unet', file);
    const s = setup(shape);
    await loop(shape, sessions, s, false); // warm-up: compiles the loop, binds, faults the pages in
    const timed = await loop(shape, sessions, s, false);
    const mem = await loop(shape, sessions, s, true);
    await samplerOnly(s);
    const math = await samplerOnly(s);
    // The first step of a job binds the feeds (once per job): left out of the per-step medians.
    const stepMs = median(timed.wall.slice(1));
    const networkMs = median(timed.net.slice(1));
    const samplerMs = median(math.slice(1));
    const hostMs = median(timed.wall.slice(1).map((w, i) => w - timed.net[i + 1])) - samplerMs;
    return { hostMsPerStep: Math.max(0, hostMs), hostAllocMBPerStep: median(mem.mb.slice(1)), ortOutputMBPerStep: median(mem.ortMb.slice(1)), stepMs, networkMs, samplerMs };
  } finally {
    await sessions.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  for (const shape of ['dc-320x512', 'svd-576x1024'] as const) process.stdout.write(`${shape} ${JSON.stringify(await benchHost(shape))}\n`);
}
