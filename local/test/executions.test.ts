/**
 * The Step Functions stand-in (local/src/executions.ts) on its own: named executions of a small
 * definition whose Task states have local handlers, the names AWS allows, a name used once (also
 * across a restart over the same folder), failures as Step Functions reports them, and the records
 * another process reads.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Asl } from '../src/definitions.ts';
import type { ExecutionRecord, TaskHandlers } from '../src/executions.ts';
import { ExecutionAlreadyExists, ExecutionWaitTimeout, InvalidExecutionName } from '../src/errors.ts';
import { EXECUTION_FORMAT, isValidExecutionName, LocalStepFunctions, readExecutionFile, retryingStates, taskStates } from '../src/executions.ts';

const root = mkdtempSync(join(tmpdir(), 'cil-local-executions-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const TASK = 'arn:aws:lambda:us-east-1:000000000000:function:local';
/** Double, then fail if asked to (a Retry on Flaky.Error, a Catch of nothing). */
const DEFINITION: Asl = {
  StartAt: 'Double',
  States: {
    Double: { Type: 'Task', Resource: TASK, Retry: [{ ErrorEquals: ['Flaky.Error'], MaxAttempts: 2, IntervalSeconds: 1 }], End: true },
  },
};
const ARNS = { generation: 'arn:aws:states:us-east-1:000000000000:stateMachine:Gen', batch: 'arn:aws:states:us-east-1:000000000000:stateMachine:Batch' };

class Refused extends Error {
  override readonly name = 'Refused';
}

function machines(dir: string, handlers: TaskHandlers): LocalStepFunctions {
  return new LocalStepFunctions({
    dir,
    workflows: { generation: { stateMachineArn: ARNS.generation, definition: DEFINITION }, batch: { stateMachineArn: ARNS.batch, definition: DEFINITION } },
    handlersFor: () => handlers,
    retryIntervalMs: 1,
  });
}

describe('names', () => {
  it('execution names follow AWS: 1–80 characters, no whitespace or special characters', () => {
    expect(isValidExecutionName('j-0123456789abcdef01234567')).toBe(true);
    for (const bad of ['', 'a b', 'a/b', 'a:b', 'x'.repeat(81), 'tab\t', 'q?']) expect(isValidExecutionName(bad), JSON.stringify(bad)).toBe(false);
  });

  it('finds Task states in nested maps', () => {
    const def = { StartAt: 'A', States: { A: { Type: 'Task', Next: 'M' }, M: { Type: 'Map', End: true, ItemProcessor: { StartAt: 'B', States: { B: { Type: 'Task', End: true } } } } } };
    expect(taskStates(def)).toEqual(['A', 'B']);
  });
});

describe('executions', () => {
  it('runs a named execution to its end; the record holds states, output and the ARN, on disk too', async () => {
    const dir = join(root, 'run');
    const sfn = machines(dir, { Double: (i) => Promise.resolve({ n: (i as { n: number }).n * 2 }) });
    const started = sfn.start('generation', 'j-1', { n: 21 });
    expect(started).toMatchObject({ format: EXECUTION_FORMAT, status: 'RUNNING', executionArn: 'arn:aws:states:us-east-1:000000000000:execution:Gen:j-1' });
    const r = await sfn.wait('generation', 'j-1');
    expect(r).toMatchObject({ status: 'SUCCEEDED', output: { n: 42 }, error: null });
    expect(r.states.map((s) => s.name)).toEqual(['Double']);
    expect(r.states[0].exitedAt).toBeDefined();
    expect(readExecutionFile(dir, 'generation', 'j-1')).toEqual(r);
    expect(sfn.workflowOf(ARNS.batch)).toBe('batch');
    expect(sfn.workflowOf('arn:other')).toBeNull();
    expect(sfn.list('generation').map((x) => x.name)).toEqual(['j-1']);
    await sfn.stop();
  });

  it('a name is used once per state machine: ExecutionAlreadyExists, also after a restart; a bad name is InvalidName', async () => {
    const dir = join(root, 'names');
    const sfn = machines(dir, { Double: () => Promise.resolve(1) });
    sfn.start('generation', 'j-2', {});
    expect(() => sfn.start('generation', 'j-2', {})).toThrow(ExecutionAlreadyExists);
    expect(() => sfn.start('generation', 'a b', {})).toThrow(InvalidExecutionName);
    sfn.start('batch', 'j-2', {});
    await sfn.wait('generation', 'j-2');
    await sfn.wait('batch', 'j-2');
    await sfn.stop();
    const again = machines(dir, { Double: () => Promise.resolve(1) });
    expect(() => again.start('generation', 'j-2', {})).toThrow(ExecutionAlreadyExists);
    await again.stop();
  });

  it('a failing handler fails the execution with its error name and message; a retried error is retried', async () => {
    const dir = join(root, 'fail');
    let calls = 0;
    const sfn = machines(dir, {
      Double: (i) => {
        calls++;
        if ((i as { mode: string }).mode === 'refuse') return Promise.reject(new Refused('no thanks'));
        if (calls === 1) return Promise.reject(Object.assign(new Error('try again'), { name: 'Flaky.Error' }));
        return Promise.resolve('ok');
      },
    });
    sfn.start('generation', 'flaky', { mode: 'flaky' });
    expect(await sfn.wait('generation', 'flaky')).toMatchObject({ status: 'SUCCEEDED', output: 'ok' });
    expect(calls).toBe(2);
    sfn.start('generation', 'refused', { mode: 'refuse' });
    expect(await sfn.wait('generation', 'refused')).toMatchObject({ status: 'FAILED', error: 'Refused', cause: 'no thanks' });
    await sfn.stop();
  });

  it('a record left RUNNING by a process that is gone comes back ABORTED; waiting has a deadline', async () => {
    const dir = join(root, 'aborted');
    const sfn = machines(dir, { Double: () => new Promise(() => undefined) });
    sfn.start('generation', 'hangs', {});
    await expect(sfn.wait('generation', 'hangs', 50)).rejects.toThrow(ExecutionWaitTimeout);
    // As if the process died: the file still says RUNNING.
    const rec = readExecutionFile(dir, 'generation', 'hangs') as ExecutionRecord;
    expect(rec.status).toBe('RUNNING');
    await sfn.stop();
    writeFileSync(join(dir, 'generation', 'hangs.json'), JSON.stringify(rec));
    const next = machines(dir, { Double: () => Promise.resolve(1) });
    expect(next.get('generation', 'hangs')).toMatchObject({ status: 'ABORTED', error: 'States.Aborted' });
    expect(readExecutionFile(dir, 'generation', 'hangs')?.status).toBe('ABORTED');
    await next.stop();
  });

  it('lists the states with a Retry, nested ones included', () => {
    expect(retryingStates(DEFINITION)).toEqual(['Double']);
  });
});
