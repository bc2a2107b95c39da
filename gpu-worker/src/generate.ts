/**
 * The generation job: image + model bundle + parameters → frames, optional final latent, and
 * metadata.json. Everything that can be refused (bundle, graphs, image, statistics) is checked
 * before anything is written; a SIGTERM (Spot reclaim) checkpoints the latent, the step and the
 * generator state, and a rerun of the same job resumes bit-identically.
 */
import { createHash } from 'node:crypto';
import { initialLatent, vpInitCoefs, veInitCoefs } from '#shared/sampler';
import { ddimPlan, ddimSteps } from '#shared/sampler';
import type { DdimPlan } from '#shared/sampler';
import { eulerPlan, eulerSteps } from '#shared/sampler';
import type { EulerPlan } from '#shared/sampler';
import { cfg, perFrameGuidance, twoScaleGuidance } from '#shared/sampler';
import type { GuidedDenoiser } from '#shared/sampler';
import { readNpy, writeNpy } from '#shared/formats';
import { vpPrediction } from '#shared/sampler';
import { NormalGenerator } from '#shared/sampler';
import type { GeneratorState } from '#shared/sampler';
import { sample } from '#shared/sampler';
import type { StepCoefs } from '#shared/sampler';
import type { Manifest } from '#shared/schemas';
import type { InitCoefs } from '#shared/sampler';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import { checkSessionAgainstManifest } from './bundle.ts';
import type { Bundle } from './bundle.ts';
import { decodeFrames, prepareConditioning } from './conditioning.ts';
import { frameToPng, imageToTensor } from './image.ts';
import type { OnnxSessions } from './runtime/sessions.ts';
import type { OutputSink } from './sink.ts';
import { statisticsForModel } from './statistics.ts';
import type { LoadedStatistics } from './statistics.ts';

export const METADATA_FORMAT = 'cil-generation/1';

/** Every parameter the job uses, resolved (no nulls where the family needs a value). */
export interface GenerateParams {
  readonly prompt: string;
  readonly steps: number;
  readonly start: number;
  readonly analyticInit: boolean;
  /** The statistics key the request resolved to (e.g. statistics/demo.safetensors), for the record. */
  readonly statistics: string | null;
  readonly guidanceScale: number | null;
  readonly imageGuidanceScale: number | null;
  readonly guidanceRescale: number | null;
  readonly eta: number | null;
  readonly seed: number;
  readonly frames: number;
  readonly fps: number;
  readonly frameStride: number | null;
  readonly motionBucketId: number | null;
  readonly noiseAugStrength: number | null;
  readonly minGuidanceScale: number | null;
  readonly maxGuidanceScale: number | null;
  readonly compat: 'paper' | 'reference';
  /** Write the final latent as latent.npy. */
  readonly saveLatent: boolean;
}

export interface ProgressEvent {
  readonly phase: 'encode' | 'denoise' | 'decode' | 'write';
  readonly step?: number;
  readonly total?: number;
  readonly elapsedS: number;
}

export interface GenerateInput {
  readonly bundle: Bundle;
  readonly sessions: OnnxSessions;
  readonly image: Uint8Array;
  readonly imageWhere: string;
  readonly params: GenerateParams;
  /** Required when params.analyticInit; `where` names the file in errors. */
  readonly statistics: { readonly stats: LoadedStatistics; readonly where: string } | null;
  /** Explicit unit-Gaussian initial noise (replaces the generator's first draw for x_T). */
  readonly initNoise: Tensor | null;
  readonly sink: OutputSink;
  readonly onProgress?: (e: ProgressEvent) => void;
  readonly signal?: AbortSignal;
  /** Also checkpoint every N steps (0: only on interruption). */
  readonly checkpointEvery?: number;
  /** Inspection hook: receives x_M before the first step (not called when resuming). */
  readonly onInitialLatent?: (x: Tensor) => void;
  /** Something went wrong that the run survives (a periodic checkpoint could not be written). */
  readonly onWarning?: (message: string) => void;
}

export class GenerationInterrupted extends Error {
  override readonly name = 'GenerationInterrupted';
  readonly step: number;
  readonly checkpointWritten: boolean;
  constructor(step: number, reason: string, checkpointWritten = true) {
    super(
      checkpointWritten
        ? `interrupted (${reason}) after step ${step}; checkpoint written, a rerun resumes from it`
        : `interrupted (${reason}) after step ${step}; no checkpoint written, a rerun resumes from the last periodic one or starts over`,
    );
    this.step = step;
    this.checkpointWritten = checkpointWritten;
  }
}

export class GenerateInputError extends Error {
  override readonly name = 'GenerateInputError';
}

export interface SamplerSetup {
  readonly schedule: DdimPlan | EulerPlan;
  readonly steps: StepCoefs[];
  readonly init: InitCoefs;
}

/** The sampler plan from the manifest's schedule (not the family table: a bundle says what it is). */
export function planFromManifest(m: Manifest, p: GenerateParams, trCovD: number | null): SamplerSetup {
  const s = m.schedule;
  if (s.kind === 'vp-ddim') {
    const schedule = ddimPlan({
      schedule: { linearStart: s.linearStart, linearEnd: s.linearEnd, timesteps: s.timesteps, rescaleZeroSnr: s.rescaleZeroSnr },
      steps: p.steps,
      start: p.start,
      eta: p.eta ?? 1,
      spacing: s.spacing,
      dynamicRescale: s.dynamicRescale?.enabled
        ? { baseScale: s.dynamicRescale.base, turningStep: s.dynamicRescale.rampSteps, firstPrev: s.dynamicRescale.finalPrev === 'tau0' ? 'repeat' : 'scale0' }
        : null,
      compat: p.compat,
      scheduleIgnoresStart: m.family === 'videocrafter',
    });
    return { schedule, steps: ddimSteps(schedule, vpPrediction(s.parameterization)), init: vpInitCoefs(schedule.alphaStart, trCovD) };
  }
  const schedule = eulerPlan({ steps: p.steps, sigmaMax: p.start, sigmaMin: s.sigmaMin, rho: s.rho });
  return { schedule, steps: eulerSteps(schedule), init: veInitCoefs(schedule.initNoiseSigma, trCovD) };
}

interface CheckpointState {
  readonly format: 'cil-checkpoint/1';
  readonly fingerprint: string;
  readonly completed: number;
  readonly generator: GeneratorState;
}

const CKPT_STATE = 'checkpoint/state.json';
const CKPT_LATENT = 'checkpoint/latent.npy';

function fingerprint(i: GenerateInput): string {
  const h = createHash('sha256');
  h.update(i.bundle.hash).update(JSON.stringify(i.params)).update(i.image);
  if (i.statistics) h.update(i.statistics.stats.expectation.data).update(String(i.statistics.stats.trCovD));
  if (i.initNoise) h.update(i.initNoise.data);
  return h.digest('hex');
}

function guidanceFor(m: Manifest, p: GenerateParams, model: Parameters<typeof cfg>[0]): GuidedDenoiser {
  if (m.family === 'svd') return perFrameGuidance(model, { min: p.minGuidanceScale ?? 1, max: p.maxGuidanceScale ?? 3 });
  if (m.family === 'dynamicrafter' && p.imageGuidanceScale !== null) return twoScaleGuidance(model, { text: p.guidanceScale ?? 7.5, image: p.imageGuidanceScale });
  return cfg(model, { scale: p.guidanceScale ?? 1, rescale: p.guidanceRescale ?? 0 });
}

export interface GenerationMetadata {
  readonly format: typeof METADATA_FORMAT;
  readonly model: { id: string; family: string; cil: boolean; hash: string; source: string };
  readonly executionProvider: string;
  readonly params: GenerateParams;
  readonly analyticInit: { statistics: string; trCovD: number; meanCoef: number; std: number } | null;
  readonly initNoise: 'generator' | 'file';
  readonly plan: Record<string, unknown>;
  readonly unetCallsPerStep: number;
  readonly frames: { count: number; height: number; width: number; fps: number; keys: string[] };
  readonly latentKey: string | null;
  readonly resumedFromStep: number;
  readonly timings: { encodeS: number; denoiseS: number; decodeS: number; writeS: number; totalS: number; unetS: number };
  readonly createdAt: string;
}

export async function generate(i: GenerateInput): Promise<GenerationMetadata> {
  const t0 = performance.now();
  const m = i.bundle.manifest;
  const p = i.params;
  const elapsed = (): number => (performance.now() - t0) / 1000;
  // --- checks before any write ---
  for (const c of Object.keys(m.components)) {
    const info = i.sessions.info(c);
    checkSessionAgainstManifest(m, c, info.file, info.inputs, info.outputs);
  }
  if (p.analyticInit && !i.statistics) throw new GenerateInputError('Analytic-Init is on but no statistics file was given (pass one, or turn Analytic-Init off)');
  const image = await imageToTensor(i.image, m.resolution.height, m.resolution.width, i.imageWhere);
  const setup = planFromManifest(m, p, p.analyticInit && i.statistics ? i.statistics.stats.trCovD : null);
  const svd = m.family === 'svd';
  const C = m.latent.channels;
  const h = m.resolution.height / m.latent.downsample;
  const w = m.resolution.width / m.latent.downsample;
  const latentDims = svd ? [1, p.frames, C, h, w] : [1, C, p.frames, h, w];
  const expectation = p.analyticInit && i.statistics ? statisticsForModel(i.statistics.stats, m, latentDims, i.statistics.where) : undefined;
  if (i.initNoise && (i.initNoise.data.length !== latentDims.reduce((a, b) => a * b, 1))) {
    throw new GenerateInputError(`initial noise: dims [${i.initNoise.dims.join(', ')}] do not fit the latent [${latentDims.join(', ')}]`);
  }
  const fp = fingerprint(i);

  // --- resume? ---
  let resume: { completed: number; x: Tensor; state: GeneratorState } | null = null;
  const stateBytes = await i.sink.get(CKPT_STATE);
  if (stateBytes) {
    const st = JSON.parse(Buffer.from(stateBytes).toString('utf8')) as CheckpointState;
    const lat = await i.sink.get(CKPT_LATENT);
    if (st.format === 'cil-checkpoint/1' && st.fingerprint === fp && lat) {
      const x = readNpy(lat, `${i.sink.location}/${CKPT_LATENT}`).tensor;
      resume = { completed: st.completed, x: tensor(x.data, latentDims, 'checkpoint latent'), state: st.generator };
    }
  }

  // --- encode ---
  i.onProgress?.({ phase: 'encode', elapsedS: elapsed() });
  const gen = NormalGenerator.fromSeed(p.seed);
  const cond = await prepareConditioning(i.bundle, i.sessions, image, {
    prompt: p.prompt, frames: p.frames, fps: p.fps, frameStride: p.frameStride, motionBucketId: p.motionBucketId, noiseAugStrength: p.noiseAugStrength,
  }, gen);
  const x0 = initialLatent({ dims: latentDims, coefs: setup.init, expectation, noise: i.initNoise ?? gen });
  if (!resume) i.onInitialLatent?.(x0);
  const denoiser = guidanceFor(m, p, cond.model);
  const branches = svd || (p.guidanceScale ?? 1) !== 1 ? (m.family === 'dynamicrafter' && p.imageGuidanceScale !== null ? 3 : 2) : 1;

  // --- denoise ---
  const tDen = performance.now();
  const noise = resume ? NormalGenerator.fromState(resume.state) : gen;
  let last: { completed: number; x: Float32Array; state: GeneratorState } | null = null;
  const writeCheckpoint = async (c: { completed: number; x: Float32Array; state: GeneratorState }): Promise<void> => {
    await i.sink.put(CKPT_LATENT, writeNpy(tensor(c.x, latentDims, 'latent')), 'application/octet-stream');
    const st: CheckpointState = { format: 'cil-checkpoint/1', fingerprint: fp, completed: c.completed, generator: c.state };
    await i.sink.put(CKPT_STATE, Buffer.from(JSON.stringify(st)), 'application/json');
  };
  let latent: Tensor;
  try {
    latent = await sample({
      steps: setup.steps,
      x: resume ? resume.x : x0,
      startStep: resume ? resume.completed : 0,
      denoiser,
      noise,
      signal: i.signal,
      onStep: async (e) => {
        last = { completed: e.completed, x: e.x.data.slice(), state: noise.state() };
        i.onProgress?.({ phase: 'denoise', step: e.completed, total: e.total, elapsedS: elapsed() });
        if (i.checkpointEvery && e.completed % i.checkpointEvery === 0 && e.completed < e.total) {
          // Periodic checkpoints are insurance, not output: a storage hiccup (S3 restarting,
          // throttling past the SDK's retries) must not fail a run that is otherwise healthy.
          // The next period tries again; an interruption still writes one (below).
          try {
            await writeCheckpoint(last);
          } catch (err) {
            i.onWarning?.(`checkpoint after step ${e.completed} not written (the run goes on; a restart would resume from an earlier one): ${(err as Error).message}`);
          }
        }
      },
    });
  } catch (e) {
    if (i.signal?.aborted) {
      const c = last as { completed: number; x: Float32Array; state: GeneratorState } | null;
      let written = c !== null;
      if (c) {
        try {
          await writeCheckpoint(c);
        } catch (err) {
          // Still an interruption (exit 143, retried): the next attempt resumes from the last
          // periodic checkpoint instead, or starts over.
          written = false;
          i.onWarning?.(`checkpoint after step ${c.completed} not written on interruption: ${(err as Error).message}`);
        }
      }
      const reason = i.signal.reason instanceof Error ? i.signal.reason.message : String(i.signal.reason);
      throw new GenerationInterrupted(c?.completed ?? resume?.completed ?? 0, reason, written);
    }
    throw e;
  }
  const denoiseS = (performance.now() - tDen) / 1000;

  // --- decode and write ---
  i.onProgress?.({ phase: 'decode', elapsedS: elapsed() });
  const tDec = performance.now();
  const frames = await decodeFrames(i.bundle, i.sessions, latent, 4, i.signal);
  const decodeS = (performance.now() - tDec) / 1000;
  i.onProgress?.({ phase: 'write', elapsedS: elapsed() });
  const tW = performance.now();
  const H = m.resolution.height;
  const W = m.resolution.width;
  const keys: string[] = [];
  for (let f = 0; f < p.frames; f++) {
    const key = `frames/${String(f).padStart(4, '0')}.png`;
    await i.sink.put(key, await frameToPng(frames, f * 3 * H * W, H, W), 'image/png');
    keys.push(key);
  }
  let latentKey: string | null = null;
  if (p.saveLatent) {
    latentKey = 'latent.npy';
    await i.sink.put(latentKey, writeNpy(latent), 'application/octet-stream');
  }
  const s = setup.schedule;
  const plan: Record<string, unknown> =
    s.kind === 'ddim'
      ? { kind: 'ddim', start: s.start, eta: s.eta, timesteps: Array.from(s.timesteps) }
      : { kind: 'euler', sigmaMax: s.start, sigmas: Array.from(s.sigmas), initNoiseSigma: s.initNoiseSigma };
  const unetMs = i.sessions.runMs.get('unet') ?? 0;
  const meta: GenerationMetadata = {
    format: METADATA_FORMAT,
    model: { id: m.id, family: m.family, cil: m.cil, hash: i.bundle.hash, source: i.bundle.source },
    executionProvider: i.sessions.info('unet').provider,
    params: p,
    analyticInit: p.analyticInit && i.statistics ? { statistics: i.statistics.where, trCovD: i.statistics.stats.trCovD, meanCoef: setup.init.meanCoef, std: setup.init.std } : null,
    initNoise: i.initNoise ? 'file' : 'generator',
    plan,
    unetCallsPerStep: cond.unetCalls(branches),
    frames: { count: p.frames, height: H, width: W, fps: p.fps, keys },
    latentKey,
    resumedFromStep: resume?.completed ?? 0,
    timings: {
      encodeS: cond.encodeMs / 1000,
      denoiseS,
      decodeS,
      writeS: (performance.now() - tW) / 1000,
      totalS: elapsed(),
      unetS: unetMs / 1000,
    },
    createdAt: new Date().toISOString(),
  };
  await i.sink.put('metadata.json', Buffer.from(`${JSON.stringify(meta, null, 2)}\n`), 'application/json');
  // The finished job no longer needs its checkpoint.
  await i.sink.delete(CKPT_STATE);
  await i.sink.delete(CKPT_LATENT);
  return meta;
}
