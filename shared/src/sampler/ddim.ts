/**
 * DDIM (Song et al. 2021) over the first M training steps, as the CIL reference samplers use it
 * (docs/design.md §3.3, §4). `ddimPlan` computes everything once, in float64; `ddimStepCoefs`
 * turns a plan entry and a parameterisation into the four scalars of the fused update, so the
 * per-step work is pure arithmetic (see sampler.ts).
 */
import { ScheduleError, dynamicRescaleArray, vpAlphasCumprod } from './schedules.ts';
import type { DynamicRescaleConfig, VpScheduleConfig } from './schedules.ts';
import type { VpPrediction } from './prediction.ts';
import type { StepCoefs } from './sampler.ts';

export type Spacing = 'uniform' | 'uniform_trailing' | 'quad';
export const SPACINGS: readonly Spacing[] = ['uniform', 'uniform_trailing', 'quad'];

/**
 * 'paper' (default): our plan — exactly S valid timesteps, starting at M.
 * 'reference': reproduce the published code's schedule, defects included (see docs/reference-differences.md).
 */
export type Compat = 'paper' | 'reference';

/** numpy.round: round half to even (JavaScript's Math.round rounds halves up). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * DDIM timesteps τ_0 < … < τ_{S−1} over the first `start` (M) of the training steps.
 *
 * - uniform_trailing: the reference computes reverse(round(arange(M, 0, −M/S))) − 1. numpy's arange
 *   yields M + k·δ with δ = (M − c) − M (c = M/S); when M/c rounds above S it adds an (S+1)-th value
 *   ≈ 0 that becomes a spurious −1 (e.g. M = 820, 920, 945 at 50 steps). We take k = 0…S−1 only:
 *   the reference's list without the −1 (docs/design.md §4). Both compat modes drop it: the reference
 *   would index ᾱ[−1] (its last entry) there, or crash.
 * - uniform: the reference takes range(0, M, ⌊M/S⌋) + 1, which has more than S entries when S does
 *   not divide M (53 for M = 940, S = 50). 'paper' spreads exactly S: τ_k = ⌊k·M/S⌋ + 1, equal to the
 *   reference whenever S divides M; 'reference' keeps the published list.
 * - quad: ((linspace(0, √(0.8·M), S))²).astype(int) + 1, as the reference.
 */
export function ddimTimesteps(spacing: Spacing, start: number, steps: number, compat: Compat = 'paper'): Int32Array {
  if (!Number.isInteger(start) || start < 1 || start > 1000_000) {
    throw new ScheduleError(`start M must be an integer ≥ 1, got ${start}`);
  }
  if (!Number.isInteger(steps) || steps < 1) throw new ScheduleError(`steps must be an integer ≥ 1, got ${steps}`);
  if (steps > start) throw new ScheduleError(`steps (${steps}) must not exceed the start time M (${start})`);
  let ts: number[];
  if (spacing === 'uniform_trailing') {
    const c = start / steps;
    const delta = start - c - start;
    ts = [];
    for (let k = steps - 1; k >= 0; k--) ts.push(roundHalfEven(start + k * delta) - 1);
  } else if (spacing === 'uniform') {
    ts = [];
    if (compat === 'reference') {
      const c = Math.floor(start / steps);
      for (let v = 0; v < start; v += c) ts.push(v + 1);
    } else {
      for (let k = 0; k < steps; k++) ts.push(Math.floor((k * start) / steps) + 1);
    }
  } else if (spacing === 'quad') {
    const stop = Math.sqrt(start * 0.8);
    const step = steps > 1 ? stop / (steps - 1) : 0;
    ts = [];
    for (let k = 0; k < steps; k++) {
      const v = k === steps - 1 && steps > 1 ? stop : k * step;
      ts.push(Math.trunc(v * v) + 1);
    }
  } else {
    throw new ScheduleError(`unknown spacing '${String(spacing)}'; allowed: ${SPACINGS.join(', ')}`);
  }
  const out = Int32Array.from(ts);
  // 'reference' may go up to M (uniform with S = M); the plan checks the table bound.
  const max = compat === 'reference' ? start : start - 1;
  for (let i = 0; i < out.length; i++) {
    if (out[i] < 0 || out[i] > max) {
      throw new ScheduleError(
        `${spacing} spacing with S=${steps} over M=${start} gives timestep ${out[i]} outside [0, ${max}]; use fewer steps`,
      );
    }
    if (i > 0 && out[i] <= out[i - 1] && spacing !== 'quad') {
      throw new ScheduleError(`${spacing} spacing with S=${steps} over M=${start} repeats timestep ${out[i]}; use fewer steps`);
    }
  }
  return out;
}

export interface DdimPlanOptions {
  readonly schedule: VpScheduleConfig;
  readonly steps: number;
  /** Start time M (1000 = the baseline). */
  readonly start: number;
  readonly eta: number;
  readonly spacing: Spacing;
  /** Off when null. */
  readonly dynamicRescale: DynamicRescaleConfig | null;
  readonly compat?: Compat;
  /**
   * VideoCrafter1's published sampler ignores M for its schedule (always the 1000-step grid) while
   * its initial noise is built for t = M − 1. With compat 'reference' and this flag, the plan does
   * the same; otherwise the schedule starts at M.
   */
  readonly scheduleIgnoresStart?: boolean;
}

/** Everything DDIM needs, in sampling order (first step first), float64. */
export interface DdimPlan {
  readonly kind: 'ddim';
  readonly start: number;
  readonly eta: number;
  /** τ in sampling order (descending). */
  readonly timesteps: Int32Array;
  /** a_i = ᾱ[τ_i]. */
  readonly alphas: Float64Array;
  /** ᾱ[τ_{i−1}], and ᾱ[0] for the last step. */
  readonly alphasPrev: Float64Array;
  /** σ_i = η·√((1−a_prev)/(1−a)·(1−a/a_prev)). */
  readonly sigmas: Float64Array;
  /** √(1 − a_prev − σ²), clamped at 0 (it rounds to −1e-17 where a = 0 under zero-SNR). */
  readonly dirCoefs: Float64Array;
  /** Dynamic rescale scale_arr[τ_i] and its "previous" value; all 1 when off. */
  readonly scale: Float64Array;
  readonly scalePrev: Float64Array;
  /** ᾱ[M−1]: the marginal the initial latent is drawn for (Analytic-Init, docs/design.md §3.6). */
  readonly alphaStart: number;
  /** The model's full ᾱ (float64), for reference. */
  readonly alphasCumprod: Float64Array;
}

export function ddimPlan(o: DdimPlanOptions): DdimPlan {
  const T = o.schedule.timesteps;
  if (!Number.isInteger(o.start) || o.start < 1 || o.start > T) {
    throw new ScheduleError(`start M must be an integer in [1, ${T}], got ${o.start}`);
  }
  if (!(o.eta >= 0) || !Number.isFinite(o.eta)) throw new ScheduleError(`eta must be ≥ 0, got ${o.eta}`);
  const compat = o.compat ?? 'paper';
  const scheduleStart = compat === 'reference' && o.scheduleIgnoresStart ? T : o.start;
  const asc = ddimTimesteps(o.spacing, scheduleStart, o.steps, compat);
  if (asc[asc.length - 1] >= T) {
    throw new ScheduleError(`timestep ${asc[asc.length - 1]} is outside the model's ${T} training steps`);
  }
  const abar = vpAlphasCumprod(o.schedule);
  const scaleArr = o.dynamicRescale ? dynamicRescaleArray(o.dynamicRescale, T) : null;
  const n = asc.length;
  const timesteps = new Int32Array(n);
  const alphas = new Float64Array(n);
  const alphasPrev = new Float64Array(n);
  const sigmas = new Float64Array(n);
  const dirCoefs = new Float64Array(n);
  const scale = new Float64Array(n);
  const scalePrev = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    // j: sampling order; i: the reference's ascending index.
    const i = n - 1 - j;
    const tau = asc[i];
    const a = abar[tau];
    const ap = i > 0 ? abar[asc[i - 1]] : abar[0];
    const sigma = o.eta * Math.sqrt(((1 - ap) / (1 - a)) * (1 - a / ap));
    timesteps[j] = tau;
    alphas[j] = a;
    alphasPrev[j] = ap;
    sigmas[j] = sigma;
    dirCoefs[j] = Math.sqrt(Math.max(0, 1 - ap - sigma * sigma));
    if (scaleArr && o.dynamicRescale) {
      scale[j] = scaleArr[tau];
      scalePrev[j] = i > 0 ? scaleArr[asc[i - 1]] : o.dynamicRescale.firstPrev === 'repeat' ? scaleArr[asc[0]] : scaleArr[0];
    } else {
      scale[j] = 1;
      scalePrev[j] = 1;
    }
  }
  return {
    kind: 'ddim',
    start: o.start,
    eta: o.eta,
    timesteps,
    alphas,
    alphasPrev,
    sigmas,
    dirCoefs,
    scale,
    scalePrev,
    alphaStart: abar[o.start - 1],
    alphasCumprod: abar,
  };
}

/**
 * The DDIM update of step j as one linear map (DDIM eq. 12):
 *   x̂0 = (A·x + B·o)·k,  ε̂ = C·x + D·o   (A…D from the parameterisation, k = scalePrev/scale)
 *   x' = √a_prev·x̂0 + √(1 − a_prev − σ²)·ε̂ + σ·z
 *      = (√a_prev·k·A + dir·C)·x + (√a_prev·k·B + dir·D)·o + σ·z.
 * Folding the scalars here keeps the per-element loop to one multiply-add per operand.
 */
export function ddimStepCoefs(plan: DdimPlan, j: number, prediction: VpPrediction): StepCoefs {
  const a = plan.alphas[j];
  const { x0FromX, x0FromOut, epsFromX, epsFromOut } = prediction(a);
  const k = plan.scalePrev[j] / plan.scale[j];
  const sap = Math.sqrt(plan.alphasPrev[j]);
  const dir = plan.dirCoefs[j];
  return {
    index: j,
    modelTime: plan.timesteps[j],
    inputScale: 1,
    xCoef: sap * k * x0FromX + dir * epsFromX,
    outCoef: sap * k * x0FromOut + dir * epsFromOut,
    noiseStd: plan.sigmas[j],
  };
}

export function ddimSteps(plan: DdimPlan, prediction: VpPrediction): StepCoefs[] {
  return Array.from(plan.timesteps, (_, j) => ddimStepCoefs(plan, j, prediction));
}
