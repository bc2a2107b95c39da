/**
 * The Batch container's entrypoint logic: a JobSpec in (by reference: $CIL_JOB_SPEC_URI, the
 * s3:// object Validate wrote; or inline JSON for a hand-run job), the generation run against the
 * data bucket, progress as EventBridge events, one metrics line, and an exit code that Batch's
 * retry strategy reads (docs/worker.md):
 *   0 done · 3 input refused (do not retry) · 78 CUDA required but unavailable (GpuUnavailable;
 *   do not retry) · 143 interrupted by SIGTERM or a Spot notice, checkpoint written (retry
 *   resumes) · 1 anything else (retry).
 */
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { S3Client } from '@aws-sdk/client-s3';
import { parseJsonText } from '#shared/formats';
import { parseJobSpec } from '#shared/schemas';
import type { JobSpec, Placement, RecordedPlacement } from '#shared/schemas';
import { isMissing, readLocation } from '../../storage/src/location.ts';
import type { GenerationMetadata, ProgressEvent } from './generate.ts';
import { runJob } from './job.ts';
import type { RunJobOptions } from './job.ts';
import { workerMetricsLine } from './metrics.ts';
import { watchSpotInterruption } from './spot.ts';

/**
 * CUDA was required (CIL_EXECUTION_PROVIDER=cuda) and could not be had: the host or image is
 * wrong, so another attempt on the same kind of host fails the same way (the job definition's
 * retry strategy exits on it). 78 is sysexits' EX_CONFIG.
 */
export const EXIT_GPU_UNAVAILABLE = 78;

export const EXIT = Object.freeze({ ok: 0, failed: 1, refused: 3, gpuUnavailable: EXIT_GPU_UNAVAILABLE, interrupted: 143 });

/** Errors that mean the input is wrong: retrying cannot help. */
const REFUSALS = new Set([
  'BundleError', 'ManifestError', 'ImageDecodeError', 'StatisticsMismatchError', 'StatisticsFormatError', 'SafetensorsFormatError',
  'GenerateInputError', 'InvalidRequestError', 'JobSpecError', 'NpyFormatError', 'ScheduleError', 'ShapeError', 'TokenizerError',
]);

export function exitCodeFor(e: unknown): number {
  const name = e instanceof Error ? e.name : '';
  if (name === 'GenerationInterrupted') return EXIT.interrupted;
  if (name === 'GpuUnavailable') return EXIT.gpuUnavailable;
  return REFUSALS.has(name) ? EXIT.refused : EXIT.failed;
}

/**
 * S3 attempts per request in the worker (the SDK's default is 3). A failed request fails the
 * attempt, and a new Batch attempt costs a container start and reloading the model, so the worker
 * rides out longer S3 trouble (throttling, a brief outage) than a Lambda: 8 attempts with the
 * SDK's jittered exponential backoff wait up to about 13 s in all. AWS_MAX_ATTEMPTS overrides it.
 */
export function workerS3MaxAttempts(env: Readonly<Record<string, string | undefined>> = process.env): number {
  const n = Number(env.AWS_MAX_ATTEMPTS);
  return Number.isInteger(n) && n >= 1 ? n : 8;
}

export interface WorkerOptions {
  readonly s3?: S3Client;
  readonly events?: EventBridgeClient;
  /** EventBridge bus for per-step progress ($CIL_PROGRESS_BUS); none: progress only in logs. */
  readonly progressBus?: string;
  readonly signal?: AbortSignal;
  readonly log?: (line: Record<string, unknown>) => void;
  /** Poll the instance metadata service for a Spot notice (default true; off outside EC2 by itself). */
  readonly spotWatch?: boolean;
  /** Spot poll interval (tests). */
  readonly spotPollMs?: number;
  /** Where the workflow placed the job (`--placement`): recorded in metadata.json with the queue wait. */
  readonly placement?: Placement | null;
  /** The clock (tests): the queue wait is measured from placement.executionStartedAt to the start of this attempt. */
  readonly now?: () => number;
  /** Passed to runJob (tests: the CUDA probe). */
  readonly job?: Pick<RunJobOptions, 'cudaProbe' | 'provider' | 'cacheDir'>;
}

/**
 * The placement with the queue wait: seconds (0.1 s) from the first submission to `now`, the start
 * of this attempt (0 when the clocks disagree and the start seems earlier).
 */
export function recordedPlacement(p: Placement | null, now: number): RecordedPlacement | null {
  if (p === null) return null;
  const wait = Math.max(0, Math.round((now - Date.parse(p.executionStartedAt)) / 100) / 10);
  return { ...p, queueWaitSeconds: wait };
}

/**
 * The job spec by reference (an s3:// URI or a path): read and parsed as JSON. A spec that is not
 * there or not JSON is refused (exit 3: the workflow wrote it, a retry reads the same); other read
 * errors (S3 throttling, the network) fail the attempt (exit 1, retried).
 */
export async function runWorkerFromUri(uri: string, o: WorkerOptions = {}): Promise<number> {
  const log = o.log ?? ((l) => process.stdout.write(`${JSON.stringify(l)}\n`));
  const s3 = o.s3 ?? new S3Client({ maxAttempts: workerS3MaxAttempts() });
  let json: unknown;
  try {
    const bytes = await readLocation(uri, s3);
    // parseJsonText: the spec holds the prompt, and V8's message would quote it.
    json = parseJsonText(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    const missing = isMissing(e);
    const parseError = (e as Error).name === 'JsonSyntaxError';
    const code = missing || parseError || (e as Error).name === 'LocationError' ? EXIT.refused : EXIT.failed;
    log({ event: 'error', error: missing ? 'JobSpecError' : (e as Error).name, reason: missing ? `no job spec at ${uri}` : `cannot read the job spec at ${uri}: ${(e as Error).message}`, exitCode: code });
    return code;
  }
  return runWorker(json, { ...o, s3 });
}

export async function runWorker(specJson: unknown, o: WorkerOptions = {}): Promise<number> {
  const log = o.log ?? ((l) => process.stdout.write(`${JSON.stringify(l)}\n`));
  let spec: JobSpec;
  try {
    spec = parseJobSpec(specJson, 'job spec');
  } catch (e) {
    log({ event: 'error', error: (e as Error).name, reason: (e as Error).message });
    return EXIT.refused;
  }
  const s3 = o.s3 ?? new S3Client({ maxAttempts: workerS3MaxAttempts() });
  const placement = recordedPlacement(o.placement ?? null, (o.now ?? Date.now)());
  if (placement) log({ event: 'placement', jobId: spec.jobId, ...placement });
  const b = `s3://${spec.bucket}/`;
  const r = spec.request;
  let lastSent = 0;
  const sendProgress = (e: ProgressEvent): void => {
    log({ event: 'progress', jobId: spec.jobId, ...e });
    if (!o.progressBus) return;
    const now = Date.now();
    // at most one event per 5 s (plus the last step): progress, not a flood
    if (e.phase === 'denoise' && e.step !== e.total && now - lastSent < 5000) return;
    lastSent = now;
    const events = o.events ?? new EventBridgeClient({});
    events
      .send(new PutEventsCommand({ Entries: [{ Source: 'cil.worker', DetailType: 'Job Progress', EventBusName: o.progressBus, Detail: JSON.stringify({ jobId: spec.jobId, ...e }) }] }))
      .catch((err: unknown) => log({ event: 'warning', message: `progress event not sent: ${(err as Error).message}` }));
  };
  // A Spot notice aborts the job as SIGTERM does: checkpoint, exit 143, the retry resumes.
  const ac = new AbortController();
  const onOuterAbort = (): void => ac.abort(o.signal?.reason);
  if (o.signal?.aborted) ac.abort(o.signal.reason);
  o.signal?.addEventListener('abort', onOuterAbort, { once: true });
  let spotNotice = false;
  const spot = o.spotWatch === false
    ? null
    : await watchSpotInterruption({
        intervalMs: o.spotPollMs,
        log,
        onNotice: (n) => {
          spotNotice = true;
          ac.abort(new Error(`Spot instance ${n.action} notice${n.time ? ` for ${n.time}` : ''}`));
        },
      });
  const family = r.family;
  let load: { downloadS: number; sessionOpenS: number } | null = null;
  try {
    const meta: GenerationMetadata = await runJob(
      {
        image: `${b}${spec.imageKey}`,
        model: `${b}${spec.modelPrefix}`,
        out: `${b}${spec.workPrefix}`,
        statistics: r.analyticInit && r.statistics ? `${b}${r.statistics}` : null,
        initNoise: null,
      },
      {
        ...o.job,
        s3,
        signal: ac.signal,
        onProgress: sendProgress,
        onSessions: (infos) => log({ event: 'sessions', jobId: spec.jobId, sessions: infos }),
        onLoad: (l) => {
          load = l;
          log({ event: 'model-loaded', jobId: spec.jobId, downloadS: l.downloadS, sessionOpenS: l.sessionOpenS, modelCache: l.download });
        },
        checkpointEvery: 10,
        onWarning: (message) => log({ event: 'warning', jobId: spec.jobId, message }),
        params: () => ({ ...r, saveLatent: r.outputs.includes('latent-npy') }),
        ...(placement ? { placement } : {}),
      },
    );
    log(workerMetricsLine({
      family,
      executionProvider: meta.executionProvider,
      values: {
        executionProviderFallback: meta.executionProviderFallback === undefined ? 0 : 1,
        stepSeconds: meta.timings.stepS,
        downloadSeconds: meta.timings.downloadS,
        sessionOpenSeconds: meta.timings.sessionOpenS,
      },
    }));
    log({ event: 'done', jobId: spec.jobId, executionProvider: meta.executionProvider, executionProviderFallback: meta.executionProviderFallback, timings: meta.timings, unetCallsPerStep: meta.unetCallsPerStep });
    return EXIT.ok;
  } catch (e) {
    let code = exitCodeFor(e);
    // A notice that came before the denoising loop (during the download): nothing to checkpoint yet, and the retry starts over.
    if (spotNotice && code === EXIT.failed) code = EXIT.interrupted;
    if (code === EXIT.gpuUnavailable) log(workerMetricsLine({ family, executionProvider: 'none', values: { gpuUnavailable: 1 } }));
    const loaded = load as { downloadS: number; sessionOpenS: number } | null;
    log({ event: code === EXIT.interrupted ? 'interrupted' : 'error', jobId: spec.jobId, error: (e as Error).name, reason: (e as Error).message, exitCode: code, ...(spotNotice ? { spotNotice: true } : {}), ...(loaded ? { downloadS: loaded.downloadS } : {}) });
    return code;
  } finally {
    spot?.stop();
    o.signal?.removeEventListener('abort', onOuterAbort);
  }
}
