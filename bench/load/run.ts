/**
 * Load on the local pipeline (issue 8, "Load"): N distinct uploads started at once against a
 * pipeline whose Batch stand-in runs a bounded number of workers, every job followed to its end
 * and accounted for — succeeded with its `outputs/<job>/result.json`, failed with the reason of
 * its failure record, or unfinished at the deadline — with latency percentiles, throughput and
 * the peak number of workers that ran at once. Used by `cil local load`, `npm run bench` and
 * test/load.test.ts. Everything stays on 127.0.0.1, bounded in count (at most 1000 jobs) and in
 * time (one overall deadline).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { formatIssues, toSchemaIssues } from '#shared/schemas';
import { jobKeys } from '#shared/schemas';
import { headObject, readObject } from '../../functions/src/s3.ts';
import type { ExecutionRecord } from '../../local/src/executions.ts';
import type { LocalPipeline, PipelineEvent } from '../../local/src/pipeline.ts';
import { defaultWorkerConcurrency, startLocalPipeline } from '../../local/src/pipeline.ts';
import { testCardPng } from '../../local/src/testCard.ts';
import type { LoadJobResult, LoadReport } from './report.ts';
import { report } from './report.ts';

export type { LoadFailure, LoadJobResult, LoadJobStatus, LoadReport } from './report.ts';
export { formatLoadReport, percentile, PercentileError, report } from './report.ts';

export const MAX_LOAD_JOBS = 1000;
export const DEFAULT_LOAD_JOBS = 20;
/** Where the uploads go: `inputs/load/<run>/job-<i>.png` (a new run folder each time, so a kept data folder never sees a duplicate). */
export const LOAD_PREFIX = 'inputs/load/';
/** A failure record is a few kB; anything this large is not one. */
const MAX_RECORD_BYTES = 1024 * 1024;

/** Default overall deadline: generous for a CPU-only machine (the demo job takes about 3 s of two cores). */
export function defaultLoadTimeoutS(jobs: number): number {
  return 120 + 15 * jobs;
}

export class LoadOptionsError extends Error {
  override readonly name = 'LoadOptionsError';
}

/** The Batch job states in which a job holds a worker slot (set while the slot is held). */
const HOLDS_WORKER = new Set(['STARTING', 'RUNNING']);

/**
 * Peak number of Batch jobs holding a worker at once, from the pipeline's 'batch-job' events
 * (each job's status as it changes). Counts every Batch job of the pipeline, not only this run's:
 * the bound is the pipeline's.
 */
export class WorkerPeak {
  readonly #status = new Map<string, string>();
  #now = 0;
  #peak = 0;

  observe(e: PipelineEvent): void {
    if (e.type !== 'batch-job') return;
    const before = HOLDS_WORKER.has(this.#status.get(e.job.JobId) ?? '');
    const after = HOLDS_WORKER.has(e.job.Status);
    this.#status.set(e.job.JobId, e.job.Status);
    this.#now += Number(after) - Number(before);
    this.#peak = Math.max(this.#peak, this.#now);
  }

  get peak(): number {
    return this.#peak;
  }

  get current(): number {
    return this.#now;
  }
}

/** Fans one pipeline's `onEvent` out to listeners: pass `onEvent` to startLocalPipeline and `subscribe` to runLoad. */
export interface PipelineEventHub {
  readonly onEvent: (e: PipelineEvent) => void;
  readonly subscribe: (listener: (e: PipelineEvent) => void) => () => void;
}

export function pipelineEventHub(): PipelineEventHub {
  const listeners = new Set<(e: PipelineEvent) => void>();
  return {
    onEvent: (e) => {
      for (const l of listeners) l(e);
    },
    subscribe: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
}

/** A pipeline started by the caller, with its events (for the worker peak). */
export interface LoadTarget {
  readonly pipeline: LocalPipeline;
  readonly subscribe: PipelineEventHub['subscribe'];
  /** The pipeline's worker concurrency, for the report (runLoad cannot read it back). */
  readonly workers: number;
}

const LoadSettings = z
  .strictObject({
    jobs: z.int().min(1).max(MAX_LOAD_JOBS).default(DEFAULT_LOAD_JOBS),
    /** Worker processes at once, for a pipeline runLoad starts. */
    workers: z.int().min(1).max(64).optional(),
    /** How many of the uploads are deliberately invalid images (they must fail at Validate). */
    invalid: z.int().min(0).default(0),
    /** Sampling steps of each request (default: the model's). */
    steps: z.int().min(1).max(1000).optional(),
    /** Overall deadline in seconds (default defaultLoadTimeoutS(jobs)). */
    timeoutS: z.number().positive().max(86_400).optional(),
    /** Data folder of a pipeline runLoad starts (default: a temporary one, removed afterwards). */
    dataDir: z.string().min(1).optional(),
    /** Definitions cache of a pipeline runLoad starts (see LocalPipelineOptions). */
    definitionsCacheDir: z.string().min(1).nullable().optional(),
    /** SIGTERM → SIGKILL grace of a pipeline runLoad starts (short: a run that hit its deadline should not wait 30 s to stop). */
    workerKillGraceMs: z.int().min(0).max(60_000).default(5000),
    /**
     * Faults during the load (a soak under trouble): every S3 request of the pipeline and its
     * workers fails with 503 SlowDown with probability `s3ErrorRate`, and the first attempt of a
     * `killFraction` share of the valid jobs is SIGKILLed mid-denoise. The retry policies must
     * absorb all of it: `ok` still needs every valid job to succeed.
     */
    chaos: z
      .strictObject({
        s3ErrorRate: z.number().min(0).max(0.5).default(0),
        killFraction: z.number().min(0).max(1).default(0),
        seed: z.int().min(0).max(2 ** 32 - 1).default(1),
      })
      .optional(),
  })
  .superRefine((o, ctx) => {
    if (o.invalid > o.jobs) ctx.addIssue({ code: 'custom', path: ['invalid'], message: `must not exceed jobs (${o.jobs})`, input: o.invalid });
  });

export type LoadSettingsInput = z.input<typeof LoadSettings>;

export interface LoadOptions extends LoadSettingsInput {
  /** Run against this pipeline instead of starting one (then `workers`, `dataDir`, `definitionsCacheDir` and `workerKillGraceMs` must be left out). */
  readonly target?: LoadTarget;
  /** Called as each job is accounted for. */
  readonly onJob?: (j: LoadJobResult) => void;
  /** Called before a synthesis of the definitions, for a pipeline runLoad starts (a cache miss takes several seconds). */
  readonly onSynth?: () => void;
}

/** Which of `jobs` uploads are the invalid ones: `invalid` indices spread evenly. */
export function invalidIndices(jobs: number, invalid: number): Set<number> {
  const out = new Set<number>();
  for (let k = 0; k < invalid; k++) out.add(Math.min(jobs - 1, Math.floor(((k + 0.5) * jobs) / invalid)));
  return out;
}

/** A PNG signature followed by garbage: refused by content at Validate (InvalidImage), not by name. */
export function invalidPng(i: number): Buffer {
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from(`load test upload ${i}: not the rest of a PNG file`)]);
}

function parseSettings(o: LoadOptions): z.output<typeof LoadSettings> {
  const { target, onJob: _onJob, onSynth: _onSynth, ...plain } = o;
  const r = LoadSettings.safeParse(plain, { reportInput: true });
  if (!r.success) throw new LoadOptionsError(formatIssues('load', 'invalid options', toSchemaIssues(r.error.issues, Object.keys(LoadSettings.shape))));
  if (target !== undefined) {
    const own = (['workers', 'dataDir', 'definitionsCacheDir', 'workerKillGraceMs'] as const).filter((k) => plain[k] !== undefined);
    if (own.length > 0) throw new LoadOptionsError(`load: ${own.join(', ')} configure a pipeline runLoad starts; with a target pipeline leave them out`);
    if (plain.chaos !== undefined && target.pipeline.faults === null) throw new LoadOptionsError('load: chaos needs a target pipeline started with faultInjection: true');
  }
  return r.data;
}

async function getJson(p: LocalPipeline, key: string): Promise<Record<string, unknown> | null> {
  const r = await readObject(p.s3, { bucket: p.bucket, key }, MAX_RECORD_BYTES);
  if (r.kind === 'missing') return null;
  if (r.kind !== 'ok') throw new Error(`${key}: over ${MAX_RECORD_BYTES} bytes`);
  return JSON.parse(r.bytes.toString('utf8')) as Record<string, unknown>;
}

async function exists(p: LocalPipeline, key: string): Promise<boolean> {
  return (await headObject(p.s3, { bucket: p.bucket, key })) !== null;
}

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/** What an ended execution amounts to: succeeded with result.json, or failed with its failure record's step, error and reason. */
async function account(p: LocalPipeline, rec: ExecutionRecord, jobId: string): Promise<Pick<LoadJobResult, 'status' | 'failedStep' | 'error' | 'reason'>> {
  const keys = jobKeys(jobId);
  if (rec.status === 'SUCCEEDED') {
    const result = `${keys.output}result.json`;
    if (await exists(p, result)) return { status: 'SUCCEEDED', failedStep: null, error: null, reason: null };
    return { status: 'NO_RESULT', failedStep: null, error: null, reason: `the execution succeeded but ${result} does not exist` };
  }
  // waitForJob returns ended executions only; RUNNING cannot occur here.
  const status = rec.status === 'RUNNING' ? 'FAILED' : rec.status;
  const f = await getJson(p, keys.failure);
  if (f === null) {
    return { status, failedStep: null, error: rec.error, reason: `no failure record ${keys.failure}; execution ${rec.status}: ${rec.error ?? ''} ${(rec.cause ?? '').slice(0, 300)}`.trim() };
  }
  return { status, failedStep: str(f.failedStep), error: str(f.error) ?? rec.error, reason: str(f.reason) ?? `failure record ${keys.failure} has no reason` };
}

/**
 * Runs the load: starts a pipeline (unless given one), uploads every job at once, waits for each
 * until the deadline, accounts for each, stops the pipeline it started.
 */
export async function runLoad(o: LoadOptions = {}): Promise<LoadReport> {
  const s = parseSettings(o);
  const timeoutS = s.timeoutS ?? defaultLoadTimeoutS(s.jobs);
  const peak = new WorkerPeak();
  let pipeline: LocalPipeline;
  let workers: number;
  let subscribe: PipelineEventHub['subscribe'];
  let cleanup: () => Promise<void>;
  const hub = pipelineEventHub();
  if (o.target) {
    pipeline = o.target.pipeline;
    workers = o.target.workers;
    subscribe = o.target.subscribe;
    cleanup = () => Promise.resolve();
  } else {
    const dataDir = s.dataDir ?? mkdtempSync(join(tmpdir(), 'cil-load-'));
    workers = s.workers ?? defaultWorkerConcurrency();
    subscribe = hub.subscribe;
    try {
      pipeline = await startLocalPipeline({
        dataDir,
        workerConcurrency: workers,
        definitionsCacheDir: s.definitionsCacheDir,
        workerKillGraceMs: s.workerKillGraceMs,
        faultInjection: s.chaos !== undefined,
        faultSeed: s.chaos?.seed,
        onEvent: (e) => hub.onEvent(e),
        onSynth: o.onSynth,
      });
    } catch (e) {
      if (s.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
      throw e;
    }
    const p = pipeline;
    cleanup = async () => {
      await p.stop();
      if (s.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
    };
  }
  const unsubscribe = subscribe((e) => peak.observe(e));
  try {
    return await drive(pipeline, s, timeoutS, workers, peak, subscribe, o.onJob);
  } finally {
    unsubscribe();
    await cleanup();
  }
}

/** Which of the valid jobs get their first worker attempt killed: `round(fraction × valid)` of them, spread evenly. */
export function killIndices(jobs: number, invalid: ReadonlySet<number>, fraction: number): Set<number> {
  const valid = Array.from({ length: jobs }, (_, i) => i).filter((i) => !invalid.has(i));
  const k = Math.round(fraction * valid.length);
  return new Set([...invalidIndices(valid.length, k)].map((j) => valid[j]));
}

/** The denoising step at which a chaos kill lands (after the first periodic checkpoint). */
const KILL_AT_STEP = 12;

async function drive(
  p: LocalPipeline,
  s: z.output<typeof LoadSettings>,
  timeoutS: number,
  workers: number,
  peak: WorkerPeak,
  subscribe: PipelineEventHub['subscribe'],
  onJob: LoadOptions['onJob'],
): Promise<LoadReport> {
  const card = await testCardPng(192, 128);
  const bad = invalidIndices(s.jobs, s.invalid);
  // Chaos: the S3 error rule, and the jobs whose first attempt is killed once it has denoised a little.
  const chaos = s.chaos;
  const faults = p.faults;
  const s3Rule = chaos && faults && chaos.s3ErrorRate > 0 ? faults.s3.add({ fault: { status: 503, code: 'SlowDown' }, probability: chaos.s3ErrorRate }) : null;
  const injectedBefore = faults?.s3.injected() ?? 0;
  const toKill = new Set<string>();
  const killed = new Set<string>();
  const killAt = chaos ? killIndices(s.jobs, bad, chaos.killFraction) : new Set<number>();
  const stopKilling = subscribe((e) => {
    if (e.type !== 'progress' || !toKill.has(e.jobId) || killed.has(e.jobId) || e.progress.phase !== 'denoise' || (e.progress.step ?? 0) < KILL_AT_STEP) return;
    if (p.interruptWorker(e.jobId, 'SIGKILL')) killed.add(e.jobId);
  });
  // A new folder per run: s3rver is unversioned, so the same key and bytes again would be the same job id (a duplicate, nothing started).
  const run = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`;
  const width = String(s.jobs - 1).length;
  const started = Date.now();
  const deadline = started + timeoutS * 1000;

  const one = async (i: number): Promise<LoadJobResult> => {
    const invalid = bad.has(i);
    const key = `${LOAD_PREFIX}${run}/${invalid ? 'bad' : 'job'}-${String(i).padStart(width, '0')}.png`;
    const request: Record<string, unknown> = { prompt: `load test job ${i}: the card pans left`, seed: 1000 + i, ...(s.steps !== undefined ? { steps: s.steps } : {}) };
    const base = { index: i, key, invalid };
    const t0 = Date.now();
    let jobId: string;
    try {
      jobId = (await p.upload(key, invalid ? invalidPng(i) : card, { request, contentType: 'image/png' })).id;
      if (killAt.has(i)) toKill.add(jobId);
    } catch (e) {
      return { ...base, jobId: null, status: 'UPLOAD_FAILED', latencyS: null, failedStep: null, error: (e as Error).name, reason: `upload failed: ${(e as Error).message}` };
    }
    let rec: ExecutionRecord;
    try {
      rec = await p.waitForJob(jobId, Math.max(1, deadline - Date.now()));
    } catch (e) {
      const now = p.execution('generation', jobId);
      const last = now?.states.at(-1)?.name;
      const where = `execution ${now?.status ?? 'not started'}${last ? `, in ${last}` : ''}`;
      const reason = (e as Error).name === 'ExecutionWaitTimeout' ? `not ended within the ${timeoutS} s deadline (${where})` : `following the job failed (${where}): ${(e as Error).message}`;
      return { ...base, jobId, status: 'UNFINISHED', latencyS: null, failedStep: null, error: null, reason };
    }
    const latencyS = rec.stopDate ? (Date.parse(rec.stopDate) - t0) / 1000 : null;
    try {
      return { ...base, jobId, latencyS, ...(await account(p, rec, jobId)) };
    } catch (e) {
      // Reading the outputs or the failure record back failed: the job ended, its result is unknown.
      return { ...base, jobId, latencyS, status: 'NO_RESULT', failedStep: null, error: rec.error, reason: `execution ${rec.status}, but reading its result back failed: ${(e as Error).message}` };
    }
  };

  let results: LoadJobResult[];
  try {
    results = await Promise.all(
      Array.from({ length: s.jobs }, async (_, i) => {
        const r = await one(i);
        onJob?.(r);
        return r;
      }),
    );
  } finally {
    stopKilling();
    if (s3Rule !== null) faults?.s3.remove(s3Rule);
  }
  const wallS = (Date.now() - started) / 1000;
  const chaosReport = chaos ? { s3ErrorRate: chaos.s3ErrorRate, killFraction: chaos.killFraction, s3FaultsInjected: (faults?.s3.injected() ?? 0) - injectedBefore, workersKilled: killed.size } : null;
  return report(results, { jobs: s.jobs, invalid: s.invalid, wallS, workers, peakWorkers: peak.peak, timeoutS, chaos: chaosReport });
}
