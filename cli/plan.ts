/** `cil plan`: the dry run that shows what the sampler will do. */
import type { Command } from 'commander';
import { FAMILY_NAMES, FAMILY_TABLE } from '#shared/sampler';
import type { FamilyName } from '#shared/sampler';
import { SPACINGS } from '#shared/sampler';
import type { Compat, Spacing } from '#shared/sampler';
import { makePlan, planJson } from '#shared/sampler';
import type { SamplerPlan } from '#shared/sampler';
import { readStatistics } from '../gpu-worker/src/statistics.ts';
import { readInput } from '../gpu-worker/src/sink.ts';
import { choiceArg, intArg, numberArg } from './args.ts';
import { UsageError } from './errors.ts';

interface PlanOpts {
  family: FamilyName;
  steps?: number;
  start?: number;
  eta?: number;
  spacing?: Spacing;
  trcovD?: number;
  stats?: string;
  compat: Compat;
  cil?: boolean;
  json?: boolean;
}

function fmt(v: number, digits = 6): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(digits - 1) : v.toPrecision(digits);
}

/** A readable table, one row per step in sampling order. */
export function planTable(p: SamplerPlan): string {
  const s = p.schedule;
  const lines: string[] = [];
  if (s.kind === 'ddim') {
    lines.push(`${p.family}: DDIM, ${s.timesteps.length} steps from M=${s.start}, eta=${s.eta}`);
    lines.push(`initial latent: x_M = ${fmt(p.init.meanCoef)}·E[X0] + ${fmt(p.init.std)}·z`);
    lines.push(['step', 't', 'alpha', 'alpha_prev', 'sigma', 'scale', 'scale_prev'].map((h) => h.padStart(12)).join(''));
    for (let j = 0; j < s.timesteps.length; j++) {
      lines.push(
        [String(j), String(s.timesteps[j]), fmt(s.alphas[j]), fmt(s.alphasPrev[j]), fmt(s.sigmas[j]), fmt(s.scale[j]), fmt(s.scalePrev[j])]
          .map((c) => c.padStart(12))
          .join(''),
      );
    }
  } else {
    lines.push(`${p.family}: EDM Euler, ${s.timesteps.length} steps from sigma_max=${s.start}`);
    lines.push(`initial latent: x = ${p.init.meanCoef === 0 ? '' : 'E[X0] + '}${fmt(p.init.std)}·z  (init_noise_sigma ${fmt(s.initNoiseSigma, 10)})`);
    lines.push(['step', 'sigma', 'sigma_next', 'c_noise', 'c_in', 'c_skip', 'c_out'].map((h) => h.padStart(12)).join(''));
    for (let i = 0; i < s.timesteps.length; i++) {
      lines.push(
        [String(i), fmt(s.sigmas[i]), fmt(s.sigmas[i + 1]), fmt(s.timesteps[i]), fmt(s.cIn[i]), fmt(s.cSkip[i]), fmt(s.cOut[i])]
          .map((c) => c.padStart(12))
          .join(''),
      );
    }
  }
  return lines.join('\n');
}

/** tr(Cov[X0])/d of a statistics file, refused (one line, exit 2) when its family is not `family`. */
async function trCovFromStats(file: string, family: FamilyName, trcovD: number | undefined): Promise<number> {
  if (trcovD !== undefined) throw new UsageError('give --stats or --trcov-d, not both');
  let bytes: Uint8Array;
  try {
    bytes = await readInput(file);
  } catch (e) {
    throw new UsageError(`--stats ${file}: cannot read it (${(e as Error).message})`);
  }
  let s;
  try {
    s = readStatistics(bytes, file);
  } catch (e) {
    throw new UsageError(`--stats ${(e as Error).message.split('\n').join(' ')}`);
  }
  if (s.meta.family !== family) throw new UsageError(`--stats ${file} holds ${s.meta.family} statistics, but --family is ${family}`);
  return s.trCovD;
}

export function registerPlan(program: Command): void {
  program
    .command('plan')
    .description('show the sampler plan (timesteps, coefficients, initial-latent coefficients) without running a model')
    .requiredOption('--family <family>', `model family: ${FAMILY_NAMES.join(', ')}`, choiceArg('--family', FAMILY_NAMES))
    .option('--steps <n>', 'sampling steps (default: the family\'s)', intArg('--steps', 1, 1000))
    .option('--start <M>', 'start time: M ∈ [1, 1000] for dynamicrafter/videocrafter, σ_max > 0.002 for svd', numberArg('--start', 0, Infinity, true))
    .option('--eta <eta>', 'DDIM η (default: the family\'s)', numberArg('--eta', 0, 1))
    .option('--spacing <spacing>', `DDIM timestep spacing: ${SPACINGS.join(', ')}`, choiceArg('--spacing', SPACINGS))
    .option('--trcov-d <x>', 'tr(Cov[X0])/d of the dataset statistics: prints Analytic-Init coefficients', numberArg('--trcov-d', 0))
    .option('--stats <file>', 'dataset statistics file (path or s3:// URI): takes tr(Cov[X0])/d from it, as --trcov-d')
    .option('--compat <mode>', "'paper' (default) or 'reference' (reproduce the published code's schedule)", choiceArg('--compat', ['paper', 'reference'] as const), 'paper')
    .option('--cil', 'use the default start of a CIL (TimeNoise fine-tuned) checkpoint')
    .option('--json', 'print one JSON object')
    .action(async (o: PlanOpts) => {
      const fam = FAMILY_TABLE[o.family];
      if (o.stats !== undefined) o.trcovD = await trCovFromStats(o.stats, o.family, o.trcovD);
      if (o.start !== undefined && fam.kind === 'vp-ddim' && (!Number.isInteger(o.start) || o.start > fam.schedule.timesteps)) {
        throw new UsageError(`--start must be an integer M in [1, ${fam.schedule.timesteps}] for ${o.family}, got '${o.start}'`);
      }
      const ddimFamilies = FAMILY_NAMES.filter((f) => FAMILY_TABLE[f].kind === 'vp-ddim').join(', ');
      if (o.spacing !== undefined && fam.kind !== 'vp-ddim') throw new UsageError(`--spacing applies to DDIM families only (${ddimFamilies}), not ${o.family}`);
      if (o.eta !== undefined && fam.kind !== 'vp-ddim') throw new UsageError(`--eta applies to DDIM families only (${ddimFamilies}), not ${o.family}`);
      let plan: SamplerPlan;
      try {
        plan = makePlan({ family: o.family, steps: o.steps, start: o.start, eta: o.eta, spacing: o.spacing, trCovD: o.trcovD ?? null, compat: o.compat, cil: o.cil });
      } catch (e) {
        if (e instanceof Error && e.name === 'ScheduleError') throw new UsageError(e.message);
        throw e;
      }
      process.stdout.write(o.json ? `${JSON.stringify(planJson(plan))}\n` : `${planTable(plan)}\n`);
    });
}
