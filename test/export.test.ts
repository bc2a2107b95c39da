/**
 * The exporter round trip (tools/export, docs/models.md): the Python suite exports tiny stand-ins of
 * DynamiCrafter, VideoCrafter1 and SVD (float32 and float16, base and CIL) through ONE command, then
 * here the worker's own code takes over: openBundle's contract and hash checks, every ONNX session
 * against its manifest, the manifest defaults against shared/src/sampler/families.ts, `cil verify-bundle`
 * (onnxruntime vs the saved torch outputs, ≤ 1e-4 for float32), and a short generate job per bundle.
 *
 * Needs the repository's Python environment, .venv (scripts/setup-python.sh
 * makes it; this test never installs anything). Without it the suite is skipped, loudly.
 */
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerVerifyBundle } from '../cli/verifyBundle.ts';
import { checkSessionAgainstManifest, openBundle } from '../gpu-worker/src/bundle.ts';
import { OnnxSessions } from '../gpu-worker/src/runtime/sessions.ts';
import type { VerifyReport } from '../gpu-worker/src/verify.ts';
import { FAMILY_TABLE } from '#shared/sampler';
import { readNpy, writeNpy } from '#shared/formats';
import { tensor } from '#shared/sampler';
import { sampleBundle } from './helpers/sampleBundle.ts';
import type { PythonRun } from './helpers/python.ts';
import { pythonOrWarn, runPythonSuite } from './helpers/python.ts';
import { pythonSuiteTests } from './helpers/pythonSuite.ts';

/** The bundles tools/export/tests/test_export.py leaves in $CIL_EXPORT_TEST_OUT. */
const BUNDLES = ['dynamicrafter', 'dynamicrafter-cil-fp16', 'videocrafter', 'svd', 'svd-cil-fp16'] as const;
const FP16 = new Set<string>(['dynamicrafter-cil-fp16', 'svd-cil-fp16']);

const missing = pythonOrWarn('test/export.test.ts');

/** Runs `cil verify-bundle …` in-process; returns its stdout and exit code. */
async function verifyCli(...args: string[]): Promise<{ stdout: string; code: number }> {
  const program = new Command('cil').exitOverride();
  registerVerifyBundle(program);
  for (const c of program.commands) c.exitOverride().configureOutput({ writeErr: () => undefined });
  let stdout = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  });
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await program.parseAsync(['verify-bundle', ...args], { from: 'user' });
  } finally {
    spy.mockRestore();
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { stdout, code };
}

describe.skipIf(missing !== null)('tools/export → worker round trip', () => {
  let out: string;
  let python: PythonRun;

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'cil-export-'));
    // ONE command: the whole Python suite; it leaves the bundles in CIL_EXPORT_TEST_OUT.
    python = runPythonSuite('tools/export/tests', { CIL_EXPORT_TEST_OUT: out });
  }, 320_000);

  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  pythonSuiteTests('stand-in exports of all three families, manifests, onnx.checker, fp16', 'tools/export/tests', () => python);

  it.each(BUNDLES)('%s: openBundle accepts it and every ONNX session matches the manifest', async (name) => {
    const b = await openBundle(join(out, name));
    expect(b.manifest.format).toBe('cil-bundle/1');
    const sessions = new OnnxSessions({ provider: 'cpu', threads: 2 });
    try {
      for (const [c, spec] of Object.entries(b.manifest.components)) {
        const info = await sessions.open(c, join(b.root, spec.file));
        expect(() => checkSessionAgainstManifest(b.manifest, c, info.file, info.inputs, info.outputs)).not.toThrow();
        expect(typeof info.inputs[0].shape[0], `${name}/${c}: dynamic batch axis`).toBe('string');
      }
    } finally {
      await sessions.close();
    }
  });

  it('manifest schedules and defaults agree with the defaults table (FAMILY_TABLE, shared/src/sampler/families.ts)', async () => {
    for (const name of BUNDLES) {
      const m = (await openBundle(join(out, name))).manifest;
      const f = FAMILY_TABLE[m.family];
      expect(m.cil, name).toBe(name.includes('-cil'));
      expect(m.defaults.start, name).toBe(m.cil ? f.startCil : f.defaults.start);
      expect(m.defaults.steps, name).toBe(f.defaults.steps);
      // The manifest states the family's schedule (SVD's σ_max is the base checkpoint's).
      const { betaSchedule: _b, ...schedule } = m.schedule as typeof m.schedule & { betaSchedule?: string };
      expect(schedule, name).toEqual(f.schedule);
      // Every family field the table has a reference value for (and fps) is stated with it; the
      // frame stride follows the checkpoint's own config (default_fs) where it has one.
      for (const k of [...f.fields, 'fps'] as const) {
        if (k === 'frameStride') continue;
        const want: number | undefined = f.defaults[k];
        if (want !== undefined) expect(m.defaults[k], `${name}: defaults.${k}`).toBe(want);
      }
    }
  });

  it.each(BUNDLES)('%s: cil verify-bundle --json reports onnxruntime within tolerance of torch', async (name) => {
    const { stdout, code } = await verifyCli(join(out, name), '--json', '--threads', '2');
    const r = JSON.parse(stdout) as VerifyReport;
    const bound = FP16.has(name) ? 1e-2 : 1e-4;
    for (const c of r.components) {
      expect(c.relativeError, `${name}/${c.component}`).toBeLessThanOrEqual(bound);
      expect(c.relativeError, `${name}/${c.component} compared real numbers`).toBeGreaterThan(0);
    }
    expect(r.components.map((c) => c.component).sort()).toEqual(Object.keys((await openBundle(join(out, name))).manifest.components).sort());
    expect([r.pass, code]).toEqual([true, 0]);
  });

  it('cil verify-bundle exits 1 and names the component when a reference is off', async () => {
    const parity = join(out, 'parity-corrupted');
    await cp(join(out, 'dynamicrafter', 'parity'), parity, { recursive: true });
    const file = join(parity, 'unet', 'out.npy');
    const ref = readNpy(await readFile(file), file).tensor;
    const bumped = Float32Array.from(ref.data, (v, i) => (i === 5 ? v + 1e-2 : v));
    await writeFile(file, writeNpy(tensor(bumped, ref.dims, 'out')));
    const { stdout, code } = await verifyCli(join(out, 'dynamicrafter'), '--parity', parity, '--threads', '2');
    expect(code).toBe(1);
    expect(stdout).toMatch(/^unet\s.*FAIL/m);
    expect(stdout).toMatch(/^vae_decoder\s.*ok/m);
    // The same error under a looser tolerance passes: the measure is max|Δ| / max|ref|.
    const json = JSON.parse((await verifyCli(join(out, 'dynamicrafter'), '--parity', parity, '--tolerance', '0.1', '--json', '--threads', '2')).stdout) as VerifyReport;
    const unet = json.components.find((c) => c.component === 'unet')!;
    expect(unet.pass).toBe(true);
    expect(unet.relativeError).toBeCloseTo(1e-2 / unet.outputs[0].maxAbsReference, 4);
  });

  it('cil verify-bundle --json reports a bundle without parity data as one JSON error, exit 1', async () => {
    const { stdout, code } = await verifyCli(join(out, 'svd'), '--parity', join(out, 'nowhere'), '--json');
    expect(code).toBe(1);
    expect(JSON.parse(stdout)).toMatchObject({ pass: false, error: 'ParityError' });
  });

  it.each(BUNDLES)('%s: a 2-step generate job writes every frame', async (name) => {
    const b = await openBundle(join(out, name));
    const image = join(out, `${name}-input.png`);
    const rgb = Buffer.alloc(80 * 48 * 3);
    for (let i = 0; i < 80 * 48; i++) rgb.set([(i * 7) % 256, (i * 3) % 256, 128], 3 * i);
    await writeFile(image, await sharp(rgb, { raw: { width: 80, height: 48, channels: 3 } }).png().toBuffer());
    const dest = join(out, `${name}-job`);
    const meta = await sampleBundle(join(out, name), image, dest, 11);
    expect(meta.model.id).toBe(b.manifest.id);
    expect(meta.frames.count).toBe(b.manifest.frames);
    expect(meta.unetCallsPerStep).toBe(1); // both guidance branches in one batch-2 call
    const frames = (await readdir(join(dest, 'frames'))).sort();
    expect(frames).toEqual(Array.from({ length: b.manifest.frames }, (_, i) => `${String(i).padStart(4, '0')}.png`));
    const px = await sharp(join(dest, 'frames', frames[0])).metadata();
    expect([px.width, px.height]).toEqual([64, 64]);
  });
});
