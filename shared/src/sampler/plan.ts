/**
 * The one way to set up a sampler: a family (its row of the defaults table), optionally the model's
 * own schedule from its manifest, and a request's values in; the plan (schedule + initial-latent
 * coefficients) and the per-step scalars out. The worker, `cil plan` and the bench all call
 * `makePlan`; `planJson` is what `cil plan --json` prints and `planRecord` what metadata.json records.
 */
import { ddimPlan, ddimSteps } from './ddim.ts';
import type { Compat, DdimPlan, Spacing } from './ddim.ts';
import { eulerPlan, eulerSteps } from './euler.ts';
import type { EulerPlan } from './euler.ts';
import { FAMILY_TABLE } from './families.ts';
import type { FamilyName, ModelDynamicRescale, ModelSchedule } from './families.ts';
import { vpInitCoefs, veInitCoefs } from './analyticInit.ts';
import type { InitCoefs } from './analyticInit.ts';
import { vpPrediction } from './prediction.ts';
import type { StepCoefs } from './sampler.ts';
import type { DynamicRescaleConfig } from './schedules.ts';

/** A value left out (undefined) or null takes the family's default. */
export interface PlanRequest {
  readonly family: FamilyName;
  /** The model's schedule as its manifest states it (a bundle says what it is); default: the family's reference schedule. */
  readonly schedule?: ModelSchedule;
  readonly steps?: number | null;
  /** M for VP families; σ_max for EDM ones. Default: the family's (base or CIL checkpoint) value. */
  readonly start?: number | null;
  /** DDIM η (VP families only). */
  readonly eta?: number | null;
  /** DDIM timestep spacing (VP families only); default: the schedule's. */
  readonly spacing?: Spacing | null;
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

/** A plan request that does not fit its family (a DDIM setting for an Euler family, a schedule of the other kind). */
export class PlanError extends Error {
  override readonly name = 'PlanError';
}

function dynamicRescale(d: ModelDynamicRescale | undefined): DynamicRescaleConfig | null {
  return d?.enabled ? { baseScale: d.base, turningStep: d.rampSteps, firstPrev: d.finalPrev === 'tau0' ? 'repeat' : 'scale0' } : null;
}

export function makePlan(r: PlanRequest): SamplerPlan {
  const f = FAMILY_TABLE[r.family];
  const s = r.schedule ?? f.schedule;
  if (s.kind !== f.kind) throw new PlanError(`${r.family} models use a '${f.kind}' schedule, got '${s.kind}'`);
  const start = r.start ?? (r.cil ? f.startCil : f.defaults.start);
  const steps = r.steps ?? f.defaults.steps;
  const trCovD = r.trCovD ?? null;
  if (s.kind === 'vp-ddim' && f.kind === 'vp-ddim') {
    const schedule = ddimPlan({
      schedule: { linearStart: s.linearStart, linearEnd: s.linearEnd, timesteps: s.timesteps, rescaleZeroSnr: s.rescaleZeroSnr },
      steps,
      start,
      eta: r.eta ?? f.defaults.eta,
      spacing: r.spacing ?? s.spacing,
      dynamicRescale: dynamicRescale(s.dynamicRescale),
      compat: r.compat,
      scheduleIgnoresStart: f.scheduleIgnoresStart,
    });
    return { family: r.family, schedule, init: vpInitCoefs(schedule.alphaStart, trCovD), steps: ddimSteps(schedule, vpPrediction(s.parameterization)) };
  }
  if (s.kind !== 'edm-euler') throw new PlanError(`${r.family}: unknown schedule kind`);
  for (const [k, v] of [['eta', r.eta], ['spacing', r.spacing]] as const) {
    if (v !== undefined && v !== null) throw new PlanError(`${k} applies to DDIM families only, not ${r.family}`);
  }
  const schedule = eulerPlan({ steps, sigmaMax: start, sigmaMin: s.sigmaMin, rho: s.rho });
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

/** The shorter `plan` record of a generation's metadata.json (a public contract: see docs/worker.md). */
export function planRecord(p: SamplerPlan): Record<string, unknown> {
  const s = p.schedule;
  return s.kind === 'ddim'
    ? { kind: 'ddim', start: s.start, eta: s.eta, timesteps: Array.from(s.timesteps) }
    : { kind: 'euler', sigmaMax: s.start, sigmas: Array.from(s.sigmas), initNoiseSigma: s.initNoiseSigma };
}
