import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HAVE_REFERENCE, loadReference, maxRelErr, reversed } from '../../shared/test/refFixtures.ts';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'cil.js');

function cil(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function planJson(...args: string[]): Record<string, unknown> {
  const r = cil('plan', ...args, '--json');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('cil plan --json', () => {
  it('VP families print exactly the documented fields', () => {
    const j = planJson('--family', 'dynamicrafter');
    expect(Object.keys(j).sort()).toEqual(['alphas', 'alphasPrev', 'init', 'scale', 'scalePrev', 'sigmas', 'timesteps']);
    expect(Object.keys(j.init as object).sort()).toEqual(['meanCoef', 'std']);
    expect((j.timesteps as number[])[0]).toBe(939); // family default: M = 940
    expect((j.timesteps as number[]).length).toBe(50);
  });

  it('svd prints exactly the documented fields', () => {
    const j = planJson('--family', 'svd');
    expect(Object.keys(j).sort()).toEqual(['cIn', 'cOut', 'cSkip', 'init', 'initNoiseSigma', 'sigmas', 'timesteps']);
    expect(Object.keys(j.init as object)).toEqual(['std']);
    expect((j.sigmas as number[]).length).toBe(26);
  });

  it('videocrafter: uniform spacing, η = 1, starts at M; compat reference gives the published 981 … 1 grid', () => {
    const j = planJson('--family', 'videocrafter', '--start', '1000', '--steps', '50');
    expect(j.timesteps).toEqual(Array.from({ length: 50 }, (_, k) => 981 - 20 * k));
    const r = planJson('--family', 'videocrafter', '--start', '940', '--compat', 'reference', '--trcov-d', '0.1');
    expect((r.timesteps as number[])[0]).toBe(981);
    // ε-model, no zero-SNR: ᾱ[981] from the plain LDM betas, computed here from the formula
    let abar = 1;
    for (let k = 0; k <= 981; k++) {
      const r0 = Math.sqrt(0.00085) + (k * (Math.sqrt(0.012) - Math.sqrt(0.00085))) / 999;
      abar *= 1 - r0 * r0;
    }
    expect(Math.abs((r.alphas as number[])[0] - abar) / abar).toBeLessThan(1e-9);
    // dynamic rescale with VideoCrafter1's first scale_prev = scale_arr[0] = 1
    expect((r.scalePrev as number[])[49]).toBe(1);
  });

  it('--trcov-d gives Analytic-Init coefficients; svd gives √(init_noise_sigma² + trCov_d)', () => {
    const j = planJson('--family', 'svd', '--start', '100', '--steps', '10', '--trcov-d', '3');
    const ins = j.initNoiseSigma as number;
    expect(ins).toBeCloseTo(Math.sqrt(100 * 100 + 1), 6);
    expect((j.init as { std: number }).std).toBeCloseTo(Math.sqrt(ins * ins + 3), 9);
  });
});

describe.skipIf(!HAVE_REFERENCE)('cil plan --json equals the reference excerpt', () => {
  it('dynamicrafter, 50 steps, M = 1000 (≤ 1e-6 relative)', () => {
    const ref = loadReference<{ ddim: { float64: Record<string, number[]> } }>('dynamicrafter_50steps_M1000.json').ddim.float64;
    const j = planJson('--family', 'dynamicrafter', '--steps', '50', '--start', '1000') as Record<string, number[]>;
    expect(maxRelErr(j.timesteps, reversed(ref.ddim_timesteps))).toBe(0);
    expect(maxRelErr(j.alphas, reversed(ref.ddim_alphas))).toBeLessThan(1e-6);
    expect(maxRelErr(j.alphasPrev, reversed(ref.ddim_alphas_prev))).toBeLessThan(1e-6);
    expect(maxRelErr(j.sigmas, reversed(ref.ddim_sigmas))).toBeLessThan(1e-6);
    expect(maxRelErr(j.scale, reversed(ref.ddim_scale_arr))).toBeLessThan(1e-6);
    expect(maxRelErr(j.scalePrev, reversed(ref.ddim_scale_arr_prev))).toBeLessThan(1e-6);
  });
  it('svd, 25 steps, σ_max = 700 (≤ 1e-6 relative)', () => {
    const ref = loadReference<{ float64: { sigmas: number[]; timesteps: number[]; init_noise_sigma: number; per_step: Record<string, number>[] } }>('svd_25steps_sigmamax700.json').float64;
    const j = planJson('--family', 'svd', '--steps', '25', '--start', '700') as Record<string, number[]> & { initNoiseSigma: number };
    expect(maxRelErr(j.sigmas, ref.sigmas)).toBeLessThan(1e-6);
    expect(maxRelErr(j.timesteps, ref.timesteps)).toBeLessThan(1e-6);
    expect(maxRelErr(j.cIn, ref.per_step.map((r) => r.c_in))).toBeLessThan(1e-6);
    expect(maxRelErr(j.cSkip, ref.per_step.map((r) => r.c_skip))).toBeLessThan(1e-6);
    expect(maxRelErr(j.cOut, ref.per_step.map((r) => r.c_out))).toBeLessThan(1e-6);
    expect(Math.abs(j.initNoiseSigma - ref.init_noise_sigma)).toBeLessThan(1e-6);
  });
});

describe('cil plan: bad arguments', () => {
  const cases: [string[], RegExp][] = [
    [['--family', 'foo'], /--family must be one of dynamicrafter, videocrafter, svd, got 'foo'/],
    [['--family', 'svd', '--steps', 'abc'], /--steps must be an integer in \[1, 1000\], got 'abc'/],
    [['--family', 'dynamicrafter', '--steps', '0'], /--steps must be an integer/],
    [['--family', 'dynamicrafter', '--start', '1001'], /--start must be an integer M in \[1, 1000\]/],
    [['--family', 'dynamicrafter', '--start', '940.5'], /--start must be an integer M/],
    [['--family', 'dynamicrafter', '--eta', '-1'], /--eta must be a number in \[0, 1\]/],
    [['--family', 'dynamicrafter', '--spacing', 'cosine'], /--spacing must be one of uniform, uniform_trailing, quad/],
    [['--family', 'dynamicrafter', '--trcov-d', 'x'], /--trcov-d must be a number/],
    [['--family', 'dynamicrafter', '--steps', '60', '--start', '50'], /steps \(60\) must not exceed the start time M \(50\)/],
    [['--family', 'svd', '--spacing', 'quad'], /--spacing applies to DDIM families only/],
    [['--family', 'svd', '--start', '0.001'], /σ_min/],
    [['--family', 'dynamicrafter', '--compat', 'old'], /--compat must be one of paper, reference/],
    [[], /required option '--family/],
    [['--family', 'svd', '--bogus'], /unknown option '--bogus'/],
  ];
  for (const [args, msg] of cases) {
    it(`${args.join(' ') || '(no arguments)'} → one line, exit 2`, () => {
      const r = cil('plan', ...args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trim().split('\n').length).toBe(1);
    });
  }

  it('without --json prints a readable table', () => {
    const r = cil('plan', '--family', 'dynamicrafter', '--steps', '5', '--start', '1000');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/DDIM, 5 steps from M=1000/);
    expect(r.stdout.trim().split('\n').length).toBe(3 + 5);
  });
});
