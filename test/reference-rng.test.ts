/**
 * The Python port of the noise generator (tools/reference/rng.py) against the TypeScript original
 * (shared/src/sampler/rng.ts): the reference pipelines are fed our noise through the port, so the two
 * must give the same stream bit for bit (docs/rng.md). 10^6 float32 normals per seed, the raw
 * words, the 53-bit uniforms and the resumable state.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NormalGenerator } from '#shared/sampler';
import { pythonOrWarn, runPython } from './helpers/python.ts';

const missing = pythonOrWarn('test/reference-rng.test.ts', ['numpy']);
const N = 1_000_000;
const SEEDS = [0, 5, 42, 2 ** 53 - 1];

const PROGRAM = `
import hashlib, json, sys
from tools.reference.rng import NormalGenerator
out = {}
for seed in json.loads(sys.argv[1]):
    g = NormalGenerator.from_seed(seed)
    a = g.fill(${N})
    words = [g.next_uint32() for _ in range(16)]
    uniforms = [g.uniform() for _ in range(8)]
    doubles = [g.next() for _ in range(8)]
    out[str(seed)] = {"sha256": hashlib.sha256(a.tobytes()).hexdigest(), "first": [float(v) for v in a[:8]], "words": words,
                      "uniforms": uniforms, "doubles": doubles, "state": g.state()}
print(json.dumps(out))
`;

const sha = (a: Float32Array): string => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');

describe.skipIf(missing !== null)('tools/reference/rng.py equals shared/src/sampler/rng.ts', () => {
  let py: Record<string, { sha256: string; first: number[]; words: number[]; uniforms: number[]; doubles: number[]; state: unknown }>;

  it('runs the port', () => {
    const r = runPython(['-c', PROGRAM, JSON.stringify(SEEDS)]);
    expect(r.status, r.output).toBe(0);
    py = JSON.parse(r.output.trim().split('\n')[0]) as typeof py;
  }, 120_000);

  for (const seed of SEEDS) {
    it(`seed ${seed}: 10^6 float32 normals, then words, uniforms, doubles and state, bit for bit`, () => {
      const g = NormalGenerator.fromSeed(seed);
      const a = new Float32Array(N);
      g.fill(a);
      const p = py[String(seed)];
      expect(Array.from(a.subarray(0, 8))).toEqual(p.first);
      expect(sha(a)).toBe(p.sha256);
      expect(Array.from({ length: 16 }, () => g.nextUint32())).toEqual(p.words);
      expect(Array.from({ length: 8 }, () => g.uniform())).toEqual(p.uniforms);
      expect(Array.from({ length: 8 }, () => g.next())).toEqual(p.doubles);
      expect(g.state()).toEqual(p.state);
    });
  }
});

describe.skipIf(missing !== null)('tools/reference/fdlibm.py equals V8 Math.exp / Math.log', () => {
  it('on 200,000 arguments across the ranges the generator uses and beyond', () => {
    // Arguments built from our own generator, so both sides see the same doubles.
    const g = NormalGenerator.fromSeed(7);
    const logArgs = Array.from({ length: 100_000 }, (_, i) => (i % 2 ? g.uniform() : Math.exp(g.next() * 20)));
    const expArgs = Array.from({ length: 100_000 }, (_, i) => (i % 2 ? -0.5 * g.next() ** 2 : g.next() * 200));
    const r = runPython(
      ['-c', 'import json,math,sys\nfrom tools.reference import fdlibm\na=json.load(sys.stdin)\nf=lambda v: v if math.isfinite(v) else str(v)\nprint(json.dumps([[f(fdlibm.log(v)) for v in a[0]],[f(fdlibm.exp(v)) for v in a[1]]]))'],
      {},
      120_000,
      JSON.stringify([logArgs, expArgs]),
    );
    expect(r.status, r.output).toBe(0);
    // JSON has no Infinity: Python writes non-finite results as 'inf' / 'nan'.
    const finite = (v: number): number | string => (Number.isFinite(v) ? v : v === Infinity ? 'inf' : 'nan');
    const [logs, exps] = JSON.parse(r.output.trim().split('\n')[0]) as [unknown[], unknown[]];
    expect(logs).toEqual(logArgs.map((v) => finite(Math.log(v))));
    expect(exps).toEqual(expArgs.map((v) => finite(Math.exp(v))));
  }, 120_000);
});
