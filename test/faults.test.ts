/**
 * Fault injection on the local pipeline (issue 8): the worker killed mid-denoise (SIGKILL) and
 * stopped (SIGTERM), the worker exiting non-zero once and every time, S3 failing transiently
 * (500/503 a few times) and persistently, PostProcess failing once (a Lambda service error, and a
 * crash half-way through its writes), a duplicate event and a re-run of a finished job, and the S3
 * server restarted mid-run. The retry policies are the synthesized ones (Step Functions Retry,
 * Batch's retry strategy, the SDK's retries); only the Retry waits are shortened
 * (`retryIntervalMs`). For each: the job completes with the outputs of an undisturbed run of the
 * same request (frames and MP4 byte for byte), or ends in a failure record that says why — and
 * nothing that was stored before (the uploads, models, statistics, finished outputs) is lost or
 * changed.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { jobKeys } from '#shared/schemas';
import { testCardPng } from '../local/src/testCard.ts';
import type { Asl } from '../local/src/definitions.ts';
import type { ExecutionRecord } from '../local/src/executions.ts';
import type { LocalFaults, PipelineEvent } from '../local/src/pipeline.ts';
import type { FlakyPlan } from './helpers/flakyWorker.ts';
import type { TestPipeline } from './helpers/local.ts';
import { startTestPipeline } from './helpers/local.ts';

const STEPS = 50;
const SEED = 7;
const REQUEST = { prompt: 'the test card pans left', steps: STEPS, seed: SEED };

let t: TestPipeline;
let faults: LocalFaults;
let card: Buffer;
const dir = mkdtempSync(join(tmpdir(), 'cil-faults-'));
const planFile = join(dir, 'flaky-plan.json');
let listener: ((e: PipelineEvent) => void) | null = null;
let reference: { frames: string[]; mp4: string };

interface Stored {
  readonly etag: string;
  readonly modified: number;
}

async function listAll(s3: S3Client, bucket: string): Promise<Map<string, Stored>> {
  const out = new Map<string, Stored>();
  let token: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const c of r.Contents ?? []) out.set(c.Key!, { etag: c.ETag ?? '', modified: c.LastModified?.getTime() ?? 0 });
    if (!r.IsTruncated) break;
    token = r.NextContinuationToken;
  }
  return out;
}

const KEPT = ['inputs/', 'models/', 'statistics/', 'outputs/'];

/** Everything stored under the kept prefixes before is still there, unchanged (ETag and LastModified). */
function expectNothingLost(before: Map<string, Stored>, after: Map<string, Stored>): void {
  const lost: string[] = [];
  for (const [k, v] of before) {
    if (!KEPT.some((p) => k.startsWith(p))) continue;
    const now = after.get(k);
    if (now === undefined) lost.push(`${k}: gone`);
    else if (now.etag !== v.etag || now.modified !== v.modified) lost.push(`${k}: changed`);
  }
  expect(lost).toEqual([]);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Retrier {
  readonly ErrorEquals: readonly string[];
  readonly MaxAttempts: number;
  readonly IntervalSeconds?: number;
  readonly BackoffRate?: number;
  readonly MaxDelaySeconds?: number;
  readonly JitterStrategy?: string;
}

/** The first Retry entry of state `name` (searched through Map/Parallel) whose ErrorEquals matches `error`. */
function retrierFor(def: Asl, name: string, error: string): Retrier {
  const find = (d: Asl): Record<string, unknown> | null => {
    for (const [n, st] of Object.entries(d.States)) {
      if (n === name) return st;
      for (const inner of [st.ItemProcessor, st.Iterator, ...((st.Branches as Asl[] | undefined) ?? [])]) {
        const hit = inner ? find(inner as Asl) : null;
        if (hit) return hit;
      }
    }
    return null;
  };
  const state = find(def);
  if (state === null) throw new Error(`no state ${name} in the definition`);
  const r = ((state.Retry ?? []) as Retrier[]).find((x) => x.ErrorEquals.includes(error) || x.ErrorEquals.includes('States.ALL'));
  if (r === undefined) throw new Error(`state ${name} has no Retry for ${error}`);
  return r;
}

async function frameHashes(jobId: string): Promise<string[]> {
  const out: string[] = [];
  for (let f = 0; f < 16; f++) out.push(sha((await t.get(`${jobKeys(jobId).frames}${String(f).padStart(4, '0')}.png`))!));
  return out;
}

interface Result {
  readonly outputs: { readonly kind: string; readonly key: string; readonly bytes: number; readonly sha256: string }[];
}

/** The job succeeded; result.json lists outputs that are all there with their SHA-256; frames and MP4 equal the undisturbed run's. */
async function expectCorrectOutputs(rec: ExecutionRecord): Promise<Result> {
  expect(rec.status, `${rec.error}: ${rec.cause?.slice(0, 600)}`).toBe('SUCCEEDED');
  const result = JSON.parse((await t.get(`${jobKeys(rec.name).output}result.json`))!.toString('utf8')) as Result;
  for (const o of result.outputs) {
    const body = await t.get(o.key);
    expect(body, o.key).not.toBeNull();
    expect([body!.length, sha(body!)], o.key).toEqual([o.bytes, o.sha256]);
  }
  expect(await frameHashes(rec.name)).toEqual(reference.frames);
  expect(result.outputs.find((o) => o.kind === 'mp4')?.sha256).toBe(reference.mp4);
  return result;
}

async function failureRecord(jobId: string): Promise<{ failedStep: string; error: string; reason: string }> {
  const b = await t.get(jobKeys(jobId).failure);
  expect(b, `failures/${jobId}.json`).not.toBeNull();
  return JSON.parse(b!.toString('utf8')) as { failedStep: string; error: string; reason: string };
}

async function workerMetadata(jobId: string): Promise<{ resumedFromStep: number }> {
  return JSON.parse((await t.get(jobKeys(jobId).workerMetadata))!.toString('utf8')) as { resumedFromStep: number };
}

function attemptsOf(rec: ExecutionRecord): { exitCode?: number; reason: string }[] {
  expect(rec.batchJobs).toHaveLength(1);
  const job = t.pipeline.batchJob(rec.batchJobs[0].jobId)!;
  return job.Attempts.map((a) => ({ exitCode: a.Container.ExitCode, reason: a.StatusReason }));
}

function setPlan(plan: FlakyPlan): void {
  writeFileSync(planFile, JSON.stringify(plan));
}

/** Calls `fn` once, when the job's worker reports denoising step ≥ `step`. */
function atStep(jobKey: string, step: number, fn: (jobId: string) => void): void {
  let fired = false;
  listener = (e) => {
    if (fired || e.type !== 'progress' || e.progress.phase !== 'denoise' || (e.progress.step ?? 0) < step) return;
    const rec = t.pipeline.execution('generation', e.jobId);
    if ((rec?.input as { key?: string } | undefined)?.key !== jobKey) return;
    fired = true;
    fn(e.jobId);
  };
}

async function run(key: string, body: Buffer = card): Promise<ExecutionRecord> {
  const up = await t.pipeline.upload(key, body, { request: REQUEST });
  return t.pipeline.waitForJob(up.id, 120_000);
}

beforeAll(async () => {
  setPlan({});
  t = await startTestPipeline({
    faultInjection: true,
    retryIntervalMs: 50,
    workerKillGraceMs: 5000,
    workerEntrypoint: [process.execPath, join(import.meta.dirname, 'helpers', 'flakyWorker.ts'), planFile, '--'],
    onEvent: (e) => listener?.(e),
  });
  faults = t.pipeline.faults!;
  card = await testCardPng(192, 128);
  const rec = await run('inputs/faults/reference.png');
  expect(rec.status, `${rec.error}: ${rec.cause}`).toBe('SUCCEEDED');
  const result = JSON.parse((await t.get(`${jobKeys(rec.name).output}result.json`))!.toString('utf8')) as Result;
  reference = { frames: await frameHashes(rec.name), mp4: result.outputs.find((o) => o.kind === 'mp4')!.sha256 };
}, 180_000);

afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  faults.s3.clear();
  faults.tasks.clear();
  listener = null;
  setPlan({});
});

describe('the worker interrupted', () => {
  /** Runs `key` with the worker sent `signal` at step 12: the outputs must still be right and nothing stored lost. */
  async function runInterrupted(key: string, signal: 'SIGKILL' | 'SIGTERM'): Promise<ExecutionRecord> {
    const before = await listAll(faults.direct, t.pipeline.bucket);
    atStep(key, 12, (id) => expect(t.pipeline.interruptWorker(id, signal)).toBe(true));
    const rec = await run(key);
    await expectCorrectOutputs(rec);
    expectNothingLost(before, await listAll(faults.direct, t.pipeline.bucket));
    return rec;
  }

  it('SIGKILL mid-denoise (a lost host, the OOM killer): exit 137, Batch retries, the next attempt resumes from the last periodic checkpoint', async () => {
    const rec = await runInterrupted('inputs/faults/sigkill.png', 'SIGKILL');
    expect(attemptsOf(rec).map((a) => a.exitCode)).toEqual([137, 0]);
    expect([10, 20, 30, 40]).toContain((await workerMetadata(rec.name)).resumedFromStep);
  }, 120_000);

  it('SIGTERM mid-denoise (a Spot reclaim): checkpoint at the current step, exit 143, retried, resumed there', async () => {
    const rec = await runInterrupted('inputs/faults/sigterm.png', 'SIGTERM');
    expect(attemptsOf(rec).map((a) => a.exitCode)).toEqual([143, 0]);
    expect((await workerMetadata(rec.name)).resumedFromStep).toBeGreaterThanOrEqual(12);
  }, 120_000);
});

describe('the worker exiting non-zero', () => {
  it('once: Batch retries it (no rule matches exit 1) and the second attempt produces the outputs', async () => {
    const key = 'inputs/faults/exit-once.png';
    setPlan({ [key]: { attempts: [1], exitCode: 1 } });
    const rec = await run(key);
    await expectCorrectOutputs(rec);
    expect(attemptsOf(rec).map((a) => a.exitCode)).toEqual([1, 0]);
  }, 120_000);

  it('every time: three attempts, then a failure record naming Generate, the exit code and the log stream; the upload stays, no outputs', async () => {
    const before = await listAll(faults.direct, t.pipeline.bucket);
    const key = 'inputs/faults/exit-always.png';
    setPlan({ [key]: { attempts: 'all', exitCode: 1 } });
    const rec = await run(key);
    expect(rec.status).toBe('FAILED');
    expect(attemptsOf(rec).map((a) => a.exitCode)).toEqual([1, 1, 1]);
    const f = await failureRecord(rec.name);
    expect(f.failedStep).toBe('Generate');
    expect(f.error).toBe('States.TaskFailed');
    expect(f.reason).toContain('exit code 1');
    const stream = /log stream (\S+)/.exec(f.reason)?.[1];
    expect(readFileSync(join(t.dataDir, stream!), 'utf8')).toContain('simulated crash on attempt 3');
    const after = await listAll(faults.direct, t.pipeline.bucket);
    expect([...after.keys()].filter((k) => k.startsWith(jobKeys(rec.name).output))).toEqual([]);
    expect(sha((await t.get(key))!)).toBe(sha(card));
    expectNothingLost(before, after);
  }, 120_000);
});

describe('S3 failing', () => {
  it('transiently in the worker (503 SlowDown twice on a frame): the SDK retries it inside the one attempt', async () => {
    const key = 'inputs/faults/s3-worker-503.png';
    const rule = faults.s3.add({ method: 'PUT', key: /^jobs\/j-[0-9a-f]{24}\/frames\/0003\.png$/, fault: { status: 503, code: 'SlowDown' }, times: 2 });
    const rec = await run(key);
    await expectCorrectOutputs(rec);
    expect(faults.s3.injected(rule)).toBe(2);
    expect(attemptsOf(rec).map((a) => a.exitCode)).toEqual([0]);
  }, 120_000);

  it('transiently in Validate (500 InternalError four times, more than the SDK’s three attempts): the state machine’s Retry takes over', async () => {
    const key = 'inputs/faults/s3-validate-500.png';
    const rule = faults.s3.add({ method: 'GET', key, fault: { status: 500 }, times: 4 });
    const rec = await run(key);
    await expectCorrectOutputs(rec);
    expect(faults.s3.injected(rule)).toBe(4);
    const gets = faults.s3.requests().filter((r) => r.key === key && r.method === 'GET');
    expect(gets.slice(0, 4).every((r) => r.injected)).toBe(true);
  }, 120_000);

  it('persistently for the worker (every frame PUT 500): three Batch attempts, then a failure record; nothing stored is lost', async () => {
    const before = await listAll(faults.direct, t.pipeline.bucket);
    const key = 'inputs/faults/s3-worker-down.png';
    faults.s3.add({ method: 'PUT', key: /^jobs\/j-[0-9a-f]{24}\/frames\//, fault: { status: 500 } });
    const rec = await run(key);
    expect(rec.status).toBe('FAILED');
    expect(attemptsOf(rec).map((a) => a.exitCode)).toEqual([1, 1, 1]);
    const f = await failureRecord(rec.name);
    expect(f).toMatchObject({ failedStep: 'Generate', error: 'States.TaskFailed' });
    const stream = /log stream (\S+)/.exec(f.reason)?.[1];
    expect(readFileSync(join(t.dataDir, stream!), 'utf8')).toMatch(/InternalError|internal error/);
    faults.s3.clear();
    expectNothingLost(before, await listAll(faults.direct, t.pipeline.bucket));
  }, 120_000);

});

describe('PostProcess failing once', () => {
  it('a Lambda service error: retried (LAMBDA_RETRY), the job completes', async () => {
    faults.tasks.add('PostProcess', { error: 'Lambda.ServiceException', times: 1 });
    const rec = await run('inputs/faults/pp-service-error.png');
    await expectCorrectOutputs(rec);
    expect(faults.tasks.injected('PostProcess')).toBe(1);
  }, 120_000);

  it('a crash half-way (result.json not written, the videos were): the retry rewrites the same bytes and finishes', async () => {
    const key = 'inputs/faults/pp-half-way.png';
    const rule = faults.s3.add({ method: 'PUT', key: /^outputs\/j-[0-9a-f]{24}\/result\.json$/, fault: { status: 500 }, times: 3 });
    const rec = await run(key);
    await expectCorrectOutputs(rec);
    expect(faults.s3.injected(rule)).toBe(3);
    // The videos were written by both invocations.
    const mp4Puts = faults.s3.requests().filter((r) => r.method === 'PUT' && r.key === `${jobKeys(rec.name).output}video.mp4`);
    expect(mp4Puts.length).toBe(2);
  }, 120_000);
});

describe('a finished job', () => {
  it('a duplicate upload event starts nothing; a re-run under the same job id keeps the finished outputs untouched', async () => {
    const key = 'inputs/faults/finished.png';
    const rec = await run(key);
    await expectCorrectOutputs(rec);
    const before = await listAll(faults.direct, t.pipeline.bucket);
    const etag = createHash('md5').update(card).digest('hex');
    expect(await t.pipeline.deliver({ bucket: { name: t.pipeline.bucket }, object: { key, size: card.length, etag } })).toBe('duplicate');
    // An operator's re-run (docs/operations.md §2): same input, another execution name.
    await new Promise((r) => setTimeout(r, 1100)); // LastModified has 1 s resolution
    t.pipeline.startExecution('generation', `${rec.name}-retry-1`, rec.input);
    const again = await t.pipeline.waitForJob(`${rec.name}-retry-1`, 120_000);
    expect(again.status, `${again.error}: ${again.cause}`).toBe('SUCCEEDED');
    const after = await listAll(faults.direct, t.pipeline.bucket);
    const outputs = [...before.keys()].filter((k) => k.startsWith(jobKeys(rec.name).output));
    expect(outputs.length).toBeGreaterThanOrEqual(5);
    expectNothingLost(before, after);
    expect(faults.s3.requests().filter((r) => r.method === 'PUT' && r.key.startsWith(jobKeys(rec.name).output) && !r.injected)).toHaveLength(outputs.length);
  }, 120_000);
});

describe('the S3 server restarted mid-run', () => {
  it('down for 1.5 s while the worker denoises: the job completes with the same outputs; everything stored stays', async () => {
    const before = await listAll(faults.direct, t.pipeline.bucket);
    const key = 'inputs/faults/s3-restart.png';
    const restarts: Promise<void>[] = [];
    atStep(key, 5, () => restarts.push(t.pipeline.restartS3(1500)));
    const rec = await run(key);
    expect(restarts).toHaveLength(1);
    await Promise.all(restarts);
    await expectCorrectOutputs(rec);
    expect(faults.s3.requests().some((r) => r.status === 'reset' && !r.injected)).toBe(true);
    expect(attemptsOf(rec).length).toBeLessThanOrEqual(3);
    expectNothingLost(before, await listAll(faults.direct, t.pipeline.bucket));
  }, 120_000);
});

// Last: their many failed requests draw down the SDK retry quota of the in-process handlers' shared S3 client.
describe('S3 failing persistently for the handlers', () => {
  it('the upload and failures/ both unavailable: no record can be written, yet the failure notification goes out and names the cause', async () => {
    const key = 'inputs/faults/s3-record-down.png';
    // Reads of the upload fail (its PUT goes through), and so does every request under failures/.
    faults.s3.add({ method: 'GET', key, fault: { status: 500 } });
    faults.s3.add({ method: 'HEAD', key, fault: { status: 500 } });
    faults.s3.add({ key: 'failures/', fault: { status: 500 } });
    const up = await t.pipeline.upload(key, card, { request: REQUEST });
    const rec = await t.pipeline.waitForJob(up.id, 120_000);
    expect(rec.status).toBe('FAILED');
    expect(rec.states.map((st) => st.name)).toEqual(['Validate', 'ValidateFailed', 'RecordFailure', 'NotifyFailure', 'JobFailed']);
    const sns = t.pipeline.notifications().find((n) => n.channel === 'sns' && (n.message as { jobId?: string }).jobId === up.id);
    expect(sns?.subject).toBe(`CIL job ${up.id} failed in Validate`);
    expect(sns?.attributes).toMatchObject({ status: 'failed', failedStep: 'Validate', error: 'InternalError' });
    faults.s3.clear();
    expect(await t.get(jobKeys(up.id).failure)).toBeNull();
    expect(sha((await t.get(key))!)).toBe(sha(card));
  }, 120_000);

  it('persistently for PostProcess (every output PUT 503): retried as the definition says, then a failure record naming PostProcess and SlowDown', async () => {
    // The Retry block the synthesized definition gives PostProcess for SlowDown.
    const retrier = retrierFor(t.pipeline.definitions.generation, 'PostProcess', 'SlowDown');
    // What that block says: 3 retries, 5 s × 2ⁿ capped at 60 s, full jitter (HANDLER_RETRY).
    expect(retrier).toMatchObject({ MaxAttempts: 3, IntervalSeconds: 5, BackoffRate: 2, MaxDelaySeconds: 60, JitterStrategy: 'FULL' });
    const key = 'inputs/faults/s3-postprocess-down.png';
    faults.s3.add({ method: 'PUT', key: /^outputs\//, fault: { status: 503, code: 'SlowDown' } });
    const rec = await run(key);
    expect(rec.status).toBe('FAILED');
    const f = await failureRecord(rec.name);
    expect(f).toMatchObject({ failedStep: 'PostProcess', error: 'SlowDown' });
    // Each PostProcess invocation starts by reading outputs/<job>/result.json once (absent here: a
    // 404, which the SDK does not retry), so those GETs count the invocations: 1 + MaxAttempts.
    const resultKey = `${jobKeys(rec.name).output}result.json`;
    expect(faults.s3.requests().filter((r) => r.method === 'GET' && r.key === resultKey).length).toBe(1 + retrier.MaxAttempts);
    // The waits between them are this suite's override (retryIntervalMs: 50, which the local
    // interpreter uses in place of IntervalSeconds × BackoffRateⁿ, without jitter): the
    // definition's own waits (5, 10, 20 s before jitter) are what the block above asserts.
    expect(faults.s3.requests().filter((r) => r.injected && r.key.startsWith(jobKeys(rec.name).output)).length).toBeGreaterThanOrEqual(1 + retrier.MaxAttempts);
    faults.s3.clear();
    expect(await t.get(`${jobKeys(rec.name).output}result.json`)).toBeNull();
  }, 120_000);
});
