/**
 * Everything a job can be refused for, checked before anything is written: the ONNX graphs
 * against the manifest, the parameters against the model's family, Analytic-Init's statistics,
 * the image, the sampler plan and the initial noise's shape. Returns what the run needs.
 */
import { makePlan } from '#shared/sampler';
import type { SamplerPlan, Tensor } from '#shared/sampler';
import { checkSessionAgainstManifest } from '../bundle.ts';
import type { Bundle } from '../bundle.ts';
import { familyAdapter, latentAxesOf } from '../families/index.ts';
import type { FamilyAdapter } from '../families/index.ts';
import { imageToTensor } from '../image.ts';
import { GenerateInputError } from '../params.ts';
import type { GenerateParams } from '../params.ts';
import type { OnnxSessions } from '../runtime/sessions.ts';
import { statisticsForModel } from '../statistics.ts';
import type { LoadedStatistics } from '../statistics.ts';

/** A job's inputs, read but not yet checked. */
export interface JobInputs {
  readonly bundle: Bundle;
  readonly sessions: OnnxSessions;
  readonly image: Uint8Array;
  /** Names the image in errors. */
  readonly imageWhere: string;
  readonly params: GenerateParams;
  /** Required when params.analyticInit; `where` names the file in errors. */
  readonly statistics: { readonly stats: LoadedStatistics; readonly where: string } | null;
  /** Explicit unit-Gaussian initial noise (replaces the generator's first draw for x_T). */
  readonly initNoise: Tensor | null;
}

export interface CheckedJob {
  readonly family: FamilyAdapter;
  /** The image at the model resolution, [1, 3, H, W] in [−1, 1]. */
  readonly image: Tensor;
  readonly plan: SamplerPlan;
  readonly latentDims: readonly number[];
  /** E[X0] in the latent's dims, when Analytic-Init is on. */
  readonly expectation: Tensor | undefined;
  /** The statistics Analytic-Init uses, null when it is off. */
  readonly statistics: { readonly stats: LoadedStatistics; readonly where: string } | null;
}

export async function checkJob(i: JobInputs): Promise<CheckedJob> {
  const m = i.bundle.manifest;
  const p = i.params;
  for (const c of Object.keys(m.components)) {
    const info = i.sessions.info(c);
    checkSessionAgainstManifest(m, c, info.file, info.inputs, info.outputs);
  }
  if (p.family !== m.family) throw new GenerateInputError(`the parameters are for a ${p.family} model, but '${m.id}' is ${m.family}`);
  if (p.analyticInit && !i.statistics) throw new GenerateInputError('Analytic-Init is on but no statistics file was given (pass one, or turn Analytic-Init off)');
  const statistics = p.analyticInit ? i.statistics : null;
  const image = await imageToTensor(i.image, m.resolution.height, m.resolution.width, i.imageWhere);
  const plan = makePlan({
    family: m.family, schedule: m.schedule, steps: p.steps, start: p.start, eta: p.eta, compat: p.compat, trCovD: statistics ? statistics.stats.trCovD : null,
  });
  const family = familyAdapter(m.family);
  const latentDims = family.layout.dims(latentAxesOf(m, p.frames));
  const expectation = statistics ? statisticsForModel(statistics.stats, m, latentDims, statistics.where) : undefined;
  if (i.initNoise && i.initNoise.data.length !== latentDims.reduce((a, b) => a * b, 1)) {
    throw new GenerateInputError(`initial noise: dims [${i.initNoise.dims.join(', ')}] do not fit the latent [${latentDims.join(', ')}]`);
  }
  return { family, image, plan, latentDims, expectation, statistics };
}
