/**
 * Sampler-step benchmarks (issue: foundation). The network is replaced by precomputed outputs, so
 * this measures the sampler's own per-step work: guidance (with its rescale reduction), noise
 * generation and the fused update.
 */
import { cfg, perFrameGuidance } from '#shared/sampler';
import type { BranchedModel } from '#shared/sampler';
import { makePlan } from '#shared/sampler';
import { fusedUpdate } from '#shared/sampler';
import { NormalGenerator } from '#shared/sampler';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import { kernelBackend, setKernelBackend } from '#shared/sampler';
import type { KernelBackend } from '#shared/sampler';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { median, timeMs } from './util.ts';

const NOISE_FIRST = fileURLToPath(new URL('./noiseFirst.ts', import.meta.url));

/** Median over `runs` fresh processes of the first fill and of the third (warm) one. */
function noiseFirstMs(backend: 'wasm' | 'js', runs = 3): { first: number; third: number } {
  const first: number[] = [];
  const third: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = spawnSync(process.execPath, [NOISE_FIRST, backend], { encoding: 'utf8' });
    const { ms } = JSON.parse(r.stdout) as { ms: number[] };
    first.push(ms[0]);
    third.push(ms[2]);
  }
  return { first: median(first), third: median(third) };
}

export const DDIM_DIMS = [1, 4, 16, 40, 64]; // DynamiCrafter 320×512, 16 frames
export const EULER_DIMS = [1, 14, 4, 72, 128]; // SVD 576×1024, 14 frames

function randn(dims: number[], seed: number): Tensor {
  const d = new Float32Array(dims.reduce((a, b) => a * b, 1));
  NormalGenerator.fromSeed(seed).fill(d);
  return tensor(d, dims);
}

export interface SamplerBench {
  ddimStepMs: number;
  eulerStepMs: number;
  /** Out-of-cache copy bandwidth (256 MB arrays), the reference of ddimStepVsMemcpy. */
  memcpyGBps: number;
  memcpyInCacheGBps: number;
  noiseFillMs: number;
  /** Bytes the DDIM step moves (reduction pass, noise write, fused update) per ms → GB/s. */
  ddimStepGBps: number;
  eulerStepGBps: number;
  ddimStepVsMemcpy: number;
  /** The backend of the numbers above ('wasm-simd' where available). */
  kernelBackend: KernelBackend;
  /** The same step and fill on the JavaScript fallback (the loops before issue 17's kernels). */
  ddimStepMsJs: number;
  noiseFillMsJs: number;
  eulerStepMsJs: number;
  /** The first fill of a fresh process, and its third, per backend (bench/noiseFirst.ts). */
  noiseFirstFillMs: number;
  noiseThirdFillMs: number;
  noiseFirstFillMsJs: number;
  noiseThirdFillMsJs: number;
}

/** 64 Mi floats: 256 MB per array, past any last-level cache. */
const OUT_OF_CACHE_ELEMENTS = 64 * 1024 * 1024;

export async function benchSampler(runs = 60): Promise<SamplerBench> {
  // DDIM: DynamiCrafter step — CFG 7.5 + rescale 0.7, v-prediction, dynamic rescale, η = 1.
  const plan = makePlan({ family: 'dynamicrafter', steps: 50, start: 940 });
  const step = plan.steps[20];
  const c = randn(DDIM_DIMS, 1);
  const u = randn(DDIM_DIMS, 2);
  const x = randn(DDIM_DIMS, 3);
  const model: BranchedModel = () => Promise.resolve({ cond: c, uncond: u });
  const guided = cfg(model, { scale: 7.5, rescale: 0.7 });
  const gen = NormalGenerator.fromSeed(4);
  const z = new Float32Array(x.data.length);
  const input = { x, modelTime: step.modelTime, inputScale: 1, step: 20 };
  const ddimStep = (): Promise<number> => timeMs(async () => {
    const g = await guided(input);
    gen.fill(z);
    fusedUpdate(x.data, step, g, z);
  }, runs);
  const backend = kernelBackend();
  setKernelBackend('js');
  const ddimStepMsJs = await ddimStep();
  const noiseFillMsJs = await timeMs(() => gen.fill(z), runs);
  setKernelBackend(backend);
  const ddimStepMs = await ddimStep();
  const noiseFillMs = await timeMs(() => gen.fill(z), runs);

  // Euler: SVD step with per-frame guidance (1 → 3).
  const ep = makePlan({ family: 'svd', steps: 25, start: 700 });
  const es = ep.steps[10];
  const ec = randn(EULER_DIMS, 5);
  const eu = randn(EULER_DIMS, 6);
  const ex = randn(EULER_DIMS, 7);
  const eg = perFrameGuidance(() => Promise.resolve({ cond: ec, uncond: eu }), { min: 1, max: 3 });
  const einput = { x: ex, modelTime: es.modelTime, inputScale: es.inputScale, step: 10 };
  const eulerStep = (): Promise<number> => timeMs(async () => {
    fusedUpdate(ex.data, es, await eg(einput), null);
  }, runs);
  setKernelBackend('js');
  const eulerStepMsJs = await eulerStep();
  setKernelBackend(backend);
  const eulerStepMs = await eulerStep();
  const wasmFirst = noiseFirstMs('wasm');
  const jsFirst = noiseFirstMs('js');

  // Single-thread copy bandwidth (read + write bytes), the reference of a memory-bound step: out of
  // cache (256 MB each way, larger than any last-level cache), as the issue defines the field, and
  // in cache (a DDIM-latent-sized array, 655 kB), the figure earlier runs reported.
  const src = randn(DDIM_DIMS, 8).data;
  const dst = new Float32Array(src.length);
  const memMs = await timeMs(() => dst.set(src), runs * 4);
  const n = src.length;
  const memcpyInCacheGBps = (2 * n * 4) / (memMs * 1e6);
  const bigSrc = new Float32Array(OUT_OF_CACHE_ELEMENTS).fill(1);
  const bigDst = new Float32Array(OUT_OF_CACHE_ELEMENTS);
  bigDst.set(bigSrc); // first touch of the destination's pages, outside the timing
  const bigMs = await timeMs(() => bigDst.set(bigSrc), 5);
  const memcpyGBps = (2 * OUT_OF_CACHE_ELEMENTS * 4) / (bigMs * 1e6);
  // DDIM step traffic: rescale reduction reads c,u; noise fill writes z; update reads x,c,u,z, writes x.
  const ddimBytes = (2 + 1 + 5) * n * 4;
  const ddimStepGBps = ddimBytes / (ddimStepMs * 1e6);
  const en = ex.data.length;
  const eulerStepGBps = (4 * en * 4) / (eulerStepMs * 1e6);
  return {
    ddimStepMs, eulerStepMs, memcpyGBps, memcpyInCacheGBps, noiseFillMs, ddimStepGBps, eulerStepGBps, ddimStepVsMemcpy: ddimStepGBps / memcpyGBps,
    kernelBackend: backend, ddimStepMsJs, noiseFillMsJs, eulerStepMsJs,
    noiseFirstFillMs: wasmFirst.first, noiseThirdFillMs: wasmFirst.third, noiseFirstFillMsJs: jsFirst.first, noiseThirdFillMsJs: jsFirst.third,
  };
}
