/**
 * The local stand-in for AWS Batch, with a fake worker process: the synthesized Generate job
 * definition's retry strategy (exit 143 retried, exit 3 final, other failures retried until the
 * attempts run out — docs/infra.md, docs/worker.md), the attempt timeout, the environment a job
 * gets, progress lines, and the bound on jobs running at once.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENERATION_STATES, WORKER_ENV, WORKER_EXIT } from '../../infra/lib/names.ts';
import { NO_PLACEMENT, parsePlacementArg } from '#shared/schemas';
import type { BatchJobDescription, SubmitJobParameters, WorkerLine } from '../src/batch.ts';
import { CAPACITY_CANCELLED, globMatch, LocalBatch, MAX_CONTAINER_OVERRIDES_CHARS, retryDecision } from '../src/batch.ts';
import { TaskFailed } from '../src/errors.ts';
import { StateMachine } from 'aws-local-stepfunctions';
import { DEMO_DEFAULTS } from '../../demo/src/bundle.ts';
import type { LocalDefinitions, LocalJobDefinition } from '../src/definitions.ts';
import { loadLocalDefinitions } from '../src/definitions.ts';
import { DEFINITIONS_CACHE } from '../../test/helpers/local.ts';

const FAKE = join(import.meta.dirname, '..', '..', 'test', 'helpers', 'fakeWorker.ts');
let defs: LocalDefinitions;
let generateDef: string;
let dir: string;

beforeAll(async () => {
  defs = await loadLocalDefinitions({ cacheDir: DEFINITIONS_CACHE });
  generateDef = (defs.generation.States[GENERATION_STATES.generate].Parameters as { JobDefinition: string }).JobDefinition;
  dir = mkdtempSync(join(tmpdir(), 'cil-local-batch-'));
}, 90_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  readonly job: BatchJobDescription;
  readonly lines: WorkerLine[];
}

function batchWith(jobDefinitions: Record<string, LocalJobDefinition>, concurrency = 2, warmVerbs?: readonly string[]): { batch: LocalBatch; lines: Map<string, WorkerLine[]> } {
  const lines = new Map<string, WorkerLine[]>();
  const batch = new LocalBatch({
    jobDefinitions,
    concurrency,
    logDir: join(dir, 'logs', 'batch'),
    logRoot: dir,
    scratchDir: join(dir, 'tmp'),
    entrypoint: [process.execPath, FAKE],
    baseEnv: { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1' },
    envSubstitutes: { [WORKER_ENV.modelCache]: '/local/models', [WORKER_ENV.progressBus]: null },
    killGraceMs: 2000,
    warmVerbs,
    onWorkerLine: (job, l) => {
      const list = lines.get(job.JobId) ?? [];
      list.push(l);
      lines.set(job.JobId, list);
    },
  });
  return { batch, lines };
}

function submit(name: string, exits: string, extra: Record<string, string> = {}, definition = generateDef): SubmitJobParameters {
  const env = { FAKE_EXITS: exits, [WORKER_ENV.jobSpec]: JSON.stringify({ jobId: name }), ...extra };
  return { JobName: name, JobQueue: 'arn:aws:batch:us-east-1:000000000000:job-queue/q', JobDefinition: definition, ContainerOverrides: { Environment: Object.entries(env).map(([Name, Value]) => ({ Name, Value })) } };
}

async function runOne(exits: string, extra: Record<string, string> = {}, warmVerbs?: readonly string[]): Promise<Run> {
  const { batch, lines } = batchWith(defs.jobDefinitions, 2, warmVerbs);
  const job = await batch.submitAndWait(submit(`job-${exits.replace(/,/g, '-')}`, exits, extra));
  return { job, lines: lines.get(job.JobId) ?? [] };
}

describe('SubmitJob limits', () => {
  it('refuses container overrides over 8,192 characters, as Batch does (why the job spec travels by reference)', async () => {
    const { batch } = batchWith(defs.jobDefinitions);
    const big = submit('job-big', '0', { [WORKER_ENV.jobSpec]: JSON.stringify({ request: { prompt: '"'.repeat(2000) } }).repeat(2) });
    expect(JSON.stringify(big.ContainerOverrides).length).toBeGreaterThan(MAX_CONTAINER_OVERRIDES_CHARS);
    const err = await batch.submitAndWait(big).catch((e: unknown) => e as Error);
    expect((err as Error).name).toBe('Batch.ClientException');
    expect((err as Error).message).toMatch(/at most 8192/);
  });
});

describe('Batch EvaluateOnExit matching', () => {
  it('globs match exactly or by prefix, and a missing value never matches a pattern', () => {
    expect(globMatch('143', '143')).toBe(true);
    expect(globMatch('14*', '143')).toBe(true);
    expect(globMatch('143', '1430')).toBe(false);
    expect(globMatch('Host EC2*', 'Host EC2 (instance i-1) terminated.')).toBe(true);
    expect(globMatch(undefined, undefined)).toBe(true);
    expect(globMatch('3', undefined)).toBe(false);
  });

  it('the first matching rule decides; no match means RETRY', () => {
    const rules = [
      { action: 'EXIT' as const, onExitCode: '3' },
      { action: 'RETRY' as const, onExitCode: '1*' },
      { action: 'EXIT' as const, onExitCode: '*' },
    ];
    expect(retryDecision(rules, 3, undefined, 'x')).toBe('EXIT');
    expect(retryDecision(rules, 143, undefined, 'x')).toBe('RETRY');
    expect(retryDecision(rules, 2, undefined, 'x')).toBe('EXIT');
    expect(retryDecision([], 2, undefined, 'x')).toBe('RETRY');
  });
});

describe('the synthesized Generate job definition, run locally', () => {
  it('is the worker command with attempts and the exit-code rules of docs/infra.md', () => {
    const d = defs.jobDefinitions[generateDef];
    expect(d.command).toEqual(['worker', '--placement', 'Ref::placement']);
    // A job submitted by hand (no parameters) gets no placement.
    expect(d.parameters).toEqual({ placement: NO_PLACEMENT });
    expect(d.retryStrategy.attempts).toBe(3);
    expect(d.retryStrategy.evaluateOnExit).toEqual(
      expect.arrayContaining([
        { action: 'RETRY', onExitCode: String(WORKER_EXIT.interrupted) },
        { action: 'EXIT', onExitCode: String(WORKER_EXIT.refused) },
      ]),
    );
  });

  it.each([
    ['started cold', undefined],
    ['started ahead (warmVerbs)', ['worker']],
  ])('exit 0: SUCCEEDED after one attempt; the job gets its environment and its progress lines are read (%s)', async (_, warmVerbs) => {
    const r = await runOne('0', {}, warmVerbs);
    expect(r.job.Status).toBe('SUCCEEDED');
    expect(r.job.Attempts.map((a) => a.Container.ExitCode)).toEqual([0]);
    const env = r.lines.find((l) => l.event === 'env')!;
    expect(env.argv).toEqual(['worker', '--placement', NO_PLACEMENT]);
    expect(JSON.parse(env.spec as string)).toEqual({ jobId: 'job-0' });
    expect(env.endpoint).toBe('http://127.0.0.1:1');
    expect(env.cache).toBe('/local/models');
    expect(env.bus).toBeNull(); // no EventBridge locally
    expect(env.jobId).toBe(r.job.JobId);
    expect(String(env.tmp).startsWith(join(dir, 'tmp'))).toBe(true);
    expect(r.lines.filter((l) => l.event === 'progress').map((l) => l.step)).toEqual([1, 2, 3]);
    // Everything the worker printed is in the attempt's log, named by the log stream.
    const log = readFileSync(join(dir, r.job.Attempts[0].Container.LogStreamName), 'utf8');
    expect(log).toContain('not json: kept in the log only');
  });

  it('exit 143 (interrupted) is retried and the next attempt can succeed', async () => {
    const r = await runOne('143,0');
    expect(r.job.Status).toBe('SUCCEEDED');
    expect(r.job.Attempts.map((a) => a.Container.ExitCode)).toEqual([143, 0]);
  });

  it('started ahead: each job gets a process of its own, with its own environment; a retry and a timeout behave as cold ones', { timeout: 60_000 }, async () => {
    const d = defs.jobDefinitions[generateDef];
    const { batch, lines } = batchWith({ [generateDef]: { ...d, attemptDurationSeconds: 6 } }, 1, ['worker']);
    // Each attempt lasts long enough for the next process to start beside it.
    const a = await batch.submitAndWait(submit('warm-a', '143,0', { FAKE_SLEEP_MS: '2500' }));
    const b = await batch.submitAndWait(submit('warm-b', '0', { FAKE_SLEEP_MS: '30000' }));
    await batch.stop();
    expect(a.Attempts.map((x) => x.Container.ExitCode)).toEqual([143, 0]);
    expect(a.Status).toBe('SUCCEEDED');
    expect(b.StatusReason).toBe('Job attempt duration exceeded timeout');
    expect(b.Attempts.map((x) => x.Container.ExitCode)).toEqual([143]);
    const envs = [a, b].flatMap((j) => lines.get(j.JobId)!.filter((l) => l.event === 'env'));
    expect(envs.map((e) => [(JSON.parse(e.spec as string) as { jobId: string }).jobId, e.attempt])).toEqual([['warm-a', 1], ['warm-a', 2], ['warm-b', 1]]);
    expect(new Set(envs.map((e) => e.tmp)).size).toBe(3);
    // With one slot, a cold process starts after the one before it ended; these were started
    // ahead, while the attempt before them ran.
    const ends = lines.get(a.JobId)!.filter((l) => l.event === 'end').map((l) => l.end as number);
    expect(ends).toHaveLength(2);
    expect(envs[1].startedAt as number).toBeLessThan(ends[0]);
    expect(envs[2].startedAt as number).toBeLessThan(ends[1]);
  });

  it('exit 3 (refused) is final: FAILED after one attempt', async () => {
    const r = await runOne('3');
    expect(r.job.Status).toBe('FAILED');
    expect(r.job.Attempts.map((a) => a.Container.ExitCode)).toEqual([3]);
    expect(r.job.StatusReason).toBe('Essential container in task exited');
  });

  it('exit 1 matches no rule: retried until the three attempts are used', async () => {
    const r = await runOne('1');
    expect(r.job.Status).toBe('FAILED');
    expect(r.job.Attempts.map((a) => a.Container.ExitCode)).toEqual([1, 1, 1]);
  });

  it('an attempt past its timeout gets SIGTERM and is not retried', async () => {
    const d = defs.jobDefinitions[generateDef];
    const { batch } = batchWith({ [generateDef]: { ...d, attemptDurationSeconds: 1 } });
    const job = await batch.submitAndWait(submit('slow', '0', { FAKE_SLEEP_MS: '30000' }));
    expect(job.Status).toBe('FAILED');
    expect(job.StatusReason).toBe('Job attempt duration exceeded timeout');
    expect(job.Attempts.map((a) => a.Container.ExitCode)).toEqual([143]);
  });

  it('runs at most `concurrency` jobs at once; the rest wait', async () => {
    const { batch, lines } = batchWith(defs.jobDefinitions, 1);
    const jobs = await Promise.all(['a', 'b', 'c'].map((n) => batch.submitAndWait(submit(n, '0', { FAKE_SLEEP_MS: '200' }))));
    expect(jobs.map((j) => j.Status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
    // With one slot, each worker process starts after the previous one ended (no overlap).
    const spans = jobs.map((j) => {
      const l = lines.get(j.JobId)!;
      return [l.find((x) => x.event === 'env')!.start as number, l.find((x) => x.event === 'end')!.end as number];
    });
    spans.sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i][0]).toBeGreaterThanOrEqual(spans[i - 1][1]);
  });

  it('a retried attempt queues again: with one slot, no two attempts ever overlap (the slot is handed over, not raced for)', async () => {
    const { batch, lines } = batchWith(defs.jobDefinitions, 1);
    const jobs = await Promise.all([
      batch.submitAndWait(submit('r1', '1,0', { FAKE_SLEEP_MS: '100' })),
      batch.submitAndWait(submit('r2', '1,1,0', { FAKE_SLEEP_MS: '100' })),
      batch.submitAndWait(submit('r3', '0', { FAKE_SLEEP_MS: '100' })),
    ]);
    expect(jobs.map((j) => j.Attempts.length)).toEqual([2, 3, 1]);
    const spans: [number, number][] = [];
    for (const j of jobs) {
      let start = 0;
      for (const l of lines.get(j.JobId)!) {
        if (l.event === 'env') start = l.start as number;
        if (l.event === 'end') spans.push([start, l.end as number]);
      }
    }
    expect(spans).toHaveLength(6);
    spans.sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i][0]).toBeGreaterThanOrEqual(spans[i - 1][1]);
  });

  it('exit 78 (GpuUnavailable) is final: FAILED after one attempt, not run again on the CPU', async () => {
    const { job } = await runOne('78,0');
    expect(job.Status).toBe('FAILED');
    expect(job.Attempts.map((a) => a.Container.ExitCode)).toEqual([WORKER_EXIT.gpuUnavailable]);
  });

  it('the job definition demands CUDA; locally the worker gets auto (or what CIL_EXECUTION_PROVIDER says)', () => {
    expect(defs.jobDefinitions[generateDef].environment[WORKER_ENV.executionProvider]).toBe('cuda');
  });

  it('a queue without capacity cancels its jobs RUNNABLE as the Spot time-limit action does; other queues run', async () => {
    const { batch } = batchWith(defs.jobDefinitions);
    batch.withoutCapacity(['q']);
    const cancelled = await batch.submitAndWait(submit('no-capacity', '0'));
    expect(cancelled).toMatchObject({ Status: 'FAILED', StatusReason: CAPACITY_CANCELLED, Attempts: [] });
    const ran = await batch.submitAndWait({ ...submit('elsewhere', '0'), JobQueue: 'arn:aws:batch:us-east-1:000000000000:job-queue/od' });
    expect(ran.Status).toBe('SUCCEEDED');
  });

  it('drives the synthesized generation workflow: a job its Spot queue cancelled for capacity is resubmitted to the on-demand queue and runs', async () => {
    const G = GENERATION_STATES;
    // The default placement has the demo model (the one local mode runs), at its own resolution.
    const size = `SizeFor-dynamicrafter-${DEMO_DEFAULTS.height}x${DEMO_DEFAULTS.width}`;
    expect(defs.generation.States[size], size).toBeDefined();
    const queues = (defs.generation.States[size].Result as { queues: Record<string, string> }).queues;
    const { batch, lines } = batchWith(defs.jobDefinitions);
    batch.withoutCapacity([queues.interactive]);
    const submitted: { queue: string; status: string; reason?: string }[] = [];
    const jobs: BatchJobDescription[] = [];
    const submitSync = async (p: unknown): Promise<unknown> => {
      const params = p as SubmitJobParameters;
      const job = await batch.submitAndWait({ ...params, ContainerOverrides: { ...params.ContainerOverrides, Environment: [...(params.ContainerOverrides?.Environment ?? []), { Name: 'FAKE_EXITS', Value: '0' }] } });
      submitted.push({ queue: params.JobQueue, status: job.Status, reason: job.StatusReason });
      jobs.push(job);
      if (job.Status !== 'SUCCEEDED') throw new TaskFailed(JSON.stringify(job));
      return job;
    };
    const jobId = 'j-0123456789abcdef01234567';
    const spec = { jobId, bucket: 'data', workPrefix: `jobs/${jobId}/`, request: { family: 'dynamicrafter' }, resolution: { height: DEMO_DEFAULTS.height, width: DEMO_DEFAULTS.width } };
    const retryIntervalOverrides = Object.fromEntries(Object.keys(defs.generation.States).map((n) => [n, 0]));
    const exec = new StateMachine(defs.generation as never).run({ jobId, batch: null }, {
      overrides: {
        retryIntervalOverrides,
        taskResourceLocalHandlers: {
          [G.validate]: () => Promise.resolve(spec as never),
          [G.generate]: submitSync as never,
          [G.generateOnDemand]: submitSync as never,
          [G.postProcess]: () => Promise.resolve({ status: 'succeeded' } as never),
          [G.notifySuccess]: () => Promise.resolve({} as never),
        },
      },
      context: { Execution: { Id: `arn:aws:states:us-east-1:000000000000:execution:g:${jobId}`, Name: jobId } },
    });
    const out = (await exec.result) as { placement: Record<string, unknown> };
    expect(submitted).toEqual([
      { queue: queues.interactive, status: 'FAILED', reason: CAPACITY_CANCELLED },
      { queue: queues.onDemand, status: 'SUCCEEDED', reason: 'Essential container in task exited' },
    ]);
    expect(out.placement).toMatchObject({ tier: 'interactive', capacity: 'on-demand', queue: queues.onDemand, resubmitReason: CAPACITY_CANCELLED });
    // Each job is told its placement as the `placement` parameter: the Spot job none cancelled yet,
    // the on-demand one the cancelled job and why.
    const placements = jobs.map((j) => parsePlacementArg(j.Parameters.placement));
    expect(placements[0]).toMatchObject({ capacity: 'spot', queue: queues.interactive, spotCancellations: 0 });
    expect(placements[0]).not.toHaveProperty('resubmittedFrom');
    expect(placements[1]).toEqual({ ...out.placement, spotCancellations: 1, resubmittedFrom: jobs[0].JobId });
    // The worker that ran got it in its command line (Ref::placement), which `cil worker --placement` reads.
    const argv = lines.get(jobs[1].JobId)?.find((l) => l.event === 'env')?.argv as string[];
    expect(argv.slice(0, 2)).toEqual(['worker', '--placement']);
    expect(parsePlacementArg(argv[2])).toEqual(placements[1]);
    expect(placements[1]!.executionStartedAt).toBe(placements[0]!.executionStartedAt);
  });

  it('refuses an unknown job definition and array jobs as Batch client errors', async () => {
    const { batch } = batchWith(defs.jobDefinitions);
    await expect(batch.submitAndWait(submit('x', '0', {}, 'arn:aws:batch:us-east-1:000000000000:job-definition/Nope:1'))).rejects.toMatchObject({ name: 'Batch.ClientException' });
    await expect(batch.submitAndWait({ ...submit('y', '0'), ArrayProperties: { Size: 4 } })).rejects.toMatchObject({ name: 'Batch.ClientException' });
  });
});
