/** Following a local execution record (local/src/follow.ts), as `cil local run` reports a job. */
import { describe, expect, it } from 'vitest';
import type { ExecutionRecord } from '../src/executions.ts';
import { followExecution } from '../src/follow.ts';

describe('following an execution record', () => {
  it('reports top-level states, the Batch job and progress in order, then the end', async () => {
    const base: ExecutionRecord = {
      format: 'cil-local-execution/1', workflow: 'generation', name: 'j', executionArn: 'e', stateMachineArn: 's', status: 'RUNNING', startDate: '2025-01-01T00:00:00Z',
      stopDate: null, input: null, output: null, error: null, cause: null, states: [], batchJobs: [], progress: null, mapRun: null,
    };
    const frames: ExecutionRecord[] = [
      { ...base, states: [{ name: 'Validate', enteredAt: '2025-01-01T00:00:00Z' }] },
      { ...base, states: [{ name: 'Validate', enteredAt: '2025-01-01T00:00:00Z' }, { name: 'Generate', enteredAt: '2025-01-01T00:00:01Z' }], batchJobs: [{ jobId: 'b', status: 'RUNNING', attempts: 0 }], progress: { phase: 'denoise', step: 3, total: 25 } },
      { ...base, states: [{ name: 'Validate', enteredAt: '2025-01-01T00:00:00Z' }, { name: 'Generate', enteredAt: '2025-01-01T00:00:01Z' }, { name: 'PostProcess', enteredAt: '2025-01-01T00:00:03Z' }, { name: 'X', index: 0, enteredAt: '2025-01-01T00:00:03Z' }], batchJobs: [{ jobId: 'b', status: 'SUCCEEDED', attempts: 1, exitCode: 0 }], progress: { phase: 'write' } },
      { ...base, status: 'SUCCEEDED', stopDate: '2025-01-01T00:00:04Z', states: [] },
    ];
    let i = 0;
    const seen: string[] = [];
    const r = await followExecution('j', () => (i === 0 ? (i++, null) : frames[Math.min(i++ - 1, frames.length - 1)]), {
      intervalMs: 1,
      observer: { state: (n) => seen.push(n), batch: (s) => seen.push(`batch ${s}`), progress: (p) => seen.push(`${p.phase}${p.step ?? ''}`), end: (at) => seen.push(`end ${at}`) },
    });
    expect(r.status).toBe('SUCCEEDED');
    expect(seen).toEqual(['Validate', 'Generate', 'batch RUNNING', 'denoise3', 'batch SUCCEEDED', 'PostProcess', 'write', `end ${Date.parse('2025-01-01T00:00:04Z')}`]);
  });
});
