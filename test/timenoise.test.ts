/**
 * TimeNoise across languages, and the fine-tuning chain on stand-ins (docs/finetuning.md).
 *
 * ONE command runs the Python suite (tools/finetune/tests): TimeNoise's distribution and adapters,
 * the training loop (resume, DDP, S3), and the AWS Batch steps train → export → publish over a fake
 * S3. It leaves in $CIL_FINETUNE_TEST_OUT the β_s moments it sampled (200 000 draws per t, fixed
 * seed) and the fine-tuned, exported stand-in bundles. Here:
 *
 *  - Python's sampled moments agree with `timeNoiseMoments` (closed form) and with moments of
 *    `sampleTimeNoiseBeta` draws from NormalGenerator. Tolerance: 5 standard errors — SE(mean) =
 *    s/√n, SE(std) = √((m4 − s⁴)/(4s²n)) from the sample's own fourth central moment, and for two
 *    independent samples the root sum of squares of both SEs. A correct pair fails a single
 *    comparison with probability ≈ 6·10⁻⁷; a wrong μ(t), a, β_m or T moves the mean by far more.
 *  - The closed form agrees with the reference fixture's moments (1e-7 relative): test/fixtures/reference,
 *    numbers from the authors' code (tools/reference/fixtures.py), or $CIL_REFERENCE_DIR.
 *  - The worker opens each fine-tuned bundle (its manifest says `cil: true`) and samples 2 steps.
 *
 * Needs the repository's Python environment, .venv (scripts/setup-python.sh); without
 * it the Python-dependent tests are skipped, loudly.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBundle } from '../gpu-worker/src/bundle.ts';
import { NormalGenerator } from '#shared/sampler';
import { TIME_NOISE_DEFAULTS, sampleTimeNoiseBeta, timeNoiseMoments } from '#shared/sampler';
import { REFERENCE_DIR } from '../shared/test/refFixtures.ts';
import { sampleBundle } from './helpers/sampleBundle.ts';
import { announceSkip } from './helpers/skips.ts';
import type { PythonRun } from './helpers/python.ts';
import { pythonOrWarn, runPythonSuite } from './helpers/python.ts';
import { pythonSuiteTests } from './helpers/pythonSuite.ts';

const REFERENCE = join(REFERENCE_DIR, 'timenoise_moments.json');
/** Standard errors allowed between an estimate and its expectation (see the header). */
const SE_BOUND = 5;
const TS_SAMPLES = 200_000;
const TS_SEED = 424242;
/** What tools/finetune/tests leaves in $CIL_FINETUNE_TEST_OUT/bundles. */
const BUNDLES = ['dynamicrafter-finetuned', 'svd-finetuned'] as const;

interface MomentRow {
  readonly t: number;
  readonly mean: number;
  readonly std: number;
  readonly seMean: number;
  readonly seStd: number;
  readonly n: number;
}

interface MomentsFile {
  readonly seed: number;
  readonly samples: number;
  readonly a: number;
  readonly betaM: number;
  readonly timesteps: number;
  readonly rows: MomentRow[];
}

const missing = pythonOrWarn('test/timenoise.test.ts: Python parts');
/** test/fixtures/reference is committed; only a CIL_REFERENCE_DIR without the file lacks it. */
const HAVE_REFERENCE = existsSync(REFERENCE);
if (!HAVE_REFERENCE) {
  announceSkip('TimeNoise reference-fixture cases', `${REFERENCE} not found`, 'unset CIL_REFERENCE_DIR (test/fixtures/reference is committed), or point it at a copy holding timenoise_moments.json');
}

/** Mean, std and their standard errors of a float64 sample (two passes, central moments). */
function momentsOf(x: Float64Array): Omit<MomentRow, 't'> {
  const n = x.length;
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i];
  const mean = s / n;
  let m2 = 0;
  let m4 = 0;
  for (let i = 0; i < n; i++) {
    const d = x[i] - mean;
    const d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= n;
  m4 /= n;
  const std = Math.sqrt(m2);
  return { mean, std, seMean: std / Math.sqrt(n), seStd: Math.sqrt(Math.max(m4 - m2 * m2, 0) / (4 * m2 * n)), n };
}

function tsSample(t: number, gen: NormalGenerator, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = sampleTimeNoiseBeta(t, gen);
  return out;
}

describe('TimeNoise closed form (TypeScript) against the reference fixture', () => {
  it.skipIf(!HAVE_REFERENCE)('timeNoiseMoments matches the reference fixture to 1e-7 relative', () => {
    const ref = JSON.parse(readFileSync(REFERENCE, 'utf8')) as { rows: { t: number; beta_s_mean: number; beta_s_std: number }[] };
    expect(ref.rows.length).toBeGreaterThanOrEqual(5);
    for (const r of ref.rows) {
      const m = timeNoiseMoments(r.t);
      expect(Math.abs(m.mean - r.beta_s_mean) / r.beta_s_mean, `mean at t=${r.t}`).toBeLessThan(1e-7);
      expect(Math.abs(m.std - r.beta_s_std) / r.beta_s_std, `std at t=${r.t}`).toBeLessThan(1e-7);
    }
  });
});

describe.skipIf(missing !== null)('TimeNoise in Python and TypeScript; fine-tune → export → bundle → worker', () => {
  let out: string;
  let python: PythonRun;
  let moments: MomentsFile;

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'cil-finetune-'));
    // ONE command: the whole Python suite; it leaves moments and bundles in CIL_FINETUNE_TEST_OUT.
    python = runPythonSuite('tools/finetune/tests', { CIL_FINETUNE_TEST_OUT: out, PYTHONWARNINGS: 'ignore' });
    const file = join(out, 'timenoise_moments.json');
    if (existsSync(file)) moments = JSON.parse(readFileSync(file, 'utf8')) as MomentsFile;
  }, 320_000);

  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  pythonSuiteTests('TimeNoise, training loop, Batch steps over a fake S3', 'tools/finetune/tests', () => python);

  it('wrote moments for the reference parameters and the expected t', () => {
    expect(moments).toBeDefined();
    expect([moments.a, moments.betaM, moments.timesteps]).toEqual([TIME_NOISE_DEFAULTS.a, TIME_NOISE_DEFAULTS.betaM, TIME_NOISE_DEFAULTS.timesteps]);
    expect(moments.rows.map((r) => r.t)).toEqual([0, 100, 250, 500, 750, 900, 999]);
    for (const r of moments.rows) expect(r.n).toBe(200_000);
  });

  it("Python's sampled β_s moments match the TypeScript closed form within 5 standard errors", () => {
    for (const r of moments.rows) {
      const m = timeNoiseMoments(r.t);
      expect(Math.abs(r.mean - m.mean), `mean at t=${r.t}: ${r.mean} vs ${m.mean}`).toBeLessThan(SE_BOUND * r.seMean);
      expect(Math.abs(r.std - m.std), `std at t=${r.t}: ${r.std} vs ${m.std}`).toBeLessThan(SE_BOUND * r.seStd);
    }
  });

  it('Python and TypeScript samplers agree in distribution (moments per t, 5 combined standard errors)', () => {
    const gen = NormalGenerator.fromSeed(TS_SEED);
    for (const r of moments.rows) {
      const ts = momentsOf(tsSample(r.t, gen, TS_SAMPLES));
      const closed = timeNoiseMoments(r.t);
      expect(Math.abs(ts.mean - closed.mean), `TS mean at t=${r.t}`).toBeLessThan(SE_BOUND * ts.seMean);
      expect(Math.abs(ts.std - closed.std), `TS std at t=${r.t}`).toBeLessThan(SE_BOUND * ts.seStd);
      expect(Math.abs(ts.mean - r.mean), `mean at t=${r.t}: TS ${ts.mean}, Python ${r.mean}`).toBeLessThan(SE_BOUND * Math.hypot(ts.seMean, r.seMean));
      expect(Math.abs(ts.std - r.std), `std at t=${r.t}: TS ${ts.std}, Python ${r.std}`).toBeLessThan(SE_BOUND * Math.hypot(ts.seStd, r.seStd));
    }
  });

  it.skipIf(!HAVE_REFERENCE)("Python's sampled moments match the reference fixture within 5 standard errors", () => {
    const ref = JSON.parse(readFileSync(REFERENCE, 'utf8')) as { rows: { t: number; beta_s_mean: number; beta_s_std: number }[] };
    for (const e of ref.rows) {
      const r = moments.rows.find((x) => x.t === e.t);
      expect(r, `Python sampled t=${e.t}`).toBeDefined();
      expect(Math.abs(r!.mean - e.beta_s_mean), `t=${e.t}`).toBeLessThan(SE_BOUND * r!.seMean);
      expect(Math.abs(r!.std - e.beta_s_std), `t=${e.t}`).toBeLessThan(SE_BOUND * r!.seStd);
    }
  });

  it.each(BUNDLES)('%s: the fine-tuned, exported stand-in is a CIL bundle the worker samples from (2 steps)', async (name) => {
    const dir = join(out, 'bundles', name);
    const b = await openBundle(dir);
    expect(b.manifest.cil).toBe(true);
    const image = join(out, `${name}-input.png`);
    const rgb = Buffer.alloc(80 * 48 * 3);
    for (let i = 0; i < 80 * 48; i++) rgb.set([(i * 5) % 256, (i * 11) % 256, 96], 3 * i);
    await writeFile(image, await sharp(rgb, { raw: { width: 80, height: 48, channels: 3 } }).png().toBuffer());
    const dest = join(out, `${name}-job`);
    const meta = await sampleBundle(dir, image, dest, 5);
    expect(meta.model.id).toBe(b.manifest.id);
    expect(meta.frames.count).toBe(b.manifest.frames);
    const frames = (await readdir(join(dest, 'frames'))).sort();
    expect(frames).toEqual(Array.from({ length: b.manifest.frames }, (_, i) => `${String(i).padStart(4, '0')}.png`));
    const px = await sharp(join(dest, 'frames', frames[0])).metadata();
    expect([px.width, px.height]).toEqual([64, 64]);
  });
});
