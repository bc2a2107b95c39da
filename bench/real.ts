/**
 * `npm run bench -- --real`: one batch-2 call of a real-architecture UNet at its real size, in our
 * worker's runtime (onnxruntime-node through gpu-worker/src/runtime, the project's one onnxruntime
 * module) against the same module in PyTorch, CPU, same run. tools/export/realbench.py builds the
 * UNet with random weights (weights do not change the cost), exports it with the exporter's own
 * steps (float32, and float16 with the transformer optimiser) into .cache/bench-real (kept: reruns
 * skip the export) and times PyTorch; this file times the ONNX files.
 *
 * Options: --real-frames N (fewer frames for a quicker, smaller run: the real run uses the real
 * sizes), --real-family svd|dynamicrafter (default both), --real-tiny (tiny widths: the dry run).
 * DynamiCrafter needs the authors' code (CIL_REFERENCE_REPO); without it its entry says why.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { readNpy } from '#shared/formats';
import { OnnxSessions } from '../gpu-worker/src/runtime/sessions.ts';
import type { Feed, SessionsOptions } from '../gpu-worker/src/runtime/sessions.ts';
import { PY } from '../test/helpers/python.ts';
import { median } from './util.ts';

const ROOT = resolve(import.meta.dirname, '..');

export type RealFamily = 'svd' | 'dynamicrafter';
/** The families `--real` measures, the headline (realUnetOrtVsTorch) first. */
export const REAL_FAMILIES: readonly RealFamily[] = ['svd', 'dynamicrafter'];

/** What realbench.py prints (one JSON line). */
export interface RealExport {
  readonly family: RealFamily;
  readonly skipped?: string;
  readonly frames: number;
  readonly height: number;
  readonly width: number;
  readonly tiny: boolean;
  readonly params: number;
  readonly threads: number;
  readonly files: { readonly fp32: { file: string; bytes: number }; readonly fp16?: { file: string; bytes: number } };
  readonly inputs: Record<string, string>;
  readonly torchMs?: number;
  /** The PyTorch call's output (.npy), when it was timed. */
  readonly torchOut?: string;
  readonly warmup: number;
}

export interface RealOptions {
  readonly frames?: number;
  readonly tiny?: boolean;
  readonly height?: number;
  readonly width?: number;
  readonly cache?: string;
  /** Time the float16 file on the CPU too at real widths. */
  readonly fp16?: boolean;
  /** Export only, no PyTorch timing (bench/gpu.ts). */
  readonly noTorch?: boolean;
  /** Float32 only. */
  readonly noFp16?: boolean;
}

/** Builds, exports (cached) and, unless noTorch, times the family's UNet in PyTorch. */
export function realExport(family: RealFamily, o: RealOptions = {}): RealExport {
  const args = ['-m', 'tools.export.realbench', '--family', family, '--cache', o.cache ?? join(ROOT, '.cache', 'bench-real')];
  if (o.frames) args.push('--frames', String(o.frames));
  if (o.height) args.push('--height', String(o.height));
  if (o.width) args.push('--width', String(o.width));
  if (o.tiny) args.push('--tiny');
  if (o.noTorch) args.push('--no-torch');
  if (o.noFp16) args.push('--no-fp16');
  const out = execFileSync(PY, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 }).toString().trim().split('\n');
  return JSON.parse(out[out.length - 1]) as RealExport;
}

/** The saved batch-2 inputs as feeds (int64 ones as integer feeds). */
export function realFeeds(e: RealExport): Record<string, Feed> {
  const feeds: Record<string, Feed> = {};
  for (const [name, file] of Object.entries(e.inputs)) {
    const { tensor, dtype } = readNpy(readFileSync(file), file);
    feeds[name] = dtype.includes('i8') ? { ints: Array.from(tensor.data), dims: tensor.dims } : tensor;
  }
  return feeds;
}

/** onnxruntime's run time (ms, median of `runs` after `warmup`) of one UNet call on `file`, and the last call's output. */
export async function timeOrt(
  file: string,
  feeds: Readonly<Record<string, Feed>>,
  runs = 1,
  warmup = 1,
  opts: SessionsOptions = { provider: 'cpu' },
): Promise<{ ms: number; provider: string; out: Float32Array<ArrayBufferLike> }> {
  const sessions = new OnnxSessions(opts);
  try {
    const info = await sessions.open('unet', file);
    const ts: number[] = [];
    let out: Float32Array<ArrayBufferLike> = new Float32Array(0);
    for (let i = 0; i < warmup + runs; i++) {
      const before = sessions.runMs.get('unet') ?? 0;
      const r = await sessions.run('unet', feeds);
      out = Object.values(r)[0].data;
      if (i >= warmup) ts.push((sessions.runMs.get('unet') ?? 0) - before);
    }
    return { ms: median(ts), provider: info.provider, out };
  } finally {
    await sessions.close();
  }
}

export interface RealBench {
  readonly family: RealFamily;
  readonly skipped?: string;
  readonly shape?: string;
  readonly params?: number;
  readonly torchMs?: number;
  readonly ortMs?: number;
  readonly ortFp16Ms?: number;
  readonly ortVsTorch?: number;
  readonly fp32MB?: number;
  readonly fp16MB?: number;
  /** max |onnxruntime − PyTorch| / max |PyTorch| on the same inputs (float32 file, float16 file). */
  readonly fp32RelErr?: number;
  readonly fp16RelErr?: number;
  /** Why the float16 export failed (e.g. memory), when it did. */
  readonly fp16Failed?: string;
}

/** The last lines of a failed child's message (its stderr's end: the error). */
export const failure = (err: unknown): string => (err as Error).message.split('\n').slice(-3).join(' ');

export async function benchReal(family: RealFamily, o: RealOptions = {}): Promise<RealBench> {
  let e: RealExport;
  try {
    // float32 and the PyTorch call first: the float16 conversion needs the most memory, and the
    // headline ratio must not depend on it.
    e = realExport(family, { ...o, noFp16: true });
  } catch (err) {
    return { family, skipped: `export failed: ${failure(err)}` };
  }
  if (e.skipped) return { family, skipped: e.skipped };
  const feeds = realFeeds(e);
  // As PyTorch's: a warm-up call at tiny widths, none at real widths (one call takes minutes here).
  const ort32 = await timeOrt(e.files.fp32.file, feeds, 1, e.warmup);
  let fp16: { file: string; bytes: number } | undefined;
  let fp16Failed: string | undefined;
  try {
    fp16 = realExport(family, { ...o, noTorch: true }).files.fp16;
  } catch (err) {
    fp16Failed = failure(err);
  }
  // float16 on the CPU mostly measures onnxruntime's casts around kernels without float16 (a GPU
  // number: bench/gpu.sh); timed at tiny widths or when asked (--real-fp16).
  const ort16 = fp16 && (e.tiny || o.fp16) ? await timeOrt(fp16.file, feeds, 1, e.warmup) : undefined;
  const want = e.torchOut ? readNpy(readFileSync(e.torchOut), e.torchOut).tensor.data : undefined;
  return {
    family,
    shape: `batch 2 × ${e.frames} frames × ${e.height}×${e.width}${e.tiny ? ' (tiny widths)' : ''}, ${e.threads} threads`,
    params: e.params,
    torchMs: e.torchMs,
    ortMs: ort32.ms,
    ortFp16Ms: ort16?.ms,
    ortVsTorch: e.torchMs ? ort32.ms / e.torchMs : undefined,
    fp32MB: e.files.fp32.bytes / 1e6,
    fp16MB: fp16 ? fp16.bytes / 1e6 : undefined,
    fp32RelErr: want ? relErr(ort32.out, want) : undefined,
    fp16RelErr: want && ort16 ? relErr(ort16.out, want) : undefined,
    fp16Failed,
  };
}

/** max |got − want| / max |want| (NaN where `want` is all zeros or the lengths differ). */
export function relErr(got: Float32Array, want: Float32Array): number {
  if (got.length !== want.length) return Number.NaN;
  let d = 0;
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    d = Math.max(d, Math.abs(got[i] - want[i]));
    m = Math.max(m, Math.abs(want[i]));
  }
  return d / m;
}

/** `--flag value` from argv. */
export function argValue(argv: readonly string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}
