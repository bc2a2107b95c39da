/**
 * The Batch container's entrypoint logic: a JobSpec in (from $CIL_JOB_SPEC or a file/URI), the
 * generation run against the data bucket, progress as EventBridge events, and an exit code that
 * Batch's retry strategy reads (docs/worker.md):
 *   0 done · 3 input refused (do not retry) · 143 interrupted by SIGTERM, checkpoint written
 *   (retry resumes) · 1 anything else (retry).
 */
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { S3Client } from '@aws-sdk/client-s3';
import { parseJobSpec } from '#shared/schemas';
import type { JobSpec } from '#shared/schemas';
import type { ProgressEvent } from './generate.ts';
import { runJob } from './job.ts';

export const EXIT = Object.freeze({ ok: 0, failed: 1, refused: 3, interrupted: 143 });

/** Errors that mean the input is wrong: retrying cannot help. */
const REFUSALS = new Set([
  'BundleError', 'ManifestError', 'ImageDecodeError', 'StatisticsMismatchError', 'StatisticsFormatError', 'SafetensorsFormatError',
  'GenerateInputError', 'InvalidRequestError', 'JobSpecError', 'NpyFormatError', 'ScheduleError', 'ShapeError', 'TokenizerError',
]);

export function exitCodeFor(e: unknown): number {
  const name = e instanceof Error ? e.name : '';
  if (name === 'GenerationInterrupted') return EXIT.interrupted;
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
  try {
    const meta = await runJob(
      {
        image: `${b}${spec.imageKey}`,
        model: `${b}${spec.modelPrefix}`,
        out: `${b}${spec.workPrefix}`,
        statistics: r.analyticInit && r.statistics ? `${b}${r.statistics}` : null,
        initNoise: null,
      },
      {
        s3,
        signal: o.signal,
        onProgress: sendProgress,
        onSessions: (infos) => log({ event: 'sessions', jobId: spec.jobId, sessions: infos }),
        checkpointEvery: 10,
        onWarning: (message) => log({ event: 'warning', jobId: spec.jobId, message }),
        params: () => ({ ...r, saveLatent: r.outputs.includes('latent-npy') }),
      },
    );
    log({ event: 'done', jobId: spec.jobId, executionProvider: meta.executionProvider, timings: meta.timings, unetCallsPerStep: meta.unetCallsPerStep });
    return EXIT.ok;
  } catch (e) {
    const code = exitCodeFor(e);
    log({ event: code === EXIT.interrupted ? 'interrupted' : 'error', jobId: spec.jobId, error: (e as Error).name, reason: (e as Error).message, exitCode: code });
    return code;
  }
}
