#!/usr/bin/env node
// `npx cil`: the CLI is TypeScript, run from a prebuilt JavaScript bundle while that is fresh
// (bin/bundle.js: built on the first run after a change) and else by Node 24's built-in type
// stripping. The project pins Node 24 as a devDependency (the `node` package); when an older node
// started this shim (the system's, say), re-run the CLI under the pinned one.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const main = join(root, 'cli', 'main.ts');
const major = Number(process.versions.node.split('.')[0]);
if (major >= 24) {
  const { bundledMain } = await import('./bundle.js');
  const { run } = await import(pathToFileURL((await bundledMain()) ?? main).href);
  const code = await run(process.argv.slice(2));
  if (code !== 0) process.exitCode = code;
} else {
  const pinned = join(root, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(pinned)) {
    console.error(`cil: needs Node.js ≥ 24 (found ${process.version}); run \`npm ci\` in ${root} to install the pinned one`);
    process.exit(1);
  }
  const r = spawnSync(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
