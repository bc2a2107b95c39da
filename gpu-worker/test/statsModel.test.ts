import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseManifest } from '#shared/schemas';
import type { Manifest } from '#shared/schemas';
import { encodeFinalStatistics, MomentAccumulator } from '#shared/stats';
import type { RunIdentity } from '#shared/stats';
import { readStatistics, statisticsForModel, StatisticsMismatchError } from '../src/statistics.ts';
import { MATRIX_4x3, writeTestBundle } from './statsFixtures.ts';
import type { TestModel } from './statsFixtures.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = join(HERE, '..', '..', 'bin', 'cil.js');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cil-stats-model-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function manifestOf(m: TestModel): Manifest {
  const d = writeTestBundle(join(dir, `${m.family}-${m.height}x${m.width}`), m);
  return parseManifest(JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8')), 'manifest.json');
}

/** A statistics file for the given run geometry: samples 0 and 2 everywhere → mean 1, trCov/d 1. */
function statsFile(family: RunIdentity['family'], height: number, width: number, latentShape: number[]): Uint8Array {
  const acc = new MomentAccumulator(latentShape);
  const n = latentShape.reduce((a, b) => a * b, 1);
  acc.add(new Float32Array(n));
  acc.add(new Float32Array(n).fill(2));
  const run: RunIdentity = {
    family, modelId: 'm', bundleHash: 'h', vaeId: 'v', scaleFactor: 1, height, width, frames: family === 'svd' ? latentShape[1] : latentShape[2], fps: 8, seed: 0,
    latentShape, shardCount: 1, datasetHash: 'a'.repeat(64), datasetSize: 2,
  };
  return encodeFinalStatistics(acc, { run, createdAt: '2025-01-01T00:00:00.000Z', skipped: 0 });
}

const DC: TestModel = { family: 'dynamicrafter', height: 16, width: 24, frames: 4, fps: 8, scaleFactor: 1, matrix: MATRIX_4x3 };

describe('the generate job checks statistics against the model (statisticsForModel)', () => {
  it('accepts a file of the same family, resolution and latent shape', () => {
    const s = readStatistics(statsFile('dynamicrafter', 16, 24, [1, 4, 4, 2, 3]), 'ok.safetensors');
    expect(s.trCovD).toBe(1);
    const e = statisticsForModel(s, manifestOf(DC), [1, 4, 4, 2, 3], 'ok.safetensors');
    expect(e.dims).toEqual([1, 4, 4, 2, 3]);
    expect(e.data.every((v) => v === 1)).toBe(true);
  });

  it('refuses another family, naming both', () => {
    const s = readStatistics(statsFile('svd', 16, 24, [1, 4, 4, 2, 3]), 'svd.safetensors');
    expect(() => statisticsForModel(s, manifestOf(DC), [1, 4, 4, 2, 3], 'svd.safetensors')).toThrow(StatisticsMismatchError);
    expect(() => statisticsForModel(s, manifestOf(DC), [1, 4, 4, 2, 3], 'svd.safetensors')).toThrow(
      /svd\.safetensors does not fit model 'test-dynamicrafter': family svd, the model 'test-dynamicrafter' is dynamicrafter/,
    );
  });

  it('refuses another resolution and another latent shape, naming both', () => {
    const s = readStatistics(statsFile('dynamicrafter', 32, 24, [1, 4, 4, 4, 3]), 'big.safetensors');
    expect(() => statisticsForModel(s, manifestOf(DC), [1, 4, 4, 2, 3], 'big.safetensors')).toThrow(
      /resolution 32×24, the model 'test-dynamicrafter' is 16×24; expectation_x0 dims \[1, 4, 4, 4, 3\], the latent of this job is \[1, 4, 4, 2, 3\]/,
    );
    const frames = readStatistics(statsFile('dynamicrafter', 16, 24, [1, 4, 8, 2, 3]), 'f8.safetensors');
    expect(() => statisticsForModel(frames, manifestOf(DC), [1, 4, 4, 2, 3], 'f8.safetensors')).toThrow(/expectation_x0 dims \[1, 4, 8, 2, 3\]/);
  });
});

describe('cil plan --stats', () => {
  function cil(...args: string[]): { code: number | null; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [BIN, 'plan', ...args], { encoding: 'utf8' });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('takes tr(Cov)/d from the file, as --trcov-d would', () => {
    const f = join(dir, 'dc.safetensors');
    writeFileSync(f, statsFile('dynamicrafter', 16, 24, [1, 4, 4, 2, 3]));
    const a = cil('--family', 'dynamicrafter', '--stats', f, '--json');
    expect(a.stderr).toBe('');
    expect(a.code).toBe(0);
    const b = cil('--family', 'dynamicrafter', '--trcov-d', '1', '--json');
    expect(JSON.parse(a.stdout)).toEqual(JSON.parse(b.stdout));
    expect(JSON.parse(a.stdout)).not.toEqual(JSON.parse(cil('--family', 'dynamicrafter', '--json').stdout));
  });

  it('refuses a file of another family (one line naming both, exit 2), and --stats with --trcov-d', () => {
    const f = join(dir, 'svd.safetensors');
    writeFileSync(f, statsFile('svd', 16, 24, [1, 4, 4, 2, 3]));
    const r = cil('--family', 'videocrafter', '--stats', f);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--stats .*svd\.safetensors holds svd statistics, but --family is videocrafter/);
    expect(cil('--family', 'svd', '--stats', f, '--trcov-d', '1').code).toBe(2);
    const junk = join(dir, 'junk.safetensors');
    writeFileSync(junk, 'not safetensors');
    const j = cil('--family', 'svd', '--stats', junk);
    expect(j.code).toBe(2);
    expect(j.stderr.trim().split('\n')).toHaveLength(1);
  });
});
