/**
 * Load on the local pipeline (issue 8, "Load"): N distinct uploads at once (CIL_LOAD_JOBS,
 * default 20) against a pipeline with 2 workers, 2 of them deliberately invalid images. Every job
 * is accounted for: the valid ones succeed with `outputs/<job>/result.json`, the invalid ones fail
 * at Validate with InvalidImage and a failure record, none is left unfinished, and no more than 2
 * Batch jobs ever ran at once. No timing assertions (the machine is shared). Also: nearest-rank
 * percentiles, the spread of the invalid uploads, the worker peak, option errors, and a job the
 * deadline leaves unfinished.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobKeys } from '#shared/schemas';
import type { PipelineEvent } from '../local/src/pipeline.ts';
import type { LoadReport } from '../bench/load/run.ts';
import { invalidIndices, killIndices, percentile, pipelineEventHub, runLoad, WorkerPeak } from '../bench/load/run.ts';
import type { TestPipeline } from './helpers/local.ts';
import { DEFINITIONS_CACHE, startTestPipeline } from './helpers/local.ts';

const N = Number(process.env.CIL_LOAD_JOBS ?? 20);
if (!Number.isInteger(N) || N < 3 || N > 1000) throw new Error(`CIL_LOAD_JOBS must be an integer in [3, 1000], got '${process.env.CIL_LOAD_JOBS}'`);
const INVALID = 2;
const WORKERS = 2;
const CHAOS_N = Number(process.env.CIL_CHAOS_JOBS ?? 8);
if (!Number.isInteger(CHAOS_N) || CHAOS_N < 4 || CHAOS_N > 1000) throw new Error(`CIL_CHAOS_JOBS must be an integer in [4, 1000], got '${process.env.CIL_CHAOS_JOBS}'`);

describe('percentile (nearest rank)', () => {
  it('is always one of the values', () => {
    const xs = Array.from({ length: 20 }, (_, i) => 20 - i); // 20 … 1, unsorted on purpose
    expect(percentile(xs, 50)).toBe(10);
    expect(percentile(xs, 95)).toBe(19);
    expect(percentile(xs, 100)).toBe(20);
    expect(percentile(xs, 0)).toBe(1);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50)).toBe(5);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95)).toBe(10);
    expect(percentile([3.5], 95)).toBe(3.5);
    expect(percentile([2, 1], 50)).toBe(1);
    expect(xs[0]).toBe(20); // the input is not sorted in place
  });

  it('null for no values; p outside [0, 100] is an error', () => {
    expect(percentile([], 50)).toBeNull();
    expect(() => percentile([1], 101)).toThrow(expect.objectContaining({ name: 'PercentileError' }) as Error);
    expect(() => percentile([1], Number.NaN)).toThrow(/p must be in \[0, 100\]/);
  });
});

describe('load helpers', () => {
  it('spreads the invalid uploads: exactly k distinct indices in [0, jobs)', () => {
    expect([...invalidIndices(20, 2)]).toEqual([5, 15]);
    for (let jobs = 1; jobs <= 40; jobs++) {
      for (let k = 0; k <= jobs; k++) {
        const s = invalidIndices(jobs, k);
        expect(s.size).toBe(k);
        for (const i of s) expect(i >= 0 && i < jobs).toBe(true);
      }
    }
  });

  it('counts Batch jobs holding a worker (STARTING or RUNNING), retries included', () => {
    const peak = new WorkerPeak();
    const ev = (id: string, status: string): PipelineEvent => ({ type: 'batch-job', job: { JobId: id, Status: status } }) as unknown as PipelineEvent;
    for (const [id, st] of [
      ['a', 'SUBMITTED'], ['a', 'RUNNABLE'], ['b', 'RUNNABLE'], ['a', 'STARTING'], ['a', 'RUNNING'], ['b', 'STARTING'], ['b', 'RUNNING'],
      ['a', 'RUNNABLE'], ['c', 'STARTING'], ['c', 'RUNNING'], ['b', 'SUCCEEDED'], ['a', 'STARTING'], ['a', 'RUNNING'], ['a', 'FAILED'], ['c', 'SUCCEEDED'],
    ]) {
      peak.observe(ev(id, st));
    }
    expect(peak.peak).toBe(2);
    expect(peak.current).toBe(0);
  });

  it('picks the jobs to kill among the valid ones only', () => {
    const invalid = invalidIndices(20, 2);
    const kill = killIndices(20, invalid, 0.25);
    expect(kill.size).toBe(Math.round(0.25 * 18));
    for (const i of kill) expect(invalid.has(i)).toBe(false);
    expect(killIndices(20, invalid, 0).size).toBe(0);
    expect(killIndices(20, invalid, 1).size).toBe(18);
  });

  it('refuses bad options before starting anything', async () => {
    await expect(runLoad({ jobs: 0 })).rejects.toThrow(expect.objectContaining({ name: 'LoadOptionsError' }) as Error);
    await expect(runLoad({ jobs: 1001 })).rejects.toThrow(/jobs/);
    await expect(runLoad({ jobs: 2, invalid: 3 })).rejects.toThrow(/invalid: must not exceed jobs \(2\)/);
    await expect(runLoad({ jobs: 2, steps: 0 })).rejects.toThrow(/steps/);
    await expect(runLoad({ jobs: 2, job: 3 } as never)).rejects.toThrow(/unknown field "job"/);
    const target = { pipeline: {} as never, subscribe: () => () => undefined, workers: 1 };
    await expect(runLoad({ jobs: 2, target, workers: 2 })).rejects.toThrow(/workers configure a pipeline runLoad starts/);
    await expect(runLoad({ jobs: 2, chaos: { s3ErrorRate: 0.9 } })).rejects.toThrow(/s3ErrorRate/);
    await expect(runLoad({ jobs: 2, target: { ...target, pipeline: { faults: null } as never }, chaos: { killFraction: 0.5 } })).rejects.toThrow(/chaos needs a target pipeline started with faultInjection/);
  });
});

describe(`${N} uploads at once, ${INVALID} invalid, ${WORKERS} workers`, () => {
  let t: TestPipeline;
  let r: LoadReport;
  const hub = pipelineEventHub();
  beforeAll(async () => {
    t = await startTestPipeline({ workerConcurrency: WORKERS, onEvent: hub.onEvent });
  }, 90_000);
  afterAll(async () => t?.close());

  it('accounts for every job: the valid ones succeed with result.json, the invalid ones fail at Validate', async () => {
    const seen: string[] = [];
    r = await runLoad({ jobs: N, invalid: INVALID, target: { pipeline: t.pipeline, subscribe: hub.subscribe, workers: WORKERS }, onJob: (j) => seen.push(j.key) });

    expect(r.jobs).toBe(N);
    expect(r.results).toHaveLength(N);
    expect(new Set(seen).size).toBe(N);
    expect(r.succeeded + r.failed + r.unfinished).toBe(N);
    expect(r.unfinished).toBe(0);
    expect(r.succeeded, JSON.stringify(r.failures, null, 2)).toBe(N - INVALID);
    expect(r.failed).toBe(INVALID);
    expect(r.ok).toBe(true);

    // Distinct uploads: distinct keys under inputs/load/, distinct job ids, each with its own execution.
    const ids = r.results.map((j) => j.jobId);
    expect(new Set(ids).size).toBe(N);
    for (const j of r.results) expect(j.key.startsWith('inputs/load/')).toBe(true);

    for (const j of r.results.filter((x) => !x.invalid)) {
      expect(j.status).toBe('SUCCEEDED');
      expect(await t.exists(`${jobKeys(j.jobId!).output}result.json`)).toBe(true);
      expect(j.latencyS).toBeGreaterThan(0);
    }

    const invalid = r.results.filter((x) => x.invalid);
    expect(invalid).toHaveLength(INVALID);
    for (const j of invalid) {
      expect(j).toMatchObject({ status: 'FAILED', failedStep: 'Validate', error: 'InvalidImage' });
      expect(j.reason).toContain(j.key);
      const record = JSON.parse((await t.get(jobKeys(j.jobId!).failure))!.toString('utf8')) as Record<string, unknown>;
      expect(record).toMatchObject({ jobId: j.jobId, failedStep: 'Validate', error: 'InvalidImage', reason: j.reason });
    }
    expect(r.failures.map((f) => f.jobId).sort()).toEqual(invalid.map((j) => j.jobId).sort());
    expect(r.failures.every((f) => f.expected)).toBe(true);

    // Bounded workers: never more than the pipeline's concurrency at once (and some ran).
    expect(r.workers).toBe(WORKERS);
    expect(r.peakWorkers).toBeGreaterThanOrEqual(1);
    expect(r.peakWorkers).toBeLessThanOrEqual(WORKERS);

    // The figures are consistent (their values are the machine's, not checked).
    expect(r.p50S).not.toBeNull();
    expect(r.p50S!).toBeLessThanOrEqual(r.p95S!);
    expect(r.p95S!).toBeLessThanOrEqual(r.maxS!);
    expect(r.throughputJobsPerMin).toBeGreaterThan(0);
  }, 240_000);
});

describe('a pipeline runLoad starts itself', () => {
  it('a job the deadline leaves running is reported unfinished, with a reason', async () => {
    // No worker process and PostProcess finish within 0.3 s: the job is still running at the deadline.
    const r = await runLoad({ jobs: 1, workers: 1, timeoutS: 0.3, definitionsCacheDir: DEFINITIONS_CACHE, workerKillGraceMs: 2000 });
    expect(r).toMatchObject({ jobs: 1, succeeded: 0, failed: 0, unfinished: 1, ok: false, p50S: null });
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]).toMatchObject({ status: 'UNFINISHED', expected: false });
    expect(r.failures[0].reason).toMatch(/not ended within the 0\.3 s deadline/);
  }, 60_000);
});

describe(`${CHAOS_N} uploads at once under chaos (3 % of S3 requests fail with 503, a quarter of the workers killed mid-denoise)`, () => {
  it('every job still succeeds: the SDK, Step Functions and Batch retries absorb the faults', async () => {
    const r = await runLoad({ jobs: CHAOS_N, definitionsCacheDir: DEFINITIONS_CACHE, chaos: { s3ErrorRate: 0.03, killFraction: 0.25, seed: 7 } });
    expect(r.unfinished).toBe(0);
    expect(r.succeeded, JSON.stringify(r.failures, null, 2)).toBe(CHAOS_N);
    expect(r.ok).toBe(true);
    expect(r.chaos).not.toBeNull();
    expect(r.chaos!.s3FaultsInjected).toBeGreaterThan(0);
    expect(r.chaos!.workersKilled).toBe(Math.round(0.25 * CHAOS_N));
    expect(r.peakWorkers).toBeLessThanOrEqual(r.workers);
  }, 300_000);
});
