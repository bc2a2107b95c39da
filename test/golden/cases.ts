/**
 * Golden runs: fixed requests through the real job path (resolveRequest → runJob) on the demo model
 * and on committed stand-in bundles of all three families, plus `cil plan --json` for each family.
 * Their outputs were recorded (test/golden/record.ts) before the "one house" restructuring, so
 * test/golden.test.ts can prove a refactor changed no byte of what a user gets.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { writeDemoBundle, DEMO_DEFAULTS } from '../../demo/src/bundle.ts';
import { runJob } from '../../gpu-worker/src/job.ts';
import { parseJobRequest } from '#shared/schemas';
import { resolveRequest } from '#shared/schemas';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GOLDEN = join(ROOT, 'test', 'fixtures', 'golden');
/** Stand-in bundles exported by tools/export (tools/export/tests, float32 and float16), parity data left out. */
export const BUNDLES = join(GOLDEN, 'bundles');
export const EXPECTED = join(GOLDEN, 'expected');

export interface GoldenCase {
  readonly name: string;
  /** 'demo' builds the demo model with `demo` options; anything else is a folder under BUNDLES. */
  readonly bundle: string;
  readonly demo?: Partial<typeof DEMO_DEFAULTS>;
  /** The job request, as an upload would send it. */
  readonly request: Record<string, unknown>;
  /** Statistics file under BUNDLES, for Analytic-Init on a stand-in. */
  readonly statistics?: string;
  readonly image: { width: number; height: number };
}

export const CASES: readonly GoldenCase[] = [
  { name: 'demo-default', bundle: 'demo', request: { prompt: 'a boat sails to the left', seed: 7, outputs: ['png-frames', 'latent-npy'] }, image: { width: 320, height: 200 } },
  {
    name: 'demo-small-plain', bundle: 'demo', demo: { height: 64, width: 96, frames: 8 },
    request: { prompt: 'zoom in', seed: 3, steps: 6, analyticInit: false, eta: 0, guidanceScale: 1, outputs: ['png-frames', 'latent-npy'] }, image: { width: 96, height: 64 },
  },
  {
    name: 'demo-small-reference', bundle: 'demo', demo: { height: 64, width: 96, frames: 8 },
    request: { prompt: 'pan right', seed: 11, steps: 5, start: 900, guidanceScale: 4, guidanceRescale: 0, compat: 'reference', outputs: ['png-frames', 'latent-npy'] }, image: { width: 50, height: 70 },
  },
  {
    name: 'dynamicrafter-analytic', bundle: 'dynamicrafter', statistics: 'dynamicrafter/statistics.safetensors',
    request: { prompt: 'a boat moves left', seed: 5, steps: 4, outputs: ['png-frames', 'latent-npy'] }, image: { width: 80, height: 48 },
  },
  { name: 'videocrafter-plain', bundle: 'videocrafter', request: { prompt: 'waves', seed: 9, steps: 3, analyticInit: false, outputs: ['png-frames', 'latent-npy'] }, image: { width: 64, height: 64 } },
  { name: 'svd-base', bundle: 'svd', request: { seed: 2, steps: 3, analyticInit: false, outputs: ['png-frames', 'latent-npy'] }, image: { width: 72, height: 60 } },
  {
    name: 'svd-cil-fp16-analytic', bundle: 'svd-cil-fp16', statistics: 'svd-cil-fp16/statistics.safetensors',
    request: { seed: 4, steps: 3, outputs: ['png-frames', 'latent-npy'] }, image: { width: 64, height: 64 },
  },
];

/** `cil plan` argument lists whose JSON must not change. */
export const PLAN_CASES: readonly (readonly string[])[] = [
  ['--family', 'dynamicrafter'],
  ['--family', 'dynamicrafter', '--trcov-d', '0.83', '--steps', '10'],
  ['--family', 'dynamicrafter', '--compat', 'reference', '--spacing', 'uniform_trailing', '--trcov-d', '1.2'],
  ['--family', 'videocrafter', '--cil', '--trcov-d', '0.5', '--eta', '0.3'],
  ['--family', 'videocrafter', '--spacing', 'quad', '--steps', '7'],
  ['--family', 'svd'],
  ['--family', 'svd', '--cil', '--trcov-d', '0.7', '--steps', '12'],
];

/** A deterministic test image: gradients plus a checkerboard, so every pixel of the input matters. */
export async function testImage(file: string, width: number, height: number): Promise<void> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    const i = (y * width + x) * 3;
    raw[i] = Math.floor((x * 255) / width);
    raw[i + 1] = Math.floor((y * 255) / height);
    raw[i + 2] = ((x >> 3) + (y >> 3)) % 2 ? 220 : 30;
  }
  await writeFile(file, await sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer());
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** What a case produced: file name → bytes (the latent, the frames, and for the demo the bundle's files). */
export type CaseOutput = Map<string, Buffer>;

async function filesUnder(dir: string, prefix: string, into: CaseOutput): Promise<void> {
  for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await filesUnder(p, `${prefix}${e.name}/`, into);
    else into.set(`${prefix}${e.name}`, await readFile(p));
  }
}

/** Runs one case in `work` (an empty folder) and returns every output byte that must not change. */
export async function runCase(c: GoldenCase, work: string): Promise<{ files: CaseOutput; metadata: Record<string, unknown> }> {
  const files: CaseOutput = new Map();
  let model = join(BUNDLES, c.bundle);
  if (c.bundle === 'demo') {
    model = join(work, 'bundle');
    await writeDemoBundle(model, { ...DEMO_DEFAULTS, ...c.demo });
    await filesUnder(model, 'bundle/', files);
  }
  const image = join(work, 'input.png');
  await testImage(image, c.image.width, c.image.height);
  const out = join(work, 'out');
  const metadata = await runJob(
    { image, model, out, statistics: c.statistics ? join(BUNDLES, c.statistics) : null, initNoise: null },
    {
      provider: 'cpu',
      threads: 1,
      params: (bundle) => {
        const json = { model: bundle.manifest.id, ...c.request };
        const req = parseJobRequest(json, c.name);
        return { ...resolveRequest({ request: req, explicit: new Set(Object.keys(json)) }, bundle.manifest, () => 1, c.name), saveLatent: true };
      },
    },
  );
  for (const n of (await readdir(join(out, 'frames'))).sort()) files.set(`frames/${n}`, await readFile(join(out, 'frames', n)));
  files.set('latent.npy', await readFile(join(out, 'latent.npy')));
  return { files, metadata: stableMetadata(metadata as unknown as Record<string, unknown>) };
}

/** Metadata without what legitimately varies per run (timings, clock, the temporary paths). */
export function stableMetadata(m: Record<string, unknown>): Record<string, unknown> {
  const { timings: _t, createdAt: _c, ...rest } = m;
  const model = { ...(rest.model as Record<string, unknown>) };
  delete model.source;
  const analytic = rest.analyticInit as Record<string, unknown> | null;
  return { ...rest, model, analyticInit: analytic ? { ...analytic, statistics: '<file>' } : null };
}

/** The recorded form of a case: sha256 of every output file, the latent itself, and the metadata. */
export function digest(files: CaseOutput): Record<string, string> {
  return Object.fromEntries([...files].map(([k, v]) => [k, sha256(v)]));
}
