/**
 * TimeNoise (Zhao et al. 2024, §4.2), training-time: corrupt the conditional image latent with
 * noise whose scale grows with t: β_s = β_m·sigmoid(y), y ~ N(μ(t), 1), μ(t) = 2·(t/T)^a − 1,
 * c ← c + β_s·z. The reference applies no TimeNoise at inference; this library serves the
 * fine-tuning recipe and tests.
 */
import { tensor } from './tensor.ts';
import type { Tensor } from './tensor.ts';
import type { NoiseSource } from './sampler.ts';

export interface TimeNoiseOptions {
  /** Exponent a (reference: 5). */
  readonly a: number;
  /** Maximum scale β_m (reference: 100). */
  readonly betaM: number;
  /** Training steps T (1000). */
  readonly timesteps: number;
}

export const TIME_NOISE_DEFAULTS: TimeNoiseOptions = Object.freeze({ a: 5, betaM: 100, timesteps: 1000 });

/** μ(t) = 2·(t/T)^a − 1. */
export function timeNoiseMean(t: number, o: TimeNoiseOptions = TIME_NOISE_DEFAULTS): number {
  return 2 * (t / o.timesteps) ** o.a - 1;
}

function sigmoid(y: number): number {
  return y >= 0 ? 1 / (1 + Math.exp(-y)) : Math.exp(y) / (1 + Math.exp(y));
}

/** One draw of β_s at time t, using one standard normal from `noise`. */
export function sampleTimeNoiseBeta(t: number, noise: NoiseSource, o: TimeNoiseOptions = TIME_NOISE_DEFAULTS): number {
  const z = new Float32Array(1);
  noise.fill(z);
  return o.betaM * sigmoid(timeNoiseMean(t, o) + z[0]);
}

/** c + β_s·z as a new tensor (the caller's tensor is never mutated). */
export function corruptCondition(cond: Tensor, betaS: number, noise: NoiseSource): Tensor {
  const out = new Float32Array(cond.data.length);
  noise.fill(out);
  const c = cond.data;
  for (let i = 0; i < out.length; i++) out[i] = c[i] + betaS * out[i];
  return tensor(out, cond.dims, 'TimeNoise-corrupted condition');
}

/**
 * Exact mean and std of β_s at t by numerical integration over y ~ N(μ, 1) (composite Simpson
 * on μ ± 12, 4000 intervals: error far below 1e-9 for this smooth integrand).
 */
export function timeNoiseMoments(t: number, o: TimeNoiseOptions = TIME_NOISE_DEFAULTS): { mean: number; std: number } {
  const mu = timeNoiseMean(t, o);
  const n = 4000;
  const lo = mu - 12;
  const h = 24 / n;
  let m1 = 0;
  let m2 = 0;
  for (let k = 0; k <= n; k++) {
    const y = lo + k * h;
    const w = k === 0 || k === n ? 1 : k % 2 === 1 ? 4 : 2;
    const pdf = Math.exp(-0.5 * (y - mu) * (y - mu)) / Math.sqrt(2 * Math.PI);
    const b = o.betaM * sigmoid(y);
    m1 += w * pdf * b;
    m2 += w * pdf * b * b;
  }
  m1 *= h / 3;
  m2 *= h / 3;
  return { mean: m1, std: Math.sqrt(Math.max(0, m2 - m1 * m1)) };
}
