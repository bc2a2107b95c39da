/**
 * How `startLocalPipeline` connects the stand-ins to each other and to the real code: one wiring
 * function per stand-in (S3, the starter's EventBridge rule, Batch, the Lambda functions, Step
 * Functions) and the seeding of the demo model. Each takes only what it needs, so the order of
 * assembly is the data flow: S3 → starter → Step Functions → Lambda / Batch.
 */
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { DescribeMapRunCommand, ListMapRunsCommand, StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { SFNClient } from '@aws-sdk/client-sfn';
import { createValidateHandler } from '../../functions/src/validate/handler.ts';
import { createPostprocessHandler } from '../../functions/src/postprocess/handler.ts';
import { createNotifyHandler, createRecordFailureHandler } from '../../functions/src/notify/handler.ts';
import { planStart, startNamedExecution } from '../../functions/src/starter/core.ts';
import type { ObjectCreatedDetail, StartOutcome } from '../../functions/src/starter/core.ts';
import { prepareItemHandler } from '../../functions/src/starter/handler.ts';
import { summarize } from '../../functions/src/batchSummary/core.ts';
import type { SummaryEvent } from '../../functions/src/batchSummary/core.ts';
import { buildDemoBundle, DEMO_MODEL_ID, DEMO_STATISTICS_FILE } from '../../demo/src/bundle.ts';
import { withInlineItems } from '../../infra/lib/definitions.ts';
import { BATCH_STATES, GENERATION_STATES, WORKER_ENV } from '../../infra/lib/names.ts';
import { modelPrefix, PREFIX } from '#shared/schemas';
import { LocalBatch } from './batch.ts';
import type { SubmitJobParameters, WorkerLine } from './batch.ts';
import type { Asl, LocalDefinitions } from './definitions.ts';
import { ExecutionAlreadyExists, LocalPipelineError, TaskFailed } from './errors.ts';
import { LocalStepFunctions, taskStates } from './executions.ts';
import type { ExecutionHandle, ExecutionRecord, LocalWorkflow, TaskHandlers, WorkerProgress } from './executions.ts';
import { startS3FaultProxy, TaskFaults } from './faults.ts';
import type { S3FaultProxy } from './faults.ts';
import { lambdaTask, withTaskFaults } from './lambda.ts';
import type { NotificationLog } from './notifications.ts';
import { CLI_ENTRY } from './paths.ts';
import type { LocalPipelineOptions, PipelineEvent } from './pipeline.ts';
import { localS3Client, localS3Env, startS3Server } from './s3.ts';
import type { ObjectCreated, LocalS3Server } from './s3.ts';

/** The event bus name Notify publishes to locally (the stack's bus exists only in AWS). */
export const LOCAL_EVENT_BUS = 'cil-local';
/**
 * Where the local runner puts a manifest's lines in the batch workflow's input: the one change
 * to a synthesized definition (withInlineItems: the Distributed Map's ItemReader, which reads S3
 * and which the local interpreter lacks, becomes ItemsPath; ResultWriter is dropped).
 */
export const MANIFEST_ITEMS_FIELD = 'manifestItems';

type Emit = (e: PipelineEvent) => void;
/** The Step Functions stand-in, made last (its handlers need the others); the others reach it through this. */
type SfnRef = () => LocalStepFunctions;
/** The running generation executions by name (the job id, also the Batch job's name). */
export type ExecutionHandles = Map<string, ExecutionHandle>;

export interface WiredS3 {
  readonly server: LocalS3Server;
  readonly proxy: S3FaultProxy | null;
  /** What every client of the pipeline and its workers talks to: the proxy with fault injection, else the server. */
  readonly endpoint: string;
  readonly s3: S3Client;
  readonly taskFaults: TaskFaults | null;
  close(): Promise<void>;
}

/** S3: the server, and with fault injection the proxy every client (handlers here, workers there) goes through. */
export async function wireS3(o: LocalPipelineOptions, bucket: string, onObjectCreated: (e: ObjectCreated) => void): Promise<WiredS3> {
  const server = await startS3Server({ directory: join(o.dataDir, 's3'), port: o.port ?? 0, bucket, onObjectCreated });
  let proxy: S3FaultProxy | null;
  try {
    proxy = o.faultInjection ? await startS3FaultProxy(server.endpoint, { seed: o.faultSeed }) : null;
  } catch (e) {
    await server.close();
    throw e;
  }
  const s3 = proxy ? localS3Client(proxy.endpoint) : server.s3;
  const p = proxy;
  return {
    server,
    proxy,
    endpoint: proxy?.endpoint ?? server.endpoint,
    s3,
    taskFaults: proxy ? new TaskFaults() : null,
    async close() {
      if (p) {
        s3.destroy();
        await p.close();
      }
      await server.close();
    },
  };
}

/**
 * The EventBridge rule and the starter Lambda: an object-created event goes through the
 * starter's own logic (`planStart` + `startNamedExecution`) against a Step Functions client that
 * answers StartExecution from the local executions. Returns the delivery of one event.
 */
export function wireStarter(defs: LocalDefinitions, sfn: SfnRef, emit: Emit): (detail: ObjectCreatedDetail) => Promise<StartOutcome | 'ignored'> {
  const sfnClient = {
    send: (cmd: unknown): Promise<unknown> => {
      if (!(cmd instanceof StartExecutionCommand)) return Promise.reject(new LocalPipelineError('local Step Functions: only StartExecution is sent here'));
      const w = sfn().workflowOf(cmd.input.stateMachineArn ?? '');
      if (w === null) return Promise.reject(new LocalPipelineError(`StartExecution: no local state machine ${cmd.input.stateMachineArn}`));
      try {
        const r = sfn().start(w, cmd.input.name ?? '', JSON.parse(cmd.input.input ?? '{}'));
        return Promise.resolve({ executionArn: r.executionArn, startDate: new Date(r.startDate) });
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    },
  } as unknown as SFNClient;

  return async (detail) => {
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
}

export function defaultWorkerConcurrency(): number {
  return Math.max(1, Math.min(4, Math.floor(availableParallelism() / 4)));
}

/** Batch: worker processes against the local S3; job states and progress go to the events and the running execution's record. */
export function wireBatch(o: LocalPipelineOptions, defs: LocalDefinitions, endpoint: string, handles: ExecutionHandles, emit: Emit): LocalBatch {
  const dataDir = o.dataDir;
  const modelCache = o.modelCacheDir ?? join(dataDir, 'cache', 'models');
  return new LocalBatch({
    jobDefinitions: defs.jobDefinitions,
    concurrency: o.workerConcurrency ?? defaultWorkerConcurrency(),
    logDir: join(dataDir, 'logs', 'batch'),
    logRoot: dataDir,
    scratchDir: join(dataDir, 'tmp'),
    entrypoint: o.workerEntrypoint ?? [process.execPath, CLI_ENTRY],
    // One worker process waits with its modules loaded for the next job (local/src/warmStart.ts).
    warmVerbs: o.workerEntrypoint === undefined && o.warmStart !== false ? ['worker'] : undefined,
    // Node's compile cache: the worker process loads its modules from V8 bytecode after the
    // first job (about 0.4 s less per job here; the container could do the same).
    // No instance metadata service here: the workers' Spot watch stays off unless a drill names a fake one.
    baseEnv: {
      ...localS3Env(endpoint),
      NODE_COMPILE_CACHE: join(dirname(modelCache), 'node-compile'),
      ...(o.workerEnv?.AWS_EC2_METADATA_SERVICE_ENDPOINT ? {} : { AWS_EC2_METADATA_DISABLED: 'true' }),
      ...o.workerEnv,
    },
    envSubstitutes: {
      [WORKER_ENV.modelCache]: modelCache,
      [WORKER_ENV.cacheDir]: dirname(modelCache),
      // Batch jobs demand CUDA (GPU or nothing); here the worker runs on this machine's CPU unless the
      // caller's environment or `workerEnv` (a drill) says otherwise.
      [WORKER_ENV.executionProvider]: process.env.CIL_EXECUTION_PROVIDER ?? 'auto',
      // No EventBridge locally: progress comes from the worker's JSON lines on stdout.
      [WORKER_ENV.progressBus]: null,
      // The local cache lives on this machine's disk, shared with everything else on it: no floor
      // of free space (a 10 GiB floor would evict or refuse on a nearly full laptop), unless asked.
      [WORKER_ENV.modelCacheMinFreeGiB]: process.env.CIL_MODEL_CACHE_MIN_FREE_GIB ?? '0',
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
}

/** DescribeExecution's answer for a local record (what `startExecution.sync:2` returns). */
function describeExecution(r: ExecutionRecord): Record<string, unknown> {
  return {
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
  };
}

export interface WiredFunctions {
  /** The Task states of the generation workflow. */
  generation(): TaskHandlers;
  /** The Task states of one batch execution (its summary reads this execution's map run). */
  batch(h: ExecutionHandle): TaskHandlers;
}

/** The Lambda functions (the real handlers, in-process), Batch's `submitJob.sync` and the batch workflow's child executions, per Task state. */
export function wireFunctions(o: { readonly s3: S3Client; readonly bucket: string; readonly ffmpegPath: string; readonly tmpRoot: string; readonly defs: LocalDefinitions; readonly notifications: NotificationLog; readonly batch: LocalBatch; readonly sfn: SfnRef }): WiredFunctions {
  const { s3, bucket, defs, notifications, batch, sfn } = o;
  const validate = createValidateHandler({ s3, dataBucket: bucket });
  const postprocess = createPostprocessHandler({ s3, dataBucket: bucket, ffmpegPath: o.ffmpegPath, tmpRoot: o.tmpRoot });
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
  const submitSync = async (params: unknown): Promise<unknown> => {
    const job = await batch.submitAndWait(params as SubmitJobParameters);
    // submitJob.sync: a FAILED job fails the task with the job's description as the cause.
    if (job.Status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify(job));
    return job;
  };
  return {
    generation: () => ({
      [G.validate]: lambdaTask(validate),
      [G.generate]: submitSync,
      // The resubmission to the fleet's on-demand queue after Spot had no capacity.
      [G.generateOnDemand]: submitSync,
      [G.postProcess]: lambdaTask(postprocess),
      [G.notifySuccess]: lambdaTask(notify),
      [G.notifyFailure]: lambdaTask(notify),
      [G.recordFailure]: lambdaTask(recordFailure),
    }),
    batch: (h) => {
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
          const w = sfn().workflowOf(p.StateMachineArn);
          if (w === null) throw Object.assign(new LocalPipelineError(`StartExecution: no local state machine ${p.StateMachineArn}`), { name: 'StepFunctions.StateMachineDoesNotExistException' });
          try {
            sfn().start(w, p.Name, p.Input);
          } catch (e) {
            // A re-run line whose execution exists already: follow that one (its result is the line's).
            if (!(e instanceof ExecutionAlreadyExists)) throw e;
          }
          const r = await sfn().wait(w, p.Name);
          const d = describeExecution(r);
          if (r.status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify(d));
          return d;
        },
        [B.summarize]: lambdaTask((event) => summarize(event as SummaryEvent, { sfn: mapRunClient, s3, sns: notifications.snsClient() }, defs.notificationTopicArn, new Date())),
      };
    },
  };
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

/**
 * Step Functions: the synthesized workflows, every Task state with its local handler (a state
 * without one is refused here, not at run time), the batch workflow's ItemReader read here, and
 * the records' changes told as events.
 */
export function wireStepFunctions(o: { readonly dataDir: string; readonly defs: LocalDefinitions; readonly s3: S3Client; readonly functions: WiredFunctions; readonly taskFaults: TaskFaults | null; readonly retryIntervalMs?: number; readonly handles: ExecutionHandles; readonly emit: Emit }): LocalStepFunctions {
  const { defs, functions, taskFaults, handles, emit } = o;
  const probe: ExecutionHandle = { record: { name: '-' } as ExecutionRecord, update: () => undefined };
  const missing = [
    ...taskStates(defs.generation).filter((t) => !(t in functions.generation())),
    ...taskStates(defs.batch).filter((t) => !(t in functions.batch(probe))),
  ];
  if (missing.length > 0) {
    throw new LocalPipelineError(`the synthesized workflows have Task states local mode does not implement: ${missing.join(', ')}`);
  }
  const batchDefinition = withInlineItems(defs.batch, BATCH_STATES.runManifest, `$.${MANIFEST_ITEMS_FIELD}`) as Asl;
  return new LocalStepFunctions({
    dir: join(o.dataDir, 'executions'),
    workflows: {
      generation: { stateMachineArn: defs.stateMachineArns.generation, definition: defs.generation },
      batch: { stateMachineArn: defs.stateMachineArns.batch, definition: batchDefinition },
    },
    handlersFor: (w, h) => {
      const handlers = w === 'batch' ? functions.batch(h) : functions.generation();
      if (w === 'generation') handles.set(h.record.name, h);
      return taskFaults === null ? handlers : withTaskFaults(handlers, taskFaults);
    },
    retryIntervalMs: o.retryIntervalMs,
    prepareInput: async (w, input, h) => {
      if (w !== 'batch') return input;
      const i = input as { bucket: string; key: string; versionId: string | null };
      const items = await readManifestItems(o.s3, i.bucket, i.key, i.versionId);
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
