/**
 * Lambda, stood in by in-process calls of the real handlers: JSON in and out as the runtime
 * passes it, a thrown error reported as Step Functions sees a function error, injected task
 * faults checked before the handler runs, and the functions' Powertools log lines sent to a file.
 */
import { Console } from 'node:console';
import { createWriteStream } from 'node:fs';
import { logger as functionsLogger } from '../../functions/src/logger.ts';
import { LambdaFunctionError } from './errors.ts';
import type { TaskHandlers } from './executions.ts';
import type { TaskFaults } from './faults.ts';

/** Invokes a handler the way the Lambda runtime does: JSON in, JSON out, errors as type + message. */
export function lambdaTask(fn: (input: unknown) => Promise<unknown>): (input: unknown) => Promise<unknown> {
  return async (input) => {
    const event = JSON.parse(JSON.stringify(input ?? null)) as unknown;
    let out: unknown;
    try {
      out = await fn(event);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      throw new LambdaFunctionError(err.name, err.message, (err.stack ?? '').split('\n').slice(1, 6).map((l) => l.trim()));
    }
    return out === undefined ? null : (JSON.parse(JSON.stringify(out)) as unknown);
  };
}

/** Each handler first lets the injected task faults fail it (as the service would, before the code runs). */
export function withTaskFaults(handlers: TaskHandlers, faults: TaskFaults): TaskHandlers {
  return Object.fromEntries(
    Object.entries(handlers).map(([state, h]) => [
      state,
      async (input: unknown) => {
        faults.check(state);
        return h(input);
      },
    ]),
  );
}

/**
 * The functions' Powertools logger writes JSON lines to stdout (CloudWatch Logs in AWS); with a
 * file given they go there instead, so the CLI's own output stays readable. Returns the undo.
 */
export function redirectLambdaLogs(file: string | null): () => Promise<void> {
  if (file === null) return () => Promise.resolve();
  const holder = functionsLogger as unknown as { console: Console };
  const previous = holder.console;
  let stream: ReturnType<typeof createWriteStream> | null = createWriteStream(file, { flags: 'a' });
  holder.console = new Console({ stdout: stream, stderr: stream });
  return async () => {
    if (stream === null) return;
    holder.console = previous;
    const s = stream;
    stream = null;
    await new Promise<void>((r) => s.end(r));
  };
}
