/**
 * Reference parity on the real model classes (docs/reference.md), TypeScript side.
 *
 * For each case, `python -m tools.reference.run` builds a tiny random-weight instance of the real
 * classes, runs the authors' reference pipeline on our noise and exports the checkpoint with our
 * exporter (float32, float16, float32 with external data). Here, each bundle goes through
 * `cil verify-bundle` and `cil generate` with the reference's settings and seed, and the final
 * latent and frames are compared with the reference's:
 *   - latent error: max |ours − ref| / max |ref| over the final latent;
 *   - frames: our PNGs (0–255) against the reference's float frames mapped by (x + 1)·127.5:
 *     max and mean absolute difference, and PSNR.
 *
 * `npm run test:reference [-- --cases a,b --keep DIR]` prints the table; test/reference.test.ts
 * runs the same inside `npm test` and asserts the bars.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { readNpy } from '#shared/formats';
import { FAMILY_TABLE } from '#shared/sampler';

const ROOT = resolve(import.meta.dirname, '..');
const CIL = join(ROOT, 'bin', 'cil.js');

export const CASES = ['dynamicrafter', 'videocrafter', 'svd-cil', 'svd-base'] as const;
export type CaseName = (typeof CASES)[number];
/** Cases that run without the authors' checkout (stock diffusers only). */
export const CASES_WITHOUT_REPO: readonly CaseName[] = ['svd-base'];

/** The bars of issue 14 (docs/reference.md). */
export const BARS = { latentRelErr: 1e-4, frameMaxAbs: 2, frameMeanAbs: 0.5, fp16PsnrDb: 40 } as const;

export interface Settings {
  readonly family: 'dynamicrafter' | 'videocrafter' | 'svd';
  readonly height: number;
  readonly width: number;
  readonly frames: number;
  readonly seed: number;
  readonly prompt: string | null;
  readonly steps: number;
  readonly start: number;
  readonly analyticInit: boolean;
  readonly eta: number | null;
  readonly guidanceScale: number | null;
  readonly guidanceRescale: number | null;
  readonly imageGuidanceScale: number | null;
  readonly frameStride: number | null;
  readonly fps: number | null;
  readonly motionBucketId: number | null;
  readonly noiseAugStrength: number | null;
  readonly minGuidanceScale: number | null;
  readonly maxGuidanceScale: number | null;
  readonly compat: 'paper' | 'reference' | null;
  readonly cil: boolean;
  readonly patches: readonly string[];
}

export interface ParityRow {
  readonly case: CaseName;
  readonly bundle: string;
  readonly fp16: boolean;
  readonly latentRelErr: number;
  readonly frameMaxAbs: number;
  readonly frameMeanAbs: number;
  readonly psnrDb: number;
  readonly verifyMaxErr: number | null;
  /** Weight files stored as ONNX external data (`*.onnx.data`) in the bundle. */
  readonly externalDataFiles: number;
  readonly generateS: number;
  readonly pass: boolean;
}

export interface CaseResult {
  readonly case: CaseName;
  readonly settings: Settings;
  readonly rows: readonly ParityRow[];
  readonly pythonS: number;
}

export class ReferenceRunError extends Error {
  override readonly name = 'ReferenceRunError';
}

function venvPython(): string {
  return join(process.env.CIL_VENV ?? join(ROOT, '.venv'), 'bin', 'python');
}

function run(cmd: string, args: readonly string[], what: string, env: Record<string, string> = {}, timeoutMs = 900_000): string {
  const r = spawnSync(cmd, args, {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 256 << 20,
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '2', ...env },
  });
  if (r.status !== 0) {
    throw new ReferenceRunError(`${what} failed (exit ${r.status ?? r.signal}):\n${(r.stdout ?? '').slice(-4000)}\n${(r.stderr ?? '').slice(-4000)}${r.error ? `\n${r.error.message}` : ''}`);
  }
  return r.stdout;
}

const cil = (args: readonly string[], what: string): string => run(process.execPath, [CIL, ...args], what);

/** `cil generate` flags reproducing the reference run's settings. */
export function generateFlags(s: Settings): string[] {
  const f: string[] = ['--seed', String(s.seed), '--steps', String(s.steps), '--start', String(s.start), '--frames', String(s.frames)];
  const opt = (flag: string, v: number | string | null | undefined): void => {
    if (v !== null && v !== undefined) f.push(flag, String(v));
  };
  if (FAMILY_TABLE[s.family].textPrompt) opt('--prompt', s.prompt ?? '');
  opt('--eta', s.eta);
  opt('--guidance', s.guidanceScale);
  opt('--guidance-rescale', s.guidanceRescale);
  opt('--image-guidance', s.imageGuidanceScale);
  opt('--frame-stride', s.frameStride);
  opt('--fps', s.fps);
  opt('--motion-bucket', s.motionBucketId);
  opt('--noise-aug', s.noiseAugStrength);
  opt('--min-guidance', s.minGuidanceScale);
  opt('--max-guidance', s.maxGuidanceScale);
  opt('--compat', s.compat);
  if (!s.analyticInit) f.push('--no-analytic-init');
  return f;
}

async function pngFrames(dir: string): Promise<Uint8Array[]> {
  const files = readdirSync(dir).filter((n) => n.endsWith('.png')).sort();
  return Promise.all(files.map(async (n) => new Uint8Array(await sharp(join(dir, n)).removeAlpha().raw().toBuffer())));
}

/** Our frames (HWC uint8 PNGs) against the reference's float frames [F, 3, H, W] in [−1, 1]. */
export function frameMetrics(ours: readonly Uint8Array[], ref: Float32Array, height: number, width: number): { maxAbs: number; meanAbs: number; psnrDb: number } {
  const plane = height * width;
  let max = 0;
  let sum = 0;
  let sq = 0;
  let n = 0;
  ours.forEach((rgb, f) => {
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) {
        const r = Math.min(255, Math.max(0, (ref[(f * 3 + c) * plane + i] + 1) * 127.5));
        const d = Math.abs(rgb[3 * i + c] - r);
        max = Math.max(max, d);
        sum += d;
        sq += d * d;
        n++;
      }
    }
  });
  const mse = sq / n;
  return { maxAbs: max, meanAbs: sum / n, psnrDb: mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse) };
}

/** max |a − b| / max |b|: the error relative to the reference's scale (elementwise ratios blow up near 0). */
export function latentRelErr(ours: Float32Array, ref: Float32Array): number {
  if (ours.length !== ref.length) return Infinity;
  let d = 0;
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(ours[i] - ref[i]));
    m = Math.max(m, Math.abs(ref[i]));
  }
  return Number.isFinite(d) ? d / Math.max(m, 1e-12) : Infinity;
}

const npy = (path: string): Float32Array => readNpy(readFileSync(path), path).tensor.data;

export function passes(r: Omit<ParityRow, 'pass'>): boolean {
  if (r.fp16) return r.psnrDb >= BARS.fp16PsnrDb;
  return r.latentRelErr <= BARS.latentRelErr && r.frameMaxAbs <= BARS.frameMaxAbs && r.frameMeanAbs <= BARS.frameMeanAbs;
}

/** Runs one case end to end in `work` (created if missing). */
export async function runCase(name: CaseName, work: string, log: (s: string) => void = () => undefined): Promise<CaseResult> {
  mkdirSync(work, { recursive: true });
  const t0 = performance.now();
  log(`${name}: building the tiny model, running the reference, exporting …`);
  run(venvPython(), ['-m', 'tools.reference.run', '--case', name, '--out', work], `python -m tools.reference.run --case ${name}`);
  const pythonS = (performance.now() - t0) / 1000;
  const s = JSON.parse(readFileSync(join(work, 'settings.json'), 'utf8')) as Settings;
  const info = JSON.parse(readFileSync(join(work, 'case.json'), 'utf8')) as { bundles: string[] };
  let stats: string[] = [];
  if (s.analyticInit) {
    const out = join(work, 'stats.safetensors');
    cil(['stats', 'import', join(work, 'stats.pt'), '--family', s.family, '--height', String(s.height), '--width', String(s.width), '--frames', String(s.frames), '--out', out], `${name}: cil stats import`);
    stats = ['--stats', out];
  }
  const refLatent = npy(join(work, 'reference', 'latent.npy'));
  const refFrames = npy(join(work, 'reference', 'frames.npy'));
  const rows: ParityRow[] = [];
  for (const bundle of info.bundles) {
    const dir = join(work, bundle);
    const label = bundle.replace(/^bundle-/, '');
    const verify = JSON.parse(cil(['verify-bundle', dir, '--json', '--threads', '2'], `${name}/${label}: cil verify-bundle`)) as { pass: boolean; components?: { relativeError: number | null }[] };
    const verifyMaxErr = verify.components ? Math.max(...verify.components.map((c) => (c.relativeError === null ? Infinity : c.relativeError))) : null;
    const out = join(work, `ours-${label}`);
    rmSync(out, { recursive: true, force: true });
    const tg = performance.now();
    cil(['generate', '--model', dir, '--image', join(work, 'input.png'), ...stats, ...generateFlags(s), '--save-latent', '--no-video', '--progress', 'none', '--threads', '2', '--provider', 'cpu', '--out', out], `${name}/${label}: cil generate`);
    const generateS = (performance.now() - tg) / 1000;
    const fm = frameMetrics(await pngFrames(join(out, 'frames')), refFrames, s.height, s.width);
    const externalDataFiles = readdirSync(dir).filter((n) => n.endsWith('.onnx.data')).length;
    const row = { case: name, bundle: label, fp16: label.includes('fp16'), externalDataFiles, latentRelErr: latentRelErr(npy(join(out, 'latent.npy')), refLatent), frameMaxAbs: fm.maxAbs, frameMeanAbs: fm.meanAbs, psnrDb: fm.psnrDb, verifyMaxErr, generateS };
    rows.push({ ...row, pass: passes(row) && verify.pass && (externalDataFiles > 0) === label.includes('external') });
    log(`${name}/${label}: latent ${row.latentRelErr.toExponential(2)}, frames max ${fm.maxAbs.toFixed(3)} mean ${fm.meanAbs.toFixed(3)}, PSNR ${fm.psnrDb.toFixed(1)} dB`);
  }
  return { case: name, settings: s, rows, pythonS };
}

/** The one table `npm run test:reference` prints (and the README quotes). */
export function table(results: readonly CaseResult[]): string {
  const lines = [
    '| case | bundle | final latent max rel. err | frames max abs diff (0–255) | frames mean abs diff (0–255) | PSNR (dB) | verify-bundle max err | bars |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    for (const row of r.rows) {
      lines.push(
        `| ${r.case} | ${row.bundle} | ${row.latentRelErr.toExponential(2)} | ${row.frameMaxAbs.toFixed(3)} | ${row.frameMeanAbs.toFixed(3)} | ${Number.isFinite(row.psnrDb) ? row.psnrDb.toFixed(1) : '∞'} | ${row.verifyMaxErr === null ? '–' : row.verifyMaxErr.toExponential(1)} | ${row.pass ? 'pass' : 'FAIL'} |`,
      );
    }
  }
  return lines.join('\n');
}

/**
 * Cases runnable here: all with $CIL_REFERENCE_REPO, else those that need no checkout; `why` says
 * in a few words what is wrong with CIL_REFERENCE_REPO, `missing` also what to do.
 */
export function runnableCases(): { cases: CaseName[]; missing: string | null; why: string | null } {
  const repo = process.env.CIL_REFERENCE_REPO;
  if (repo && existsSync(join(repo, 'examples'))) return { cases: [...CASES], missing: null, why: null };
  const why = repo ? `CIL_REFERENCE_REPO=${repo} has no examples/ folder` : 'CIL_REFERENCE_REPO is not set';
  return {
    why,
    cases: [...CASES_WITHOUT_REPO],
    missing: `${why}: the DynamiCrafter, VideoCrafter1 and CIL-SVD cases need a checkout of thu-ml/cond-image-leakage (git clone it, then export CIL_REFERENCE_REPO=/path/to/it; docs/reference.md)`,
  };
}

async function main(argv: string[]): Promise<number> {
  let keep: string | null = null;
  let only: string[] | null = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--keep') keep = argv[++i] ?? null;
    else if (argv[i] === '--cases') only = (argv[++i] ?? '').split(',').filter(Boolean);
    else {
      console.error(`test:reference: unknown argument ${argv[i]}; usage: npm run test:reference [-- --cases ${CASES.join(',')}] [--keep DIR]`);
      return 2;
    }
  }
  const { cases, missing } = runnableCases();
  if (missing) console.warn(`\n*** test:reference: ${missing}. Running only: ${cases.join(', ')} ***\n`);
  const bad = (only ?? []).filter((c) => !(CASES as readonly string[]).includes(c));
  if (bad.length) {
    console.error(`test:reference: --cases ${bad.join(',')}: one of ${CASES.join(', ')}`);
    return 2;
  }
  const chosen = (only ?? cases).filter((c): c is CaseName => cases.includes(c as CaseName));
  const base = keep ?? mkdtempSync(join(tmpdir(), 'cil-reference-'));
  const results: CaseResult[] = [];
  try {
    for (const c of chosen) results.push(await runCase(c, join(base, c), (s) => console.log(s)));
  } catch (e) {
    console.error((e as Error).message);
    return 1;
  } finally {
    if (!keep) rmSync(base, { recursive: true, force: true });
  }
  console.log(`\n${table(results)}\n`);
  for (const r of results) if (r.settings.patches.length) console.log(`${r.case}: harness patches: ${r.settings.patches.join('; ')}`);
  return results.every((r) => r.rows.every((row) => row.pass)) ? 0 : 1;
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
