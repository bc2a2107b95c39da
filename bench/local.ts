/**
 * Local-pipeline measurements (issue: local mode): the demo job end to end — from the upload's
 * PutObject to the end of its execution (Validate, the worker process, PostProcess, Notify) — and
 * the pipeline's overhead on it: end-to-end time minus the worker's own generation time
 * (metadata.json timings.totalS). One warm-up job first (it fills the worker's model cache), then
 * the median of three jobs. And the load (issue 8, "Load"): CIL_LOAD_JOBS uploads (default 20)
 * at once on a pipeline with the default worker concurrency (`benchLoad()`, bench/load/run.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { jobKeys } from '#shared/schemas';
import { DEFAULT_DATA_DIR } from '../local/src/paths.ts';
import { DEFAULT_LOAD_JOBS, runLoad } from './load/run.ts';
import type { LoadReport } from './load/run.ts';
import { startLocalPipeline } from '../local/src/pipeline.ts';
import { testCardPng } from '../local/src/testCard.ts';
import { median } from './util.ts';

export interface LocalBench {
  readonly e2eDemoS: number;
  readonly localPipelineOverheadS: number;
}

export interface LocalBenchDetail extends LocalBench {
  /** Median seconds per workflow step, and the worker's own time inside Generate. */
  readonly stepsS: Readonly<Record<string, number>>;
  readonly workerS: number;
}

export class LocalBenchError extends Error {
  override readonly name = 'LocalBenchError';
}

export async function benchLocalDetailed(runs = 3, warmStart = true): Promise<LocalBenchDetail> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cil-bench-local-'));
  const pipeline = await startLocalPipeline({ dataDir, definitionsCacheDir: join(DEFAULT_DATA_DIR, 'cache'), workerConcurrency: 1, warmStart });
  try {
    const card = await testCardPng();
    const e2e: number[] = [];
    const overhead: number[] = [];
    const worker: number[] = [];
    const steps = new Map<string, number[]>();
    for (let k = 0; k <= runs; k++) {
      const t0 = performance.now();
      const up = await pipeline.upload(`inputs/bench/card-${k}.png`, card, { request: { prompt: 'the card pans left', seed: 100 + k } });
      const rec = await pipeline.waitForJob(up.id, 300_000);
      const s = (performance.now() - t0) / 1000;
      if (rec.status !== 'SUCCEEDED') throw new LocalBenchError(`bench job ${up.id} ${rec.status}: ${rec.error} ${rec.cause}`);
      const r = await pipeline.s3.send(new GetObjectCommand({ Bucket: pipeline.bucket, Key: `${jobKeys(up.id).output}metadata.json` }));
      const totalS = (JSON.parse(await r.Body!.transformToString('utf8')) as { timings: { totalS: number } }).timings.totalS;
      if (k === 0) continue; // warm-up
      e2e.push(s);
      worker.push(totalS);
      overhead.push(s - totalS);
      for (const st of rec.states) {
        if (!st.exitedAt) continue;
        const list = steps.get(st.name) ?? [];
        list.push((Date.parse(st.exitedAt) - Date.parse(st.enteredAt)) / 1000);
        steps.set(st.name, list);
      }
    }
    return {
      e2eDemoS: median(e2e),
      localPipelineOverheadS: median(overhead),
      workerS: median(worker),
      stepsS: Object.fromEntries([...steps].map(([n, v]) => [n, median(v)])),
    };
  } finally {
    await pipeline.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export async function benchLocal(): Promise<LocalBench> {
  const d = await benchLocalDetailed();
  return { e2eDemoS: d.e2eDemoS, localPipelineOverheadS: d.localPipelineOverheadS };
}

export interface LoadBench {
  readonly loadJobs: number;
  /** Failed plus unfinished (0 when every upload succeeded). */
  readonly loadFailures: number;
  readonly loadP50S: number | null;
  readonly loadP95S: number | null;
  readonly loadThroughputJobsPerMin: number;
  readonly loadPeakWorkers: number;
}

/** The number of load jobs: CIL_LOAD_JOBS, default 20. */
export function loadJobsFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.CIL_LOAD_JOBS;
  if (v === undefined || v === '') return DEFAULT_LOAD_JOBS;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new LocalBenchError(`CIL_LOAD_JOBS must be an integer in [1, 1000], got '${v}'`);
  return n;
}

export async function benchLoadDetailed(): Promise<LoadReport> {
  return runLoad({ jobs: loadJobsFromEnv(), definitionsCacheDir: join(DEFAULT_DATA_DIR, 'cache') });
}

export async function benchLoad(): Promise<LoadBench> {
  const r = await benchLoadDetailed();
  return {
    loadJobs: r.jobs,
    loadFailures: r.failed + r.unfinished,
    loadP50S: r.p50S,
    loadP95S: r.p95S,
    loadThroughputJobsPerMin: r.throughputJobsPerMin,
    loadPeakWorkers: r.peakWorkers,
  };
}

if (import.meta.main) {
  // `node bench/local.ts load`: the load report (its per-job results left out).
  if (process.argv.includes('load')) {
    const { results: _results, ...r } = await benchLoadDetailed();
    process.stdout.write(`${JSON.stringify(r)}\n`);
  } else {
    process.stdout.write(`${JSON.stringify(await benchLocalDetailed())}\n`);
  }
}
