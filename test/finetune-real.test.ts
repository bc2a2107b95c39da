/**
 * TimeNoise fine-tuning on the real classes (issue 20, docs/finetuning.md §8): the corruption of the
 * concat condition and of the image embedding, and one training step's loss, from the CIL authors'
 * own training code and from our launcher's recipes, on the same tiny real models, batch and noise
 * (tools/reference/tests/test_training_parity.py; DynamiCrafter with both embedding treatments,
 * VideoCrafter1, SVD with the authors' settings). The bars: within 1e-6 of their scale.
 *
 * It runs the authors' code, so it needs their checkout in $CIL_REFERENCE_REPO and is skipped,
 * loudly, without it. What needs no checkout — our launcher's exact resume, the staging folders
 * cleaned up, the synthetic clips — runs in the fine-tuning suite (test/timenoise.test.ts).
 * The longer run (fine-tune, resume, export, statistics, generate, the toy table) is
 * `npm run test:finetune-real`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe } from 'vitest';
import type { PythonRun } from './helpers/python.ts';
import { pythonOrWarn, runPython } from './helpers/python.ts';
import { pythonSuiteTests } from './helpers/pythonSuite.ts';
import { announceSkip } from './helpers/skips.ts';

const repo = process.env.CIL_REFERENCE_REPO;
const why = !repo ? 'CIL_REFERENCE_REPO is not set' : existsSync(join(repo, 'examples')) ? null : `CIL_REFERENCE_REPO=${repo} has no examples/ folder`;
if (why !== null) {
  announceSkip(
    'training parity of TimeNoise (corruption and loss vs the authors\' training code)',
    `${why}; it runs the authors' own training classes, from a checkout of thu-ml/cond-image-leakage that a clone cannot hold`,
    'clone that repository, then CIL_REFERENCE_REPO=/path/to/it npm test -- test/finetune-real.test.ts (docs/finetuning.md §8)',
  );
}
const noPython = why === null ? pythonOrWarn('test/finetune-real.test.ts', ['torch', 'diffusers', 'transformers', 'open_clip', 'omegaconf']) : 'skipped';

describe.skipIf(why !== null || noPython !== null)('TimeNoise training parity on the real classes', () => {
  let run: PythonRun;
  beforeAll(() => {
    run = runPython(['-m', 'unittest', '-v', 'tools.reference.tests.test_training_parity'], { CIL_REFERENCE_REPO: repo ?? '' }, 900_000);
  }, 900_000);
  pythonSuiteTests('tools/reference/tests/test_training_parity.py', 'tools/reference/tests', () => run);
});
