/**
 * `cil --await-job <verb>`: a process started ahead of its job, for the local pipeline's Batch
 * stand-in (local/src/warmStart.ts). It loads the verb's modules (Node's start and module loading
 * are most of a worker process's first half second), then reads one JSON line on stdin —
 * `{"argv": [...], "env": {...}}` — takes that environment as its whole environment, and runs
 * `cil argv` as a process started with them would. Not for use by hand: a job's process on AWS is
 * a container's, and pays its own start.
 */
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { UsageError } from './errors.ts';

export const AWAIT_JOB_FLAG = '--await-job';

export const Handoff = z.strictObject({
  argv: z.array(z.string()).min(1),
  env: z.record(z.string(), z.string()),
});
export type Handoff = z.infer<typeof Handoff>;

/** The first line on `input`, or null when it ends first. */
function firstLine(input: NodeJS.ReadableStream): Promise<string | null> {
  return new Promise((resolve) => {
    const lines = createInterface({ input });
    let got = false;
    lines.once('line', (l) => {
      got = true;
      lines.close();
      resolve(l);
    });
    lines.once('close', () => {
      if (!got) resolve(null);
    });
  });
}

/**
 * Loads `verb` (through `load`), waits for the hand-off on `input`, then runs it with `run`.
 * Exits 0 without running anything when stdin closes first (the pipeline stopped, the spare unused).
 */
export async function runPrestarted(
  verb: string | undefined,
  load: (argv: readonly string[]) => Promise<unknown>,
  run: (argv: string[]) => Promise<number>,
  input: NodeJS.ReadableStream = process.stdin,
): Promise<number> {
  if (verb === undefined || verb.startsWith('-')) throw new UsageError(`${AWAIT_JOB_FLAG} needs the verb to load (e.g. ${AWAIT_JOB_FLAG} worker)`);
  await load([verb]);
  const line = await firstLine(input);
  if (line === null) return 0;
  let handoff: Handoff;
  try {
    handoff = Handoff.parse(JSON.parse(line));
  } catch (e) {
    throw new UsageError(`${AWAIT_JOB_FLAG}: the hand-off on stdin must be one JSON line {"argv": [verb, …], "env": {NAME: value}}: ${(e as Error).message}`);
  }
  if (handoff.argv[0] !== verb) throw new UsageError(`${AWAIT_JOB_FLAG} ${verb}: the hand-off runs '${handoff.argv[0]}', not the verb this process loaded`);
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, handoff.env);
  return run(handoff.argv);
}
