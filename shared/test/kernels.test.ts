/**
 * The WebAssembly SIMD kernels (kernels.wat) against the JavaScript loops they replace: the same
 * bits on random inputs of odd and even lengths, and committed bytes that are exactly the WAT
 * source's assembly.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { BYTES_PATH, kernelsModuleText } from '../../scripts/build-kernels.ts';
import { assemble, WatError } from '../../scripts/wat.ts';
import { cfg, perFrameGuidance, twoScaleGuidance } from '../src/sampler/guidance.ts';
import type { Branches, GuidedOutput } from '../src/sampler/guidance.ts';
import { kernelBackend, kernelBackends, setKernelBackend } from '../src/sampler/kernels.ts';
import type { KernelBackend } from '../src/sampler/kernels.ts';
import { KERNELS_WASM } from '../src/sampler/kernelsWasm.ts';
import { NormalGenerator } from '../src/sampler/rng.ts';
import { fusedUpdate } from '../src/sampler/sampler.ts';
import type { StepCoefs } from '../src/sampler/sampler.ts';
import { tensor } from '../src/sampler/tensor.ts';

const initial = kernelBackend();
afterEach(() => setKernelBackend(initial));

/** Runs `fn` on each backend and returns its results in the order ['js', 'wasm-simd']. */
function both<T>(fn: () => T): [T, T] {
  const out = (['js', 'wasm-simd'] as KernelBackend[]).map((b) => {
    setKernelBackend(b);
    return fn();
  });
  return [out[0], out[1]];
}

/** Bitwise equality of float32 arrays (NaN payloads and −0 included). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Random float32 values of mixed scales with exact zeros of both signs sprinkled in. */
function randomData(n: number, seed: number): Float32Array {
  const g = NormalGenerator.fromSeed(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const r = g.uniform();
    out[i] = r < 0.02 ? (r < 0.01 ? 0 : -0) : g.next() * 10 ** Math.floor(g.uniform() * 8 - 4);
  }
  return out;
}

describe('kernel bytes', () => {
  it('the committed kernelsWasm.ts is exactly the assembly of kernels.wat', () => {
    expect(readFileSync(BYTES_PATH, 'utf8')).toBe(kernelsModuleText());
  });

  it('the module validates, and Node 24 runs the WebAssembly SIMD backend by default', () => {
    expect((globalThis as unknown as { WebAssembly: { validate(b: Uint8Array): boolean } }).WebAssembly.validate(KERNELS_WASM)).toBe(true);
    expect(kernelBackends()).toEqual(['wasm-simd', 'js']);
    expect(initial).toBe('wasm-simd');
  });

  it('the assembler names what it cannot assemble', () => {
    expect(() => assemble('(module (func $f i32.frobnicate))')).toThrow(WatError);
    expect(() => assemble('(module (func $f local.get $nope))')).toThrow(/unknown local \$nope/);
    expect(() => assemble('(module (func $f br $nowhere))')).toThrow(/unknown label \$nowhere/);
  });

  it('an unknown backend is a RangeError that lists the available ones', () => {
    expect(() => setKernelBackend('gpu' as KernelBackend)).toThrow(/'gpu' is not available here; available: wasm-simd, js/);
  });
});

describe('both backends give the same bits', () => {
  it('normal fill: lengths 0…40 and large, sub-ranges, and the generator state after', () => {
    const lengths = [...Array.from({ length: 41 }, (_, i) => i), 1023, 4097, 65537];
    for (const n of lengths) {
      const [a, b] = both(() => {
        const g = NormalGenerator.fromSeed(1000 + n);
        const out = new Float32Array(n + 6).fill(7);
        g.fill(out, 3, n + 3);
        g.fill(out, n + 3, n + 6);
        return { out, state: g.state(), drawn: g.drawn };
      });
      expect(sameBits(a.out, b.out), `n = ${n}`).toBe(true);
      expect(b.state).toEqual(a.state);
      expect(b.drawn).toBe(a.drawn);
    }
  });

  it('normal fill: a long stream covers the tail and wedge paths identically', () => {
    // 2^20 draws: ≈ 1.2 % leave the fast path, a few hundred reach the tail beyond R.
    const [a, b] = both(() => {
      const out = new Float32Array(1 << 20);
      NormalGenerator.fromSeed(77).fill(out);
      return out;
    });
    expect(a.some((v) => Math.abs(v) > 3.442619855899)).toBe(true);
    expect(sameBits(a, b)).toBe(true);
  });

  it('guidance rescale: the std ratio of CFG for one and several batch items, odd and even segments', async () => {
    for (const [dims, seed] of [[[1, 4, 3, 5, 7], 1], [[2, 3, 1, 4, 4], 2], [[3, 1, 1, 1, 5], 3], [[1, 1, 1, 1, 2], 4]] as const) {
      const n = (dims as readonly number[]).reduce((p, d) => p * d, 1);
      const x = tensor(randomData(n, seed), dims);
      const outs: Branches = { cond: tensor(randomData(n, seed + 10), dims), uncond: tensor(randomData(n, seed + 20), dims) };
      const run = (): Promise<GuidedOutput> => cfg(() => Promise.resolve(outs), { scale: 7.5, rescale: 0.7 })({ x, modelTime: 1, inputScale: 1, step: 0 });
      setKernelBackend('js');
      const a = await run();
      setKernelBackend('wasm-simd');
      const b = await run();
      expect(b.weights, `dims ${dims.join('×')}`).toEqual(a.weights);
      expect(Object.is(a.weights[0][0], b.weights[0][0])).toBe(true);
    }
  });

  it('fused update: 1–4 branches, with and without noise, odd and even segment lengths, per-segment weights', async () => {
    const step: StepCoefs = { index: 0, modelTime: 1, inputScale: 1, xCoef: 0.9731, outCoef: -0.0412, noiseStd: 0.137 };
    const cases: [number[], string][] = [
      [[1, 1, 1, 1, 1], 'cfg1'], [[1, 3, 1, 1, 7], 'cfg'], [[1, 5, 2, 3, 3], 'perframe'], [[2, 3, 1, 1, 3], 'perframe'],
      [[1, 2, 1, 5, 9], 'two'], [[1, 2, 2, 4, 4], 'cfg'], [[1, 1, 1, 1, 2], 'two'],
    ];
    let seed = 100;
    for (const [dims, kind] of cases) {
      const n = dims.reduce((p, d) => p * d, 1);
      const outs: Branches = {
        cond: tensor(randomData(n, seed++), dims),
        uncond: tensor(randomData(n, seed++), dims),
        uncondImage: tensor(randomData(n, seed++), dims),
      };
      const x0 = randomData(n, seed++);
      const z = randomData(n, seed++);
      const model = () => Promise.resolve(outs);
      const guided = kind === 'cfg1' ? cfg(model, { scale: 1 }) : kind === 'cfg' ? cfg(model, { scale: 7.5 })
        : kind === 'perframe' ? perFrameGuidance(model, { min: 1, max: 3 }) : twoScaleGuidance(model, { text: 7.5, image: 2.5 });
      const g = await guided({ x: tensor(x0, dims), modelTime: 1, inputScale: 1, step: 0 });
      // A fourth branch exercises the general loop (JavaScript on both backends).
      const four: GuidedOutput = { ...g, branches: [...g.branches, z], weights: [...g.weights, Float64Array.of(0.25)] };
      for (const go of [g, four]) {
        for (const noise of [z, null]) {
          const [a, b] = both(() => {
            const x = x0.slice();
            fusedUpdate(x, step, go, noise);
            return x;
          });
          expect(sameBits(a, b), `${kind} ${dims.join('×')} branches ${go.branches.length} noise ${noise !== null}`).toBe(true);
        }
      }
    }
  });
});
