/** metadata.json: what a generation used and produced (a public contract: docs/worker.md). */
import type { RecordedPlacement } from '#shared/schemas';
import { planRecord } from '#shared/sampler';
import type { SamplerPlan } from '#shared/sampler';
import type { Bundle, BundleDownload } from '../bundle.ts';
import type { GenerateParams } from '../params.ts';
import type { OutputSink } from '../sink.ts';

export const METADATA_FORMAT = 'cil-generation/1';

export interface GenerationMetadata {
  readonly format: typeof METADATA_FORMAT;
  readonly model: { id: string; family: string; cil: boolean; hash: string; source: string };
  readonly executionProvider: string;
  /**
   * Only when a session fell back to the CPU under 'auto' (why); absent otherwise. The worker also
   * logs it as the ExecutionProviderFallback metric.
   */
  readonly executionProviderFallback?: string;
  /** Only for a bundle from S3: how it reached the cache (docs/worker.md "Model loading"). */
  readonly modelCache?: BundleDownload;
  /** Only for a job the workflow placed (a Batch job): queue, capacity, Spot cancellations, queue wait. */
  readonly placement?: RecordedPlacement;
  readonly params: GenerateParams;
  readonly analyticInit: { statistics: string; trCovD: number; meanCoef: number; std: number } | null;
  readonly initNoise: 'generator' | 'file';
  readonly plan: Record<string, unknown>;
  readonly unetCallsPerStep: number;
  readonly frames: { count: number; height: number; width: number; fps: number; keys: string[] };
  readonly latentKey: string | null;
  readonly resumedFromStep: number;
  /**
   * Seconds. stepS: mean denoising step of this attempt; downloadS: opening the bundle (download
   * and checks, or the cache hit); sessionOpenS: opening every ONNX session.
   */
  readonly timings: { encodeS: number; denoiseS: number; decodeS: number; writeS: number; totalS: number; unetS: number; stepS: number; downloadS: number; sessionOpenS: number };
  readonly createdAt: string;
}

/** What the job's runner measured before generation (runJob). */
export interface LoadTimings {
  readonly downloadS: number;
  readonly sessionOpenS: number;
  readonly requestedProvider: string;
}

export interface MetadataParts {
  readonly bundle: Bundle;
  readonly executionProvider: string;
  readonly fallbackReason?: string;
  readonly load?: LoadTimings;
  readonly placement?: RecordedPlacement;
  readonly stepS: number;
  readonly params: GenerateParams;
  readonly plan: SamplerPlan;
  /** The statistics Analytic-Init used (where and tr(Cov)/d), null when it was off. */
  readonly statistics: { readonly where: string; readonly trCovD: number } | null;
  readonly initNoiseFromFile: boolean;
  readonly unetCallsPerStep: number;
  readonly frameKeys: string[];
  readonly latentKey: string | null;
  readonly resumedFromStep: number;
  readonly timings: Omit<GenerationMetadata['timings'], 'stepS' | 'downloadS' | 'sessionOpenS'>;
}

export function generationMetadata(p: MetadataParts): GenerationMetadata {
  const m = p.bundle.manifest;
  const init = p.plan.init;
  return {
    format: METADATA_FORMAT,
    model: { id: m.id, family: m.family, cil: m.cil, hash: p.bundle.hash, source: p.bundle.source },
    executionProvider: p.executionProvider,
    executionProviderFallback: p.fallbackReason !== undefined && p.executionProvider !== 'cuda' ? p.fallbackReason : undefined,
    modelCache: p.bundle.download,
    placement: p.placement,
    params: p.params,
    analyticInit: p.statistics ? { statistics: p.statistics.where, trCovD: p.statistics.trCovD, meanCoef: init.meanCoef, std: init.std } : null,
    initNoise: p.initNoiseFromFile ? 'file' : 'generator',
    plan: planRecord(p.plan),
    unetCallsPerStep: p.unetCallsPerStep,
    frames: { count: p.params.frames, height: m.resolution.height, width: m.resolution.width, fps: p.params.fps, keys: p.frameKeys },
    latentKey: p.latentKey,
    resumedFromStep: p.resumedFromStep,
    timings: { ...p.timings, stepS: p.stepS, downloadS: p.load?.downloadS ?? 0, sessionOpenS: p.load?.sessionOpenS ?? 0 },
    createdAt: new Date().toISOString(),
  };
}

export async function writeMetadata(sink: OutputSink, meta: GenerationMetadata): Promise<void> {
  await sink.put('metadata.json', Buffer.from(`${JSON.stringify(meta, null, 2)}\n`), 'application/json');
}
