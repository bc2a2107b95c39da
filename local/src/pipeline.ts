/**
 * The whole pipeline on one machine (docs/local.md, "local mode"): the local S3 server, the
 * synthesized workflows run by the local ASL interpreter, the real Lambda handlers in-process,
 * the worker as a child process for each Batch job, and a notifications log. An object created
 * under inputs/ or batches/ starts a run exactly as in AWS: through the starter's own logic
 * (`planStart` + `startNamedExecution`), so the execution name is the job id and a duplicate
 * event starts nothing. Used by `cil local up|run`, `npm run demo` and the end-to-end tests.
 *
 * This folder is the integration layer: it is the one place that imports infra/, functions/,
 * gpu-worker/ and shared/ together (docs/local.md). Each stand-in is its own module (s3.ts,
 * batch.ts, executions.ts, lambda.ts, notifications.ts, faults.ts); wiring.ts connects them.
 */
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { ObjectCreatedDetail, StartOutcome } from '../../functions/src/starter/core.ts';
import { reconcile } from '../../functions/src/reconciler/core.ts';
import type { ReconcileReport, ReconcileSettings } from '../../functions/src/reconciler/core.ts';
import { keyExists, listUploadObjects } from '../../functions/src/reconciler/list.ts';
import { uploadImage } from '../../cli/remote/client.ts';
import type { BatchJobDescription } from './batch.ts';
import { lockDataDir } from './dataDir.ts';
import { loadLocalDefinitions } from './definitions.ts';
import type { LocalDefinitions } from './definitions.ts';
import type { ExecutionRecord, LocalWorkflow, StateEntry, WorkerProgress } from './executions.ts';
import type { S3FaultProxy, TaskFaults } from './faults.ts';
import { redirectLambdaLogs } from './lambda.ts';
import { NotificationLog } from './notifications.ts';
import type { LocalNotification } from './notifications.ts';
import type { ExecutionHandles } from './wiring.ts';
import { seedDemoModel, wireBatch, wireFunctions, wireS3, wireStarter, wireStepFunctions } from './wiring.ts';
import type { LocalStepFunctions } from './executions.ts';

export { DataDirInUse, dataDirHolder, LOCK_FILE } from './dataDir.ts';
export { LambdaFunctionError, LocalPipelineError, TaskFailed } from './errors.ts';
export { defaultWorkerConcurrency, LOCAL_EVENT_BUS, MANIFEST_ITEMS_FIELD, readManifestItems, seedDemoModel } from './wiring.ts';

export const DEFAULT_BUCKET = 'cil-data';

export type PipelineEvent =
  | { readonly type: 'execution-started'; readonly workflow: LocalWorkflow; readonly name: string; readonly key: string }
  | { readonly type: 'duplicate'; readonly workflow: LocalWorkflow; readonly name: string; readonly key: string }
  | { readonly type: 'ignored'; readonly key: string; readonly reason: string }
  | { readonly type: 'state'; readonly workflow: LocalWorkflow; readonly name: string; readonly state: StateEntry }
  | { readonly type: 'batch-job'; readonly job: BatchJobDescription }
  | { readonly type: 'progress'; readonly jobId: string; readonly progress: WorkerProgress }
  | { readonly type: 'execution-finished'; readonly workflow: LocalWorkflow; readonly record: ExecutionRecord }
  | { readonly type: 'notification'; readonly notification: LocalNotification }
  | { readonly type: 'error'; readonly message: string };

export interface LocalPipelineOptions {
  /** Data folder: s3/, executions/, logs/, cache/, notifications.jsonl. */
  readonly dataDir: string;
  /** Port of the S3 server on 127.0.0.1 (0: any free port). */
  readonly port?: number;
  readonly bucket?: string;
  /** Worker processes at once (default: a quarter of the cores, 1 to 4; each worker uses every core). */
  readonly workerConcurrency?: number;
  /** Cache of the synthesized definitions (default `<dataDir>/cache`; null: synthesize every time). */
  readonly definitionsCacheDir?: string | null;
  /** The worker's model-bundle cache, CIL_MODEL_CACHE (default `<dataDir>/cache/models`). */
  readonly modelCacheDir?: string;
  /** Upload the demo model and its statistics (default true). */
  readonly seedDemo?: boolean;
  /** ffmpeg for PostProcess (default $FFMPEG_PATH, else `ffmpeg` on PATH, else /usr/bin/ffmpeg). */
  readonly ffmpegPath?: string;
  /** Stands for the worker image's entrypoint `node bin/cil.js` (default: this Node and bin/cil.js). */
  readonly workerEntrypoint?: readonly string[];
  /** Keep a worker process started ahead of the next job (default true; local/src/warmStart.ts). */
  readonly warmStart?: boolean;
  /** SIGTERM → SIGKILL grace for worker processes (default 30 s). */
  readonly workerKillGraceMs?: number;
  /** Lambda (Powertools) log lines: to `<dataDir>/logs/lambda.jsonl` (default) or left on stdout. */
  readonly lambdaLogs?: 'file' | 'stdout';
  readonly onEvent?: (e: PipelineEvent) => void;
  /** Called before a synthesis (a cache miss takes several seconds). */
  readonly onSynth?: () => void;
  /**
   * Fault injection (tests, drills): S3 traffic of the pipeline and its workers goes through a
   * proxy that can fail chosen requests, and Task states can be failed before their handler runs
   * (`pipeline.faults`). Default false: clients talk to the S3 server directly.
   */
  readonly faultInjection?: boolean;
  /** Seed of the fault proxy's probability draws (default 1). */
  readonly faultSeed?: number;
  /** Every Retry waits this long instead of the definition's backoff (tests); see LocalStepFunctionsOptions. */
  readonly retryIntervalMs?: number;
  /**
   * Extra environment of every worker container (drills: CIL_EXECUTION_PROVIDER=cuda, a fake
   * instance metadata endpoint). Without AWS_EC2_METADATA_SERVICE_ENDPOINT here the workers make
   * no metadata call (AWS_EC2_METADATA_DISABLED).
   */
  readonly workerEnv?: Readonly<Record<string, string>>;
  /** Drill: object-created events for which this answers true are dropped, as a lost EventBridge delivery. */
  readonly dropEvent?: (detail: ObjectCreatedDetail) => boolean;
}

/** The handles of fault injection (`faultInjection: true`). */
export interface LocalFaults {
  /** The S3 proxy every client of the pipeline and its workers uses: add rules to fail requests. */
  readonly s3: S3FaultProxy;
  /** Failures of Task states before their handler runs (e.g. `Lambda.ServiceException` in PostProcess). */
  readonly tasks: TaskFaults;
  /** A client of the S3 server itself, past the proxy: for checking what is stored while rules are on. */
  readonly direct: S3Client;
}

export interface Uploaded {
  readonly key: string;
  readonly etag: string;
  /** The execution name the upload starts: the job id (inputs/) or batch id (batches/). */
  readonly id: string;
}

export interface LocalPipeline {
  readonly endpoint: string;
  readonly bucket: string;
  readonly dataDir: string;
  readonly s3: S3Client;
  readonly definitions: LocalDefinitions;
  /** PutObject (with a sidecar request first when given); the object-created event starts the run. */
  upload(key: string, body: Uint8Array | string, o?: { readonly request?: Readonly<Record<string, unknown>>; readonly contentType?: string }): Promise<Uploaded>;
  waitForJob(jobId: string, timeoutMs?: number): Promise<ExecutionRecord>;
  waitForBatch(batchId: string, timeoutMs?: number): Promise<ExecutionRecord>;
  execution(workflow: LocalWorkflow, name: string): ExecutionRecord | undefined;
  executions(workflow: LocalWorkflow): ExecutionRecord[];
  /**
   * StartExecution with a name and input of one's own: how an operator runs a job again under its
   * job id (docs/operations.md §2). ExecutionAlreadyExists when the name was used.
   */
  startExecution(workflow: LocalWorkflow, name: string, input: unknown): ExecutionRecord;
  /**
   * One pass of the reconciler (functions/src/reconciler) against this pipeline: uploads under
   * inputs/ with no job record and no execution are started under their job id. `minAgeMs`
   * defaults to 0 here (the drill does not wait five minutes).
   */
  reconcile(settings?: Partial<ReconcileSettings>): Promise<ReconcileReport>;
  /** Delivers an S3 "Object Created" event detail as EventBridge would (tests: a duplicate delivery). */
  deliver(detail: ObjectCreatedDetail): Promise<StartOutcome | 'ignored'>;
  notifications(): LocalNotification[];
  batchJob(jobId: string): BatchJobDescription | undefined;
  /** Fault injection handles, or null when the pipeline was started without `faultInjection`. */
  readonly faults: LocalFaults | null;
  /** Restarts the S3 server as after a crash (connections dropped), down for `downMs`; objects stay. */
  restartS3(downMs?: number): Promise<void>;
  /**
   * Queues (ARNs, or the tail after `job-queue/`) whose jobs find no capacity: the local Batch
   * cancels them RUNNABLE as a Spot queue's capacity time limit does (empty list: capacity back).
   */
  withoutCapacity(queues: readonly string[]): void;
  /**
   * Signals the worker process of a job's running Batch attempt (job id, i.e. the Batch job name):
   * SIGTERM as a Spot reclaim or task stop (SIGKILL after the grace time), SIGKILL as a lost host
   * or the OOM killer. False when no attempt of that job is running.
   */
  interruptWorker(jobId: string, signal: 'SIGTERM' | 'SIGKILL'): boolean;
  stop(): Promise<void>;
}

function findOnPath(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return null;
}

/** The ffmpeg PostProcess will run: $FFMPEG_PATH, else `ffmpeg` on PATH, else Debian's /usr/bin/ffmpeg; null when none exists. */
export function findFfmpeg(): string | null {
  const env = process.env.FFMPEG_PATH;
  if (env) return existsSync(env) ? env : null;
  return findOnPath('ffmpeg') ?? (existsSync('/usr/bin/ffmpeg') ? '/usr/bin/ffmpeg' : null);
}

export async function startLocalPipeline(o: LocalPipelineOptions): Promise<LocalPipeline> {
  const releaseLock = lockDataDir(o.dataDir);
  let restoreLogs: () => Promise<void> = () => Promise.resolve();
  try {
    const defs = await loadLocalDefinitions({ cacheDir: o.definitionsCacheDir === undefined ? join(o.dataDir, 'cache') : o.definitionsCacheDir, onSynth: o.onSynth });
    restoreLogs = redirectLambdaLogs((o.lambdaLogs ?? 'file') === 'file' ? join(o.dataDir, 'logs', 'lambda.jsonl') : null);
    const release = async (): Promise<void> => {
      await restoreLogs();
      releaseLock();
    };
    return await assemble(o, defs, release);
  } catch (e) {
    await restoreLogs();
    releaseLock();
    throw e;
  }
}

/** Starts the stand-ins in the order the data flows and returns the handle on them all. */
async function assemble(o: LocalPipelineOptions, defs: LocalDefinitions, release: () => Promise<void>): Promise<LocalPipeline> {
  const { dataDir } = o;
  const bucket = o.bucket ?? DEFAULT_BUCKET;
  const emit = (e: PipelineEvent): void => o.onEvent?.(e);
  const notifications = new NotificationLog(join(dataDir, 'notifications.jsonl'), (n) => emit({ type: 'notification', notification: n }));
  const pending = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p);
    void p.finally(() => pending.delete(p)).catch(() => undefined);
    return p;
  };
  let sfn: LocalStepFunctions | null = null;
  const sfnRef = (): LocalStepFunctions => sfn!;
  let started = false;
  const deliver = wireStarter(defs, sfnRef, emit);
  const s3 = await wireS3(o, bucket, (e) => {
    if (!started) return;
    if (o.dropEvent?.(e.detail)) {
      emit({ type: 'ignored', key: e.detail.object.key, reason: 'event dropped (drill: a lost EventBridge delivery)' });
      return;
    }
    track(deliver(e.detail)).catch((err: unknown) => emit({ type: 'error', message: `starting a run for ${e.detail.object.key}: ${(err as Error).message}` }));
  });
  const handles: ExecutionHandles = new Map();
  const batch = wireBatch(o, defs, s3.endpoint, handles, emit);
  let machines: LocalStepFunctions;
  try {
    const functions = wireFunctions({ s3: s3.s3, bucket, ffmpegPath: o.ffmpegPath ?? findFfmpeg() ?? '/usr/bin/ffmpeg', tmpRoot: join(dataDir, 'tmp'), defs, notifications, batch, sfn: sfnRef });
    machines = wireStepFunctions({ dataDir, defs, s3: s3.s3, functions, taskFaults: s3.taskFaults, retryIntervalMs: o.retryIntervalMs, handles, emit });
    sfn = machines;
    if (o.seedDemo ?? true) await seedDemoModel(s3.s3, bucket);
  } catch (e) {
    await s3.close();
    throw e;
  }
  started = true;

  let stopped = false;
  return {
    endpoint: s3.endpoint,
    bucket,
    dataDir,
    s3: s3.s3,
    definitions: defs,
    async upload(key, body, uo = {}) {
      const u = await uploadImage(s3.s3, bucket, key, body, { request: uo.request, contentType: uo.contentType });
      return { key, etag: u.etag, id: u.jobId };
    },
    waitForJob: (jobId, timeoutMs) => machines.wait('generation', jobId, timeoutMs),
    waitForBatch: (batchId, timeoutMs) => machines.wait('batch', batchId, timeoutMs),
    execution: (w, name) => machines.get(w, name),
    executions: (w) => machines.list(w),
    startExecution: (w, name, input) => machines.start(w, name, input),
    deliver: (detail) => track(deliver(detail)),
    reconcile: (settings) =>
      reconcile(
        {
          bucket,
          // s3rver keeps no versions: the ETag names the job, as in the starter.
          listUploads: (since) => listUploadObjects(s3.s3, bucket, since),
          exists: (key) => keyExists(s3.s3, bucket, key),
          start: (name, input) => {
            try {
              machines.start('generation', name, input);
              return Promise.resolve('started');
            } catch (e) {
              if ((e as Error).name === 'ExecutionAlreadyExists') return Promise.resolve('duplicate');
              return Promise.reject(e instanceof Error ? e : new Error(String(e)));
            }
          },
        },
        { minAgeMs: 0, ...settings },
      ),
    notifications: () => notifications.read(),
    batchJob: (id) => batch.describe(id),
    faults: s3.proxy && s3.taskFaults ? { s3: s3.proxy, tasks: s3.taskFaults, direct: s3.server.s3 } : null,
    restartS3: (downMs) => s3.server.restart(downMs),
    interruptWorker: (jobId, signal) => batch.interrupt(jobId, signal),
    withoutCapacity: (queues) => batch.withoutCapacity(queues),
    async stop() {
      if (stopped) return;
      stopped = true;
      started = false;
      await Promise.allSettled([...pending]);
      // Executions first (their Batch tasks then end with the workers), then the workers, then S3.
      await machines.stop();
      await batch.stop();
      await s3.close();
      await release();
    },
  };
}
