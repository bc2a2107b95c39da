/**
 * bench/gpu.sh --dry-run: the GPU bench end to end on the CPU with tiny widths (SVD's job only, to
 * stay quick: diffusers' real UNet class at tiny widths, exported float16 with the transformer
 * optimiser, through the worker's loop with the GPU session options off and on). Checks the report
 * has every field; the numbers are measurements, never asserted.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pythonOrWarn } from './helpers/python.ts';

const ROOT = resolve(import.meta.dirname, '..');
const missing = pythonOrWarn('test/gpu-script.test.ts', ['torch', 'onnx', 'onnxruntime', 'diffusers']);

describe.skipIf(missing !== null)('bench/gpu.sh --dry-run', () => {
  const cache = mkdtempSync(join(tmpdir(), 'cil-gpu-bench-'));
  afterAll(() => rmSync(cache, { recursive: true, force: true }));

  it('runs end to end on the CPU and prints GPU-seconds per video and the ratio to the UNet-only bound', () => {
    const r = spawnSync('bash', [join(ROOT, 'bench', 'gpu.sh'), '--dry-run', '--family', 'svd'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, CIL_GPU_BENCH_CACHE: cache },
      timeout: 600_000,
    });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const report = JSON.parse(lines[lines.length - 1]) as Record<string, Record<string, Record<string, unknown>>>;
    expect(report.mode).toMatch(/dry-run/);
    expect(report.precision).toBe('fp16');
    const svd = report.svd;
    expect(svd.unetCalls).toBe(3);
    for (const setting of ['baseline', 'tuned']) {
      const s = svd[setting];
      for (const f of ['openS', 'jobLoopS', 'gpuSecondsPerVideo', 'unetMs', 'unetLowerBoundS', 'ratioToUnetLowerBound']) {
        expect(typeof s[f], `${setting}.${f}`).toBe('number');
        expect(Number.isFinite(s[f]), `${setting}.${f}`).toBe(true);
      }
      expect(s.provider).toBe('cpu');
    }
    // the tuned setting's options reached the session: a warm-up call ran, the optimised graph was cached
    expect(svd.tuned.warmupMs).toBeGreaterThan(0);
    expect(svd.tuned.optimizedModel).toBe('written');
    expect(svd.baseline.warmupMs).toBeUndefined();
    expect(lines.some((l) => l.startsWith('svd'))).toBe(true);
  }, 600_000);
});

describe('the real-size bench parity figure (bench/real.ts relErr)', () => {
  it('is the largest difference over the largest reference magnitude, NaN where it cannot be one', async () => {
    const { relErr } = await import('../bench/real.ts');
    expect(relErr(Float32Array.of(1, -2.5, 3), Float32Array.of(1, -2, 4))).toBeCloseTo(0.25, 12);
    expect(relErr(Float32Array.of(1, 2), Float32Array.of(1, 2))).toBe(0);
    expect(relErr(Float32Array.of(1), Float32Array.of(1, 2))).toBeNaN();
    expect(relErr(Float32Array.of(0, 0), Float32Array.of(0, 0))).toBeNaN();
  });
});
