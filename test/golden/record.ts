/**
 * Records the golden outputs (test/golden/cases.ts) into test/fixtures/golden/. Run once, before a
 * change that must not alter behaviour: `node test/golden/record.ts --bundles <dir>`, where <dir>
 * holds the stand-ins tools/export/tests leave in $CIL_EXPORT_TEST_OUT. It refuses to overwrite
 * recorded outputs unless given --force (re-recording is a behaviour change and needs a reason).
 */
import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NormalGenerator } from '#shared/sampler';
import { encodeFinalStatistics, MomentAccumulator } from '#shared/stats';
import { BUNDLES, CASES, EXPECTED, PLAN_CASES, ROOT, digest, runCase } from './cases.ts';

const { values } = parseArgs({ options: { bundles: { type: 'string' }, force: { type: 'boolean', default: false } } });
if (existsSync(EXPECTED) && !values.force) {
  console.error(`record: ${EXPECTED} exists; pass --force to re-record (a behaviour change)`);
  process.exit(2);
}

if (values.bundles) {
  for (const name of ['dynamicrafter', 'videocrafter', 'svd', 'svd-cil-fp16']) {
    const dest = join(BUNDLES, name);
    await rm(dest, { recursive: true, force: true });
    await cp(join(values.bundles, name), dest, { recursive: true, filter: (src) => !src.includes('/parity') });
  }
  // Statistics for Analytic-Init on the stand-ins: three latents from our generator.
  for (const [name, family, shape] of [['dynamicrafter', 'dynamicrafter', [1, 4, 4, 8, 8]], ['svd-cil-fp16', 'svd', [1, 4, 4, 8, 8]]] as const) {
    const acc = new MomentAccumulator([...shape]);
    const g = NormalGenerator.fromSeed(123);
    const n = shape.reduce((a: number, b: number) => a * b, 1);
    for (let k = 0; k < 3; k++) {
      const x = new Float32Array(n);
      g.fill(x);
      for (let i = 0; i < n; i++) x[i] = 0.5 * x[i] + 0.1 * k;
      acc.add(x);
    }
    const run = {
      family, modelId: name, bundleHash: 'golden', vaeId: 'stand-in', scaleFactor: 0.18215, height: 64, width: 64, frames: 4, fps: 8, seed: 0,
      latentShape: [...shape], shardCount: 1, datasetHash: '0'.repeat(64), datasetSize: 3,
    };
    await writeFile(join(BUNDLES, name, 'statistics.safetensors'), encodeFinalStatistics(acc, { run, createdAt: '2026-12-06T00:00:00.000Z', skipped: 0 }));
  }
}

await rm(EXPECTED, { recursive: true, force: true });
await mkdir(EXPECTED, { recursive: true });
for (const c of CASES) {
  const work = await mkdtemp(join(tmpdir(), 'cil-golden-'));
  try {
    const r = await runCase(c, work);
    await writeFile(join(EXPECTED, `${c.name}.json`), `${JSON.stringify({ files: digest(r.files), metadata: r.metadata }, null, 2)}\n`);
    await writeFile(join(EXPECTED, `${c.name}.latent.npy`), r.files.get('latent.npy')!);
    console.log(`${c.name}: ${r.files.size} files`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
const plans = PLAN_CASES.map((args) => ({ args, plan: JSON.parse(execFileSync(process.execPath, [join(ROOT, 'bin', 'cil.js'), 'plan', ...args, '--json'], { encoding: 'utf8' })) as unknown }));
await writeFile(join(EXPECTED, 'plans.json'), `${JSON.stringify(plans, null, 2)}\n`);
console.log(`recorded ${CASES.length} runs and ${plans.length} plans in ${EXPECTED} (${(await readdir(EXPECTED)).length} files)`);
