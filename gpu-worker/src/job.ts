/**
 * Runs one generation end to end from locations (folders or s3:// URIs): open the bundle and its
 * sessions, read the inputs, generate, and on a refusal write only an error record. Shared by
 * `cil generate` and the Batch entrypoint (`cil worker`).
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { readNpy } from '#shared/formats';
import type { Tensor } from '#shared/sampler';
import type { RecordedPlacement } from '#shared/schemas';
import { openBundle } from './bundle.ts';
import type { Bundle, BundleDownload } from './bundle.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { generate, GenerateInputError } from './generate.ts';
import type { GenerateParams, GenerationMetadata, ProgressEvent } from './generate.ts';
import { OnnxSessions } from './runtime/sessions.ts';
import { asGpuUnavailable, checkSessionProvider, providerFromEnv, requireCuda } from './runtime/gpu.ts';
import type { CudaProbe } from './runtime/gpu.ts';
import type { ExecutionProviderPreference } from './runtime/protocol.ts';
import { openSink, readInput } from './sink.ts';
import { readStatistics } from './statistics.ts';
import type { LoadedStatistics } from './statistics.ts';

export interface JobLocations {
  readonly image: string;
  readonly model: string;
  readonly out: string;
  readonly statistics: string | null;
  readonly initNoise: string | null;
}

export interface RunJobOptions {
  /** Default: $CIL_EXECUTION_PROVIDER (cuda, cpu, auto), else auto. 'cuda' never falls back to the CPU. */
  readonly provider?: ExecutionProviderPreference;
  /** Where to look for CUDA when 'cuda' is required (tests point it at fakes). */
  readonly cudaProbe?: CudaProbe;
  readonly threads?: number;
  readonly cacheDir?: string;
  readonly s3?: S3Client;
  readonly signal?: AbortSignal;
  readonly onProgress?: (e: ProgressEvent) => void;
  readonly onSessions?: (info: { component: string; provider: string; fallbackReason?: string }[]) => void;
  /** The bundle's load: download (or cache hit) and session-open times. */
  readonly onLoad?: (load: BundleLoadReport) => void;
  readonly checkpointEvery?: number;
  readonly onInitialLatent?: (x: Tensor) => void;
  readonly onWarning?: (message: string) => void;
  /** Where the workflow placed the job: into metadata.json. */
  readonly placement?: RecordedPlacement;
  /** Called once the bundle is open (e.g. to resolve parameters from its manifest). */
  readonly params: (b: Bundle) => GenerateParams;
}

/** The JSON error record written to the output location when a job is refused or fails. */
export interface ErrorRecord {
  readonly error: string;
  readonly reason: string;
}

export function errorRecord(e: unknown): ErrorRecord {
  return e instanceof Error ? { error: e.name, reason: e.message } : { error: 'Error', reason: String(e) };
}

/** How the bundle was loaded (metadata.json `timings` and `modelCache`, docs/worker.md). */
export interface BundleLoadReport {
  readonly downloadS: number;
  readonly sessionOpenS: number;
  readonly download: BundleDownload | null;
}

export async function runJob(loc: JobLocations, o: RunJobOptions): Promise<GenerationMetadata> {
  const sink = openSink(loc.out, o.s3);
  let provider: ExecutionProviderPreference;
  try {
    provider = o.provider ?? providerFromEnv();
    // Before the download: a host without CUDA must not spend minutes fetching a model it cannot run.
    requireCuda(provider, o.cudaProbe);
  } catch (e) {
    await sink.put('error.json', Buffer.from(`${JSON.stringify(errorRecord(e), null, 2)}\n`), 'application/json').catch(() => undefined);
    throw e;
  }
  const sessions = new OnnxSessions({ provider, threads: o.threads });
  let bundle: Bundle | null = null;
  try {
    const tLoad = performance.now();
    bundle = await openBundle(loc.model, { cacheDir: o.cacheDir, s3: o.s3 });
    const downloadS = (performance.now() - tLoad) / 1000;
    const params = o.params(bundle);
    const infos = [];
    const tOpen = performance.now();
    for (const [name, c] of Object.entries(bundle.manifest.components)) {
      let info;
      try {
        info = await sessions.open(name, `${bundle.root}/${c.file}`);
      } catch (e) {
        throw provider === 'cuda' ? asGpuUnavailable(name, e) : e;
      }
      checkSessionProvider(name, provider, info.provider, info.fallbackReason);
      infos.push({ component: name, provider: info.provider, fallbackReason: info.fallbackReason });
    }
    const sessionOpenS = (performance.now() - tOpen) / 1000;
    o.onSessions?.(infos);
    o.onLoad?.({ downloadS, sessionOpenS, download: bundle.download ?? null });
    const image = await readInput(loc.image, o.s3);
    let statistics: { stats: LoadedStatistics; where: string } | null = null;
    if (params.analyticInit) {
      // An explicit location wins; else a bundle may ship its default statistics at the same
      // relative key the data bucket uses (statistics/<id>.safetensors).
      const shipped = params.statistics && !bundle.source.startsWith('s3://') ? join(bundle.root, params.statistics) : null;
      const where = loc.statistics ?? (shipped && existsSync(shipped) ? shipped : null);
      if (!where) throw new GenerateInputError(`Analytic-Init is on but no statistics file was given (the model's default is ${params.statistics ?? 'none'}; pass one, or turn Analytic-Init off)`);
      statistics = { stats: readStatistics(await readInput(where, o.s3), where), where };
    }
    let initNoise: Tensor | null = null;
    if (loc.initNoise) initNoise = readNpy(await readInput(loc.initNoise, o.s3), loc.initNoise).tensor;
    return await generate({ bundle, sessions, image, imageWhere: loc.image, params, statistics, initNoise, sink, signal: o.signal, onProgress: o.onProgress, checkpointEvery: o.checkpointEvery, onInitialLatent: o.onInitialLatent, onWarning: o.onWarning, load: { downloadS, sessionOpenS, requestedProvider: provider }, placement: o.placement });
  } catch (e) {
    if ((e as Error).name !== 'GenerationInterrupted') {
      await sink.put('error.json', Buffer.from(`${JSON.stringify(errorRecord(e), null, 2)}\n`), 'application/json').catch(() => undefined);
    }
    throw e;
  } finally {
    await sessions.close();
    // The cached bundle may be evicted from here on (its files are no longer open).
    await bundle?.release?.();
  }
}
