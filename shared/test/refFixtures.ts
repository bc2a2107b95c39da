/**
 * Loads the reference fixtures: numbers computed by running the authors' code, committed in
 * test/fixtures/reference (made by `python -m tools.reference.fixtures`; its README.md says how).
 * CIL_REFERENCE_DIR points the suites at another copy (e.g. ../shared/fixtures/reference-excerpt,
 * which has the same files); where the folder is absent, suites using it skip and say so loudly.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { announceSkip } from '../../test/helpers/skips.ts';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REFERENCE_DIR = process.env.CIL_REFERENCE_DIR ?? join(repoRoot, 'test', 'fixtures', 'reference');
export const HAVE_REFERENCE = existsSync(join(REFERENCE_DIR, 'dynamicrafter_50steps_M1000.json'));

if (!HAVE_REFERENCE) {
  announceSkip(
    'reference-fixture suites (numbers from the authors\' code)',
    `${REFERENCE_DIR} has no dynamicrafter_50steps_M1000.json`,
    'unset CIL_REFERENCE_DIR (test/fixtures/reference is committed), or point it at a copy holding those files',
  );
}

export function loadReference<T = Record<string, unknown>>(file: string): T {
  return JSON.parse(readFileSync(join(REFERENCE_DIR, file), 'utf8')) as T;
}

/** Max relative error, with absolute error where the reference value is 0. */
export function maxRelErr(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (ours.length !== ref.length) return Infinity;
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ours[i] - ref[i]);
    m = Math.max(m, ref[i] === 0 ? d : d / Math.abs(ref[i]));
  }
  return m;
}

export const reversed = (a: readonly number[]): number[] => [...a].reverse();

/** Our plan's fields (planJson) and the authors' DDIMSampler attribute each one is compared with. */
export const DDIM_COLUMNS: readonly (readonly [string, string])[] = [
  ['timesteps', 'ddim_timesteps'],
  ['alphas', 'ddim_alphas'],
  ['alphasPrev', 'ddim_alphas_prev'],
  ['sigmas', 'ddim_sigmas'],
  ['scale', 'ddim_scale_arr'],
  ['scalePrev', 'ddim_scale_arr_prev'],
];
