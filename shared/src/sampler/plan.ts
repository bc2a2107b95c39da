/**
 * One entry point for "what will the sampler do": a family's defaults plus overrides in, the
 * plan (schedule + initial-latent coefficients) and the per-step scalars out. `cil plan` prints it.
 */
import { ddimPlan, ddimSteps } from './ddim.ts';
import type { Compat, DdimPlan, Spacing } from './ddim.ts';
import { eulerPlan, eulerSteps } from './euler.ts';
import type { EulerPlan } from './euler.ts';
import { FAMILIES } from './families.ts';
import type { FamilyName } from './families.ts';
import { vpInitCoefs, veInitCoefs } from './analyticInit.ts';
import type { InitCoefs } from './analyticInit.ts';
import { vpPrediction } from './prediction.ts';
import type { StepCoefs } from './sampler.ts';

export interface PlanRequest {
  readonly family: FamilyName;
  readonly steps?: number;
  /** M for VP families; σ_max for SVD. Defaults to the family's (base checkpoint) value. */
  readonly start?: number;
  readonly eta?: number;
  readonly spacing?: Spacing;
  /** tr(Cov)/d of the dataset statistics; null or absent = no Analytic-Init. */
  readonly trCovD?: number | null;
  readonly compat?: Compat;
  /** Use the CIL checkpoint's default start. */
  readonly cil?: boolean;
}

export interface SamplerPlan {
  readonly family: FamilyName;
  readonly schedule: DdimPlan | EulerPlan;
  readonly init: InitCoefs;
  readonly steps: StepCoefs[];
}

export function makePlan(r: PlanRequest): SamplerPlan {
  const f = FAMILIES[r.family];
  const start = r.start ?? (r.cil ? f.startCil : f.start);
  const trCovD = r.trCovD ?? null;
  if (f.kind === 'vp-ddim') {
    const schedule = ddimPlan({
      schedule: f.schedule,
      steps: r.steps ?? f.steps,
      start,
      eta: r.eta ?? f.eta,
      spacing: r.spacing ?? f.spacing,
      dynamicRescale: f.dynamicRescale,
      compat: r.compat,
      scheduleIgnoresStart: f.scheduleIgnoresStart,
    });
    return { family: r.family, schedule, init: vpInitCoefs(schedule.alphaStart, trCovD), steps: ddimSteps(schedule, vpPrediction(f.parameterization)) };
  }
  const schedule = eulerPlan({ steps: r.steps ?? f.steps, sigmaMax: start, sigmaMin: f.sigmaMin, rho: f.rho });
  return { family: r.family, schedule, init: veInitCoefs(schedule.initNoiseSigma, trCovD), steps: eulerSteps(schedule) };
}

/** The `cil plan --json` object (field names are a public contract: see docs/cli.md). */
export function planJson(p: SamplerPlan): Record<string, unknown> {
  const s = p.schedule;
  if (s.kind === 'ddim') {
    return {
      timesteps: Array.from(s.timesteps),
      alphas: Array.from(s.alphas),
      alphasPrev: Array.from(s.alphasPrev),
      sigmas: Array.from(s.sigmas),
      scale: Array.from(s.scale),
      scalePrev: Array.from(s.scalePrev),
      init: { meanCoef: p.init.meanCoef, std: p.init.std },
    };
  }
  return {
    sigmas: Array.from(s.sigmas),
    timesteps: Array.from(s.timesteps),
    cIn: Array.from(s.cIn),
    cSkip: Array.from(s.cSkip),
    cOut: Array.from(s.cOut),
    initNoiseSigma: s.initNoiseSigma,
    init: { std: p.init.std },
  };
}
