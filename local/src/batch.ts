/**
 * AWS Batch, stood in by child processes: a SubmitJob runs the job definition's command after the
 * worker image's entrypoint (`node bin/cil.js worker`, the same file), with the job definition's
 * environment, the container overrides (CIL_JOB_SPEC_URI) and the S3 endpoint of the local server.
 * Batch's behaviour that the pipeline relies on is kept: the retry strategy of the job definition
 * (attempts, EvaluateOnExit rules in order, no match = retry while attempts remain), the attempt
 * timeout (SIGTERM, then SIGKILL; a timed-out attempt is not retried), a bounded number of jobs
 * running at once (the others wait RUNNABLE), and a `.sync` result shaped like DescribeJobs.
 * A queue can be marked as having no capacity (`withoutCapacity`): its jobs are then cancelled
 * as a Spot queue's time-limit action cancels them in AWS, which the generation workflow answers
 * by resubmitting on-demand. Not kept: GPUs, vCPU/memory reservations, queues' compute
 * environments, queue priorities, array jobs.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import type { EvaluateOnExit, LocalJobDefinition } from './definitions.ts';
import { LOCAL_ACCOUNT, LOCAL_REGION } from './definitions.ts';
import { REPO_ROOT } from './paths.ts';
import { WarmStarts } from './warmStart.ts';

export interface SubmitJobParameters {
  readonly JobName: string;
  readonly JobQueue: string;
  readonly JobDefinition: string;
  readonly ContainerOverrides?: {
    readonly Environment?: readonly { readonly Name: string; readonly Value: string }[];
    readonly Command?: readonly string[];
    readonly ResourceRequirements?: readonly { readonly Type: string; readonly Value: string }[];
  };
  readonly Parameters?: Readonly<Record<string, string>>;
  readonly ArrayProperties?: { readonly Size?: number };
}

export type BatchJobStatus = 'SUBMITTED' | 'RUNNABLE' | 'STARTING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED';

export interface BatchAttempt {
  readonly Container: { readonly ExitCode?: number; readonly LogStreamName: string; readonly Reason?: string };
  readonly StartedAt: number;
  readonly StoppedAt: number;
  readonly StatusReason: string;
}

/** A job as DescribeJobs (and so `submitJob.sync`) reports it, in Step Functions' PascalCase. */
export interface BatchJobDescription {
  readonly JobArn: string;
  readonly JobId: string;
  readonly JobName: string;
  readonly JobQueue: string;
  readonly JobDefinition: string;
  Status: BatchJobStatus;
  StatusReason?: string;
  readonly CreatedAt: number;
  StartedAt?: number;
  StoppedAt?: number;
  readonly Attempts: BatchAttempt[];
  readonly Container: { readonly Command: string[]; ExitCode?: number; LogStreamName?: string; Reason?: string };
  readonly Parameters: Readonly<Record<string, string>>;
  readonly RetryStrategy: { readonly Attempts: number; readonly EvaluateOnExit: readonly EvaluateOnExit[] };
  readonly Timeout: { readonly AttemptDurationSeconds: number } | null;
}

/** One JSON line the worker printed (its progress and outcome events, docs/worker.md). */
export type WorkerLine = Record<string, unknown> & { readonly event?: string };

export interface LocalBatchOptions {
  readonly jobDefinitions: Readonly<Record<string, LocalJobDefinition>>;
  /** Jobs running at once; the rest wait RUNNABLE. */
  readonly concurrency: number;
  /** Folder of the attempt logs (`<dataDir>/logs/batch`); log stream names are relative to `logRoot`. */
  readonly logDir: string;
  readonly logRoot: string;
  /** Parent of each job's scratch folder (the container's /scratch, TMPDIR). */
  readonly scratchDir: string;
  /** Stands for the image's `node bin/cil.js`. */
  readonly entrypoint: readonly string[];
  /** Environment every container gets on top of the job definition's (S3 endpoint, credentials, Region). */
  readonly baseEnv: Readonly<Record<string, string>>;
  /** Local values of job-definition variables; null drops the variable. TMPDIR is always the job's scratch. */
  readonly envSubstitutes: Readonly<Record<string, string | null>>;
  /**
   * `cil` verbs to keep one process started ahead for (local/src/warmStart.ts), from the start;
   * other verbs get one after their first job. Absent: every process starts cold (an entrypoint
   * other than `cil`'s, say).
   */
  readonly warmVerbs?: readonly string[];
  /** Time between SIGTERM and SIGKILL when an attempt times out or the pipeline stops (ECS's stop timeout). */
  readonly killGraceMs?: number;
  readonly onWorkerLine?: (job: BatchJobDescription, line: WorkerLine) => void;
  readonly onJobState?: (job: BatchJobDescription) => void;
}

export class BatchJobError extends Error {
  override readonly name = 'BatchJobError';
}

/** Batch's pattern matching in EvaluateOnExit: exact, or a prefix when the pattern ends in `*`. */
export function globMatch(pattern: string | undefined, value: string | null | undefined): boolean {
  if (pattern === undefined) return true;
  if (value === null || value === undefined) return false;
  return pattern.endsWith('*') ? value.startsWith(pattern.slice(0, -1)) : value === pattern;
}

/**
 * What Batch does after a failed attempt: the first EvaluateOnExit rule whose patterns all match
 * decides; no rule matching means RETRY. A RETRY with no attempts left ends the job.
 */
export function retryDecision(rules: readonly EvaluateOnExit[], exitCode: number | undefined, reason: string | undefined, statusReason: string): 'RETRY' | 'EXIT' {
  for (const r of rules) {
    if (globMatch(r.onExitCode, exitCode === undefined ? undefined : String(exitCode)) && globMatch(r.onReason, reason) && globMatch(r.onStatusReason, statusReason)) return r.action;
  }
  return 'RETRY';
}

/** AWS Batch's limit on a SubmitJob's container overrides (their JSON). */
export const MAX_CONTAINER_OVERRIDES_CHARS = 8192;

const CONTAINER_EXITED = 'Essential container in task exited';
/** Batch's status reason of a job its queue's time-limit action cancelled for want of capacity. */
export const CAPACITY_CANCELLED = 'Canceled by JobStateTimeLimit action due to reason: CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY';
const TIMED_OUT = 'Job attempt duration exceeded timeout';
const STOPPED = 'Terminated: the local pipeline stopped';

interface Running {
  readonly job: BatchJobDescription;
  readonly kill: (signal: NodeJS.Signals) => void;
}

/** A container starts with the image's environment only; PATH and HOME stand in for it. */
function containerEnv(home?: string): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? home ?? REPO_ROOT };
}

export class LocalBatch {
  readonly #o: LocalBatchOptions;
  readonly #jobs = new Map<string, BatchJobDescription>();
  readonly #queue: (() => void)[] = [];
  readonly #running = new Set<Running>();
  #active = 0;
  #stopping = false;
  readonly #noCapacity = new Set<string>();
  readonly #warm: WarmStarts | null;

  constructor(o: LocalBatchOptions) {
    if (!Number.isInteger(o.concurrency) || o.concurrency < 1) throw new BatchJobError(`worker concurrency must be an integer ≥ 1, got ${o.concurrency}`);
    this.#o = o;
    this.#warm = o.warmVerbs === undefined ? null : new WarmStarts({ entrypoint: o.entrypoint, cwd: REPO_ROOT, env: { ...containerEnv(), ...o.baseEnv } });
    for (const verb of o.warmVerbs ?? []) this.#warm?.prime(verb);
  }

  /**
   * Queues (ARNs, or the tail after `job-queue/`) whose jobs find no capacity: each is cancelled
   * RUNNABLE with CAPACITY_CANCELLED, without an attempt. Empty the list to give capacity back.
   */
  withoutCapacity(queues: readonly string[]): void {
    this.#noCapacity.clear();
    for (const q of queues) this.#noCapacity.add(q);
  }

  #hasCapacity(queueArn: string): boolean {
    const name = queueArn.replace(/^.*job-queue\//, '');
    return !this.#noCapacity.has(queueArn) && !this.#noCapacity.has(name);
  }

  describe(jobId: string): BatchJobDescription | undefined {
    const j = this.#jobs.get(jobId);
    return j === undefined ? undefined : (JSON.parse(JSON.stringify(j)) as BatchJobDescription);
  }

  /** SubmitJob, then wait for the end (what `submitJob.sync` does). Resolves with the final description, SUCCEEDED or FAILED. */
  async submitAndWait(p: SubmitJobParameters): Promise<BatchJobDescription> {
    const def = this.#o.jobDefinitions[p.JobDefinition];
    if (!def) throw Object.assign(new BatchJobError(`SubmitJob: no job definition ${p.JobDefinition}`), { name: 'Batch.ClientException' });
    if (p.ArrayProperties?.Size !== undefined) throw Object.assign(new BatchJobError('SubmitJob: array jobs are not supported by the local pipeline'), { name: 'Batch.ClientException' });
    // Batch refuses container overrides over 8,192 characters: why the job spec travels by reference.
    const overridesLength = JSON.stringify(p.ContainerOverrides ?? {}).length;
    if (overridesLength > MAX_CONTAINER_OVERRIDES_CHARS) {
      throw Object.assign(new BatchJobError(`SubmitJob: Container Overrides length must be at most ${MAX_CONTAINER_OVERRIDES_CHARS} (got ${overridesLength})`), { name: 'Batch.ClientException' });
    }
    const jobId = randomUUID();
    const params: Record<string, string> = { ...def.parameters, ...p.Parameters };
    const command = [...(p.ContainerOverrides?.Command ?? def.command)].map((a) => (a.startsWith('Ref::') && params[a.slice(5)] !== undefined ? params[a.slice(5)] : a));
    const job: BatchJobDescription = {
      JobArn: `arn:aws:batch:${LOCAL_REGION}:${LOCAL_ACCOUNT}:job/${jobId}`,
      JobId: jobId,
      JobName: p.JobName,
      JobQueue: p.JobQueue,
      JobDefinition: p.JobDefinition,
      Status: 'SUBMITTED',
      CreatedAt: Date.now(),
      Attempts: [],
      Container: { Command: command },
      Parameters: params,
      RetryStrategy: { Attempts: def.retryStrategy.attempts, EvaluateOnExit: def.retryStrategy.evaluateOnExit },
      Timeout: def.attemptDurationSeconds === null ? null : { AttemptDurationSeconds: def.attemptDurationSeconds },
    };
    this.#jobs.set(jobId, job);
    this.#emit(job);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(def.environment)) env[k] = v;
    for (const k of def.tokenEnvironment) delete env[k];
    for (const [k, v] of Object.entries(this.#o.envSubstitutes)) {
      if (v === null) delete env[k];
      else if (k in def.environment || def.tokenEnvironment.includes(k)) env[k] = v;
    }
    for (const e of p.ContainerOverrides?.Environment ?? []) env[e.Name] = e.Value;

    this.#set(job, 'RUNNABLE');
    if (!this.#hasCapacity(p.JobQueue)) return this.#finish(job, 'FAILED', CAPACITY_CANCELLED);
    for (let attempt = 1; ; attempt++) {
      await this.#acquire();
      try {
        if (this.#stopping) return this.#finish(job, 'FAILED', STOPPED);
        const a = await this.#runAttempt(job, command, env, attempt);
        job.Attempts.push(a);
        job.Container.ExitCode = a.Container.ExitCode;
        job.Container.LogStreamName = a.Container.LogStreamName;
        if (a.Container.ExitCode === 0 && a.StatusReason === CONTAINER_EXITED) return this.#finish(job, 'SUCCEEDED', CONTAINER_EXITED);
        const last = attempt >= def.retryStrategy.attempts;
        // A timed-out attempt is not retried, nor is one the shutdown stopped.
        const final = a.StatusReason !== CONTAINER_EXITED || last || retryDecision(def.retryStrategy.evaluateOnExit, a.Container.ExitCode, a.Container.Reason, a.StatusReason) === 'EXIT';
        if (final || this.#stopping) return this.#finish(job, 'FAILED', this.#stopping ? STOPPED : a.StatusReason);
        // Back in the queue before the slot is given up: a job never looks RUNNING while another holds its slot.
        this.#set(job, 'RUNNABLE');
      } finally {
        this.#release();
      }
    }
  }

  /**
   * Signals the running attempt of a job (by job id or name): SIGTERM is what ECS sends when a
   * Spot instance is reclaimed or a task is stopped (SIGKILL follows after the grace time), SIGKILL
   * what a lost host or the kernel's OOM killer amounts to. The attempt then ends as its process
   * does, and the retry strategy decides. False when the job has no running attempt.
   */
  interrupt(job: string, signal: 'SIGTERM' | 'SIGKILL'): boolean {
    for (const r of this.#running) {
      if (r.job.JobId === job || r.job.JobName === job) {
        r.kill(signal);
        return true;
      }
    }
    return false;
  }

  /** Stops every running attempt (SIGTERM, then SIGKILL) and refuses new ones. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const spares = this.#warm?.stop();
    for (const r of this.#running) r.kill('SIGTERM');
    const waiting = this.#queue.splice(0);
    // Let the waiting jobs through to end themselves (each then releases a slot it holds).
    this.#active += waiting.length;
    for (const next of waiting) next();
    const deadline = Date.now() + (this.#o.killGraceMs ?? 30_000) + 1000;
    while (this.#running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await spares;
  }

  #emit(job: BatchJobDescription): void {
    this.#o.onJobState?.(job);
  }

  #set(job: BatchJobDescription, s: BatchJobStatus): void {
    job.Status = s;
    this.#emit(job);
  }

  #finish(job: BatchJobDescription, s: 'SUCCEEDED' | 'FAILED', reason: string): BatchJobDescription {
    job.StatusReason = reason;
    job.StoppedAt = Date.now();
    this.#set(job, s);
    return JSON.parse(JSON.stringify(job)) as BatchJobDescription;
  }

  async #acquire(): Promise<void> {
    if (this.#active < this.#o.concurrency || this.#stopping) {
      this.#active++;
      return;
    }
    // The slot is handed over by #release, already counted: nothing can take it in between.
    await new Promise<void>((resolve) => this.#queue.push(resolve));
  }

  #release(): void {
    const next = this.#queue.shift();
    if (next) next();
    else this.#active--;
  }

  async #runAttempt(job: BatchJobDescription, command: readonly string[], jobEnv: Readonly<Record<string, string>>, attempt: number): Promise<BatchAttempt> {
    const o = this.#o;
    const logDir = join(o.logDir, job.JobId);
    mkdirSync(logDir, { recursive: true });
    const logFile = join(logDir, `attempt-${attempt}.log`);
    const logStream = relative(o.logRoot, logFile);
    const scratch = join(o.scratchDir, `${job.JobId}-${attempt}`);
    mkdirSync(scratch, { recursive: true });
    const env: Record<string, string> = {
      ...containerEnv(scratch),
      ...(process.env.CIL_EXECUTION_PROVIDER ? { CIL_EXECUTION_PROVIDER: process.env.CIL_EXECUTION_PROVIDER } : {}),
      ...jobEnv,
      ...o.baseEnv,
      TMPDIR: scratch,
      AWS_BATCH_JOB_ID: job.JobId,
      AWS_BATCH_JOB_ATTEMPT: String(attempt),
      AWS_BATCH_JQ_NAME: job.JobQueue.replace(/^.*job-queue\//, ''),
    };
    const started = Date.now();
    if (attempt === 1) job.StartedAt = started;
    this.#set(job, 'STARTING');
    const log = createWriteStream(logFile);
    // A process started ahead (warmStart.ts), else a new one; stdin is closed either way.
    let child = this.#warm?.take(command, env) ?? null;
    if (child === null) {
      child = spawn(o.entrypoint[0], [...o.entrypoint.slice(1), ...command], { cwd: REPO_ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
      child.stdin.end();
    }
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const kill = (signal: NodeJS.Signals): void => {
      child.kill(signal);
      if (signal === 'SIGTERM') {
        killTimer ??= setTimeout(() => child.kill('SIGKILL'), o.killGraceMs ?? 30_000);
      }
    };
    const running: Running = { job, kill };
    this.#running.add(running);
    const timeout =
      job.Timeout === null
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            kill('SIGTERM');
          }, job.Timeout.AttemptDurationSeconds * 1000);
    this.#set(job, 'RUNNING');
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      log.write(`${line}\n`);
      if (!line.startsWith('{')) return;
      try {
        o.onWorkerLine?.(job, JSON.parse(line) as WorkerLine);
      } catch {
        // Not a JSON line: kept in the log only.
      }
    });
    child.stderr.on('data', (d: Buffer) => log.write(d));
    const { code, signal, spawnError } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError: Error | null }>((resolve) => {
      child.once('error', (e) => resolve({ code: null, signal: null, spawnError: e }));
      child.once('close', (c, s) => resolve({ code: c, signal: s, spawnError: null }));
    });
    clearTimeout(timeout);
    clearTimeout(killTimer);
    this.#running.delete(running);
    await new Promise<void>((r) => log.end(r));
    rmSync(scratch, { recursive: true, force: true });
    const stopped = Date.now();
    if (spawnError) {
      return { Container: { LogStreamName: logStream, Reason: `CannotStartContainerError: ${spawnError.message}` }, StartedAt: started, StoppedAt: stopped, StatusReason: 'Task failed to start' };
    }
    // Killed by a signal: the exit code Docker reports (128 + signal number).
    const exitCode = code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
    return { Container: { ExitCode: exitCode, LogStreamName: logStream }, StartedAt: started, StoppedAt: stopped, StatusReason: timedOut ? TIMED_OUT : CONTAINER_EXITED };
  }
}
