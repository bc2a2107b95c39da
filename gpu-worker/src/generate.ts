/**
 * The generation job: image + model bundle + parameters → frames, optional final latent, and
 * metadata.json. Everything that can be refused (bundle, graphs, image, statistics) is checked
 * before anything is written (generate/inputs.ts); a SIGTERM (Spot reclaim) checkpoints the latent,
 * the step and the generator state, and a rerun of the same job resumes bit-identically
 * (generate/checkpoint.ts). The family's own work (conditioning, guidance, latent layout) is its
 * adapter's (families/).
 */
import { initialLatent, NormalGenerator } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import type { RecordedPlacement } from '#shared/schemas';
import { decodeFrames } from './decode.ts';
import { Checkpoints, fingerprint } from './generate/checkpoint.ts';
import { denoise } from './generate/denoise.ts';
import { checkJob } from './generate/inputs.ts';
import type { JobInputs } from './generate/inputs.ts';
import { generationMetadata, writeMetadata } from './generate/metadata.ts';
import type { GenerationMetadata, LoadTimings } from './generate/metadata.ts';
import { writeFrames, writeLatent } from './generate/outputs.ts';
import type { OutputSink } from './sink.ts';

export { GenerationInterrupted } from './generate/denoise.ts';
export { GenerateInputError } from './params.ts';
export { METADATA_FORMAT } from './generate/metadata.ts';
export type { GenerationMetadata } from './generate/metadata.ts';
export type { GenerateParams } from './params.ts';

export interface ProgressEvent {
  readonly phase: 'encode' | 'denoise' | 'decode' | 'write';
  readonly step?: number;
  readonly total?: number;
  readonly elapsedS: number;
}

export interface GenerateInput extends JobInputs {
  readonly sink: OutputSink;
  readonly onProgress?: (e: ProgressEvent) => void;
  readonly signal?: AbortSignal;
  /** Also checkpoint every N steps (0: only on interruption). */
  readonly checkpointEvery?: number;
  /** Inspection hook: receives x_M before the first step (not called when resuming). */
  readonly onInitialLatent?: (x: Tensor) => void;
  /** Something went wrong that the run survives (a periodic checkpoint could not be written). */
  readonly onWarning?: (message: string) => void;
  /** How the model was loaded (the job's runner measures it): into metadata.json. */
  readonly load?: LoadTimings;
  /** Where the workflow placed the job (metadata.json `placement`); absent outside the workflow. */
  readonly placement?: RecordedPlacement;
}

export async function generate(i: GenerateInput): Promise<GenerationMetadata> {
  const t0 = performance.now();
  const elapsed = (): number => (performance.now() - t0) / 1000;
  const m = i.bundle.manifest;
  const p = i.params;
  const job = await checkJob(i);
  const checkpoints = new Checkpoints(i.sink, fingerprint({
    bundleHash: i.bundle.hash,
    params: p,
    image: i.image,
    statistics: i.statistics ? { expectation: i.statistics.stats.expectation.data, trCovD: i.statistics.stats.trCovD } : null,
    initNoise: i.initNoise,
  }), job.latentDims);
  const resume = await checkpoints.read();

  i.onProgress?.({ phase: 'encode', elapsedS: elapsed() });
  const gen = NormalGenerator.fromSeed(p.seed);
  const cond = await job.family.condition({ bundle: i.bundle, sessions: i.sessions, image: job.image, params: p, gen });
  const x0 = initialLatent({ dims: job.latentDims, coefs: job.plan.init, expectation: job.expectation, noise: i.initNoise ?? gen });
  if (!resume) i.onInitialLatent?.(x0);
  const guided = job.family.guidance(p, cond.model);

  const tDen = performance.now();
  const latent = await denoise({
    steps: job.plan.steps, x0, resume, denoiser: guided.denoiser, gen, checkpoints,
    checkpointEvery: i.checkpointEvery, signal: i.signal, onWarning: i.onWarning,
    onStep: (step, total) => i.onProgress?.({ phase: 'denoise', step, total, elapsedS: elapsed() }),
  });
  const denoiseS = (performance.now() - tDen) / 1000;

  i.onProgress?.({ phase: 'decode', elapsedS: elapsed() });
  const tDec = performance.now();
  const frames = await decodeFrames(i.bundle, i.sessions, job.family, latent, 4, i.signal);
  const decodeS = (performance.now() - tDec) / 1000;

  i.onProgress?.({ phase: 'write', elapsedS: elapsed() });
  const tW = performance.now();
  const frameKeys = await writeFrames(i.sink, frames, p.frames, m.resolution.height, m.resolution.width);
  const latentKey = p.saveLatent ? await writeLatent(i.sink, latent) : null;
  const unet = i.sessions.info('unet');
  const stepsRun = job.plan.steps.length - (resume?.completed ?? 0);
  const meta = generationMetadata({
    bundle: i.bundle,
    executionProvider: unet.provider,
    fallbackReason: unet.fallbackReason,
    load: i.load,
    placement: i.placement,
    stepS: stepsRun > 0 ? denoiseS / stepsRun : 0,
    params: p,
    plan: job.plan,
    statistics: job.statistics ? { where: job.statistics.where, trCovD: job.statistics.stats.trCovD } : null,
    initNoiseFromFile: i.initNoise !== null,
    unetCallsPerStep: cond.unetCalls(guided.branches),
    frameKeys,
    latentKey,
    resumedFromStep: resume?.completed ?? 0,
    timings: {
      encodeS: cond.encodeMs / 1000,
      denoiseS,
      decodeS,
      writeS: (performance.now() - tW) / 1000,
      totalS: elapsed(),
      unetS: (i.sessions.runMs.get('unet') ?? 0) / 1000,
    },
  });
  await writeMetadata(i.sink, meta);
  await checkpoints.clear();
  return meta;
}
