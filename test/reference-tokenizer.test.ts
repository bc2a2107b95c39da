/**
 * The tokenizer.json that tools/export/tokenizer.py builds from open_clip's own BPE vocabulary,
 * read by the worker's loader (gpu-worker/src/tokenizer.ts, @huggingface/tokenizers), gives the
 * same 77 ids as open_clip.tokenize — what DynamiCrafter and VideoCrafter1 were trained with — on
 * every prompt of tools/reference/tests/tokenizer_prompts.py, both as generated and as the exporter
 * copies it into a bundle (padding 0 / 77, tools/export/bundle.py). The known differences
 * (ftfy's mojibake repair, HTML entities; docs/models.md §3) are checked to still differ, so the
 * docs stay true. The Python side runs in the repository's .venv; without it this suite is skipped,
 * loudly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTokenizer } from '../gpu-worker/src/tokenizer.ts';
import type { PythonRun } from './helpers/python.ts';
import { pythonOrWarn, reportPythonSkips, runPython, unittestProblem, unittestSummary } from './helpers/python.ts';

const missing = pythonOrWarn('test/reference-tokenizer.test.ts', ['open_clip', 'tokenizers']);
const CONTEXT = 77;

const PROGRAM = `
import json, sys
import open_clip
from tools.export.bundle import prepare_tokenizer
from tools.export.tokenizer import write_clip_tokenizer_json
from tools.reference.tests.tokenizer_prompts import KNOWN_DIFFERENT, PROMPTS
raw, bundled = sys.argv[1], sys.argv[2]
write_clip_tokenizer_json(raw)
prepare_tokenizer(raw, bundled)
ids = lambda ps: open_clip.tokenize(ps, context_length=${CONTEXT}).tolist()
print(json.dumps({"prompts": PROMPTS, "ids": ids(PROMPTS), "known": KNOWN_DIFFERENT, "knownIds": ids(KNOWN_DIFFERENT)}))
`;

interface PythonSide {
  prompts: string[];
  ids: number[][];
  known: string[];
  knownIds: number[][];
}

describe.skipIf(missing !== null)('generated tokenizer.json through the worker equals open_clip.tokenize', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cil-tokenizer-'));
  const raw = join(dir, 'tokenizer.json');
  const bundled = join(dir, 'bundle-tokenizer.json');
  let py: PythonSide;
  let suite: PythonRun;

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('the Python suite passes (vocabulary, 56 prompts, truncation, the exporter\'s bundle copy)', () => {
    // The tokenizer module only: the training-parity module beside it needs the authors' checkout and
    // runs in test/finetune-real.test.ts.
    suite = runPython(['-m', 'unittest', 'discover', '-v', '-s', 'tools/reference/tests', '-t', '.', '-p', 'test_tokenizer.py']);
    expect(unittestProblem(suite), suite.output.slice(-4000)).toBeNull();
  }, 120_000);

  it('the Python suite skipped none of its tests (skipped here, loudly, when it did)', ({ skip }) => {
    expect(suite, 'the suite ran in the test above').toBeDefined();
    reportPythonSkips(suite, 'tools/reference/tests', skip);
    expect(unittestSummary(suite.output)?.skipped).toBe(0);
  });

  it('the Python side writes the file and open_clip’s ids', () => {
    const r = runPython(['-c', PROGRAM, raw, bundled]);
    expect(r.status, r.output).toBe(0);
    py = JSON.parse(r.output.trim().split('\n').pop()!) as PythonSide;
    expect(py.prompts.length).toBeGreaterThanOrEqual(50);
  }, 120_000);

  it.each([
    ['as generated', raw],
    ['as the exporter copies it into a bundle', bundled],
  ])('every prompt, %s', async (_, file) => {
    const tok = await loadTokenizer(file, CONTEXT);
    const bad: string[] = [];
    py.prompts.forEach((p, i) => {
      const ours = tok.encode(p);
      if (JSON.stringify(ours) !== JSON.stringify(py.ids[i])) bad.push(`${JSON.stringify(p.slice(0, 60))}: ${ours.join(',')} vs ${py.ids[i].join(',')}`);
    });
    expect(bad).toEqual([]);
  });

  it('truncation keeps the end token; padding is id 0', async () => {
    const tok = await loadTokenizer(bundled, CONTEXT);
    const long = tok.encode('a '.repeat(200));
    expect([long.length, long[0], long[CONTEXT - 1]]).toEqual([CONTEXT, 49406, 49407]);
    expect(tok.encode('')).toEqual([49406, 49407, ...Array<number>(CONTEXT - 2).fill(0)]);
  });

  it('the documented differences (mojibake, HTML entities) still differ', async () => {
    const tok = await loadTokenizer(raw, CONTEXT);
    py.known.forEach((p, i) => expect(tok.encode(p), p).not.toEqual(py.knownIds[i]));
  });
});
