/**
 * The inference thread's bound feeds (issue 17, zero-copy steps): shared buffers checked once at
 * bind, read afresh at every call, with float16 and int32 graph inputs converted in place; and the
 * denoising loop's checkpoints taken as copies at their step but written off the step's path.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NormalGenerator, tensor } from '#shared/sampler';
import type { GuidedDenoiser, StepCoefs } from '#shared/sampler';
import { encodeModel, GraphBuilder } from '../../demo/src/onnx/graph.ts';
import { Checkpoints } from '../src/generate/checkpoint.ts';
import type { Position } from '../src/generate/checkpoint.ts';
import { denoise } from '../src/generate/denoise.ts';
import { OnnxSessions, tuningFromEnv } from '../src/runtime/sessions.ts';
import type { OutputSink } from '../src/sink.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cil-runtime-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** out = x·2 + t (t broadcast over the row): x float16 or float32, t int32 or int64. */
async function graph(name: string, xType: 'float32' | 'float16', tType: 'int64' | 'int32'): Promise<string> {
  const g = new GraphBuilder(name);
  const x = g.input('x', xType, ['batch', 3]);
  const t = g.input('t', tType, ['batch']);
  const xf = xType === 'float16' ? g.op('Cast', [x], { to: 1 }) : x;
  const tf = g.op('Unsqueeze', [g.op('Cast', [t], { to: 1 }), g.constInt64([1])]);
  g.output(g.op('Add', [g.op('Mul', [xf, g.constFloat32([2], [], 'two')]), tf]), 'float32', ['batch', 3], 'out');
  const file = join(dir, `${name}.onnx`);
  await writeFile(file, encodeModel(g));
  return file;
}

describe('bound feeds', () => {
  for (const [xType, tType] of [['float32', 'int64'], ['float16', 'int32']] as const) {
    it(`reads what the buffers hold at each call (x ${xType}, t ${tType})`, async () => {
      const sessions = new OnnxSessions({ provider: 'cpu', threads: 1 });
      try {
        await sessions.open('unet', await graph(`g_${xType}_${tType}`, xType, tType));
        const b = await sessions.bind('unet', { x: { dtype: 'float32', dims: [2, 3] }, t: { dtype: 'int64', dims: [2] } });
        const x = b.inputs.x as Float32Array;
        const t = b.inputs.t as BigInt64Array;
        x.set([1, 2, 3, 4, 5, 6]);
        t.set([10n, 20n]);
        expect(Array.from((await sessions.runBound(b)).out.data)).toEqual([12, 14, 16, 28, 30, 32]);
        // Rewritten in place: the next call sees the new values (converted again where needed).
        x.set([0.5, 0.25, 0, 1, 1, 1]);
        t.fill(3n);
        expect(Array.from((await sessions.runBound(b)).out.data)).toEqual([4, 3.5, 3, 5, 5, 5]);
        expect(sessions.runCalls.get('unet')).toBe(2);
      } finally {
        await sessions.close();
      }
    });
  }

  it('refuses feeds that do not fit the graph at bind time, naming them', async () => {
    const sessions = new OnnxSessions({ provider: 'cpu', threads: 1 });
    try {
      await sessions.open('unet', await graph('g_check', 'float32', 'int64'));
      await expect(sessions.bind('unet', { x: { dtype: 'float32', dims: [2, 4] }, t: { dtype: 'int64', dims: [2] } })).rejects.toThrow(
        /unet: input 'x': axis 1 must be 3/,
      );
      await expect(sessions.bind('unet', { x: { dtype: 'float32', dims: [2, 3] } })).rejects.toThrow(/missing t/);
      await expect(sessions.bind('unet', { x: { dtype: 'int64', dims: [2, 3] }, t: { dtype: 'int64', dims: [2] } })).rejects.toThrow(
        /input 'x' expects float32, got int64/,
      );
    } finally {
      await sessions.close();
    }
  });
});

describe('session options (their plumbing and fallbacks, on the CPU)', () => {
  const feeds = { x: { dtype: 'float32', dims: [2, 3] }, t: { dtype: 'int64', dims: [2] } } as const;
  async function once(s: OnnxSessions, file: string): Promise<number[]> {
    await s.open('unet', file);
    const b = await s.bind('unet', feeds);
    (b.inputs.x as Float32Array).set([1, 2, 3, 4, 5, 6]);
    (b.inputs.t as BigInt64Array).set([1n, 2n]);
    return Array.from((await s.runBound(b)).out.data);
  }

  it('caches the optimised graph: written on the first open, loaded on the next, same outputs', async () => {
    const file = await graph('g_cache', 'float16', 'int32');
    const cache = join(dir, 'ort-cache');
    const results: number[][] = [];
    for (const expected of ['written', 'loaded'] as const) {
      const s = new OnnxSessions({ provider: 'cpu', threads: 1, tuning: { optimizedCacheDir: cache } });
      try {
        results.push(await once(s, file));
        expect(s.info('unet').optimizedModel).toBe(expected);
        expect(s.info('unet').fallbackReason).toBeUndefined();
      } finally {
        await s.close();
      }
    }
    expect(results[1]).toEqual(results[0]);
    expect((await readdir(cache)).filter((f) => f.endsWith('.ort.onnx'))).toHaveLength(1);
  });

  it('a cache folder that cannot be made leaves the cache off and says why', async () => {
    const file = await graph('g_nocache', 'float32', 'int64');
    const blocker = join(dir, 'a-file');
    await writeFile(blocker, 'x');
    const s = new OnnxSessions({ provider: 'cpu', threads: 1, tuning: { optimizedCacheDir: join(blocker, 'sub') } });
    try {
      expect(await once(s, file)).toEqual([3, 5, 7, 10, 12, 14]);
      expect(s.info('unet').optimizedModel).toBeUndefined();
      expect(s.info('unet').fallbackReason).toMatch(/optimised-graph cache off/);
    } finally {
      await s.close();
    }
  });

  it('TensorRT and CUDA graphs asked for: the session opens on what there is and names what it could not use', async () => {
    const file = await graph('g_gpu', 'float32', 'int64');
    const s = new OnnxSessions({ provider: 'auto', threads: 1, tuning: { tensorrtCacheDir: join(dir, 'trt'), cudaGraph: true } });
    try {
      expect(await once(s, file)).toEqual([3, 5, 7, 10, 12, 14]);
      const info = s.info('unet');
      expect(info.fallbackReason).toMatch(/CUDA graph capture unavailable/);
      if (info.provider === 'cpu') expect(info.fallbackReason).toMatch(/CUDA provider not installed|TensorRT unavailable|CUDA/);
    } finally {
      await s.close();
    }
  });

  it('a warm-up call at bind (on by request; auto: GPU sessions only) runs outside the step counts', async () => {
    const file = await graph('g_warm', 'float32', 'int64');
    for (const warmup of [true, 'auto'] as const) {
      const s = new OnnxSessions({ provider: 'cpu', threads: 1, warmup });
      try {
        expect(await once(s, file)).toEqual([3, 5, 7, 10, 12, 14]);
        expect(s.warmupMs.has('unet')).toBe(warmup === true);
        expect(s.runCalls.get('unet')).toBe(1);
      } finally {
        await s.close();
      }
    }
  });

  it('reads the options from the environment', () => {
    expect(tuningFromEnv({ CIL_ORT_CACHE_DIR: '/c', CIL_TENSORRT_CACHE_DIR: '/t', CIL_CUDA_GRAPH: '1' })).toEqual({ optimizedCacheDir: '/c', tensorrtCacheDir: '/t', cudaGraph: true });
    expect(tuningFromEnv({})).toEqual({ optimizedCacheDir: undefined, tensorrtCacheDir: undefined, cudaGraph: false });
  });
});

describe('checkpoints off the step path', () => {
  const steps: StepCoefs[] = Array.from({ length: 6 }, (_, j) => ({ index: j, modelTime: 100 - j, inputScale: 1, xCoef: 0.5, outCoef: 1, noiseStd: 0.1 }));
  const denoiser: GuidedDenoiser = (input) => Promise.resolve({ branches: [Float32Array.from(input.x.data, () => 1)], weights: [Float64Array.of(1)], segmentLength: input.x.data.length });

  it('copies the position at its step, runs the next step while the write is pending, and waits for it at that step\'s end', async () => {
    const puts: Position[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const checkpoints = new Checkpoints({ location: 'memory', put: () => Promise.resolve(), get: () => Promise.resolve(null), delete: () => Promise.resolve() } satisfies OutputSink, 'fp', [1, 4]);
    checkpoints.write = async (c: Position) => {
      puts.push(c);
      await gate;
    };
    const seen: number[] = [];
    const run = denoise({
      steps, x0: tensor(Float32Array.of(1, 2, 3, 4), [1, 4]), resume: null, denoiser, gen: NormalGenerator.fromSeed(5), checkpoints, checkpointEvery: 2,
      onStep: (k) => seen.push(k),
    });
    let done = false;
    void run.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 50));
    // Step 3 ran while the write taken after step 2 was in flight; its end waits for that write.
    expect(seen).toEqual([1, 2, 3]);
    expect(done).toBe(false);
    expect(puts.map((p) => p.completed)).toEqual([2]);
    // The copy is the latent after step 2, not the buffer the later steps overwrote.
    const ref = await denoise({
      steps: steps.slice(0, 2), x0: tensor(Float32Array.of(1, 2, 3, 4), [1, 4]), resume: null, denoiser, gen: NormalGenerator.fromSeed(5),
      checkpoints: new Checkpoints({ location: 'memory', put: () => Promise.resolve(), get: () => Promise.resolve(null), delete: () => Promise.resolve() }, 'fp', [1, 4]),
    });
    expect(Array.from(puts[0].x)).toEqual(Array.from(ref.data));
    release();
    await run;
    expect(done).toBe(true);
    expect(seen).toEqual([1, 2, 3, 4, 5, 6]);
    expect(puts.map((p) => p.completed)).toEqual([2, 4]);
  });
});
