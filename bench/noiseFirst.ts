/**
 * The first noise fills of a fresh process (issue 17, "fast from the first step"): imports the
 * sampler, then times the fills of three DDIM steps (163,840 normals each) one by one. With `js`
 * it first removes the WebAssembly global, as a runtime without it, so the JavaScript fallback
 * runs with its own load-time warm-up. Prints { backend, ms }.
 *
 *   node bench/noiseFirst.ts [wasm|js]
 */
import { performance } from 'node:perf_hooks';

if (process.argv[2] === 'js') delete (globalThis as { WebAssembly?: unknown }).WebAssembly;
const { NormalGenerator, kernelBackend } = await import('#shared/sampler');
const z = new Float32Array(163840);
const g = NormalGenerator.fromSeed(11);
const ms: number[] = [];
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  g.fill(z);
  ms.push(performance.now() - t0);
}
process.stdout.write(`${JSON.stringify({ backend: kernelBackend(), ms })}\n`);
