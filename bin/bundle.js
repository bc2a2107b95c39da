// The CLI as a prebuilt JavaScript bundle (issue 17: a CLI that starts at once). Node's type
// stripping costs about 0.2 s to start before the first .ts file, and every verb's module graph
// more; the bundle (dist/cli/: main.js, one chunk per lazily loaded verb, ortThread.js for the
// inference thread) is plain JavaScript. It is built by esbuild (a devDependency) on the first
// run after any of its sources changed, and used only while it is fresh: dist/cli/inputs.json
// lists every repository file it was built from, and a file newer than the build sends the next
// run to rebuild. Where esbuild is missing (a production install) or the build fails, the CLI runs
// from its TypeScript sources as before: the bundle is a cache, never a requirement.
//
//   node bin/bundle.js          builds it now (prints what it did; never fails)
//   CIL_NO_BUNDLE=1 cil …       runs from the sources
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DIST = join(ROOT, 'dist', 'cli');
const INPUTS = join(DIST, 'inputs.json');
const ENTRIES = { main: 'cli/main.ts', ortThread: 'gpu-worker/src/runtime/ortThread.ts' };

/** Whether the bundle exists and no input changed since it was built. */
function fresh() {
  try {
    const { startedMs, inputs } = JSON.parse(readFileSync(INPUTS, 'utf8'));
    for (const f of inputs) if (statSync(join(ROOT, f)).mtimeMs >= startedMs) return false;
    return true;
  } catch {
    return false;
  }
}

/** Builds dist/cli/; throws when esbuild is missing or the build fails. */
export async function buildBundle() {
  const startedMs = Date.now();
  const esbuild = await import('esbuild');
  mkdirSync(join(ROOT, 'dist'), { recursive: true });
  // Built aside, then moved in file by file (chunks first, inputs.json last): a CLI starting
  // meanwhile sees either the old bundle or the new one, and another build at the same time
  // writes the same content-hashed chunks.
  const tmp = mkdtempSync(join(ROOT, 'dist', '.cli-'));
  try {
    const r = await esbuild.build({
      absWorkingDir: ROOT,
      entryPoints: ENTRIES,
      outdir: tmp,
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node24',
      packages: 'external',
      entryNames: '[name]',
      chunkNames: 'chunk-[hash]',
      metafile: true,
      logLevel: 'silent',
    });
    const inputs = [...new Set([...Object.keys(r.metafile.inputs), 'package.json', 'bin/bundle.js'])].filter((f) => !f.startsWith('node_modules/'));
    mkdirSync(DIST, { recursive: true });
    const files = readdirSync(tmp);
    const order = [...files.filter((f) => f.startsWith('chunk-')), ...files.filter((f) => !f.startsWith('chunk-'))];
    for (const f of order) renameSync(join(tmp, f), join(DIST, f));
    writeFileSync(join(tmp, 'inputs.json'), `${JSON.stringify({ startedMs, inputs })}\n`);
    renameSync(join(tmp, 'inputs.json'), INPUTS);
    return { files: order.length, inputs: inputs.length };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The bundled entry (built first when missing or stale), or null to run from the sources. */
export async function bundledMain() {
  if (process.env.CIL_NO_BUNDLE === '1') return null;
  if (fresh()) return join(DIST, 'main.js');
  try {
    await buildBundle();
    return join(DIST, 'main.js');
  } catch {
    return null;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    const r = await buildBundle();
    process.stdout.write(`bundle: ${r.files} files in ${relative(process.cwd(), DIST) || '.'} from ${r.inputs} sources\n`);
  } catch (e) {
    process.stdout.write(`bundle: not built (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); the CLI runs from its TypeScript sources\n`);
  }
}
