/** The Lambda stand-in (local/src/lambda.ts): handlers invoked as the runtime invokes them, task faults first. */
import { describe, expect, it } from 'vitest';
import { LambdaFunctionError } from '../src/errors.ts';
import { TaskFaults } from '../src/faults.ts';
import { lambdaTask, withTaskFaults } from '../src/lambda.ts';

class InvalidThing extends Error {
  override readonly name = 'InvalidThing';
}

describe('lambdaTask', () => {
  it('passes JSON in and out: no shared objects, undefined becomes null', async () => {
    const input = { a: 1, when: new Date(0) };
    let seen: unknown;
    const task = lambdaTask((e) => {
      seen = e;
      return Promise.resolve(undefined);
    });
    expect(await task(input)).toBeNull();
    expect(seen).toEqual({ a: 1, when: '1970-01-01T00:00:00.000Z' });
    expect(seen).not.toBe(input);
    expect(await lambdaTask(() => Promise.resolve({ d: new Date(0) }))(null)).toEqual({ d: '1970-01-01T00:00:00.000Z' });
  });

  it('a thrown error reaches Step Functions named by its type, with the runtime\'s JSON as the cause', async () => {
    const e = (await lambdaTask(() => Promise.reject(new InvalidThing('bad input')))({}).catch((x: unknown) => x)) as Error;
    expect(e).toBeInstanceOf(LambdaFunctionError);
    expect(e.name).toBe('InvalidThing');
    const cause = JSON.parse(e.message) as { errorType: string; errorMessage: string; trace: string[] };
    expect(cause.errorType).toBe('InvalidThing');
    expect(cause.errorMessage).toBe('bad input');
    expect(cause.trace.length).toBeGreaterThan(0);
  });
});

describe('withTaskFaults', () => {
  it('fails a state before its handler runs, as often as the fault asks', async () => {
    const faults = new TaskFaults();
    faults.add('PostProcess', { error: 'Lambda.ServiceException' });
    let runs = 0;
    const handlers = withTaskFaults({ PostProcess: () => Promise.resolve(++runs) }, faults);
    await expect(handlers.PostProcess({})).rejects.toMatchObject({ name: 'Lambda.ServiceException' });
    expect(runs).toBe(0);
    expect(await handlers.PostProcess({})).toBe(1);
  });
});
