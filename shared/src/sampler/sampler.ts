/**
 * The sampler loop, shared by DDIM and EDM Euler: every step of both is the linear update
 *   x ← xCoef·x + outCoef·o + noiseStd·z,   o = Σ_b w_b·branch_b (the guided network output)
 * with per-step scalars from ddim.ts / euler.ts and weights from a guidance wrapper. The loop
 * takes an async denoiser (an ONNX model, a test double, a toy), reports progress through a
 * callback and stops on an AbortSignal.
 */
import { wasmKernels } from './kernels.ts';
import { ShapeError, tensor } from './tensor.ts';
import type { Tensor } from './tensor.ts';
import type { GuidedDenoiser, GuidedOutput } from './guidance.ts';

/** One step as pure arithmetic. */
export interface StepCoefs {
  /** Step index in sampling order. */
  readonly index: number;
  /** The network's time input. */
  readonly modelTime: number;
  /** Scale of x fed to the network (c_in). */
  readonly inputScale: number;
  readonly xCoef: number;
  readonly outCoef: number;
  /** Std of fresh noise added this step (DDIM's σ_i; 0 for Euler). */
  readonly noiseStd: number;
}

/** Anything that fills a buffer with standard normals (the seeded NormalGenerator in rng.ts). */
export interface NoiseSource {
  fill(out: Float32Array, start?: number, end?: number): void;
}

/**
 * x ← xCoef·x + outCoef·Σ_b w_b[seg]·br_b + σ·z, in place, one pass. Specialised for the 1-, 2-
 * and 3-branch cases so the inner loop has no inner loop (it is memory-bound); those run in
 * WebAssembly SIMD where available (kernels.ts), with the same bits.
 */
export function fusedUpdate(x: Float32Array, step: StepCoefs, g: GuidedOutput, z: Float32Array | null): void {
  const L = g.segmentLength;
  const n = x.length;
  const nb = g.branches.length;
  if (!(L > 0) || n % L !== 0) throw new ShapeError(`guided output segment length ${L} does not divide the latent (${n} elements)`);
  const nSeg = n / L;
  for (let b = 0; b < nb; b++) {
    if (g.branches[b].length !== n) throw new ShapeError(`guided output branch ${b} has ${g.branches[b].length} elements, latent has ${n}`);
    const wl = g.weights[b].length;
    if (wl !== 1 && wl !== nSeg) throw new ShapeError(`guidance weights for branch ${b}: ${wl} values for ${nSeg} segments`);
  }
  if (z && z.length !== n) throw new ShapeError(`noise has ${z.length} elements, latent has ${n}`);
  const p = step.xCoef;
  const q = step.outCoef;
  const sigma = z ? step.noiseStd : 0;
  const w = (b: number, s: number): number => q * (g.weights[b].length === 1 ? g.weights[b][0] : g.weights[b][s]);
  // The WebAssembly kernel does these loops' float64 operations in the same order (kernels.wat).
  if (wasmKernels()?.update(x, g.branches, z, L, p, w, sigma)) return;
  for (let s = 0; s < nSeg; s++) {
    const from = s * L;
    const to = from + L;
    if (nb === 1) {
      const b0 = g.branches[0];
      const q0 = w(0, s);
      if (z) for (let i = from; i < to; i++) x[i] = p * x[i] + q0 * b0[i] + sigma * z[i];
      else for (let i = from; i < to; i++) x[i] = p * x[i] + q0 * b0[i];
    } else if (nb === 2) {
      const b0 = g.branches[0];
      const b1 = g.branches[1];
      const q0 = w(0, s);
      const q1 = w(1, s);
      if (z) for (let i = from; i < to; i++) x[i] = p * x[i] + q0 * b0[i] + q1 * b1[i] + sigma * z[i];
      else for (let i = from; i < to; i++) x[i] = p * x[i] + q0 * b0[i] + q1 * b1[i];
    } else if (nb === 3) {
      const b0 = g.branches[0];
      const b1 = g.branches[1];
      const b2 = g.branches[2];
      const q0 = w(0, s);
      const q1 = w(1, s);
      const q2 = w(2, s);
      for (let i = from; i < to; i++) x[i] = p * x[i] + q0 * b0[i] + q1 * b1[i] + q2 * b2[i] + (z ? sigma * z[i] : 0);
    } else {
      for (let i = from; i < to; i++) {
        let o = 0;
        for (let b = 0; b < nb; b++) o += w(b, s) * g.branches[b][i];
        x[i] = p * x[i] + o + (z ? sigma * z[i] : 0);
      }
    }
  }
}

export interface StepEvent {
  /** Steps completed so far (1 … total). */
  readonly completed: number;
  readonly total: number;
  readonly step: StepCoefs;
  /** The latent after this step (the sampler's own buffer: copy it to keep it). */
  readonly x: Tensor;
}

export interface SampleOptions {
  readonly steps: readonly StepCoefs[];
  /** Initial latent x_M (not modified: the sampler works on a copy). */
  readonly x: Tensor;
  readonly denoiser: GuidedDenoiser;
  /** Required when any step has noiseStd > 0. */
  readonly noise?: NoiseSource;
  /** Resume: index of the first step to run (the latent then is the checkpointed one). */
  readonly startStep?: number;
  readonly onStep?: (e: StepEvent) => void | Promise<void>;
  readonly signal?: AbortSignal;
}

/** Runs steps[startStep…] and returns the final latent. Throws the signal's reason when aborted. */
export async function sample(o: SampleOptions): Promise<Tensor> {
  const x = tensor(o.x.data.slice(), o.x.dims, 'initial latent');
  const needsNoise = o.steps.some((s) => s.noiseStd > 0);
  if (needsNoise && !o.noise) throw new Error('sample: steps add noise (eta > 0) but no noise source was given');
  const z = needsNoise ? new Float32Array(x.data.length) : null;
  const first = o.startStep ?? 0;
  if (!Number.isInteger(first) || first < 0 || first > o.steps.length) {
    throw new RangeError(`sample: startStep ${first} outside [0, ${o.steps.length}]`);
  }
  for (let j = first; j < o.steps.length; j++) {
    o.signal?.throwIfAborted();
    const step = o.steps[j];
    const g = await o.denoiser({ x, modelTime: step.modelTime, inputScale: step.inputScale, step: j, signal: o.signal });
    // Noise is drawn only for steps that use it, after the network call, in step order: the
    // stream layout documented in docs/rng.md.
    if (z && step.noiseStd > 0) o.noise!.fill(z);
    fusedUpdate(x.data, step, g, z && step.noiseStd > 0 ? z : null);
    if (o.onStep) await o.onStep({ completed: j + 1, total: o.steps.length, step, x });
  }
  return x;
}
