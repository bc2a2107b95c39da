/**
 * EDM Euler for SVD (docs/design.md §3.4), as diffusers' EulerDiscreteScheduler with Karras sigmas,
 * v-prediction and continuous timesteps: a plan computed once (float64), then per-step scalars.
 */
import { ScheduleError, karrasSigmas } from './schedules.ts';
import { edmVCoefs } from './prediction.ts';
import type { StepCoefs } from './sampler.ts';

export interface EulerPlanOptions {
  readonly steps: number;
  /** σ_max: the start time (700 baseline; CIL configs use smaller values such as 100). */
  readonly sigmaMax: number;
  readonly sigmaMin: number;
  readonly rho: number;
}

export interface EulerPlan {
  readonly kind: 'euler';
  readonly start: number;
  /** n + 1 sigmas, the last 0. */
  readonly sigmas: Float64Array;
  /** c_noise = 0.25·ln σ per step (the network's time input). */
  readonly timesteps: Float64Array;
  readonly cIn: Float64Array;
  readonly cSkip: Float64Array;
  readonly cOut: Float64Array;
  /** √(σmax² + 1): diffusers' value for its "leading" spacing, which SVD's config uses. */
  readonly initNoiseSigma: number;
}

export function eulerPlan(o: EulerPlanOptions): EulerPlan {
  if (!Number.isInteger(o.steps) || o.steps < 2) throw new ScheduleError(`steps must be an integer ≥ 2 for Karras sigmas, got ${o.steps}`);
  if (!(o.sigmaMax > o.sigmaMin)) {
    throw new ScheduleError(`start σ_max must be greater than σ_min (${o.sigmaMin}), got ${o.sigmaMax}`);
  }
  const n = o.steps;
  const k = karrasSigmas(n, o.sigmaMin, o.sigmaMax, o.rho);
  const sigmas = new Float64Array(n + 1);
  sigmas.set(k);
  const timesteps = new Float64Array(n);
  const cIn = new Float64Array(n);
  const cSkip = new Float64Array(n);
  const cOut = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const c = edmVCoefs(sigmas[i]);
    timesteps[i] = c.cNoise;
    cIn[i] = c.cIn;
    cSkip[i] = c.cSkip;
    cOut[i] = c.cOut;
  }
  return { kind: 'euler', start: o.sigmaMax, sigmas, timesteps, cIn, cSkip, cOut, initNoiseSigma: Math.sqrt(sigmas[0] * sigmas[0] + 1) };
}

/**
 * Euler step (Karras et al. 2022, Algorithm 2 without churn):
 *   x' = x + (x − x̂0)/σ·(σ_next − σ),  x̂0 = c_skip·x + c_out·o
 *      = (1 + (1 − c_skip)·h)·x − c_out·h·o,  h = (σ_next − σ)/σ.
 */
export function eulerStepCoefs(plan: EulerPlan, i: number): StepCoefs {
  const sigma = plan.sigmas[i];
  const h = (plan.sigmas[i + 1] - sigma) / sigma;
  return {
    index: i,
    modelTime: plan.timesteps[i],
    inputScale: plan.cIn[i],
    xCoef: 1 + (1 - plan.cSkip[i]) * h,
    outCoef: -plan.cOut[i] * h,
    noiseStd: 0,
  };
}

export function eulerSteps(plan: EulerPlan): StepCoefs[] {
  return Array.from(plan.timesteps, (_, i) => eulerStepCoefs(plan, i));
}
