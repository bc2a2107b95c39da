/**
 * Following a local execution until it ends, from its record (in this process, or the JSON file
 * another process writes), told to an ExecutionObserver as the remote CLI tells it.
 */
import type { ExecutionObserver } from '../../cli/remote/client.ts';
import { GENERATION_STATES } from '../../infra/lib/names.ts';
import type { ExecutionRecord } from './executions.ts';

export type { ExecutionObserver };

export class FollowTimeout extends Error {
  override readonly name = 'FollowTimeout';
}

export interface FollowOptions {
  readonly observer?: ExecutionObserver;
  readonly intervalMs?: number;
  /** Give up after this long (the execution goes on). */
  readonly timeoutMs?: number;
  /** Only states entered from this index on are reported (0: all). */
  readonly fromState?: number;
}

/** Polls `get` (null while the execution does not exist yet) until the execution has ended. */
export async function followExecution(what: string, get: () => ExecutionRecord | null | undefined, o: FollowOptions = {}): Promise<ExecutionRecord> {
  const interval = o.intervalMs ?? 100;
  const deadline = Date.now() + (o.timeoutMs ?? 30 * 60_000);
  let seenStates = o.fromState ?? 0;
  let lastProgress = '';
  const lastBatch = new Map<string, string>();
  let generateSeen = false;
  for (;;) {
    const r = get();
    if (r) {
      const reportStates = (): void => {
        for (; seenStates < r.states.length; seenStates++) {
          const s = r.states[seenStates];
          // Nested states (a manifest's map iterations) are the child executions' business.
          if (s.index !== undefined) continue;
          o.observer?.state(s.name, Date.parse(s.enteredAt));
          if (s.name === GENERATION_STATES.generate) generateSeen = true;
        }
      };
      const reportBatch = (): void => {
        for (const b of r.batchJobs) {
          const key = `${b.status}/${b.attempts}`;
          if (lastBatch.get(b.jobId) === key) continue;
          lastBatch.set(b.jobId, key);
          const detail = b.status === 'FAILED' || b.attempts > 1 ? `(attempt ${b.attempts}${b.exitCode !== undefined ? `, exit code ${b.exitCode}` : ''})` : '';
          if (b.status !== 'SUBMITTED' && b.status !== 'STARTING') o.observer?.batch(b.status, detail);
        }
      };
      // The Batch job's news belongs after "Generate" and before the states that follow it.
      if (generateSeen) {
        reportBatch();
        reportStates();
      } else {
        reportStates();
        reportBatch();
      }
      const p = r.progress === null ? '' : JSON.stringify(r.progress);
      if (p !== lastProgress && r.progress !== null) o.observer?.progress(r.progress);
      lastProgress = p;
      if (r.status !== 'RUNNING') {
        o.observer?.end(r.stopDate ? Date.parse(r.stopDate) : Date.now());
        return r;
      }
    }
    if (Date.now() > deadline) throw new FollowTimeout(`${what} did not end within ${Math.round((o.timeoutMs ?? 0) / 1000)} s (status: ${r?.status ?? 'not started'}); it goes on running`);
    await new Promise((res) => setTimeout(res, interval));
  }
}
