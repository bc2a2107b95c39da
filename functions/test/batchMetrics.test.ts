/** The metrics of functions/src/batchMetrics: GPU-minutes, RUNNABLE waits, Embedded Metric Format records. */
import { describe, expect, it } from 'vitest';
import { emfRecord, gpuCount, jobMetrics, runMinutes, runnableMetrics } from '../src/batchMetrics/core.ts';

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

  it('writes Embedded Metric Format records', () => {
    const rec = JSON.parse(emfRecord('CIL/Pipeline', [{ name: 'GpuMinutes', value: 3, unit: 'None' }], 42, { jobId: 'x' })) as Record<string, unknown>;
    expect(rec).toEqual({
      _aws: { Timestamp: 42, CloudWatchMetrics: [{ Namespace: 'CIL/Pipeline', Dimensions: [[]], Metrics: [{ Name: 'GpuMinutes', Unit: 'None' }] }] },
      jobId: 'x',
      GpuMinutes: 3,
    });
  });
});
