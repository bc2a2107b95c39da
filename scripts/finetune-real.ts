/**
 * `npm run test:finetune-real` (issue 20, docs/finetuning.md §8): a short real fine-tune on the
 * tiny real classes, run by `python -m tools.reference.finetune_real`:
 *   - our launcher on the CIL authors' DynamiCrafter training class and on diffusers' SVD classes
 *     (widths shrunk), over synthetic moving-shape clips: the loss curve, and a run SIGTERMed
 *     half-way and resumed, compared weight by weight with the uninterrupted one;
 *   - the DynamiCrafter result exported (cil: true), its statistics computed on the same clips
 *     (`cil stats compute`), `cil verify-bundle`, `cil generate`;
 *   - the paper-shaped toy check: base vs TimeNoise fine-tune, motion against first-frame fidelity
 *     over several seeds and held-out first frames.
 * Then prints the loss summary and the table. Needs CIL_REFERENCE_REPO (the authors' checkout).
 * `-- --keep DIR` keeps the outputs; other arguments go to the Python driver (e.g. `--skip-toy`).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const PY = join(process.env.CIL_VENV ?? join(ROOT, '.venv'), 'bin', 'python');

interface Curve {
  readonly losses: number[];
  readonly firstQuarterMean: number;
  readonly lastQuarterMean: number;
}
interface Run {
  readonly steps: number;
  readonly curve: Curve;
  readonly interruptedAt: number;
  readonly resumedFrom: number;
  readonly resume: { tensors: number; different: number; identical: boolean };
  readonly seconds: number;
}
interface ToyRow {
  readonly model: string;
  readonly finalLoss: number;
  readonly samples: number;
  readonly motion: [number, number];
  readonly firstFramePsnrDb: [number, number];
}
export interface Summary {
  readonly dynamicrafter: Run & { served: { cil: boolean; id: string; frames: number; seconds: number } };
  readonly svd: Run;
  readonly toy?: { baseSteps: number; steps: number; seeds: number[]; images: number; rows: ToyRow[] };
  readonly seconds: number;
}

const f = (x: number, d = 4): string => x.toFixed(d);

/** The printed report: loss curves, resume, serving, and the item-4 table. */
export function report(s: Summary): string {
  const lines = ['loss (mean of the first → last quarter of the steps), SIGTERM + resume:'];
  for (const [name, r] of [['DynamiCrafter (authors\' training class, tiny)', s.dynamicrafter], ['SVD (diffusers classes, tiny)', s.svd]] as const) {
    lines.push(`  ${name}: ${r.steps} steps, loss ${f(r.curve.firstQuarterMean)} → ${f(r.curve.lastQuarterMean)}; ` +
      `SIGTERM at step ${r.interruptedAt}, resumed from ${r.resumedFrom}: ${r.resume.identical ? 'identical weights' : `${r.resume.different} of ${r.resume.tensors} tensors differ`} (${r.seconds} s)`);
  }
  const sv = s.dynamicrafter.served;
  lines.push(`served: bundle ${sv.id} (cil: ${sv.cil}), statistics from the same clips, verify-bundle ok, cil generate → ${sv.frames} frames (${sv.seconds} s)`);
  if (s.toy) {
    lines.push('', `toy check: ${s.toy.images} held-out first frames × ${s.toy.seeds.length} seeds; base trained ${s.toy.baseSteps} steps, then ${s.toy.steps} more steps each`);
    lines.push('| model | final loss | motion (mean |Δframe|, 0–255) | first-frame PSNR (dB) |', '|---|---|---|---|');
    for (const r of s.toy.rows) lines.push(`| ${r.model} | ${f(r.finalLoss)} | ${f(r.motion[0], 2)} ± ${f(r.motion[1], 2)} | ${f(r.firstFramePsnrDb[0], 2)} ± ${f(r.firstFramePsnrDb[1], 2)} |`);
  }
  lines.push('', `total ${s.seconds} s`);
  return lines.join('\n');
}

function main(argv: string[]): number {
  const repo = process.env.CIL_REFERENCE_REPO;
  if (!repo) {
    console.error('test:finetune-real: CIL_REFERENCE_REPO is not set; it needs a checkout of thu-ml/cond-image-leakage (the authors\' DynamiCrafter training class): CIL_REFERENCE_REPO=/path/to/it npm run test:finetune-real');
    return 2;
  }
  let keep: string | null = null;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--keep') keep = argv[++i] ?? null;
    else rest.push(argv[i]);
  }
  const out = keep ? resolve(keep) : mkdtempSync(join(tmpdir(), 'cil-finetune-real-'));
  const t0 = Date.now();
  try {
    const r = spawnSync(PY, ['-m', 'tools.reference.finetune_real', '--out', out, ...rest], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) {
      console.error(`test:finetune-real: the Python driver exited ${r.status ?? r.signal}`);
      return 1;
    }
    const s = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Summary;
    console.log(`\n${report(s)}\nwall clock ${((Date.now() - t0) / 1000).toFixed(0)} s${keep ? `; outputs in ${out}` : ''}`);
    const ok = s.dynamicrafter.resume.identical && s.svd.resume.identical && s.dynamicrafter.served.cil;
    return ok ? 0 : 1;
  } finally {
    if (!keep) rmSync(out, { recursive: true, force: true });
  }
}

if (import.meta.main) process.exitCode = main(process.argv.slice(2));
