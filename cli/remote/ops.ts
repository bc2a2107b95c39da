/**
 * Remote mode: the same verbs against a deployed stack. The stack's outputs (bucket, state
 * machines, queue) are discovered with CloudFormation DescribeStacks, or read from the file
 * `cdk deploy --outputs-file` wrote; nothing is typed in. An upload's job id is computed as the
 * starter computes it (jobIdFor(bucket, key, version id or ETag)), so the execution to follow is
 * known the moment PutObject returns.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DescribeJobsCommand } from '@aws-sdk/client-batch';
import type { BatchClient } from '@aws-sdk/client-batch';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { DescribeExecutionCommand, GetExecutionHistoryCommand } from '@aws-sdk/client-sfn';
import type { HistoryEvent, SFNClient } from '@aws-sdk/client-sfn';
import { isJobId, jobKeys } from '#shared/schemas';
import { getObjectBytes } from '../../storage/src/location.ts';
import { DEFAULT_STACK_NAME, executionArnOf, OUTPUTS } from '../../infra/lib/names.ts';
import type { ExecutionObserver } from './client.ts';
import { contentTypeOf, downloadPrefix, uploadImage, uploadKeyFor } from './client.ts';

/** The stack name `cdk deploy` uses unless `-c cil:stackName=…`. */
export const DEFAULT_STACK = DEFAULT_STACK_NAME;

export class RemoteError extends Error {
  override readonly name = 'RemoteError';
}

export interface StackInfo {
  readonly stackName: string;
  readonly bucket: string;
  readonly generationStateMachineArn: string;
  readonly batchStateMachineArn: string | null;
  readonly jobQueueArn: string | null;
}

/** Where the stack's outputs come from. */
export interface StackOutputSource {
  readonly describe: string;
  outputs(stackName: string): Promise<Readonly<Record<string, string>>>;
}

/** The part of @aws-sdk/client-cloudformation used here. */
interface CloudFormationModule {
  CloudFormationClient: new (config: { region?: string }) => { send(cmd: unknown): Promise<{ Stacks?: { Outputs?: { OutputKey?: string; OutputValue?: string }[] }[] }>; destroy(): void };
  DescribeStacksCommand: new (input: { StackName: string }) => unknown;
}

/**
 * DescribeStacks through @aws-sdk/client-cloudformation, loaded when used (the rest of the CLI
 * does not wait for it); a broken install is reported with the fix.
 */
export function cloudFormationSource(region?: string, load: () => Promise<unknown> = () => import('@aws-sdk/client-cloudformation')): StackOutputSource {
  return {
    describe: 'CloudFormation DescribeStacks',
    async outputs(stackName) {
      let mod: CloudFormationModule;
      try {
        mod = (await load()) as CloudFormationModule;
      } catch (e) {
        throw new RemoteError(
          `stack discovery needs @aws-sdk/client-cloudformation, which could not be loaded (${(e as Error).message}; run \`npm ci\`); or pass --outputs-file <file> written by \`cdk deploy --outputs-file <file>\``,
        );
      }
      const cfn = new mod.CloudFormationClient({ region });
      try {
        const r = await cfn.send(new mod.DescribeStacksCommand({ StackName: stackName }));
        const outs = r.Stacks?.[0]?.Outputs ?? [];
        return Object.fromEntries(outs.filter((o) => o.OutputKey && o.OutputValue !== undefined).map((o) => [o.OutputKey!, o.OutputValue!]));
      } catch (e) {
        if ((e as Error).name === 'ValidationError') throw new RemoteError(`stack '${stackName}' not found${region ? ` in ${region}` : ''} (${(e as Error).message}); pass --stack or --region`);
        throw e;
      } finally {
        cfn.destroy();
      }
    },
  };
}

/** The JSON `cdk deploy --outputs-file` writes: `{"<stack>": {"<OutputKey>": "<value>"}}`. */
export function outputsFileSource(file: string): StackOutputSource {
  return {
    describe: file,
    outputs(stackName) {
      let j: unknown;
      try {
        j = JSON.parse(readFileSync(file, 'utf8'));
      } catch (e) {
        return Promise.reject(new RemoteError(`${file}: not a readable JSON file (${(e as Error).message})`));
      }
      const stacks = j as Record<string, Record<string, string>>;
      const s = stacks[stackName] ?? (Object.keys(stacks).length === 1 ? Object.values(stacks)[0] : undefined);
      if (!s) return Promise.reject(new RemoteError(`${file}: no outputs for stack '${stackName}' (it has ${Object.keys(stacks).join(', ') || 'none'})`));
      return Promise.resolve(s);
    },
  };
}

/** The stack's outputs by the names in infra/lib/names.ts. */
export async function discoverStack(source: StackOutputSource, stackName: string): Promise<StackInfo> {
  const o = await source.outputs(stackName);
  const need = (k: string): string => {
    const v = o[k];
    if (!v) throw new RemoteError(`stack '${stackName}' (${source.describe}) has no output ${k}; is it the CIL stack?`);
    return v;
  };
  return {
    stackName,
    bucket: need(OUTPUTS.bucket),
    generationStateMachineArn: need(OUTPUTS.generationStateMachine),
    batchStateMachineArn: o[OUTPUTS.batchStateMachine] ?? null,
    jobQueueArn: o[OUTPUTS.jobQueue] ?? null,
  };
}

export interface RemoteClients {
  readonly s3: S3Client;
  readonly sfn: SFNClient;
  readonly batch: BatchClient;
}

export interface Submitted {
  readonly jobId: string;
  readonly key: string;
  readonly executionArn: string;
  readonly versionId: string | null;
  readonly etag: string;
}

/** Uploads the sidecar request (if any), then the image, whose object-created event starts the job. */
export async function submitImage(c: Pick<RemoteClients, 's3'>, stack: StackInfo, image: Uint8Array, fileName: string, request: Readonly<Record<string, unknown>>, key?: string): Promise<Submitted> {
  const k = key ?? uploadKeyFor(fileName, image, request);
  const u = await uploadImage(c.s3, stack.bucket, k, image, { request: Object.keys(request).length > 0 ? request : null, contentType: contentTypeOf(k) });
  return { jobId: u.jobId, key: k, executionArn: executionArnOf(stack.generationStateMachineArn, u.jobId), versionId: u.versionId, etag: u.etag };
}

export interface BatchJobState {
  readonly jobId: string;
  readonly status: string;
  readonly statusReason: string | null;
  readonly attempts: number;
  readonly exitCode: number | null;
  readonly logStreamName: string | null;
}

export interface JobStatus {
  readonly jobId: string;
  readonly executionArn: string;
  /** Null: no execution of that name (yet). */
  readonly execution: { readonly status: string; readonly startDate: string | null; readonly stopDate: string | null; readonly error: string | null; readonly cause: string | null } | null;
  /** The last state entered. */
  readonly step: string | null;
  readonly steps: readonly string[];
  readonly batchJob: BatchJobState | null;
  readonly outputs: readonly { readonly key: string; readonly bytes: number }[];
  readonly failure: Record<string, unknown> | null;
}

async function history(sfn: SFNClient, executionArn: string): Promise<HistoryEvent[]> {
  const events: HistoryEvent[] = [];
  let nextToken: string | undefined;
  do {
    const r = await sfn.send(new GetExecutionHistoryCommand({ executionArn, maxResults: 1000, nextToken, includeExecutionData: true }));
    events.push(...(r.events ?? []));
    nextToken = r.nextToken;
  } while (nextToken);
  return events;
}

/** The Batch job id of the Generate step, from its TaskSubmitted (or final) event. */
export function batchJobIdOf(events: readonly HistoryEvent[]): string | null {
  let id: string | null = null;
  for (const e of events) {
    const d = e.taskSubmittedEventDetails ?? e.taskSucceededEventDetails;
    if (!d || d.resourceType !== 'batch' || !d.output) continue;
    try {
      const o = JSON.parse(d.output) as { JobId?: string; jobId?: string };
      id = o.JobId ?? o.jobId ?? id;
    } catch {
      // Output truncated or not JSON: keep looking.
    }
  }
  return id;
}

export function enteredStates(events: readonly HistoryEvent[]): { name: string; at: Date | null }[] {
  return events.filter((e) => e.type?.endsWith('StateEntered') && e.stateEnteredEventDetails?.name).map((e) => ({ name: e.stateEnteredEventDetails!.name!, at: e.timestamp ?? null }));
}

/** DescribeExecution's answer for a name not (yet) started. */
function isNotFound(e: unknown): boolean {
  return e instanceof Error && e.name === 'ExecutionDoesNotExist';
}

async function describeBatchJob(batch: BatchClient, id: string): Promise<BatchJobState | null> {
  const r = await batch.send(new DescribeJobsCommand({ jobs: [id] }));
  const j = r.jobs?.[0];
  if (!j) return null;
  const last = j.attempts?.at(-1)?.container ?? j.container;
  return {
    jobId: id,
    status: j.status ?? 'UNKNOWN',
    statusReason: j.statusReason ?? null,
    attempts: j.attempts?.length ?? 0,
    exitCode: last?.exitCode ?? null,
    logStreamName: last?.logStreamName ?? null,
  };
}

async function readJson(s3: S3Client, bucket: string, key: string): Promise<Record<string, unknown> | null> {
  const bytes = await getObjectBytes(s3, bucket, key);
  return bytes === null ? null : (JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>);
}

function checkJobId(jobId: string): void {
  if (!isJobId(jobId)) throw new RemoteError(`'${jobId}' is not a job id (j- and 24 hex digits, as \`cil submit\` prints)`);
}

export async function jobStatus(c: RemoteClients, stack: StackInfo, jobId: string): Promise<JobStatus> {
  checkJobId(jobId);
  const executionArn = executionArnOf(stack.generationStateMachineArn, jobId);
  let execution: JobStatus['execution'] = null;
  let events: HistoryEvent[] = [];
  try {
    const d = await c.sfn.send(new DescribeExecutionCommand({ executionArn }));
    execution = { status: d.status ?? 'UNKNOWN', startDate: d.startDate?.toISOString() ?? null, stopDate: d.stopDate?.toISOString() ?? null, error: d.error ?? null, cause: d.cause ?? null };
    events = await history(c.sfn, executionArn);
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  const states = enteredStates(events).map((s) => s.name);
  const batchId = batchJobIdOf(events);
  const batchJob = batchId ? await describeBatchJob(c.batch, batchId) : null;
  const r = await c.s3.send(new ListObjectsV2Command({ Bucket: stack.bucket, Prefix: jobKeys(jobId).output }));
  const outputs = (r.Contents ?? []).filter((o) => o.Key).map((o) => ({ key: o.Key!, bytes: o.Size ?? 0 }));
  const failure = execution?.status === 'SUCCEEDED' ? null : await readJson(c.s3, stack.bucket, jobKeys(jobId).failure);
  return { jobId, executionArn, execution, step: states.at(-1) ?? null, steps: states, batchJob, outputs, failure };
}

export interface FollowRemoteOptions {
  readonly observer?: ExecutionObserver;
  readonly pollMs?: number;
  readonly timeoutMs?: number;
  /** How long the execution may take to appear (the starter runs after EventBridge delivers the event). */
  readonly startTimeoutMs?: number;
}

/** Polls the execution (and its Batch job) until it ends; returns the final status. */
export async function followRemote(c: RemoteClients, stack: StackInfo, jobId: string, o: FollowRemoteOptions = {}): Promise<JobStatus> {
  const poll = o.pollMs ?? 2000;
  const t0 = Date.now();
  const executionArn = executionArnOf(stack.generationStateMachineArn, jobId);
  let seen = 0;
  let lastBatch = '';
  for (;;) {
    let status: string | null = null;
    try {
      status = (await c.sfn.send(new DescribeExecutionCommand({ executionArn }))).status ?? null;
    } catch (e) {
      if (!isNotFound(e)) throw e;
      if (Date.now() - t0 > (o.startTimeoutMs ?? 120_000)) throw new RemoteError(`no execution ${executionArn} after ${Math.round((o.startTimeoutMs ?? 120_000) / 1000)} s: was the upload refused by the starter? (see the StartFailures queue)`);
    }
    if (status !== null) {
      const events = await history(c.sfn, executionArn);
      const states = enteredStates(events);
      for (; seen < states.length; seen++) o.observer?.state(states[seen].name, states[seen].at?.getTime() ?? Date.now());
      const batchId = batchJobIdOf(events);
      if (batchId) {
        const b = await describeBatchJob(c.batch, batchId);
        const key = b ? `${b.status}/${b.attempts}` : '';
        if (b && key !== lastBatch) {
          lastBatch = key;
          o.observer?.batch(b.status, b.attempts > 1 ? `(attempt ${b.attempts})` : '');
        }
      }
      if (status !== 'RUNNING') {
        o.observer?.end(Date.now());
        return jobStatus(c, stack, jobId);
      }
    }
    if (Date.now() - t0 > (o.timeoutMs ?? 3 * 3600_000)) throw new RemoteError(`job ${jobId} still ${status ?? 'not started'} after ${Math.round((Date.now() - t0) / 1000)} s; it goes on (check with \`cil status ${jobId}\`)`);
    await new Promise((r) => setTimeout(r, poll));
  }
}

/** Downloads outputs/<job>/ into `<outDir>/<job>/`. */
export async function fetchOutputs(c: Pick<RemoteClients, 's3'>, stack: StackInfo, jobId: string, outDir: string): Promise<string[]> {
  checkJobId(jobId);
  const dir = join(outDir, jobId);
  const files = await downloadPrefix(c.s3, stack.bucket, jobKeys(jobId).output, dir);
  if (files.length === 0) {
    const failure = await readJson(c.s3, stack.bucket, jobKeys(jobId).failure);
    if (failure) throw new RemoteError(`job ${jobId} failed in ${String(failure.failedStep)}: ${String(failure.reason)} (no outputs)`);
    throw new RemoteError(`job ${jobId} has no outputs (yet): s3://${stack.bucket}/${jobKeys(jobId).output} is empty`);
  }
  return files;
}
