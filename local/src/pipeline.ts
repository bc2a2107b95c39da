/**
 * The whole pipeline on one machine (DESIGN.md §5, "local mode"): the local S3 server, the
 * synthesized workflows run by the local ASL interpreter, the real Lambda handlers in-process,
 * the worker as a child process for each Batch job, and a notifications log. An object created
 * under inputs/ or batches/ starts a run exactly as in AWS: through the starter's own logic
 * (`planStart` + `startNamedExecution`), so the execution name is the job id and a duplicate
 * event starts nothing. Used by `cil local up|run`, `npm run demo` and the end-to-end tests.
 *
 * This folder is the integration layer: it is the one place that imports infra/, functions/,
 * gpu-worker/ and shared/ together (docs/local.md).
 */
import { Console } from 'node:console';
import { availableParallelism } from 'node:os';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { DescribeMapRunCommand, ListMapRunsCommand, StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { SFNClient } from '@aws-sdk/client-sfn';
import { createValidateHandler } from '../../functions/src/validate/handler.ts';
import { createPostprocessHandler } from '../../functions/src/postprocess/handler.ts';
import { createNotifyHandler, createRecordFailureHandler } from '../../functions/src/notify/handler.ts';
import { logger as functionsLogger } from '../../functions/src/logger.ts';
import { buildDemoBundle, DEMO_MODEL_ID, DEMO_STATISTICS_FILE } from '../../gpu-worker/src/demo/bundle.ts';
import { BATCH_STATES, GENERATION_STATES, WORKER_ENV } from '../../infra/lib/names.ts';
import { planStart, startNamedExecution } from '../../functions/src/starter/core.ts';
import { prepareItemHandler } from '../../functions/src/starter/handler.ts';
import type { ObjectCreatedDetail, StartOutcome } from '../../functions/src/starter/core.ts';
import { summarize } from '../../functions/src/batchSummary/core.ts';
import type { SummaryEvent } from '../../functions/src/batchSummary/core.ts';
import { withInlineItems } from '../../infra/lib/definitions.ts';
import { jobIdFor, modelPrefix, PREFIX, sidecarKey } from '#shared/schemas';
import { LocalBatch } from './batch.ts';
import type { BatchJobDescription, SubmitJobParameters, WorkerLine } from './batch.ts';
import { loadLocalDefinitions } from './definitions.ts';
import type { Asl, LocalDefinitions } from './definitions.ts';
import { ExecutionAlreadyExists, LocalStepFunctions, taskStates } from './executions.ts';
import type { ExecutionHandle, ExecutionRecord, LocalWorkflow, StateEntry, TaskHandlers, WorkerProgress } from './executions.ts';
import { NotificationLog } from './notifications.ts';
import type { LocalNotification } from './notifications.ts';
import { CLI_ENTRY } from './paths.ts';
import { localS3Client, localS3Env, startS3Server } from './s3.ts';
import { startS3FaultProxy, TaskFaults } from './faults.ts';
import type { S3FaultProxy } from './faults.ts';
import type { LocalS3Server } from './s3.ts';

export const DEFAULT_BUCKET = 'cil-data';
/** The event bus name Notify publishes to locally (the stack's bus exists only in AWS). */
export const LOCAL_EVENT_BUS = 'cil-local';
/**
 * Where the local runner puts a manifest's lines in the batch workflow's input: the one change
 * to a synthesized definition (withInlineItems: the Distributed Map's ItemReader, which reads S3
 * and which the local interpreter lacks, becomes ItemsPath; ResultWriter is dropped).
 */
export const MANIFEST_ITEMS_FIELD = 'manifestItems';

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
  /** Delivers an S3 "Object Created" event detail as EventBridge would (tests: a duplicate delivery). */
  deliver(detail: ObjectCreatedDetail): Promise<StartOutcome | 'ignored'>;
  notifications(): LocalNotification[];
  batchJob(jobId: string): BatchJobDescription | undefined;
  /** Fault injection handles, or null when the pipeline was started without `faultInjection`. */
  readonly faults: LocalFaults | null;
  /** Restarts the S3 server as after a crash (connections dropped), down for `downMs`; objects stay. */
  restartS3(downMs?: number): Promise<void>;
  /**
   * Signals the worker process of a job's running Batch attempt (job id, i.e. the Batch job name):
   * SIGTERM as a Spot reclaim or task stop (SIGKILL after the grace time), SIGKILL as a lost host
   * or the OOM killer. False when no attempt of that job is running.
   */
  interruptWorker(jobId: string, signal: 'SIGTERM' | 'SIGKILL'): boolean;
  stop(): Promise<void>;
}

export class LocalPipelineError extends Error {
  override readonly name = 'LocalPipelineError';
}

/**
 * A Lambda function's error as Step Functions sees it: Error is the handler's error type, Cause
 * the runtime's JSON `{errorType, errorMessage, trace}` (RecordFailure reads errorMessage from it).
 */
export class LambdaFunctionError extends Error {
  constructor(errorType: string, errorMessage: string, trace: string[]) {
    super(JSON.stringify({ errorType, errorMessage, trace }));
    // The name is the handler's own error type: that is what Retry and Catch match.
    this.name = errorType;
  }
}

/** A task failure as Step Functions reports a failed Batch job or child execution. */
export class TaskFailed extends Error {
  override readonly name = 'States.TaskFailed';
}

/** Each handler first lets the injected task faults fail it (as the service would, before the code runs). */
function withTaskFaults(handlers: TaskHandlers, faults: TaskFaults): TaskHandlers {
  return Object.fromEntries(
    Object.entries(handlers).map(([state, h]) => [
      state,
      async (input: unknown) => {
        faults.check(state);
        return h(input);
      },
    ]),
  );
}

/** Invokes a handler the way the Lambda runtime does: JSON in, JSON out, errors as type + message. */
function lambdaTask(fn: (input: unknown) => Promise<unknown>): (input: unknown) => Promise<unknown> {
  return async (input) => {
    const event = JSON.parse(JSON.stringify(input ?? null)) as unknown;
    let out: unknown;
    try {
      out = await fn(event);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      throw new LambdaFunctionError(err.name, err.message, (err.stack ?? '').split('\n').slice(1, 6).map((l) => l.trim()));
    }
    return out === undefined ? null : (JSON.parse(JSON.stringify(out)) as unknown);
  };
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

export function defaultWorkerConcurrency(): number {
  return Math.max(1, Math.min(4, Math.floor(availableParallelism() / 4)));
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '');
}

/** Uploads the demo model bundle to models/demo/ and its statistics to statistics/demo.safetensors. */
export async function seedDemoModel(s3: S3Client, bucket: string): Promise<void> {
  const bundle = buildDemoBundle();
  const prefix = modelPrefix(DEMO_MODEL_ID);
  const puts: Promise<unknown>[] = [];
  for (const [name, bytes] of bundle.files) {
    puts.push(s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${name}`, Body: bytes })));
  }
  const stats = bundle.files.get(DEMO_STATISTICS_FILE);
  if (!stats) throw new LocalPipelineError(`the demo bundle has no ${DEMO_STATISTICS_FILE}`);
  puts.push(s3.send(new PutObjectCommand({ Bucket: bucket, Key: DEMO_STATISTICS_FILE, Body: stats })));
  await Promise.all(puts);
}

/** Reads a JSON Lines manifest as the Distributed Map's ItemReader does: one JSON value per non-empty line. */
export async function readManifestItems(s3: S3Client, bucket: string, key: string, versionId: string | null): Promise<unknown[]> {
  let text: string;
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId ?? undefined }));
    text = await r.Body!.transformToString('utf8');
  } catch (e) {
    throw Object.assign(new LocalPipelineError(`ItemReader: cannot read s3://${bucket}/${key}: ${(e as Error).message}`), { name: 'States.ItemReaderFailed' });
  }
  const items: unknown[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    try {
      items.push(JSON.parse(line));
    } catch {
      throw Object.assign(new LocalPipelineError(`ItemReader: ${key} line ${i + 1} is not JSON`), { name: 'States.ItemReaderFailed' });
    }
  }
  return items;
}

export async function startLocalPipeline(o: LocalPipelineOptions): Promise<LocalPipeline> {
  const dataDir = o.dataDir;
  for (const d of ['s3', 'executions', 'logs', 'cache', 'tmp']) mkdirSync(join(dataDir, d), { recursive: true });
  const releaseLock = lockDataDir(dataDir);
  try {
    return await startLocked(o, releaseLock);
  } catch (e) {
    releaseLock();
    throw e;
  }
}

export const LOCK_FILE = 'pipeline.lock';

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid of the live process that holds the data folder, or null. */
export function dataDirHolder(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(join(dataDir, LOCK_FILE), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : null;
  } catch {
    return null;
  }
}

/**
 * One pipeline per data folder (two would run the same executions twice): a lock file holding the
 * pid, taken with O_EXCL; a lock whose process is gone is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  const file = join(dataDir, LOCK_FILE);
  for (let i = 0; i < 2; i++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return () => {
        if (dataDirHolder(dataDir) === process.pid) rmSync(file, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = dataDirHolder(dataDir);
      if (holder !== null) throw new DataDirInUse(`the data folder ${dataDir} is in use by another local pipeline (pid ${holder})`, holder);
      rmSync(file, { force: true });
    }
  }
  throw new LocalPipelineError(`could not lock ${file}`);
}

export class DataDirInUse extends Error {
  override readonly name = 'DataDirInUse';
  readonly pid: number;
  constructor(message: string, pid: number) {
    super(message);
    this.pid = pid;
  }
}

async function startLocked(o: LocalPipelineOptions, releaseLock: () => void): Promise<LocalPipeline> {
  const dataDir = o.dataDir;
  const bucket = o.bucket ?? DEFAULT_BUCKET;
  const emit = (e: PipelineEvent): void => o.onEvent?.(e);
  const ffmpegPath = o.ffmpegPath ?? findFfmpeg() ?? '/usr/bin/ffmpeg';

  const defs = await loadLocalDefinitions({ cacheDir: o.definitionsCacheDir === undefined ? join(dataDir, 'cache') : o.definitionsCacheDir, onSynth: o.onSynth });
  const notifications = new NotificationLog(join(dataDir, 'notifications.jsonl'), (n) => emit({ type: 'notification', notification: n }));

  // The functions' Powertools logger writes JSON lines to stdout (CloudWatch Logs in AWS); here
  // they go to a file, so the CLI's own output stays readable.
  let lambdaLog: WriteStream | null = null;
  const loggerHolder = functionsLogger as unknown as { console: Console };
  const previousConsole = loggerHolder.console;
  if ((o.lambdaLogs ?? 'file') === 'file') {
    lambdaLog = createWriteStream(join(dataDir, 'logs', 'lambda.jsonl'), { flags: 'a' });
    loggerHolder.console = new Console({ stdout: lambdaLog, stderr: lambdaLog });
  }
  const restoreLogger = async (): Promise<void> => {
    if (lambdaLog === null) return;
    loggerHolder.console = previousConsole;
    const stream = lambdaLog;
    lambdaLog = null;
    await new Promise<void>((r) => stream.end(r));
  };
  let server = null as LocalS3Server | null;
  let proxy = null as S3FaultProxy | null;
  try {
    return await assemble();
  } catch (e) {
    await proxy?.close();
    await server?.close();
    await restoreLogger();
    throw e;
  }

  async function assemble(): Promise<LocalPipeline> {
    const pending = new Set<Promise<unknown>>();
    const track = <T>(p: Promise<T>): Promise<T> => {
      pending.add(p);
      void p.finally(() => pending.delete(p)).catch(() => undefined);
      return p;
    };
    let sfn: LocalStepFunctions | null = null;
    let started = false;
    server = await startS3Server({
      directory: join(dataDir, 's3'),
      port: o.port ?? 0,
      bucket,
      onObjectCreated: (e) => {
        if (!started) return;
        track(deliver(e.detail)).catch((err: unknown) => emit({ type: 'error', message: `starting a run for ${e.detail.object.key}: ${(err as Error).message}` }));
      },
    });
    const srv = server;
    // With fault injection every S3 client (handlers here, workers there) goes through the proxy.
    proxy = o.faultInjection ? await startS3FaultProxy(srv.endpoint, { seed: o.faultSeed }) : null;
    const endpoint = proxy?.endpoint ?? srv.endpoint;
    const s3 = proxy ? localS3Client(proxy.endpoint) : srv.s3;
    const taskFaults = proxy ? new TaskFaults() : null;

    // Step Functions' StartExecution, for the starter's own code.
    const sfnClient = {
      send: (cmd: unknown): Promise<unknown> => {
        if (!(cmd instanceof StartExecutionCommand)) return Promise.reject(new LocalPipelineError('local Step Functions: only StartExecution is sent here'));
        const w = sfn!.workflowOf(cmd.input.stateMachineArn ?? '');
        if (w === null) return Promise.reject(new LocalPipelineError(`StartExecution: no local state machine ${cmd.input.stateMachineArn}`));
        try {
          const r = sfn!.start(w, cmd.input.name ?? '', JSON.parse(cmd.input.input ?? '{}'));
          return Promise.resolve({ executionArn: r.executionArn, startDate: new Date(r.startDate) });
        } catch (e) {
          return Promise.reject(e instanceof Error ? e : new Error(String(e)));
        }
      },
    } as unknown as SFNClient;

    const deliver = async (detail: ObjectCreatedDetail): Promise<StartOutcome | 'ignored'> => {
      const plan = planStart(detail);
      if (plan.kind === 'ignored') {
        // The seeded models, the pipeline's own writes and sidecars start nothing; anything else under the two trigger prefixes is worth a word.
        const k = detail.object.key;
        const sidecar = k.startsWith(PREFIX.inputs) && k.toLowerCase().endsWith('.json');
        if (!sidecar && (k.startsWith(PREFIX.inputs) || k.startsWith(PREFIX.batches))) emit({ type: 'ignored', key: k, reason: plan.reason });
        return 'ignored';
      }
      const arn = plan.kind === 'generation' ? defs.stateMachineArns.generation : defs.stateMachineArns.batch;
      const outcome = await startNamedExecution(sfnClient, arn, plan.name, plan.input);
      const workflow: LocalWorkflow = plan.kind;
      emit(outcome === 'started' ? { type: 'execution-started', workflow, name: plan.name, key: plan.input.key } : { type: 'duplicate', workflow, name: plan.name, key: plan.input.key });
      return outcome;
    };

    const modelCache = o.modelCacheDir ?? join(dataDir, 'cache', 'models');
    const batch = new LocalBatch({
      jobDefinitions: defs.jobDefinitions,
      concurrency: o.workerConcurrency ?? defaultWorkerConcurrency(),
      logDir: join(dataDir, 'logs', 'batch'),
      logRoot: dataDir,
      scratchDir: join(dataDir, 'tmp'),
      entrypoint: o.workerEntrypoint ?? [process.execPath, CLI_ENTRY],
      // Node's compile cache: the worker process loads its modules from V8 bytecode after the
      // first job (about 0.4 s less per job here; the container could do the same).
      baseEnv: { ...localS3Env(endpoint), NODE_COMPILE_CACHE: join(dirname(modelCache), 'node-compile') },
      envSubstitutes: {
        [WORKER_ENV.modelCache]: modelCache,
        // No EventBridge locally: progress comes from the worker's JSON lines on stdout.
        [WORKER_ENV.progressBus]: null,
      },
      killGraceMs: o.workerKillGraceMs,
      onJobState: (job) => {
        emit({ type: 'batch-job', job });
        // The running generation execution of that job (the job name is its job id).
        handles.get(job.JobName)?.update((rec) => {
          let s = rec.batchJobs.find((b) => b.jobId === job.JobId);
          if (!s) rec.batchJobs.push((s = { jobId: job.JobId, status: job.Status, attempts: 0 }));
          s.status = job.Status;
          s.attempts = job.Attempts.length;
          s.exitCode = job.Container.ExitCode;
          s.statusReason = job.StatusReason;
          s.logStreamName = job.Container.LogStreamName;
        });
      },
      onWorkerLine: (job, line: WorkerLine) => {
        if (line.event !== 'progress') return;
        const progress: WorkerProgress = { phase: String(line.phase), step: line.step as number | undefined, total: line.total as number | undefined, elapsedS: line.elapsedS as number | undefined };
        emit({ type: 'progress', jobId: job.JobName, progress });
        handles.get(job.JobName)?.update((rec) => {
          rec.progress = progress;
        }, 'progress');
      },
    });

    const handles = new Map<string, ExecutionHandle>();
    const validate = createValidateHandler({ s3, dataBucket: bucket });
    const postprocess = createPostprocessHandler({ s3, dataBucket: bucket, ffmpegPath, tmpRoot: join(dataDir, 'tmp') });
    const notify = createNotifyHandler({
      s3,
      sns: notifications.snsClient(),
      events: notifications.eventsClient(),
      topicArn: defs.notificationTopicArn,
      eventBusName: LOCAL_EVENT_BUS,
      dataBucket: bucket,
      // The stack's default (presignExpirySeconds 0): keys only.
      presign: { enabled: false, expirySeconds: 3600 },
    });
    const recordFailure = createRecordFailureHandler({ s3, dataBucket: bucket });
    const G = GENERATION_STATES;
    const B = BATCH_STATES;

    const generationHandlers = (): TaskHandlers => {
      return {
        [G.validate]: lambdaTask(validate),
        [G.generate]: async (params) => {
          const job = await batch.submitAndWait(params as SubmitJobParameters);
          // submitJob.sync: a FAILED job fails the task with the job's description as the cause.
          if (job.Status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify(job));
          return job;
        },
        [G.postProcess]: lambdaTask(postprocess),
        [G.notifySuccess]: lambdaTask(notify),
        [G.notifyFailure]: lambdaTask(notify),
        [G.recordFailure]: lambdaTask(recordFailure),
      };
    };

    const describeExecution = (r: ExecutionRecord): Record<string, unknown> => ({
      ExecutionArn: r.executionArn,
      StateMachineArn: r.stateMachineArn,
      Name: r.name,
      Status: r.status,
      StartDate: r.startDate,
      StopDate: r.stopDate,
      Input: r.input,
      InputDetails: { Included: true },
      Output: r.output,
      OutputDetails: { Included: true },
      ...(r.error !== null ? { Error: r.error, Cause: r.cause } : {}),
    });

    const batchHandlers = (h: ExecutionHandle): TaskHandlers => {
      const mapRunArn = (): string => `${h.record.executionArn.replace(':execution:', ':mapRun:')}/${B.runManifest}:local`;
      // ListMapRuns / DescribeMapRun for the summary, answered from this execution's map iterations.
      const mapRunClient = {
        send: (cmd: unknown): Promise<unknown> => {
          if (cmd instanceof ListMapRunsCommand) return Promise.resolve({ mapRuns: h.record.mapRun ? [{ mapRunArn: mapRunArn(), executionArn: h.record.executionArn, stateMachineArn: h.record.stateMachineArn, startDate: new Date(h.record.startDate) }] : [] });
          if (cmd instanceof DescribeMapRunCommand) {
            const m = h.record.mapRun ?? { total: 0, succeeded: 0, failed: 0, running: 0 };
            return Promise.resolve({ mapRunArn: mapRunArn(), itemCounts: { total: m.total, succeeded: m.succeeded, failed: m.failed, timedOut: 0, aborted: 0, pending: Math.max(0, m.total - m.succeeded - m.failed - m.running), running: m.running } });
          }
          return Promise.reject(new LocalPipelineError('local Step Functions: only ListMapRuns and DescribeMapRun are sent here'));
        },
      } as unknown as SFNClient;
      return {
        [B.prepareItem]: lambdaTask((i) => prepareItemHandler(i as never)),
        [B.runJob]: async (params) => {
          const p = params as { StateMachineArn: string; Name: string; Input: unknown };
          const w = sfn!.workflowOf(p.StateMachineArn);
          if (w === null) throw Object.assign(new LocalPipelineError(`StartExecution: no local state machine ${p.StateMachineArn}`), { name: 'StepFunctions.StateMachineDoesNotExistException' });
          try {
            sfn!.start(w, p.Name, p.Input);
          } catch (e) {
            // A re-run line whose execution exists already: follow that one (its result is the line's).
            if (!(e instanceof ExecutionAlreadyExists)) throw e;
          }
          const r = await sfn!.wait(w, p.Name);
          const d = describeExecution(r);
          if (r.status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify(d));
          return d;
        },
        [B.summarize]: lambdaTask((event) => summarize(event as SummaryEvent, { sfn: mapRunClient, s3, sns: notifications.snsClient() }, defs.notificationTopicArn, new Date())),
      };
    };

    // Every Task state of the synthesized definitions must have a local handler.
    const probe: ExecutionHandle = { record: { name: '-' } as ExecutionRecord, update: () => undefined };
    const missing = [
      ...taskStates(defs.generation).filter((t) => !(t in generationHandlers())),
      ...taskStates(defs.batch).filter((t) => !(t in batchHandlers(probe))),
    ];
    if (missing.length > 0) {
      throw new LocalPipelineError(`the synthesized workflows have Task states local mode does not implement: ${missing.join(', ')}`);
    }

    const batchDefinition = withInlineItems(defs.batch, B.runManifest, `$.${MANIFEST_ITEMS_FIELD}`) as Asl;
    sfn = new LocalStepFunctions({
      dir: join(dataDir, 'executions'),
      workflows: {
        generation: { stateMachineArn: defs.stateMachineArns.generation, definition: defs.generation },
        batch: { stateMachineArn: defs.stateMachineArns.batch, definition: batchDefinition },
      },
      handlersFor: (w, h) => {
        const handlers = w === 'batch' ? batchHandlers(h) : generationHandlers();
        if (w === 'generation') handles.set(h.record.name, h);
        return taskFaults === null ? handlers : withTaskFaults(handlers, taskFaults);
      },
      retryIntervalMs: o.retryIntervalMs,
      prepareInput: async (w, input, h) => {
        if (w !== 'batch') return input;
        const i = input as { bucket: string; key: string; versionId: string | null };
        const items = await readManifestItems(s3, i.bucket, i.key, i.versionId);
        h.update((r) => {
          r.mapRun = { total: items.length, succeeded: 0, failed: 0, running: 0 };
        });
        return { ...i, [MANIFEST_ITEMS_FIELD]: items };
      },
      onChange: (record, what, state) => {
        if (what === 'state' && state) emit({ type: 'state', workflow: record.workflow, name: record.name, state });
        if (what === 'finished') {
          handles.delete(record.name);
          emit({ type: 'execution-finished', workflow: record.workflow, record: JSON.parse(JSON.stringify(record)) as ExecutionRecord });
        }
      },
    });

    if (o.seedDemo ?? true) await seedDemoModel(s3, bucket);
    started = true;

    let stopped = false;
    const pipeline: LocalPipeline = {
      endpoint,
      bucket,
      dataDir,
      s3,
      definitions: defs,
      async upload(key, body, uo = {}) {
        if (uo.request !== undefined) {
          await s3.send(new PutObjectCommand({ Bucket: bucket, Key: sidecarKey(key), Body: JSON.stringify(uo.request), ContentType: 'application/json' }));
        }
        const r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: uo.contentType }));
        const etag = unquote(r.ETag);
        return { key, etag, id: jobIdFor(bucket, key, r.VersionId ?? etag) };
      },
      waitForJob: (jobId, timeoutMs) => sfn.wait('generation', jobId, timeoutMs),
      waitForBatch: (batchId, timeoutMs) => sfn.wait('batch', batchId, timeoutMs),
      execution: (w, name) => sfn.get(w, name),
      executions: (w) => sfn.list(w),
      startExecution: (w, name, input) => sfn.start(w, name, input),
      deliver: (detail) => track(deliver(detail)),
      notifications: () => notifications.read(),
      batchJob: (id) => batch.describe(id),
      faults: proxy && taskFaults ? { s3: proxy, tasks: taskFaults, direct: srv.s3 } : null,
      restartS3: (downMs) => srv.restart(downMs),
      interruptWorker: (jobId, signal) => batch.interrupt(jobId, signal),
      async stop() {
        if (stopped) return;
        stopped = true;
        started = false;
        await Promise.allSettled([...pending]);
        // Executions first (their Batch tasks then end with the workers), then the workers, then S3.
        await sfn.stop();
        await batch.stop();
        if (proxy) {
          s3.destroy();
          await proxy.close();
        }
        await srv.close();
        await restoreLogger();
        releaseLock();
      },
    };
    return pipeline;
  }
}

