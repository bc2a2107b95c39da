/**
 * End to end on the local pipeline, the production changes of the worker (issue 16): the job spec
 * by reference (a prompt of 2,000 `"` characters, whose inline spec would pass Batch's 8,192-
 * character override limit), a lost upload event recovered by the reconciler, a Spot notice from
 * a fake instance metadata service (checkpoint, exit 143, resumed), and a worker that requires
 * CUDA on this CPU-only machine (GpuUnavailable, exit 78, named in the failure record).
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobKeys } from '#shared/schemas';
import type { RecordedPlacement } from '#shared/schemas';
import type { PipelineEvent } from '../local/src/pipeline.ts';
import { CAPACITY_CANCELLED, MAX_CONTAINER_OVERRIDES_CHARS } from '../local/src/batch.ts';
import { testCardPng } from '../local/src/testCard.ts';
import type { TestPipeline } from './helpers/local.ts';
import { startTestPipeline } from './helpers/local.ts';

let t: TestPipeline;
let card: Buffer;
let imds: Server;
/** The fake IMDS gives one notice once armed, then none (the retry's attempt runs to the end). */
const spot = { armed: false, served: 0 };
let listener: ((e: PipelineEvent) => void) | null = null;
const DROPPED = 'inputs/prod/lost.png';

beforeAll(async () => {
  imds = createServer((req, res) => {
    if (req.method === 'PUT' && req.url === '/latest/api/token') return void res.writeHead(200).end('T');
    if (req.headers['x-aws-ec2-metadata-token'] !== 'T') return void res.writeHead(401).end();
    if (req.url === '/latest/meta-data/spot/instance-action' && spot.armed && spot.served === 0) {
      spot.served++;
      return void res.writeHead(200).end(JSON.stringify({ action: 'terminate', time: '2030-01-01T00:02:00Z' }));
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => imds.listen(0, '127.0.0.1', r));
  t = await startTestPipeline({
    workerEnv: { AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${(imds.address() as AddressInfo).port}`, CIL_SPOT_POLL_MS: '20' },
    dropEvent: (d) => d.object.key === DROPPED,
    onEvent: (e) => listener?.(e),
  });
  card = await testCardPng(192, 128);
}, 180_000);

afterAll(async () => {
  await t?.close();
  await new Promise<void>((r) => imds?.close(() => r()));
});

describe('the job spec by reference', () => {
  it('a prompt of 2,000 `"` characters: the Batch job gets only CIL_JOB_SPEC_URI, and the video comes back', async () => {
    const prompt = '"'.repeat(2000);
    // What the inline spec would have been: past Batch's limit (the local Batch refuses it as Batch does).
    expect(JSON.stringify({ Environment: [{ Name: 'CIL_JOB_SPEC', Value: JSON.stringify({ request: { prompt } }) }] }).length).toBeLessThan(MAX_CONTAINER_OVERRIDES_CHARS);
    expect(JSON.stringify(JSON.stringify({ Environment: [{ Name: 'CIL_JOB_SPEC', Value: JSON.stringify({ request: { prompt } }) }] })).length).toBeGreaterThan(MAX_CONTAINER_OVERRIDES_CHARS);
    const up = await t.pipeline.upload('inputs/prod/quotes.png', card, { request: { prompt, steps: 5 } });
    const rec = await t.pipeline.waitForJob(up.id, 120_000);
    expect(rec.status, `${rec.error}: ${rec.cause?.slice(0, 600)}`).toBe('SUCCEEDED');
    const spec = JSON.parse((await t.get(jobKeys(up.id).request))!.toString('utf8')) as { request: { prompt: string } };
    expect(spec.request.prompt).toBe(prompt);
    // The worker read it by reference and generated with it.
    const meta = JSON.parse((await t.get(jobKeys(up.id).workerMetadata))!.toString('utf8')) as { params: { prompt: string }; timings: Record<string, number> };
    expect(meta.params.prompt).toBe(prompt);
    for (const k of ['downloadS', 'sessionOpenS', 'stepS']) expect(typeof meta.timings[k], k).toBe('number');
    // Spot had capacity: the placement says so, with no cancellation and no resubmission.
    const placement = (meta as unknown as { placement: Record<string, unknown> }).placement;
    expect(placement).toMatchObject({ tier: 'interactive', capacity: 'spot', spotCancellations: 0 });
    expect(placement).not.toHaveProperty('resubmittedFrom');
    expect(await t.exists(`${jobKeys(up.id).output}video.mp4`)).toBe(true);
  }, 180_000);
});

describe('a Spot queue without capacity', () => {
  it('cancels the job RUNNABLE; the workflow resubmits it on-demand, and metadata.json, result.json and the notification record it', async () => {
    // Every tier queue of every fleet is short of Spot capacity; the on-demand queues are not.
    const tierQueues = Object.values(t.pipeline.definitions.generation.States).flatMap((st) => {
      const q = (st.Result as { queues?: Record<string, string> } | undefined)?.queues;
      return q ? [q.interactive, q.production] : [];
    });
    expect(tierQueues.length).toBeGreaterThan(0);
    t.pipeline.withoutCapacity(tierQueues);
    let rec;
    let up;
    try {
      up = await t.pipeline.upload('inputs/prod/no-spot.png', card, { request: { steps: 5 } });
      rec = await t.pipeline.waitForJob(up.id, 120_000);
    } finally {
      t.pipeline.withoutCapacity([]);
    }
    expect(rec.status, `${rec.error}: ${rec.cause?.slice(0, 600)}`).toBe('SUCCEEDED');
    const [spot, onDemand] = rec.batchJobs.map((j) => t.pipeline.batchJob(j.jobId)!);
    expect(spot).toMatchObject({ Status: 'FAILED', StatusReason: CAPACITY_CANCELLED, Attempts: [] });
    expect(onDemand.Status).toBe('SUCCEEDED');
    const want = { tier: 'interactive', queue: onDemand.JobQueue, capacity: 'on-demand', spotCancellations: 1, resubmittedFrom: spot.JobId, resubmitReason: CAPACITY_CANCELLED };
    // The worker's metadata.json (and its copy under outputs/), result.json and the notification.
    const keys = jobKeys(up.id);
    const meta = JSON.parse((await t.get(keys.workerMetadata))!.toString('utf8')) as { placement: RecordedPlacement };
    expect(meta.placement).toMatchObject(want);
    expect(meta.placement.queueWaitSeconds).toBeGreaterThanOrEqual(0);
    expect(Date.parse(meta.placement.executionStartedAt)).toBeLessThanOrEqual(Date.now());
    expect(JSON.parse((await t.get(`${keys.output}metadata.json`))!.toString('utf8'))).toEqual(meta);
    const result = JSON.parse((await t.get(`${keys.output}result.json`))!.toString('utf8')) as { placement: RecordedPlacement };
    expect(result.placement).toEqual(meta.placement);
    const note = t.pipeline.notifications().find((n) => n.channel === 'sns' && n.attributes?.jobId === up.id);
    expect(note?.attributes).toMatchObject({ status: 'succeeded', capacity: 'on-demand' });
    expect((note?.message as { placement: unknown }).placement).toEqual(meta.placement);
  }, 180_000);
});

describe('a lost upload event', () => {
  it('starts nothing; the reconciler finds the upload, starts it under its job id, and the video comes back; a second pass starts nothing', async () => {
    const up = await t.pipeline.upload(DROPPED, card, { request: { steps: 5 } });
    for (let i = 0; i < 100 && !t.events.some((e) => e.type === 'ignored' && e.key === DROPPED); i++) await new Promise((r) => setTimeout(r, 20));
    expect(t.events.some((e) => e.type === 'ignored' && e.key === DROPPED)).toBe(true);
    expect(t.pipeline.execution('generation', up.id)).toBeUndefined();

    const report = await t.pipeline.reconcile();
    expect(report.started).toEqual([up.id]);
    const rec = await t.pipeline.waitForJob(up.id, 120_000);
    expect(rec.status, `${rec.error}: ${rec.cause?.slice(0, 600)}`).toBe('SUCCEEDED');
    expect(await t.exists(`${jobKeys(up.id).output}video.mp4`)).toBe(true);

    const again = await t.pipeline.reconcile();
    expect(again.started).toEqual([]);
    expect(again.recorded).toBe(again.considered);
    expect(t.pipeline.executions('generation').filter((e) => e.name === up.id)).toHaveLength(1);
  }, 180_000);
});

describe('a Spot interruption notice', () => {
  it('mid-denoise: the worker checkpoints and exits 143, Batch retries, the next attempt resumes', async () => {
    const key = 'inputs/prod/spot.png';
    let fired = false;
    listener = (e) => {
      if (fired || e.type !== 'progress' || e.progress.phase !== 'denoise' || (e.progress.step ?? 0) < 12) return;
      if ((t.pipeline.execution('generation', e.jobId)?.input as { key?: string } | undefined)?.key !== key) return;
      fired = true;
      spot.armed = true;
    };
    const up = await t.pipeline.upload(key, card, { request: { steps: 50, prompt: 'the test card pans left' } });
    const rec = await t.pipeline.waitForJob(up.id, 180_000);
    listener = null;
    expect(rec.status, `${rec.error}: ${rec.cause?.slice(0, 600)}`).toBe('SUCCEEDED');
    expect(spot.served).toBe(1);
    const job = t.pipeline.batchJob(rec.batchJobs[0].jobId)!;
    expect(job.Attempts.map((a) => a.Container.ExitCode)).toEqual([143, 0]);
    const meta = JSON.parse((await t.get(jobKeys(up.id).workerMetadata))!.toString('utf8')) as { resumedFromStep: number };
    expect(meta.resumedFromStep).toBeGreaterThanOrEqual(12);
  }, 240_000);
});

describe('a worker that requires CUDA on this CPU-only machine', () => {
  it('fails fast with exit 78 (never on the CPU); the failure record names GpuUnavailable', async () => {
    const g = await startTestPipeline({ workerEnv: { CIL_EXECUTION_PROVIDER: 'cuda' } });
    try {
      const up = await g.pipeline.upload('inputs/prod/gpu.png', card, { request: { steps: 5 } });
      const rec = await g.pipeline.waitForJob(up.id, 120_000);
      expect(rec.status).toBe('FAILED');
      const job = g.pipeline.batchJob(rec.batchJobs[0].jobId)!;
      expect(job.Attempts.length).toBeGreaterThanOrEqual(1);
      expect(job.Attempts.every((a) => a.Container.ExitCode === 78)).toBe(true);
      const failure = JSON.parse((await g.get(jobKeys(up.id).failure))!.toString('utf8')) as { failedStep: string; error: string; reason: string };
      expect(failure).toMatchObject({ failedStep: 'Generate', error: 'GpuUnavailable' });
      expect(failure.reason).toMatch(/did not fall back to the CPU.*exit code 78/);
      expect(JSON.parse((await g.get(`${jobKeys(up.id).work}error.json`))!.toString('utf8'))).toMatchObject({ error: 'GpuUnavailable' });
      expect(await g.exists(jobKeys(up.id).workerMetadata)).toBe(false);
    } finally {
      await g.close();
    }
  }, 180_000);
});
