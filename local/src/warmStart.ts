/**
 * Worker processes started ahead of their jobs, for the local Batch stand-in. A job's process
 * spends its first ~0.3–0.5 s starting Node and loading the worker's modules before it does any
 * work; on AWS that is part of a container's start, but locally it was a third of the pipeline's
 * overhead on the demo job. So one spare `cil --await-job <verb>` per verb waits with its modules
 * loaded; a job takes it, hands it the job's argv and environment on stdin (cli/prestart.ts), and
 * the next spare starts. The process then is the job's, as a cold one would be: same signals,
 * same stdout/stderr, same exit code. Only the `cil` entrypoint is started ahead.
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';

export interface WarmStartOptions {
  /** `node bin/cil.js` (the image's entrypoint). */
  readonly entrypoint: readonly string[];
  readonly cwd: string;
  /**
   * What a spare starts with: what Node reads only at its own start (PATH, HOME,
   * NODE_COMPILE_CACHE) must already be the job's, since the hand-off replaces the rest.
   */
  readonly env: Readonly<Record<string, string>>;
}

/** The argument that makes `cil` wait for its job (cli/prestart.ts AWAIT_JOB_FLAG). */
const AWAIT_JOB = '--await-job';

export class WarmStarts {
  readonly #o: WarmStartOptions;
  readonly #spares = new Map<string, ChildProcessWithoutNullStreams>();
  #stopped = false;

  constructor(o: WarmStartOptions) {
    this.#o = o;
  }

  #start(verb: string): void {
    if (this.#stopped) return;
    const child = spawn(this.#o.entrypoint[0], [...this.#o.entrypoint.slice(1), AWAIT_JOB, verb], { cwd: this.#o.cwd, env: { ...this.#o.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    // A spare that fails to start or dies unused is dropped; the next job then starts cold.
    child.once('error', () => this.#drop(verb, child));
    child.once('exit', () => this.#drop(verb, child));
    // A spare that died just before its hand-off: the write fails (EPIPE) and the attempt ends
    // with the process's exit code, as any failed start does.
    child.stdin.on('error', () => undefined);
    // An unused spare has nothing to say; what it says before its hand-off would be a bug, kept
    // (the pipes buffer it) for the job's log.
    this.#spares.set(verb, child);
  }

  #drop(verb: string, child: ChildProcessWithoutNullStreams): void {
    if (this.#spares.get(verb) === child) this.#spares.delete(verb);
  }

  /** Starts the spare for `verb` now, when there is none (the first job then finds it). */
  prime(verb: string): void {
    if (!this.#spares.has(verb)) this.#start(verb);
  }

  /**
   * A running process for `command` (a `cil` verb and its arguments) with environment `env`: the
   * waiting spare, handed its job, or null (none yet: the caller starts one cold). Either way a
   * spare for the same verb starts for the next job.
   */
  take(command: readonly string[], env: Readonly<Record<string, string>>): ChildProcessWithoutNullStreams | null {
    const verb = command[0];
    if (verb === undefined || verb.startsWith('-') || this.#stopped) return null;
    const spare = this.#spares.get(verb);
    this.#spares.delete(verb);
    this.#start(verb);
    if (spare === undefined || spare.exitCode !== null || spare.signalCode !== null) return null;
    spare.stdin.end(`${JSON.stringify({ argv: command, env })}\n`);
    return spare;
  }

  /**
   * Ends every waiting spare (closing its stdin ends it with exit 0; SIGKILL after `graceMs`) and
   * starts no more. Resolves with how each ended.
   */
  async stop(graceMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null }[]> {
    this.#stopped = true;
    const spares = [...this.#spares.values()];
    this.#spares.clear();
    return Promise.all(
      spares.map(
        (child) =>
          new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve({ code: child.exitCode, signal: child.signalCode });
            const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
            child.once('exit', (code, signal) => {
              clearTimeout(kill);
              resolve({ code, signal });
            });
            child.stdin.end();
          }),
      ),
    );
  }
}
