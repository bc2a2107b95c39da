/**
 * GPU or nothing: a job that requires CUDA on a machine without it (this CPU-only one) stops at
 * once with GpuUnavailable and exit 78, before the model is downloaded, and never runs on the CPU.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDemoBundle } from '../../demo/src/bundle.ts';
import { runJob } from '../src/job.ts';
import { asGpuUnavailable, checkSessionProvider, cudaProblem, GpuUnavailable, providerFromEnv, requireCuda } from '../src/runtime/gpu.ts';
import { EXIT, EXIT_GPU_UNAVAILABLE, exitCodeFor, runWorker } from '../src/worker.ts';
import { WORKER_METRICS } from '#shared/schemas';
import { workerMetricsLine } from '../src/metrics.ts';

let dir: string;
let bundle: string;
let image: string;
/** A fake onnxruntime binding folder that holds a CUDA provider library, and a fake driver file. */
let fakeCuda: { bindingDir: string; driverFiles: string[] };
const ROOT = join(import.meta.dirname, '..', '..');

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cil-gpu-'));
  bundle = join(dir, 'bundle');
  await writeDemoBundle(bundle);
  image = join(dir, 'in.png');
  await sharp({ create: { width: 192, height: 128, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toFile(image);
  const bindingDir = join(dir, 'binding');
  mkdirSync(bindingDir);
  writeFileSync(join(bindingDir, 'libonnxruntime_providers_cuda.so'), 'not a library');
  writeFileSync(join(dir, 'nvidia-version'), 'NVRM fake');
  fakeCuda = { bindingDir, driverFiles: [join(dir, 'nvidia-version')] };
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the provider preference', () => {
  it('reads cuda, cpu, auto from CIL_EXECUTION_PROVIDER (auto when unset) and refuses anything else', () => {
    expect(providerFromEnv({})).toBe('auto');
    expect(providerFromEnv({ CIL_EXECUTION_PROVIDER: 'cuda' })).toBe('cuda');
    expect(providerFromEnv({ CIL_EXECUTION_PROVIDER: 'cpu' })).toBe('cpu');
    expect(() => providerFromEnv({ CIL_EXECUTION_PROVIDER: 'gpu' })).toThrow(/'gpu'; allowed: cuda, cpu, auto/);
  });

  it('the CUDA probe: this CPU-only install has no CUDA provider; a missing driver is named', () => {
    expect(cudaProblem()).toMatch(/CUDA provider is not installed|NVIDIA driver/);
    expect(cudaProblem({ bindingDir: fakeCuda.bindingDir, driverFiles: [join(dir, 'none')] })).toMatch(/no NVIDIA driver or GPU visible/);
    expect(cudaProblem(fakeCuda)).toBeNull();
    expect(() => requireCuda('cuda', { bindingDir: join(dir, 'none') })).toThrow(GpuUnavailable);
    expect(() => requireCuda('auto', { bindingDir: join(dir, 'none') })).not.toThrow();
    expect(() => requireCuda('cpu')).not.toThrow();
  });

  it('a session that opened on the CPU when CUDA was required is refused; CUDA load errors become GpuUnavailable', () => {
    expect(() => checkSessionProvider('unet', 'cuda', 'cpu', 'no libcudnn')).toThrow(/required but the 'unet' session opened on cpu \(no libcudnn\)/);
    expect(() => checkSessionProvider('unet', 'auto', 'cpu')).not.toThrow();
    expect(asGpuUnavailable('vae', new Error('Failed to load libcudnn.so.9'))).toBeInstanceOf(GpuUnavailable);
    const other = new Error('protobuf parsing failed');
    expect(asGpuUnavailable('vae', other)).toBe(other);
  });

  it('exit codes: GpuUnavailable is 78, its own, named constant', () => {
    expect(EXIT_GPU_UNAVAILABLE).toBe(78);
    expect(exitCodeFor(new GpuUnavailable('x'))).toBe(EXIT.gpuUnavailable);
    expect(new Set(Object.values(EXIT)).size).toBe(Object.values(EXIT).length);
  });
});

describe('a job that requires CUDA on this CPU-only machine', () => {
  const params = (): never => ({ model: 'demo', prompt: 'left', steps: 2, start: 940, analyticInit: false, statistics: null, seed: 1, frames: 16, fps: 8, outputs: ['frames'], saveLatent: false } as never);

  it('runJob: GpuUnavailable before the bundle is opened; the error record names it; no frames', async () => {
    const out = join(dir, 'out-pre');
    let opened = false;
    const err = await runJob({ image, model: bundle, out, statistics: null, initNoise: null }, { provider: 'cuda', params: () => ((opened = true), params()) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GpuUnavailable);
    expect(opened).toBe(false);
    expect(JSON.parse(await readFile(join(out, 'error.json'), 'utf8'))).toMatchObject({ error: 'GpuUnavailable' });
    await expect(readFile(join(out, 'metadata.json'))).rejects.toThrow();
  });

  it('runJob past the probe (a host that looks right): onnxruntime cannot open CUDA, and the job does NOT fall back to the CPU', async () => {
    const out = join(dir, 'out-open');
    const err = await runJob({ image, model: bundle, out, statistics: null, initNoise: null }, { provider: 'cuda', cudaProbe: fakeCuda, threads: 1, params }).catch((e: unknown) => e);
    expect((err as Error).name).toBe('GpuUnavailable');
    expect((err as Error).message).toMatch(/CUDA was required but the '\w+' session could not open on it/);
    await expect(readFile(join(out, 'metadata.json'))).rejects.toThrow();
  }, 60_000);

  it('runWorker: exit 78, a GpuUnavailable error line and its metric, nothing generated', async () => {
    const lines: Record<string, unknown>[] = [];
    const spec = {
      jobId: 'j-0123456789abcdef01234567', bucket: 'cil-data',
      input: { key: 'inputs/a.png', versionId: null, etag: null, size: 1 }, imageKey: 'jobs/j-0123456789abcdef01234567/input.png',
      modelPrefix: 'models/demo', workPrefix: 'jobs/j-0123456789abcdef01234567/', outputPrefix: 'outputs/j-0123456789abcdef01234567/', createdAt: '2024-01-01T00:00:00.000Z',
      request: { model: 'demo', family: 'dynamicrafter', prompt: '', steps: 2, start: 940, analyticInit: false, statistics: null, guidanceScale: 7.5, imageGuidanceScale: null, guidanceRescale: null, eta: 1, seed: 1, frames: 16, fps: 8, frameStride: 24, motionBucketId: null, noiseAugStrength: null, minGuidanceScale: null, maxGuidanceScale: null, outputs: ['mp4'], compat: 'paper' },
    };
    // No S3 is reachable here: the job must stop before any request (the sink's error record is best-effort).
    const s3 = { send: () => Promise.reject(new Error('no S3 in this test')) } as never;
    const code = await runWorker(spec, { s3, spotWatch: false, log: (l) => lines.push(l), job: { provider: 'cuda' } });
    expect(code).toBe(78);
    const error = lines.find((l) => l.event === 'error')!;
    expect(error).toMatchObject({ error: 'GpuUnavailable', exitCode: 78 });
    expect(lines.find((l) => l.event === 'metrics')).toMatchObject({ [WORKER_METRICS.gpuUnavailable]: 1 });
    expect(lines.some((l) => l.event === 'sessions' || l.event === 'progress' || l.event === 'done')).toBe(false);
  });

  it('`cil worker` with CIL_EXECUTION_PROVIDER=cuda: exits 78 at once, naming GpuUnavailable', () => {
    const spec = join(dir, 'spec.json');
    writeFileSync(spec, JSON.stringify({
      jobId: 'j-0123456789abcdef01234567', bucket: 'cil-data',
      input: { key: 'inputs/a.png', versionId: null, etag: null, size: 1 }, imageKey: 'jobs/j-0123456789abcdef01234567/input.png',
      modelPrefix: 'models/demo', workPrefix: 'jobs/j-0123456789abcdef01234567/', outputPrefix: 'outputs/j-0123456789abcdef01234567/', createdAt: '2024-01-01T00:00:00.000Z',
      request: { model: 'demo', family: 'dynamicrafter', prompt: '', steps: 2, start: 940, analyticInit: false, statistics: null, guidanceScale: 7.5, imageGuidanceScale: null, guidanceRescale: null, eta: 1, seed: 1, frames: 16, fps: 8, frameStride: 24, motionBucketId: null, noiseAugStrength: null, minGuidanceScale: null, maxGuidanceScale: null, outputs: ['mp4'], compat: 'paper' },
    }));
    // An S3 endpoint nothing listens on, with one attempt: the only request is the best-effort error record.
    const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'cil.js'), 'worker', '--spec', spec], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { PATH: process.env.PATH, HOME: dir, CIL_EXECUTION_PROVIDER: 'cuda', AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'x', AWS_MAX_ATTEMPTS: '1', AWS_EC2_METADATA_DISABLED: 'true' },
    });
    expect(r.status, r.stderr).toBe(78);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.event === 'error')).toMatchObject({ error: 'GpuUnavailable', exitCode: 78 });
    expect(String(lines.find((l) => l.event === 'error')!.reason)).toMatch(/CIL_EXECUTION_PROVIDER=cuda/);
  }, 60_000);
});

describe('the metrics line', () => {
  it('is Embedded Metric Format: provider fallback and step time by family and provider, the counts also without dimensions', () => {
    const l = workerMetricsLine({ family: 'svd', executionProvider: 'cpu', values: { executionProviderFallback: 1, stepSeconds: 2.5 } }, new Date(1000)) as { _aws: { Timestamp: number; CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: string }[] }[] } } & Record<string, unknown>;
    expect(l._aws.Timestamp).toBe(1000);
    expect(l._aws.CloudWatchMetrics[0]).toEqual({ Namespace: 'CIL/Pipeline', Dimensions: [['Family', 'ExecutionProvider']], Metrics: [{ Name: 'ExecutionProviderFallback', Unit: 'Count' }, { Name: 'StepSeconds', Unit: 'Seconds' }] });
    expect(l._aws.CloudWatchMetrics[1]).toEqual({ Namespace: 'CIL/Pipeline', Dimensions: [[]], Metrics: [{ Name: 'ExecutionProviderFallback', Unit: 'Count' }] });
    expect(l).toMatchObject({ Family: 'svd', ExecutionProvider: 'cpu', ExecutionProviderFallback: 1, StepSeconds: 2.5 });
  });
});
