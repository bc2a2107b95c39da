/** The metrics of functions/src/batchMetrics: GPU-minutes and spend, user vs system failures, RUNNABLE waits, the Powertools EMF records. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { executionMetrics, gpuCount, jobMetrics, parseWatchedQueues, runMinutes, runnableMetrics } from '../src/batchMetrics/core.ts';
import { handler } from '../src/batchMetrics/handler.ts';

describe('batchMetrics', () => {
  const job = {
    jobId: 'id',
    status: 'SUCCEEDED',
    container: { resourceRequirements: [{ type: 'VCPU', value: '4' }, { type: 'GPU', value: '1' }] },
    // Two attempts: 10 min cut short by a Spot reclaim, then 25 min.
    attempts: [
      { startedAt: 0, stoppedAt: 600_000 },
      { startedAt: 900_000, stoppedAt: 900_000 + 1_500_000 },
    ],
  };

  it('counts GPU-minutes over every attempt', () => {
    expect(gpuCount(job)).toBe(1);
    expect(runMinutes(job)).toBe(35);
    expect(jobMetrics(job)).toEqual([
      { name: 'BatchJobsSucceeded', value: 1, unit: 'Count' },
      { name: 'GpuMinutes', value: 35, unit: 'None' },
    ]);
    const twoGpus = { ...job, status: 'FAILED', container: { resourceRequirements: [{ type: 'GPU', value: '2' }] } };
    expect(jobMetrics(twoGpus)).toEqual([
      { name: 'BatchJobsFailed', value: 1, unit: 'Count' },
      { name: 'GpuMinutes', value: 70, unit: 'None' },
    ]);
  });

  it('counts CPU-only jobs and array parents without GPU-minutes, and ignores other states', () => {
    expect(jobMetrics({ status: 'SUCCEEDED', arrayProperties: { size: 4 } })).toEqual([{ name: 'BatchJobsSucceeded', value: 1, unit: 'Count' }]);
    expect(jobMetrics({ ...job, status: 'RUNNING' })).toEqual([]);
  });

  it('measures the oldest RUNNABLE wait (0 when none waits)', () => {
    expect(runnableMetrics([], 1_000_000)).toEqual([
      { name: 'RunnableJobs', value: 0, unit: 'Count' },
      { name: 'OldestRunnableSeconds', value: 0, unit: 'Seconds' },
    ]);
    expect(runnableMetrics([400_000, 100_000, 700_000], 1_000_000)[1]?.value).toBe(900);
  });

  const QUEUES = [{ arn: 'arn:aws:batch:us-east-1:1:job-queue/gpu48-interactive', fleet: 'gpu48', tier: 'interactive', hourlyUsd: 2.4 }];

  it('estimates the spend of a job from its run hours and its fleet price', () => {
    const m = jobMetrics({ ...job, jobQueue: QUEUES[0].arn }, QUEUES);
    expect(m.find((x) => x.name === 'EstimatedGpuSpendUsd')?.value).toBeCloseTo((35 / 60) * 2.4, 10);
    // A queue it does not know: no spend (the metric would be wrong).
    expect(jobMetrics({ ...job, jobQueue: 'other' }, QUEUES).map((x) => x.name)).toEqual(['BatchJobsSucceeded', 'GpuMinutes']);
  });

  it('splits failed executions into user-caused (InvalidImage, InvalidRequest, …) and system failures', () => {
    expect(executionMetrics({ status: 'FAILED', error: 'InvalidImage' })).toEqual([{ name: 'UserFailures', value: 1, unit: 'Count' }]);
    expect(executionMetrics({ status: 'FAILED', error: 'InvalidRequest' })).toEqual([{ name: 'UserFailures', value: 1, unit: 'Count' }]);
    for (const error of ['States.TaskFailed', 'EncodeFailed', 'CIL.NoFleetForModel', null]) expect(executionMetrics({ status: 'FAILED', error }), String(error)).toEqual([{ name: 'SystemFailures', value: 1, unit: 'Count' }]);
    // A time-out or an abort is never the user's doing, whatever the error says.
    expect(executionMetrics({ status: 'TIMED_OUT', error: 'InvalidImage' })).toEqual([{ name: 'SystemFailures', value: 1, unit: 'Count' }]);
    expect(executionMetrics({ status: 'ABORTED' })).toEqual([{ name: 'SystemFailures', value: 1, unit: 'Count' }]);
    expect(executionMetrics({ status: 'SUCCEEDED' })).toEqual([]);
  });

  it('refuses a malformed queue list', () => {
    expect(parseWatchedQueues(JSON.stringify(QUEUES))).toEqual(QUEUES);
    expect(() => parseWatchedQueues('nope')).toThrow(/not JSON/);
    expect(() => parseWatchedQueues('[{"arn": "a"}]')).toThrow(/CIL_JOB_QUEUES\[0\] must be \{arn, fleet, tier, hourlyUsd\}/);
  });
});

describe('batchMetrics handler (Powertools Metrics)', () => {
  afterEach(() => {
    vi.restoreAllMocks();
    delete process.env.CIL_JOB_QUEUES;
  });

  function emfLines(run: () => Promise<void>): Promise<Record<string, unknown>[]> {
    const lines: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    return run().then(() => lines.flatMap((l) => l.split('\n')).filter((l) => l.includes('"_aws"')).map((l) => JSON.parse(l) as Record<string, unknown>));
  }

  it('writes one EMF record per finished job, in the CIL/Pipeline namespace with the service dimension', async () => {
    process.env.CIL_JOB_QUEUES = JSON.stringify([{ arn: 'q1', fleet: 'gpu24', tier: 'interactive', hourlyUsd: 1 }]);
    const event = { 'detail-type': 'Batch Job State Change', detail: { jobId: 'b-1', jobName: 'j', jobQueue: 'q1', status: 'SUCCEEDED', container: { resourceRequirements: [{ type: 'GPU', value: '1' }] }, attempts: [{ startedAt: 0, stoppedAt: 3_600_000 }] } };
    const [rec, ...rest] = await emfLines(() => handler(event as never));
    expect(rest).toEqual([]);
    const aws = rec._aws as { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[] };
    expect(aws.CloudWatchMetrics[0].Namespace).toBe('CIL/Pipeline');
    expect(aws.CloudWatchMetrics[0].Dimensions).toEqual([['service']]);
    expect(aws.CloudWatchMetrics[0].Metrics.map((m) => m.Name).sort()).toEqual(['BatchJobsSucceeded', 'EstimatedGpuSpendUsd', 'GpuMinutes']);
    expect(rec).toMatchObject({ service: 'cil-pipeline', GpuMinutes: 60, EstimatedGpuSpendUsd: 1, jobId: 'b-1' });
  });

  it('counts a failed execution as a system or a user failure', async () => {
    const [sys] = await emfLines(() => handler({ 'detail-type': 'Step Functions Execution Status Change', detail: { status: 'FAILED', error: 'States.TaskFailed', executionArn: 'e' } } as never));
    expect(sys).toMatchObject({ SystemFailures: 1 });
    const [user] = await emfLines(() => handler({ 'detail-type': 'Step Functions Execution Status Change', detail: { status: 'FAILED', error: 'InvalidImage', executionArn: 'e' } } as never));
    expect(user).toMatchObject({ UserFailures: 1 });
  });
});
