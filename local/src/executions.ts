/**
 * Step Functions, stood in by aws-local-stepfunctions: named executions of the synthesized
 * definitions, each run by the local ASL interpreter with a local handler per Task state.
 * What AWS guarantees and the pipeline relies on is kept: an execution name is used once per
 * state machine (a second start is ExecutionAlreadyExists, also across restarts: records are
 * kept as JSON files in the data folder), and the execution's status, output, error and cause,
 * the states entered, the Batch jobs and the worker's progress can be read while it runs — by
 * this process or, through the files, by another (`cil local run` while `cil local up` runs).
 */
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StateMachine } from 'aws-local-stepfunctions';
import type { Asl } from './definitions.ts';
import { executionArnOf } from '../../infra/lib/names.ts';
import { LOCAL_ACCOUNT } from './definitions.ts';
import { ExecutionAlreadyExists, ExecutionWaitTimeout, InvalidExecutionName } from './errors.ts';

export type LocalWorkflow = 'generation' | 'batch';
export type ExecutionStatus = 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED';

export const EXECUTION_FORMAT = 'cil-local-execution/1';

export interface StateEntry {
  readonly name: string;
  /** Map iteration index for states inside a map. */
  readonly index?: number;
  readonly enteredAt: string;
  exitedAt?: string;
  error?: string;
}

export interface BatchJobSummary {
  readonly jobId: string;
  status: string;
  attempts: number;
  exitCode?: number;
  statusReason?: string;
  logStreamName?: string;
}

export interface WorkerProgress {
  readonly phase: string;
  readonly step?: number;
  readonly total?: number;
  readonly elapsedS?: number;
}

export interface MapRunCounts {
  total: number;
  succeeded: number;
  failed: number;
  running: number;
}

export interface ExecutionRecord {
  readonly format: typeof EXECUTION_FORMAT;
  readonly workflow: LocalWorkflow;
  readonly name: string;
  readonly executionArn: string;
  readonly stateMachineArn: string;
  status: ExecutionStatus;
  readonly startDate: string;
  stopDate: string | null;
  readonly input: unknown;
  output: unknown;
  error: string | null;
  cause: string | null;
  readonly states: StateEntry[];
  readonly batchJobs: BatchJobSummary[];
  progress: WorkerProgress | null;
  mapRun: MapRunCounts | null;
}

/** What a Task state's local handler receives from the runner besides its input. */
export interface ExecutionHandle {
  readonly record: ExecutionRecord;
  /** Changes the record and saves it (progress updates are written at most every 250 ms). */
  update(change: (r: ExecutionRecord) => void, kind?: 'state' | 'progress'): void;
}

export type TaskHandlers = Record<string, (input: unknown) => Promise<unknown>>;

export interface WorkflowSpec {
  readonly stateMachineArn: string;
  readonly definition: Asl;
}

export interface LocalStepFunctionsOptions {
  readonly dir: string;
  readonly workflows: Readonly<Record<LocalWorkflow, WorkflowSpec>>;
  readonly handlersFor: (workflow: LocalWorkflow, handle: ExecutionHandle) => TaskHandlers;
  /** Turns the execution input into what the interpreter runs (local stand-ins for ItemReader); a throw fails the execution. */
  readonly prepareInput?: (workflow: LocalWorkflow, input: unknown, handle: ExecutionHandle) => Promise<unknown>;
  readonly onChange?: (record: ExecutionRecord, what: 'started' | 'state' | 'progress' | 'finished', state?: StateEntry) => void;
  /**
   * Replaces every Retry's wait (IntervalSeconds × BackoffRate^n, jittered) by this many
   * milliseconds; which errors are retried and how often stays as the definition says. For tests
   * of the retry paths, which would otherwise wait tens of seconds. Default: the definition's waits.
   */
  readonly retryIntervalMs?: number;
}

/** AWS's rule for execution names: 1–80 characters, none of whitespace, < > { } [ ] ? * " # % \ ^ | ~ ` $ & , ; : / or controls. */
export function isValidExecutionName(name: string): boolean {
  // eslint-disable-next-line no-control-regex
  return name.length >= 1 && name.length <= 80 && !/[\s<>{}[\]?*"#%\\^|~`$&,;:/\u0000-\u001f\u007f-\u009f]/.test(name);
}


function isTerminal(s: ExecutionStatus): boolean {
  return s !== 'RUNNING';
}

/** Every Task state of a definition, nested ones included. */
export function taskStates(def: Asl): string[] {
  const out: string[] = [];
  for (const [name, st] of Object.entries(def.States)) {
    if (st.Type === 'Task') out.push(name);
    const inner = (st.ItemProcessor ?? st.Iterator) as Asl | undefined;
    if (inner) out.push(...taskStates(inner));
    for (const b of (st.Branches ?? []) as Asl[]) out.push(...taskStates(b));
  }
  return out;
}

/** Every state with a Retry field, nested ones included (the keys of the interpreter's retry-interval overrides). */
export function retryingStates(def: Asl): string[] {
  const out: string[] = [];
  for (const [name, st] of Object.entries(def.States)) {
    if (Array.isArray((st as { Retry?: unknown }).Retry)) out.push(name);
    const inner = (st.ItemProcessor ?? st.Iterator) as Asl | undefined;
    if (inner) out.push(...retryingStates(inner));
    for (const b of (st.Branches ?? []) as Asl[]) out.push(...retryingStates(b));
  }
  return out;
}

export function readExecutionFile(dir: string, workflow: LocalWorkflow, name: string): ExecutionRecord | null {
  const f = join(dir, workflow, `${name}.json`);
  if (!existsSync(f)) return null;
  try {
    return JSON.parse(readFileSync(f, 'utf8')) as ExecutionRecord;
  } catch {
    return null;
  }
}

export class LocalStepFunctions {
  readonly #o: LocalStepFunctionsOptions;
  readonly #records = new Map<string, ExecutionRecord>();
  readonly #machines = new Map<LocalWorkflow, StateMachine>();
  readonly #aborts = new Map<string, () => void>();
  readonly #done = new Map<string, Promise<void>>();
  readonly #events = new EventEmitter();
  readonly #pendingSave = new Map<string, NodeJS.Timeout>();
  #stopping = false;

  constructor(o: LocalStepFunctionsOptions) {
    this.#o = o;
    this.#events.setMaxListeners(0);
    for (const w of ['generation', 'batch'] as const) {
      // Validates the definition (as the tests do) before anything runs.
      this.#machines.set(w, new StateMachine(o.workflows[w].definition as never));
      const d = join(o.dir, w);
      mkdirSync(d, { recursive: true });
      for (const f of readdirSync(d)) {
        if (!f.endsWith('.json')) continue;
        const r = readExecutionFile(o.dir, w, f.slice(0, -5));
        if (!r || r.format !== EXECUTION_FORMAT) continue;
        if (r.status === 'RUNNING') {
          // The process that ran it is gone.
          r.status = 'ABORTED';
          r.stopDate = new Date().toISOString();
          r.error = 'States.Aborted';
          r.cause = 'the local pipeline stopped while the execution ran';
          this.#write(r);
        }
        this.#records.set(this.#key(w, r.name), r);
      }
    }
  }

  #key(w: LocalWorkflow, name: string): string {
    return `${w}/${name}`;
  }

  workflowOf(stateMachineArn: string): LocalWorkflow | null {
    for (const w of ['generation', 'batch'] as const) if (this.#o.workflows[w].stateMachineArn === stateMachineArn) return w;
    return null;
  }

  get(workflow: LocalWorkflow, name: string): ExecutionRecord | undefined {
    const r = this.#records.get(this.#key(workflow, name));
    return r === undefined ? undefined : (JSON.parse(JSON.stringify(r)) as ExecutionRecord);
  }

  list(workflow: LocalWorkflow): ExecutionRecord[] {
    return [...this.#records.values()].filter((r) => r.workflow === workflow).map((r) => JSON.parse(JSON.stringify(r)) as ExecutionRecord);
  }

  runningCount(): number {
    return [...this.#records.values()].filter((r) => r.status === 'RUNNING').length;
  }

  /** StartExecution: ExecutionAlreadyExists when the name was used before on this state machine. */
  start(workflow: LocalWorkflow, name: string, input: unknown): ExecutionRecord {
    if (this.#stopping) throw new ExecutionAlreadyExists(`the local pipeline is stopping; execution ${name} was not started`);
    if (!isValidExecutionName(name)) throw new InvalidExecutionName(`execution name '${name}' is not 1–80 characters without whitespace or special characters`);
    const key = this.#key(workflow, name);
    if (this.#records.has(key)) throw new ExecutionAlreadyExists(`Execution Already Exists: '${executionArnOf(this.#o.workflows[workflow].stateMachineArn, name)}'`);
    const smArn = this.#o.workflows[workflow].stateMachineArn;
    const record: ExecutionRecord = {
      format: EXECUTION_FORMAT,
      workflow,
      name,
      executionArn: executionArnOf(smArn, name),
      stateMachineArn: smArn,
      status: 'RUNNING',
      startDate: new Date().toISOString(),
      stopDate: null,
      input,
      output: null,
      error: null,
      cause: null,
      states: [],
      batchJobs: [],
      progress: null,
      mapRun: null,
    };
    this.#records.set(key, record);
    this.#write(record);
    this.#o.onChange?.(record, 'started');
    this.#done.set(key, this.#run(record));
    return JSON.parse(JSON.stringify(record)) as ExecutionRecord;
  }

  /** Resolves when the execution exists and has ended. */
  async wait(workflow: LocalWorkflow, name: string, timeoutMs = 30 * 60_000): Promise<ExecutionRecord> {
    const key = this.#key(workflow, name);
    const ended = (): ExecutionRecord | null => {
      const r = this.#records.get(key);
      return r && isTerminal(r.status) ? (JSON.parse(JSON.stringify(r)) as ExecutionRecord) : null;
    };
    const now = ended();
    if (now) return now;
    return new Promise((resolve, reject) => {
      const onChange = (k: string): void => {
        if (k !== key) return;
        const r = ended();
        if (r) {
          cleanup();
          resolve(r);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new ExecutionWaitTimeout(`${workflow} execution '${name}' did not end within ${Math.round(timeoutMs / 1000)} s (status: ${this.#records.get(key)?.status ?? 'not started'})`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.#events.off('change', onChange);
      };
      this.#events.on('change', onChange);
    });
  }

  /** Aborts every running execution and waits for them to end. */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const abort of this.#aborts.values()) abort();
    await Promise.allSettled([...this.#done.values()]);
    for (const [key, t] of this.#pendingSave) {
      clearTimeout(t);
      const r = this.#records.get(key);
      if (r) this.#write(r);
    }
    this.#pendingSave.clear();
  }

  #write(r: ExecutionRecord): void {
    const d = join(this.#o.dir, r.workflow);
    mkdirSync(d, { recursive: true });
    const f = join(d, `${r.name}.json`);
    // Renamed into place so that a reader in another process never sees half a file.
    const tmp = `${f}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(r, null, 2));
    renameSync(tmp, f);
  }

  #save(r: ExecutionRecord, kind: 'state' | 'progress'): void {
    const key = this.#key(r.workflow, r.name);
    if (kind === 'progress') {
      if (this.#pendingSave.has(key)) return;
      this.#pendingSave.set(
        key,
        setTimeout(() => {
          this.#pendingSave.delete(key);
          this.#write(r);
        }, 250),
      );
      return;
    }
    const pending = this.#pendingSave.get(key);
    if (pending) {
      clearTimeout(pending);
      this.#pendingSave.delete(key);
    }
    this.#write(r);
  }

  async #run(record: ExecutionRecord): Promise<void> {
    const key = this.#key(record.workflow, record.name);
    const handle: ExecutionHandle = {
      record,
      update: (change, kind = 'state') => {
        change(record);
        this.#save(record, kind);
        this.#o.onChange?.(record, kind === 'progress' ? 'progress' : 'state');
        this.#events.emit('change', key);
      },
    };
    const finish = (status: ExecutionStatus, output: unknown, error: string | null, cause: string | null): void => {
      record.status = status;
      record.output = output;
      record.error = error;
      record.cause = cause;
      record.stopDate = new Date().toISOString();
      if (record.mapRun) record.mapRun.running = 0;
      this.#save(record, 'state');
      this.#o.onChange?.(record, 'finished');
      this.#events.emit('change', key);
    };
    let input: unknown;
    try {
      input = this.#o.prepareInput ? await this.#o.prepareInput(record.workflow, record.input, handle) : record.input;
    } catch (e) {
      finish('FAILED', null, (e as Error).name, (e as Error).message);
      return;
    }
    if (this.#stopping) {
      finish('ABORTED', null, 'States.Aborted', 'the local pipeline stopped');
      return;
    }
    const machine = this.#machines.get(record.workflow)!;
    const handlers = this.#o.handlersFor(record.workflow, handle);
    const ms = this.#o.retryIntervalMs;
    const retryIntervalOverrides = ms === undefined ? undefined : Object.fromEntries(retryingStates(this.#o.workflows[record.workflow].definition).map((n) => [n, ms]));
    const exec = machine.run(input as never, {
      overrides: { taskResourceLocalHandlers: handlers as never, retryIntervalOverrides },
      context: {
        Execution: { Id: record.executionArn, Name: record.name, StartTime: record.startDate, Input: input as never, RoleArn: `arn:aws:iam::${LOCAL_ACCOUNT}:role/local` },
        StateMachine: { Id: record.stateMachineArn, Name: record.stateMachineArn.split(':').at(-1) },
      },
    });
    this.#aborts.set(key, exec.abort);
    const follow = (async (): Promise<void> => {
      for await (const e of exec.eventLogs) {
        if (e.type === 'StateEntered') {
          const entry: StateEntry = { name: e.state.name, index: e.index, enteredAt: new Date(e.timestamp).toISOString() };
          handle.update((r) => r.states.push(entry));
          this.#o.onChange?.(record, 'state', entry);
        } else if (e.type === 'StateExited' || e.type === 'StateFailed') {
          const entry = [...record.states].reverse().find((s) => s.name === e.state.name && s.index === e.index && s.exitedAt === undefined);
          if (entry) handle.update(() => {
            entry.exitedAt = new Date(e.timestamp).toISOString();
            if (e.type === 'StateFailed') entry.error = e.Error;
          });
        } else if (e.type === 'MapIterationStarted' || e.type === 'MapIterationSucceeded' || e.type === 'MapIterationFailed') {
          handle.update((r) => {
            r.mapRun ??= { total: 0, succeeded: 0, failed: 0, running: 0 };
            if (e.type === 'MapIterationStarted') r.mapRun.running++;
            else {
              r.mapRun.running--;
              if (e.type === 'MapIterationSucceeded') r.mapRun.succeeded++;
              else r.mapRun.failed++;
            }
          });
        }
      }
    })();
    try {
      const output = await exec.result;
      await follow.catch(() => undefined);
      finish('SUCCEEDED', output, null, null);
    } catch (e) {
      await follow.catch(() => undefined);
      const err = e as Error & { cause?: Error };
      if (err.name === 'ExecutionAbortedError') finish('ABORTED', null, 'States.Aborted', 'the execution was stopped');
      else if (err.name === 'ExecutionTimeoutError') finish('TIMED_OUT', null, 'States.Timeout', 'the execution ran past its TimeoutSeconds');
      else {
        const c = err.cause ?? err;
        finish('FAILED', null, c.name, c.message);
      }
    } finally {
      this.#aborts.delete(key);
    }
  }
}

