import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '#shared/formats';
import { UnsafePickleError } from '#shared/formats';
import { readStatistics } from '../src/statistics.ts';
import { importTorchStatistics, StatisticsImportError } from '../src/stats/importPt.ts';
import type { ImportOptions } from '../src/stats/importPt.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const FIXTURES = join(HERE, '..', '..', 'test', 'fixtures', 'torch-stats');
const RUNNER = join(HERE, 'statsCliRunner.ts');
const NODE = Number(process.versions.node.split('.')[0]) >= 24 ? process.execPath : join(HERE, '..', '..', 'node_modules', 'node', 'bin', 'node');

interface ExpectedKey {
  dtype: string;
  shape: number[];
  values?: number[];
  value?: number;
}
const EXPECTED = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8')) as Record<string, { keys: Record<string, ExpectedKey> }>;
const fixture = (name: string): Uint8Array => readFileSync(join(FIXTURES, name));

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cil-stats-import-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(NODE, [RUNNER, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// family, geometry (8× downsampling of the tiny latents), and the authors' key names per file
const CASES: [string, ImportOptions, string, string][] = [
  ['dynamicrafter_initial_noise_tiny.pt', { family: 'dynamicrafter', height: 24, width: 40 }, 'Expectation_X0', 'Tr_Cov_d'],
  ['svd_initial_noise_tiny.pt', { family: 'svd', height: 16, width: 32 }, 'Expectation_x_0', 'trCov_d'],
  ['strided_view_tiny.pt', { family: 'videocrafter', height: 24, width: 40 }, 'Expectation_X0', 'Tr_Cov_d'],
];

describe('cil stats import: the PyTorch fixtures give exactly the values of expected.json', () => {
  for (const [name, o, eKey, tKey] of CASES) {
    it(name, () => {
      const r = importTorchStatistics(fixture(name), name, { ...o, createdAt: '2025-01-01T00:00:00.000Z' });
      const want = EXPECTED[name].keys;
      const f = readSafetensors(r.bytes, 'imported');
      const e = f.tensors.get('expectation_x0')!;
      expect(e.dtype).toBe('F32');
      expect(e.dims).toEqual(want[eKey].shape);
      // exact: float32 stays bit-identical, float16 widens exactly
      expect(Array.from(e.tensor().data)).toEqual(want[eKey].values);
      const t = f.tensors.get('tr_cov_d')!;
      expect(t.dims).toEqual([]);
      expect(t.tensor().data[0]).toBe(want[tKey].value);
      const s = readStatistics(r.bytes, name);
      expect(s.meta).toMatchObject({ family: o.family, source: 'imported', latentShape: want[eKey].shape, height: o.height, width: o.width });
      expect(f.metadata.sourceDtypes).toBe(`${want[eKey].dtype},${want[tKey].dtype}`);
      expect(f.metadata.sampleCountKnown).toBe('false');
    });
  }

  it('frames come from the family layout: [1, C, F, h, w] for VP, [F, C, h, w] for svd', () => {
    expect(importTorchStatistics(fixture(CASES[0][0]), 'a', CASES[0][1]).meta.frames).toBe(2);
    expect(importTorchStatistics(fixture(CASES[1][0]), 'b', CASES[1][1]).meta.frames).toBe(3);
  });

  it('hostile_reduce.pt is refused and nothing runs', () => {
    expect(() => importTorchStatistics(fixture('hostile_reduce.pt'), 'hostile_reduce.pt', { family: 'dynamicrafter', height: 24, width: 40 })).toThrow(UnsafePickleError);
    const r = cli('stats', 'import', join(FIXTURES, 'hostile_reduce.pt'), '--family', 'dynamicrafter', '--height', '24', '--width', '40', '--out', join(dir, 'h.safetensors'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/UnsafePickleError: .*global .* is not allowed/);
    expect(existsSync(join(dir, 'h.safetensors'))).toBe(false);
    expect(existsSync('/tmp/pwned-by-pt')).toBe(false);
  });

  it('refuses the other family\'s key names, a wrong frame count and an impossible geometry, naming both', () => {
    const dc = fixture('dynamicrafter_initial_noise_tiny.pt');
    expect(() => importTorchStatistics(dc, 'dc.pt', { family: 'svd', height: 24, width: 40 })).toThrow(
      /dc\.pt: a svd statistics file holds Expectation_x_0 and trCov_d; found keys Expectation_X0, Tr_Cov_d; it has Expectation_X0\/Tr_Cov_d, the names of dynamicrafter\/videocrafter files/,
    );
    expect(() => importTorchStatistics(dc, 'dc.pt', { family: 'dynamicrafter', height: 24, width: 40, frames: 16 })).toThrow(/has 2 frames .*--frames is 16/);
    expect(() => importTorchStatistics(dc, 'dc.pt', { family: 'dynamicrafter', height: 24, width: 48 })).toThrow(StatisticsImportError);
  });
});

describe('cil stats import / inspect (command line)', () => {
  it('imports, then inspect shows shape, count, trCov_d and the per-channel means', () => {
    const out = join(dir, 'dc.safetensors');
    const r = cli('stats', 'import', join(FIXTURES, 'dynamicrafter_initial_noise_tiny.pt'), '--family', 'dynamicrafter', '--height', '24', '--width', '40', '--model-id', 'dynamicrafter-512', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ event: 'done', latentShape: [1, 4, 2, 3, 5], trCovD: 0.8125 });
    const j = JSON.parse(cli('stats', 'inspect', out, '--json').stdout) as { count: number; trCovD: number; channelMeans: number[]; layout: string; tensors: unknown[] };
    const v = EXPECTED['dynamicrafter_initial_noise_tiny.pt'].keys.Expectation_X0.values!;
    // channel c holds elements c·30 … c·30+29 ([1, C=4, F=2, h=3, w=5]); means in float64 from the JSON
    const means = [0, 1, 2, 3].map((c) => v.slice(c * 30, c * 30 + 30).reduce((a, b) => a + b, 0) / 30);
    j.channelMeans.forEach((m, c) => expect(m).toBeCloseTo(means[c], 12));
    expect(j.trCovD).toBe(0.8125);
    expect(j.count).toBe(1);
    expect(j.layout).toBe('[1, C, F, h, w]');
    expect(j.tensors).toEqual([
      { name: 'expectation_x0', dtype: 'F32', shape: [1, 4, 2, 3, 5] },
      { name: 'tr_cov_d', dtype: 'F32', shape: [] },
    ]);
    const text = cli('stats', 'inspect', out).stdout;
    expect(text).toMatch(/tr\(Cov\)\/d\s+0\.8125000/);
    expect(text).toMatch(/modelId\s+dynamicrafter-512/);
    // an unimported .pt is shown too, with its own key names
    const pt = JSON.parse(cli('stats', 'inspect', join(FIXTURES, 'svd_initial_noise_tiny.pt'), '--json').stdout) as { kind: string; family: string; trCovD: number };
    expect(pt).toMatchObject({ kind: 'torch', family: 'svd', trCovD: 0.300048828125 });
  });

  it('bad arguments: one line, exit 2', () => {
    for (const args of [
      ['stats', 'import', 'x.pt', '--family', 'sora', '--height', '8', '--width', '8', '--out', 'y'],
      ['stats', 'compute', '--videos', dir, '--model', dir, '--out', 'x', '--size', '320by512'],
      ['stats', 'compute', '--videos', dir, '--model', dir, '--out', 'x', '--shard', '3/3'],
      ['stats', 'compute', '--videos', dir, '--model', dir, '--out', 'x', '--shards', '4'],
    ]) {
      const r = cli(...args);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(cli('stats', 'compute', '--videos', dir, '--model', dir, '--out', 'x', '--shards', '4').stderr).toMatch(/AWS_BATCH_JOB_ARRAY_INDEX/);
  });
});
