/**
 * bench/gpu.sh's measurement: whole sampling jobs of real-architecture UNets (random weights, float16
 * with the transformer optimiser: the exporter's default) through the worker's own loop (denoise →
 * guidance → the family's batch-2 UNet call → the inference thread → onnxruntime-node), on the CUDA
 * execution provider, with the GPU session options off and on:
 *
 * - DynamiCrafter 320×512, 16 frames, 50 steps; SVD 576×1024, 14 frames, 25 steps (one batch-2 call a step).
 * - `baseline`: no warm-up, no optimised-graph cache. `tuned`: a warm-up call when the feeds are bound,
 *   onnxruntime's optimised graph cached on local disk (the second open loads it), the feeds bound once
 *   in shared memory for the job (onnxruntime-node 1.30 takes no device-resident inputs: see
 *   gpu-worker/src/runtime/ortThread.ts); CIL_BENCH_CUDA_GRAPH=1 adds CUDA graph capture and
 *   CIL_BENCH_TENSORRT=1 the TensorRT provider with its engine cache, where the runtime can.
 *
 * Per family and setting: `gpuSecondsPerVideo` (session open + the whole loop: every step's UNet call
 * and the host work around it; the encoders and the VAE are not part of this bench),
 * `unetMs` (one timed batch-2 call on the same session after the job), `unetLowerBoundS` (steps ×
 * unetMs) and `ratioToUnetLowerBound`. `--dry-run` (or CIL_GPU_BENCH_DRY_RUN=1): tiny widths, 64×64,
 * 3 frames, 3 steps, on the CPU, so CI runs it end to end. `--family svd|dynamicrafter`: one job only.
 * The exported models and onnxruntime's optimised graphs stay in .cache/bench-gpu: a second run
 * skips the export, and its `tuned` open loads the cached graph (`optimizedModel: loaded`), as
 * every job after a host's first does. The last line of stdout is the report as JSON.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { OnnxSessions } from '../gpu-worker/src/runtime/sessions.ts';
import type { SessionTuning } from '../gpu-worker/src/runtime/protocol.ts';
import { loop, setup } from './host.ts';
import type { Geom, Shape } from './host.ts';
import { failure, realExport, realFeeds } from './real.ts';
import type { RealFamily } from './real.ts';
import { median, round } from './util.ts';

const ROOT = resolve(import.meta.dirname, '..');
const dry = process.argv.includes('--dry-run') || process.env.CIL_GPU_BENCH_DRY_RUN === '1';
const cache = process.env.CIL_GPU_BENCH_CACHE ?? join(ROOT, '.cache', dry ? 'bench-gpu-dry' : 'bench-gpu');

interface Job {
  readonly family: RealFamily;
  readonly shape: Shape;
  readonly frames: number;
  readonly height: number;
  readonly width: number;
  readonly steps: number;
  /** The UNet input that carries the conditioning tokens (its dims give the context width). */
  readonly condInput: 'context' | 'encoder_hidden_states';
}
const JOBS: readonly Job[] = dry
  ? [
      { family: 'dynamicrafter', shape: 'dc-320x512', frames: 3, height: 64, width: 64, steps: 3, condInput: 'context' },
      { family: 'svd', shape: 'svd-576x1024', frames: 3, height: 64, width: 64, steps: 3, condInput: 'encoder_hidden_states' },
    ]
  : [
      { family: 'dynamicrafter', shape: 'dc-320x512', frames: 16, height: 320, width: 512, steps: 50, condInput: 'context' },
      { family: 'svd', shape: 'svd-576x1024', frames: 14, height: 576, width: 1024, steps: 25, condInput: 'encoder_hidden_states' },
    ];

// --family svd|dynamicrafter: one family only (the CI test runs SVD's dry run alone).
const only = process.argv[process.argv.indexOf('--family') + 1];
const jobs = JOBS.filter((j) => !process.argv.includes('--family') || j.family === only);

function settings(): { name: string; tuning: SessionTuning; warmup: boolean }[] {
  const tuned: SessionTuning = {
    optimizedCacheDir: join(cache, 'ort-optimized'),
    cudaGraph: process.env.CIL_BENCH_CUDA_GRAPH === '1',
    tensorrtCacheDir: process.env.CIL_BENCH_TENSORRT === '1' ? join(cache, 'tensorrt') : undefined,
  };
  return [
    { name: 'baseline', tuning: {}, warmup: false },
    { name: 'tuned', tuning: tuned, warmup: true },
  ];
}

export interface SettingReport {
  readonly provider: string;
  readonly notes?: string;
  readonly optimizedModel?: string;
  readonly openS: number;
  readonly warmupMs?: number;
  readonly jobLoopS: number;
  readonly gpuSecondsPerVideo: number;
  readonly unetMs: number;
  readonly unetLowerBoundS: number;
  readonly ratioToUnetLowerBound: number;
}

async function runSetting(job: Job, file: string, geom: Geom, feeds: ReturnType<typeof realFeeds>, st: ReturnType<typeof settings>[number]): Promise<SettingReport> {
  const sessions = new OnnxSessions({ provider: dry ? 'cpu' : 'cuda', tuning: st.tuning, warmup: st.warmup });
  try {
    const t0 = performance.now();
    const info = await sessions.open('unet', file);
    const openS = (performance.now() - t0) / 1000;
    const s = setup(job.shape, geom, job.steps);
    const t1 = performance.now();
    await loop(job.shape, sessions, s, false, geom);
    const jobLoopS = (performance.now() - t1) / 1000;
    const one: number[] = [];
    for (let i = 0; i < 3; i++) {
      const before = sessions.runMs.get('unet') ?? 0;
      await sessions.run('unet', feeds);
      one.push((sessions.runMs.get('unet') ?? 0) - before);
    }
    const unetMs = median(one);
    const lower = (s.steps.length * unetMs) / 1000;
    const gpuS = openS + jobLoopS;
    return {
      provider: info.provider,
      notes: info.fallbackReason,
      optimizedModel: info.optimizedModel,
      openS: round(openS, 2),
      warmupMs: sessions.warmupMs.has('unet') ? round(sessions.warmupMs.get('unet')!, 1) : undefined,
      jobLoopS: round(jobLoopS, 2),
      gpuSecondsPerVideo: round(gpuS, 2),
      unetMs: round(unetMs, 1),
      unetLowerBoundS: round(lower, 2),
      ratioToUnetLowerBound: round(gpuS / lower, 2),
    };
  } finally {
    await sessions.close();
  }
}

export async function benchGpu(log: (s: string) => void): Promise<Record<string, unknown>> {
  mkdirSync(cache, { recursive: true });
  const report: Record<string, unknown> = { mode: dry ? 'dry-run (CPU, tiny widths)' : 'cuda', precision: 'fp16' };
  for (const job of jobs) {
    const label = `${job.family} ${job.height}×${job.width} / ${job.frames} frames / ${job.steps} steps`;
    log(`${label}: export (cached in ${cache})…`);
    let e;
    try {
      e = realExport(job.family, { frames: job.frames, height: job.height, width: job.width, tiny: dry, cache: join(cache, 'models'), noTorch: true });
    } catch (err) {
      report[job.family] = { skipped: `export failed: ${failure(err)}` };
      continue;
    }
    if (e.skipped) {
      report[job.family] = { skipped: e.skipped };
      continue;
    }
    const fp16 = e.files.fp16;
    if (!fp16) throw new Error(`${job.family}: realbench wrote no float16 file`);
    const feeds = realFeeds(e);
    const dims = (name: string): readonly number[] => ('data' in feeds[name] ? (feeds[name] as { dims: readonly number[] }).dims : []);
    const cond = dims(job.condInput);
    const geom: Geom = { channels: 4, frames: job.frames, h: job.height / 8, w: job.width / 8, dim: cond[2], ctxTokens: cond[1] };
    const row: Record<string, unknown> = { job: label, unetFile: fp16.file, unetMB: round(fp16.bytes / 1e6, 1), unetCalls: job.steps };
    for (const st of settings()) {
      log(`  ${st.name}…`);
      row[st.name] = await runSetting(job, fp16.file, geom, feeds, st);
    }
    report[job.family] = row;
  }
  return report;
}

if (import.meta.main) {
  const r = await benchGpu((s) => process.stderr.write(`${s}\n`));
  for (const [k, v] of Object.entries(r)) process.stdout.write(`${k.padEnd(14)} ${typeof v === 'string' ? v : JSON.stringify(v)}\n`);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
