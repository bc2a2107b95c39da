/**
 * `npm run test:finetune-real` (issue 20, docs/finetuning.md §8): a short real fine-tune on the
 * tiny real classes, export, statistics and publication, in one command:
 *   1. `python -m tools.reference.finetune_real train`: our launcher on the CIL authors' DynamiCrafter
 *      training class (a base without TimeNoise, then TimeNoise SIGTERMed half-way and resumed, and
 *      a control) and on diffusers' SVD classes (uninterrupted and interrupted), over synthetic
 *      moving-shape clips;
 *   2. one run of the fine-tune workflow's state machine on the local interpreter
 *      (local/src/finetuneRun.ts): the same TimeNoise run uninterrupted (FineTune), ExportBundle
 *      (cil: true), the statistics workflow on the same clips (ComputeStatistics), PublishModel;
 *   3. `… serve`: the workflow's weights against the resumed run's, the published bundle verified
 *      and sampled, and the paper-shaped toy table (control vs TimeNoise, motion against first-frame
 *      fidelity over seeds and held-out first frames).
 * Prints the loss summary and the table. Needs CIL_REFERENCE_REPO (the authors' checkout).
 * `-- --keep DIR` keeps the outputs (`-- --keep DIR --reuse-train` starts again after the train phase
 * of an earlier run kept there); other arguments go to the Python driver (e.g. `--dc-steps 8`).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { FinetuneRunResult } from '../local/src/finetuneRun.ts';
import { runLocalFinetune } from '../local/src/finetuneRun.ts';

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
interface Plain {
  readonly steps: number;
  readonly curve: Curve;
  readonly seconds: number;
}
export interface Summary {
  readonly base: Plain;
  readonly dynamicrafter: Run & { served: { cil: boolean; id: string; frames: number; seconds: number } };
  readonly control: Plain;
  readonly svd: Run & { evalLoss?: { before: number; after: number; draws: number; clips: number } };
  readonly toy: { baseSteps: number; steps: number; seeds: number[]; images: number; rows: ToyRow[]; seconds: number };
  readonly workflow: {
    uploads: { key: string; path: string }[];
    input: Record<string, unknown>;
    fetch: { bundle: string; statistics: string; run: string };
    result?: Pick<FinetuneRunResult, 'status' | 'states' | 'jobs' | 'error'> & { seconds: number };
  };
  readonly trainSeconds: number;
  readonly serveSeconds: number;
}

const f = (x: number, d = 4): string => x.toFixed(d);

/** The printed report: loss curves, resume, serving, and the item-4 table. */
export function report(s: Summary): string {
  const lines = ['loss (mean of the first → last quarter of the steps), SIGTERM + resume:'];
  const plain = (name: string, r: Plain): string => `  ${name}: ${r.steps} steps, loss ${f(r.curve.firstQuarterMean)} → ${f(r.curve.lastQuarterMean)} (${r.seconds} s)`;
  lines.push(plain('DynamiCrafter base (authors\' training class, tiny; random weights → the clips, no TimeNoise)', s.base));
  for (const [name, r] of [['DynamiCrafter base → TimeNoise (β_m 100, a 5, replace)', s.dynamicrafter], ['SVD (diffusers classes, tiny)', s.svd]] as const) {
    lines.push(`  ${name}: ${r.steps} steps, loss ${f(r.curve.firstQuarterMean)} → ${f(r.curve.lastQuarterMean)}; ` +
      `SIGTERM at step ${r.interruptedAt}, resumed from ${r.resumedFrom}: ${r.resume.identical ? `all ${r.resume.tensors} tensors identical to the uninterrupted run's` : `${r.resume.different} of ${r.resume.tensors} tensors differ`} (${r.seconds} s)`);
  }
  const e = s.svd.evalLoss;
  if (e) lines.push(`  SVD, loss on ${e.clips} fixed clips × ${e.draws} fixed draws (σ, noise, coins: common random numbers), base → fine-tuned: ${f(e.before)} → ${f(e.after)}`);
  lines.push(plain('DynamiCrafter base → control (no TimeNoise, same seed and batches)', s.control));
  const sv = s.dynamicrafter.served;
  lines.push(`served: the published bundle ${sv.id} (cil: ${sv.cil}) and its statistics from the same clips: verify-bundle ok, cil generate → ${sv.frames} frames (${sv.seconds} s)`);
  lines.push(
    '',
    `toy check (item 4): ${s.toy.images} held-out first frames × ${s.toy.seeds.length} seeds = ${s.toy.rows[0]?.samples ?? 0} samples per row; base trained ${s.toy.baseSteps} steps, then ${s.toy.steps} more steps each;`,
    'both sampled alike (10 DDIM steps from M = 940, Analytic-Init on the same statistics); mean ± std over the samples',
    '| model | final loss | motion (mean |Δframe|, 0–255) | first-frame PSNR (dB) |',
    '|---|---|---|---|',
  );
  for (const r of s.toy.rows) lines.push(`| ${r.model} | ${f(r.finalLoss)} | ${f(r.motion[0], 2)} ± ${f(r.motion[1], 2)} | ${f(r.firstFramePsnrDb[0], 2)} ± ${f(r.firstFramePsnrDb[1], 2)} |`);
  lines.push(
    'Tiny random-weight models after tens of CPU steps: the differences are read against the spread (±), and at this scale',
    'they say nothing about the paper\'s effect on real weights (docs/finetuning.md §8).',
  );
  const wf = s.workflow.result;
  if (wf) {
    lines.push('', `fine-tune workflow (local interpreter, local Batch, local S3): ${wf.status} in ${wf.seconds} s; states: ${wf.states.join(' → ')}`);
    for (const j of wf.jobs) lines.push(`  ${j.name} (${j.definition}): ${j.status}, exit ${j.exitCode ?? '-'}, ${j.seconds} s`);
  }
  lines.push('', `phases: train ${s.trainSeconds} s, workflow ${wf?.seconds ?? '-'} s, serve ${s.serveSeconds} s`);
  return lines.join('\n');
}

function python(args: string[]): void {
  const r = spawnSync(PY, ['-m', 'tools.reference.finetune_real', ...args], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, CIL_NODE: process.execPath } });
  if (r.status !== 0) throw new Error(`test:finetune-real: the Python driver (${args[0]}) exited ${r.status ?? r.signal}`);
}

async function main(argv: string[]): Promise<number> {
  const repo = process.env.CIL_REFERENCE_REPO;
  if (!repo) {
    console.error('test:finetune-real: CIL_REFERENCE_REPO is not set; it needs a checkout of thu-ml/cond-image-leakage (the authors\' DynamiCrafter training class): CIL_REFERENCE_REPO=/path/to/it npm run test:finetune-real');
    return 2;
  }
  let keep: string | null = null;
  let reuseTrain = false;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--keep') keep = argv[++i] ?? null;
    else if (argv[i] === '--reuse-train') reuseTrain = true;
    else rest.push(argv[i]);
  }
  if (reuseTrain && !keep) {
    console.error('test:finetune-real: --reuse-train needs --keep DIR (the folder of an earlier run whose train phase finished)');
    return 2;
  }
  const out = keep ? resolve(keep) : mkdtempSync(join(tmpdir(), 'cil-finetune-real-'));
  const t0 = Date.now();
  try {
    if (!reuseTrain) python(['train', '--out', out, ...rest]);
    // A fresh bucket: the run id's checkpoints would be resumed, a published id refused.
    rmSync(join(out, 'workflow'), { recursive: true, force: true });
    const file = join(out, 'summary.json');
    const before = JSON.parse(readFileSync(file, 'utf8')) as Summary;
    const w = before.workflow;
    const t1 = Date.now();
    const r = await runLocalFinetune({
      dataDir: join(out, 'workflow'),
      name: 'ft-shapes-1',
      input: w.input,
      uploads: w.uploads,
      python: PY,
      fetch: [
        { key: `models/${String(w.input.modelId)}/`, path: w.fetch.bundle },
        { key: `statistics/${String(w.input.modelId)}.safetensors`, path: w.fetch.statistics },
        { key: 'finetune/runs/ft-shapes-1/', path: w.fetch.run },
      ],
      log: (line) => console.error(`[workflow] ${line}`),
    });
    const result = { status: r.status, states: r.states, jobs: r.jobs, error: r.error, seconds: Math.round((Date.now() - t1) / 1000) };
    writeFileSync(file, JSON.stringify({ ...before, workflow: { ...w, result } }, null, 2));
    if (r.status !== 'SUCCEEDED') {
      console.error(`test:finetune-real: the fine-tune workflow ${r.status}: ${r.error?.name ?? ''} ${r.error?.message.slice(0, 3000) ?? ''}; job logs under ${join(out, 'workflow', 'logs')}${keep ? '' : ' (pass -- --keep DIR to keep them)'}`);
      return 1;
    }
    python(['serve', '--out', out, ...rest]);
    const s = JSON.parse(readFileSync(file, 'utf8')) as Summary;
    console.log(`\n${report(s)}\nwall clock ${((Date.now() - t0) / 1000).toFixed(0)} s${keep ? `; outputs in ${out}` : ''}`);
    const ok = s.dynamicrafter.resume.identical && s.svd.resume.identical && s.dynamicrafter.served.cil;
    return ok ? 0 : 1;
  } catch (e) {
    console.error((e as Error).message);
    return 1;
  } finally {
    if (!keep) rmSync(out, { recursive: true, force: true });
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
