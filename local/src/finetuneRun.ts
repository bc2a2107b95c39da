/**
 * One run of the fine-tuning workflow (infra/lib/workflows/finetune.ts, docs/finetuning.md) on this
 * machine: the CDK app synthesized with `cil:finetune` on, the fine-tune and statistics state
 * machines resolved with local ARNs and run by aws-local-stepfunctions, every Batch task served by
 * the local Batch stand-in (batch.ts) running the job definition's real command (fine-tune jobs:
 * `python3 -m tools.finetune.batch train|export|publish`, the fine-tuning image's entrypoint;
 * statistics jobs: `node bin/cil.js stats …`, the worker's), over a local S3 (s3rver, s3.ts) that
 * the AWS CLI of the Python jobs and the SDK of the Node jobs reach through AWS_ENDPOINT_URL_S3.
 *
 * What differs from AWS, besides batch.ts's list: the multi-node training job runs one node (an
 * input asking for more is refused before anything is submitted); the statistics array job's
 * children run one after another, each with its AWS_BATCH_JOB_ARRAY_INDEX; the worker's model
 * cache path in the shard command becomes a folder of the run; the AWS CLI copies and uploads in one
 * part (its config file: s3rver has no UploadPartCopy); SNS messages are collected, not sent.
 * Used by `npm run test:finetune-real` (scripts/finetune-real.ts); its own test is
 * local/test/finetuneRun.test.ts.
 */
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { StateMachine } from 'aws-local-stepfunctions';
import { resolveDefinition } from '../../infra/lib/definitions.ts';
import type { Template, TemplateResource } from '../../infra/lib/definitions.ts';
import { WORKER_PATHS, WORKFLOW_METADATA_KEY } from '../../infra/lib/names.ts';
import type { BatchJobDescription, SubmitJobParameters } from './batch.ts';
import { LocalBatch } from './batch.ts';
import type { Asl, EvaluateOnExit, LocalJobDefinition } from './definitions.ts';
import { LOCAL_ACCOUNT, LOCAL_PARTITION, LOCAL_REGION } from './definitions.ts';
import { REPO_ROOT } from './paths.ts';
import { localS3Env, startS3Server } from './s3.ts';

/** The bucket of the local run (the template's data bucket resolves to it). */
export const FINETUNE_LOCAL_BUCKET = 'cil-data';

export class LocalFinetuneError extends Error {
  override readonly name = 'LocalFinetuneError';
}

/** A failed Batch job or child execution, as Step Functions reports it (`Cause`: the description). */
class TaskFailed extends Error {
  override readonly name = 'States.TaskFailed';
}

export interface FinetuneDefinitions {
  readonly finetune: Asl;
  readonly statistics: Asl;
  /** By job-definition ARN; `image` says which entrypoint runs the command. */
  readonly jobDefinitions: Readonly<Record<string, LocalJobDefinition & { readonly image: 'finetune' | 'worker' }>>;
}

/** The container of a job definition: ContainerProperties, or the first node range of a multi-node job. */
interface Container {
  readonly Command?: unknown[];
  readonly Environment?: { Name: string; Value: unknown }[];
}
function containerOf(id: string, r: TemplateResource): Container {
  const p = r.Properties ?? {};
  if (p.ContainerProperties) return p.ContainerProperties;
  const ranges = (p.NodeProperties as { NodeRangeProperties?: { Container?: Container }[] } | undefined)?.NodeRangeProperties ?? [];
  const c = ranges.length === 1 ? ranges[0].Container : undefined;
  if (!c) throw new LocalFinetuneError(`job definition ${id}: expected ContainerProperties or exactly one node range with a container, got ${ranges.length} ranges`);
  return c;
}

/** What the local Batch keeps of a job definition (single-container or multi-node). Exported for the tests. */
export function localJobDefinition(id: string, r: TemplateResource, modelCache: string): LocalJobDefinition {
  const p = r.Properties ?? {};
  const c = containerOf(id, r);
  const environment: Record<string, string> = {};
  const tokenEnvironment: string[] = [];
  for (const e of c.Environment ?? []) {
    if (typeof e.Value === 'string') environment[e.Name] = e.Value;
    else tokenEnvironment.push(e.Name);
  }
  const rs = (p.RetryStrategy ?? {}) as { Attempts?: number; EvaluateOnExit?: { Action: string; OnExitCode?: string; OnReason?: string; OnStatusReason?: string }[] };
  const evaluateOnExit: EvaluateOnExit[] = (rs.EvaluateOnExit ?? []).map((e) => {
    const action = e.Action.toUpperCase();
    if (action !== 'RETRY' && action !== 'EXIT') throw new LocalFinetuneError(`job definition ${id}: EvaluateOnExit action '${e.Action}' is neither RETRY nor EXIT`);
    return { action, onExitCode: e.OnExitCode, onReason: e.OnReason, onStatusReason: e.OnStatusReason };
  });
  const command = (c.Command ?? []).map((x) => {
    if (typeof x !== 'string') throw new LocalFinetuneError(`job definition ${id}: a command argument is not a plain string`);
    // The worker image's model cache is a path inside the container; here a folder of the run.
    return x === WORKER_PATHS.modelCache ? modelCache : x;
  });
  return {
    logicalId: id,
    command,
    environment,
    tokenEnvironment,
    retryStrategy: { attempts: rs.Attempts ?? 1, evaluateOnExit },
    attemptDurationSeconds: ((p.Timeout ?? {}) as { AttemptDurationSeconds?: number }).AttemptDurationSeconds ?? null,
  };
}

function batchTasks(def: Asl): { state: string; jobDefinition: string }[] {
  return Object.entries(def.States)
    .filter(([, s]) => s.Type === 'Task' && String(s.Resource).endsWith(':batch:submitJob.sync'))
    .map(([state, s]) => ({ state, jobDefinition: String((s.Parameters as { JobDefinition?: unknown }).JobDefinition) }));
}

/** The fine-tune and statistics definitions and their job definitions, from a template synthesized with `cil:finetune` on. */
export function finetuneDefinitionsFrom(template: Template, modelCache: string): FinetuneDefinitions {
  const ids: Record<string, string> = {};
  for (const [id, r] of Object.entries(template.Resources)) {
    const w = r.Metadata?.[WORKFLOW_METADATA_KEY];
    if (r.Type === 'AWS::StepFunctions::StateMachine' && typeof w === 'string') ids[w] = id;
  }
  if (!ids.finetune || !ids.statistics) throw new LocalFinetuneError('the template has no fine-tune or statistics state machine: synthesize with -c cil:finetune=true');
  const opts = {
    partition: LOCAL_PARTITION,
    region: LOCAL_REGION,
    account: LOCAL_ACCOUNT,
    ref: (_: string, r: TemplateResource) => (r.Type === 'AWS::S3::Bucket' ? FINETUNE_LOCAL_BUCKET : undefined),
  };
  const finetune = resolveDefinition(template, ids.finetune, opts) as Asl;
  const statistics = resolveDefinition(template, ids.statistics, opts) as Asl;
  const jobDefinitions: Record<string, LocalJobDefinition & { image: 'finetune' | 'worker' }> = {};
  for (const [def, image] of [[finetune, 'finetune'], [statistics, 'worker']] as const) {
    for (const t of batchTasks(def)) {
      const id = /:job-definition\/([^:]+):1$/.exec(t.jobDefinition)?.[1];
      const r = id === undefined ? undefined : template.Resources[id];
      if (!id || r?.Type !== 'AWS::Batch::JobDefinition') throw new LocalFinetuneError(`${t.state} submits to '${t.jobDefinition}', which is not a job definition of the template`);
      jobDefinitions[t.jobDefinition] = { ...localJobDefinition(id, r, modelCache), image };
    }
  }
  return { finetune, statistics, jobDefinitions };
}

/** Synthesizes the app with the fine-tuning workflow on (no Docker, no Lambda bundling). */
export async function synthesizeFinetuneTemplate(): Promise<Template> {
  const { buildApp } = await import('../../infra/lib/app.ts');
  const outdir = mkdtempSync(join(tmpdir(), 'cil-local-finetune-synth-'));
  try {
    const cdk = JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as { context?: Record<string, unknown> };
    const { app, stack } = buildApp({ nag: false, appProps: { outdir, context: { ...cdk.context, 'cil:finetune': 'true', 'aws:cdk:bundling-stacks': [] } } });
    const assembly = app.synth();
    return JSON.parse(readFileSync(join(outdir, assembly.getStackByName(stack.stackName).templateFile), 'utf8')) as Template;
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

export interface FinetuneRunOptions {
  /** The run's folder: s3/ (the bucket), logs/batch/, tmp/ (job scratch), cache/. */
  readonly dataDir: string;
  /** Execution name = run id (finetune/runs/<name>/). */
  readonly name: string;
  /** The execution input (docs/finetuning.md). */
  readonly input: Record<string, unknown>;
  /** Files or folders put in the bucket first: key (a prefix ending in '/' for a folder) ← local path. */
  readonly uploads: readonly { readonly key: string; readonly path: string }[];
  /** Stands for the fine-tuning image's `python3`. */
  readonly python: string;
  /** Copied out of the bucket after the execution (prefixes ending in '/' as folders): key → local path. */
  readonly fetch?: readonly { readonly key: string; readonly path: string }[];
  readonly template?: Template;
  readonly log?: (line: string) => void;
}

export interface FinetuneRunResult {
  readonly status: 'SUCCEEDED' | 'FAILED';
  readonly output?: unknown;
  readonly error?: { readonly name: string; readonly message: string };
  /** States entered, fine-tune and nested statistics executions in order. */
  readonly states: readonly string[];
  readonly jobs: readonly { readonly name: string; readonly definition: string; readonly status: string; readonly exitCode?: number; readonly attempts: number; readonly log?: string; readonly seconds: number }[];
  readonly notifications: readonly unknown[];
  /** The `fetch` entries that were found, with their object keys. */
  readonly fetched: readonly { readonly key: string; readonly path: string; readonly objects: readonly string[] }[];
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Runs the fine-tune workflow once, with its nested statistics execution, on the local stand-ins. */
export async function runLocalFinetune(o: FinetuneRunOptions): Promise<FinetuneRunResult> {
  const log = o.log ?? (() => undefined);
  const nodes = o.input.nodes ?? 1;
  if (nodes !== 1) throw new LocalFinetuneError(`nodes: the local run has one node (no multi-node Batch, no NCCL between machines), got ${JSON.stringify(nodes)}`);
  const modelCache = join(o.dataDir, 'cache', 'models');
  const defs = finetuneDefinitionsFrom(o.template ?? (await synthesizeFinetuneTemplate()), modelCache);
  mkdirSync(o.dataDir, { recursive: true });
  const awsConfig = join(o.dataDir, 'aws-config');
  writeFileSync(awsConfig, `[default]\nregion = ${LOCAL_REGION}\ns3 =\n  multipart_threshold = 5GB\n  multipart_chunksize = 5GB\n`);
  const server = await startS3Server({ directory: join(o.dataDir, 's3'), port: 0, bucket: FINETUNE_LOCAL_BUCKET, onObjectCreated: () => undefined });
  const jobs: FinetuneRunResult['jobs'][number][] = [];
  const notifications: unknown[] = [];
  const states: string[] = [];
  const batches: LocalBatch[] = [];
  try {
    for (const u of o.uploads) {
      const files = statSync(u.path).isDirectory() ? filesUnder(u.path).map((f) => [u.key + relative(u.path, f).split(sep).join('/'), f]) : [[u.key, u.path]];
      for (const [key, file] of files) await server.s3.send(new PutObjectCommand({ Bucket: FINETUNE_LOCAL_BUCKET, Key: key, Body: createReadStream(file), ContentLength: statSync(file).size }));
      log(`uploaded ${files.length} file(s) → s3://${FINETUNE_LOCAL_BUCKET}/${u.key}`);
    }
    const batchFor = (image: 'finetune' | 'worker'): LocalBatch => {
      const b = new LocalBatch({
        jobDefinitions: Object.fromEntries(Object.entries(defs.jobDefinitions).filter(([, d]) => d.image === image)),
        concurrency: 1,
        logDir: join(o.dataDir, 'logs', 'batch'),
        logRoot: o.dataDir,
        scratchDir: join(o.dataDir, 'tmp'),
        entrypoint: image === 'finetune' ? [o.python, '-m', 'tools.finetune.batch'] : [process.execPath, join(REPO_ROOT, 'bin', 'cil.js')],
        // Python jobs reach the local S3 through the AWS CLI, which reads the same variables; its
        // config file keeps copies single-part (s3rver has no UploadPartCopy).
        baseEnv: { ...localS3Env(server.endpoint), AWS_CONFIG_FILE: awsConfig, PYTHONWARNINGS: 'ignore' },
        // The fine-tuning image's scratch variable would name /scratch: the job's own folder (TMPDIR) instead.
        envSubstitutes: { CIL_SCRATCH: null, CIL_MODEL_CACHE: modelCache },
        onJobState: (job) => {
          if (job.Status === 'SUCCEEDED' || job.Status === 'FAILED') {
            jobs.push({ name: job.JobName, definition: job.JobDefinition.replace(/^.*job-definition\//, ''), status: job.Status, exitCode: job.Container.ExitCode, attempts: job.Attempts.length, log: job.Container.LogStreamName, seconds: Math.round(((job.StoppedAt ?? 0) - (job.StartedAt ?? job.CreatedAt)) / 100) / 10 });
            log(`batch ${job.JobName}: ${job.Status}${job.Container.ExitCode === undefined ? '' : ` (exit ${job.Container.ExitCode})`}, log ${job.Container.LogStreamName ?? '-'}`);
          }
        },
      });
      batches.push(b);
      return b;
    };
    const batch = { finetune: batchFor('finetune'), worker: batchFor('worker') };
    const submit = async (raw: unknown): Promise<BatchJobDescription> => {
      const p = raw as SubmitJobParameters & { NodeOverrides?: { NumNodes?: number; NodePropertyOverrides?: { ContainerOverrides?: SubmitJobParameters['ContainerOverrides'] }[] } };
      const def = defs.jobDefinitions[p.JobDefinition];
      if (!def) throw new LocalFinetuneError(`SubmitJob: no job definition ${p.JobDefinition}`);
      const b = batch[def.image];
      const { NodeOverrides: nodeOverrides, ArrayProperties: array, ...plain } = p;
      if (nodeOverrides && (nodeOverrides.NumNodes ?? 1) !== 1) throw new LocalFinetuneError(`${p.JobName}: NumNodes ${nodeOverrides.NumNodes}: the local run has one node`);
      const overrides = nodeOverrides?.NodePropertyOverrides?.[0]?.ContainerOverrides ?? p.ContainerOverrides;
      const one = { ...plain, ContainerOverrides: overrides };
      if (array?.Size === undefined) {
        const job = await b.submitAndWait(one);
        if (job.Status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify(job));
        return job;
      }
      // An array job: its children one after another; the parent fails when a child does.
      let last: BatchJobDescription | undefined;
      for (let i = 0; i < array.Size; i++) {
        const env = [...(overrides?.Environment ?? []), { Name: 'AWS_BATCH_JOB_ARRAY_INDEX', Value: String(i) }];
        last = await b.submitAndWait({ ...one, JobName: `${p.JobName}:${i}`, ContainerOverrides: { ...overrides, Environment: env } });
        if (last.Status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify(last));
      }
      return { ...last!, JobName: p.JobName };
    };
    const handlers = (def: Asl): Record<string, (input: unknown) => Promise<unknown>> => {
      const out: Record<string, (input: unknown) => Promise<unknown>> = {};
      for (const [name, s] of Object.entries(def.States)) {
        if (s.Type !== 'Task') continue;
        const resource = String(s.Resource);
        if (resource.endsWith(':batch:submitJob.sync')) out[name] = submit;
        else if (resource.endsWith(':sns:publish')) {
          out[name] = (i) => {
            notifications.push(i);
            return Promise.resolve({ MessageId: `local-${notifications.length}` });
          };
        } else if (resource.endsWith(':states:startExecution.sync:2')) {
          out[name] = async (i) => {
            const p = i as { StateMachineArn: string; Input: unknown };
            const child = `${o.name}-statistics`;
            const r = await execute(defs.statistics, typeof p.Input === 'string' ? JSON.parse(p.Input) : p.Input, child);
            const d = { ExecutionArn: `arn:${LOCAL_PARTITION}:states:${LOCAL_REGION}:${LOCAL_ACCOUNT}:execution:statistics:${child}`, Status: r.status, Output: JSON.stringify(r.output ?? null) };
            if (r.status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify({ ...d, Error: r.error?.name, Cause: r.error?.message }));
            return d;
          };
        } else throw new LocalFinetuneError(`state ${name}: no local stand-in for ${resource}`);
      }
      return out;
    };
    const execute = async (def: Asl, input: unknown, name: string): Promise<{ status: 'SUCCEEDED' | 'FAILED'; output?: unknown; error?: { name: string; message: string } }> => {
      const retryIntervalOverrides = Object.fromEntries(Object.entries(def.States).filter(([, s]) => s.Type === 'Task').map(([n]) => [n, 0]));
      const context = { Execution: { Id: `arn:${LOCAL_PARTITION}:states:${LOCAL_REGION}:${LOCAL_ACCOUNT}:execution:${name}`, Name: name, StartTime: new Date().toISOString() } };
      const exec = new StateMachine(def as never).run(input as never, { overrides: { taskResourceLocalHandlers: handlers(def) as never, retryIntervalOverrides }, context });
      const events = (async () => {
        for await (const e of exec.eventLogs) {
          if (e.type === 'StateEntered' && 'state' in e) {
            const s = (e.state as { name: string }).name;
            states.push(s);
            log(`${name}: ${s}`);
          }
        }
      })();
      try {
        const output = (await exec.result) as unknown;
        await events;
        return { status: 'SUCCEEDED', output };
      } catch (e) {
        await events.catch(() => undefined);
        const c = (e as { cause?: { name: string; message: string } }).cause ?? (e as { name: string; message: string });
        return { status: 'FAILED', error: { name: c.name, message: c.message } };
      }
    };
    mkdirSync(modelCache, { recursive: true });
    const r = await execute(defs.finetune, o.input, o.name);
    const fetched: FinetuneRunResult['fetched'][number][] = [];
    for (const f of o.fetch ?? []) {
      const list = await server.s3.send(new ListObjectsV2Command({ Bucket: FINETUNE_LOCAL_BUCKET, Prefix: f.key }));
      const keys = (list.Contents ?? []).map((c) => c.Key!).filter((k) => (f.key.endsWith('/') ? k.startsWith(f.key) : k === f.key));
      for (const k of keys) {
        const dest = f.key.endsWith('/') ? join(f.path, ...k.slice(f.key.length).split('/')) : f.path;
        mkdirSync(dirname(dest), { recursive: true });
        const body = (await server.s3.send(new GetObjectCommand({ Bucket: FINETUNE_LOCAL_BUCKET, Key: k }))).Body as NodeJS.ReadableStream;
        await pipeline(body, createWriteStream(dest));
      }
      if (keys.length > 0) fetched.push({ key: f.key, path: f.path, objects: keys });
    }
    return { ...r, states, jobs, notifications, fetched };
  } finally {
    for (const b of batches) await b.stop();
    await server.close();
  }
}
