import { describe, expect, it } from 'vitest';
import { handlersFromContext } from '../lib/app.ts';
import { ConfigError, DEFAULT_CONFIG, GPU_MEMORY_RESERVE_GIB, MAX_BATCH_CONCURRENCY, SUBMIT_JOB_RATE_LIMIT, gpuMemoryGiB, resolveConfig } from '../lib/config.ts';

const ctx =
  (values: Record<string, unknown>) =>
  (key: string): unknown =>
    values[key];

describe('resolveConfig', () => {
  it('gives the documented defaults when nothing is set', () => {
    const c = resolveConfig(ctx({}));
    expect(c).toEqual(DEFAULT_CONFIG);
    expect(c.spot).toBe(true);
    expect(c.gpuFleets.gpu24.instanceTypes).toEqual(['g6.2xlarge', 'g5.2xlarge']);
    expect(c.gpuFleets.gpu48.instanceTypes).toEqual(['g6e.2xlarge']);
    expect(c.networking).toBe('nat');
    expect(c.logRetentionDays).toBe(30);
  });

  it('keeps the batch concurrency cap well under the SubmitJob rate', () => {
    expect(MAX_BATCH_CONCURRENCY).toBeLessThan(SUBMIT_JOB_RATE_LIMIT);
    expect(DEFAULT_CONFIG.batchMaxConcurrency).toBeLessThanOrEqual(MAX_BATCH_CONCURRENCY);
  });

  it('reads -c strings: booleans, numbers, comma lists and JSON', () => {
    const manifests: Record<string, unknown> = { 'a/manifest.json': manifest('a', 'svd', 576, 1024, 30), 'b/manifest.json': manifest('b', 'dynamicrafter', 320, 512, 12) };
    const c = resolveConfig(
      ctx({
        'cil:spot': 'false',
        'cil:gpuFleets': '{"gpu24": {"instanceTypes": ["g6.2xlarge"], "maxVcpus": 64, "onDemandMaxVcpus": 8}, "gpu48": {"instanceTypes": ["g6e.2xlarge"], "maxVcpus": 16, "onDemandMaxVcpus": 8}}',
        'cil:modelManifests': 'a/manifest.json, b/manifest.json',
        'cil:modelProfiles': '{"svd": {"vcpus": 8, "memoryMiB": 28000}}',
        'cil:notificationEmail': 'ops@example.com',
      }),
      {},
      (p) => manifests[p],
    );
    expect(c.spot).toBe(false);
    expect(c.gpuFleets.gpu24).toEqual({ instanceTypes: ['g6.2xlarge'], maxVcpus: 64, onDemandMaxVcpus: 8 });
    expect(c.modelManifests).toEqual(['a/manifest.json', 'b/manifest.json']);
    // Per-family merge: svd replaced, the others keep their defaults.
    expect(c.modelProfiles.svd).toEqual({ vcpus: 8, memoryMiB: 28000 });
    expect(c.modelProfiles.dynamicrafter).toEqual(DEFAULT_CONFIG.modelProfiles.dynamicrafter);
    expect(c.notificationEmail).toBe('ops@example.com');
  });

  it('the budget\'s limit and cost-allocation tag come from the context as numbers and JSON', () => {
    const c = resolveConfig(ctx({ 'cil:dailyGpuBudgetUsd': '75.5', 'cil:costAllocationTag': '{"key": "team", "value": "video lab"}' }));
    expect(c.dailyGpuBudgetUsd).toBe(75.5);
    expect(c.costAllocationTag).toEqual({ key: 'team', value: 'video lab' });
    expect(DEFAULT_CONFIG.costAllocationTag).toEqual({ key: 'cil-project', value: 'cil-video' });
  });

  it('takes cdk.json values as they are, and props over context', () => {
    const c = resolveConfig(ctx({ 'cil:batchMaxConcurrency': 20, 'cil:logRetentionDays': 90 }), { logRetentionDays: 7 });
    expect(c.batchMaxConcurrency).toBe(20);
    expect(c.logRetentionDays).toBe(7);
  });

  it('refuses bad values, naming the context key', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ 'cil:gpuFleets': '{"x": {"instanceTypes": ["m5.xlarge"], "maxVcpus": 8, "onDemandMaxVcpus": 8}}' }, /cil:gpuFleets\.x\.instanceTypes\.0: must be a GPU instance type/],
      [{ 'cil:placement': '{"svd@576": "gpu48"}' }, /cil:placement\.svd@576: must be family@HEIGHTxWIDTH/],
      [{ 'cil:networking': 'vpn' }, /cil:networking/],
      [{ 'cil:batchMaxConcurrency': String(MAX_BATCH_CONCURRENCY + 1) }, /cil:batchMaxConcurrency/],
      [{ 'cil:logRetentionDays': '45' }, /cil:logRetentionDays/],
      [{ 'cil:spot': 'maybe' }, /cil:spot/],
      [{ 'cil:batchToleratedFailurePercentage': '101' }, /cil:batchToleratedFailurePercentage/],
      [{ 'cil:notificationEmail': 'not-an-address' }, /cil:notificationEmail/],
      [{ 'cil:dailyGpuBudgetUsd': '0' }, /cil:dailyGpuBudgetUsd/],
      [{ 'cil:costAllocationTag': '{"key": "aws:project", "value": "x"}' }, /cil:costAllocationTag\.key: must be 1–128 .* not starting with aws:/],
      [{ 'cil:costAllocationTag': '{"key": "team", "value": "a|b"}' }, /cil:costAllocationTag\.value/],
      [{ 'cil:costAllocationTag': 'team=video' }, /cil:costAllocationTag/],
    ];
    for (const [values, message] of bad) {
      expect(() => resolveConfig(ctx(values)), JSON.stringify(values)).toThrow(ConfigError);
      expect(() => resolveConfig(ctx(values))).toThrow(message);
    }
  });

  it('refuses a profile that does not fit the fleet a model is placed on (its jobs would wait forever)', () => {
    // 40 GiB fits no g6.2xlarge (32 GiB), but does fit a g6e.2xlarge (64 GiB).
    const values = { 'cil:modelProfiles': '{"videocrafter": {"vcpus": 8, "memoryMiB": 40960}}' };
    expect(() => resolveConfig(ctx(values))).toThrow(/cil:modelProfiles\.videocrafter \(8 vCPUs, 40960 MiB\) does not fit g6\.2xlarge, g5\.2xlarge of fleet gpu24/);
    expect(resolveConfig(ctx({ ...values, 'cil:placement': '{"videocrafter@320x512": "gpu48"}' })).modelProfiles.videocrafter.memoryMiB).toBe(40960);
  });

  it('refuses a profile larger than the compute environment', () => {
    const fleets = '{"gpu24": {"instanceTypes": ["g6.2xlarge"], "maxVcpus": 4, "onDemandMaxVcpus": 4}, "gpu48": {"instanceTypes": ["g6e.2xlarge"], "maxVcpus": 32, "onDemandMaxVcpus": 16}}';
    expect(() => resolveConfig(ctx({ 'cil:gpuFleets': fleets }))).toThrow(/modelProfiles\.svd asks for 8 vCPUs, more than cil:gpuFleets\.gpu24\.maxVcpus \(4\)/);
  });

  it('one instance size per fleet: mixed sizes are refused', () => {
    const fleets = '{"gpu24": {"instanceTypes": ["g6.xlarge", "g6.2xlarge"], "maxVcpus": 32, "onDemandMaxVcpus": 16}, "gpu48": {"instanceTypes": ["g6e.2xlarge"], "maxVcpus": 32, "onDemandMaxVcpus": 16}}';
    expect(() => resolveConfig(ctx({ 'cil:gpuFleets': fleets }))).toThrow(/cil:gpuFleets\.gpu24\.instanceTypes mixes sizes \(g6\.xlarge, g6\.2xlarge\): one size per fleet/);
  });
});

/** A minimal valid manifest of a family at a resolution, with a GPU memory need. */
function manifest(id: string, family: 'svd' | 'dynamicrafter', height: number, width: number, gib: number | null, source = 'estimated'): Record<string, unknown> {
  const vp = family !== 'svd';
  return {
    format: 'cil-bundle/1',
    id,
    family,
    cil: false,
    resolution: { height, width },
    frames: 16,
    latent: { channels: 4, downsample: 8, scaleFactor: 0.18215 },
    schedule: vp
      ? { kind: 'vp-ddim', betaSchedule: 'linear', linearStart: 0.00085, linearEnd: 0.012, timesteps: 1000, rescaleZeroSnr: false, parameterization: 'v', spacing: 'uniform_trailing' }
      : { kind: 'edm-euler', sigmaMin: 0.002, sigmaMax: 700, rho: 7, parameterization: 'v' },
    ...(vp ? { tokenizer: { file: 'tokenizer.json' } } : {}),
    defaults: vp
      ? { steps: 50, start: 1000, analyticInit: false, guidanceScale: 7.5, eta: 1, frameStride: 3 }
      : { steps: 25, start: 700, analyticInit: false, minGuidanceScale: 1, maxGuidanceScale: 3, fps: 7, motionBucketId: 127, noiseAugStrength: 0.02 },
    ...(gib === null ? {} : { gpuMemory: { [`${height}x${width}`]: { gib, source, frames: 16, batch: 2 } } }),
    components: { unet: { file: 'unet.onnx', inputs: [{ name: 'x', dtype: 'float32', dims: ['batch', 4] }], outputs: [{ name: 'y', dtype: 'float32', dims: ['batch', 4] }] } },
  };
}

describe('sizing per model (GPU memory)', () => {
  it('the default placement gives every family@resolution a GPU with its estimated need plus the reserve', () => {
    const c = resolveConfig(ctx({}));
    for (const [key, need] of Object.entries(c.gpuMemoryGiB)) {
      const fleet = c.gpuFleets[c.placement[key]];
      for (const t of fleet.instanceTypes) expect(gpuMemoryGiB(t), `${key} on ${t}`).toBeGreaterThanOrEqual(need + GPU_MEMORY_RESERVE_GIB);
    }
    // The 576×1024 models need the 48 GB fleet, the 320×512 ones fit 24 GB.
    expect(c.placement['svd@576x1024']).toBe('gpu48');
    expect(c.placement['dynamicrafter@576x1024']).toBe('gpu48');
    expect(c.placement['dynamicrafter@320x512']).toBe('gpu24');
  });

  it('a model placed on a GPU too small for it fails with what, which model and resolution, and what is allowed', () => {
    const err = (() => {
      try {
        resolveConfig(ctx({ 'cil:placement': '{"svd@576x1024": "gpu24"}' }));
      } catch (e) {
        return e as Error;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err!.message).toMatch(/svd@576x1024 \(needs 38 GiB of GPU memory, estimated, from cil:gpuMemoryGiB\) does not fit fleet gpu24: g6\.2xlarge has 22\.4 GiB per GPU, g5\.2xlarge has 22\.4 GiB per GPU/);
    expect(err!.message).toMatch(/Place it on a fleet of p4d \(40\.0 GiB\), g6e \(45\.0 GiB\), p4de \(80\.0 GiB\), p5 \(80\.0 GiB\), p5e \(140\.0 GiB\)/);
  });

  it("reads each manifest's gpuMemory at its resolution; a measured need over the fleet's GPU fails synth", () => {
    const files: Record<string, unknown> = {
      'ok/manifest.json': manifest('dc', 'dynamicrafter', 576, 1024, 40, 'measured'),
      'big/manifest.json': manifest('dc-big', 'dynamicrafter', 576, 1024, 46, 'measured'),
      'none/manifest.json': manifest('dc-none', 'dynamicrafter', 320, 512, null),
    };
    const read = (p: string): unknown => files[p];
    expect(resolveConfig(ctx({ 'cil:modelManifests': 'ok/manifest.json' }), {}, read).modelManifests).toEqual(['ok/manifest.json']);
    expect(() => resolveConfig(ctx({ 'cil:modelManifests': 'big/manifest.json' }), {}, read)).toThrow(/dynamicrafter@576x1024 \(needs 46 GiB of GPU memory, measured, from big\/manifest\.json\) does not fit fleet gpu48: g6e\.2xlarge has 45\.0 GiB/);
    // The same model on an 80 GB fleet is accepted.
    const p4de = '{"gpu24": {"instanceTypes": ["g6.2xlarge"], "maxVcpus": 32, "onDemandMaxVcpus": 16}, "gpu48": {"instanceTypes": ["g6e.2xlarge"], "maxVcpus": 32, "onDemandMaxVcpus": 16}, "gpu80": {"instanceTypes": ["p4de.24xlarge"], "maxVcpus": 96, "onDemandMaxVcpus": 96}}';
    expect(
      resolveConfig(ctx({ 'cil:modelManifests': 'big/manifest.json', 'cil:gpuFleets': p4de, 'cil:placement': '{"dynamicrafter@576x1024": "gpu80"}', 'cil:instanceHourlyUsd': '{"p4de.24xlarge": 27.45}' }), {}, read).placement['dynamicrafter@576x1024'],
    ).toBe('gpu80');
    expect(() => resolveConfig(ctx({ 'cil:modelManifests': 'none/manifest.json' }), {}, read)).toThrow(/none\/manifest\.json \(dc-none, dynamicrafter@320x512\) records no gpuMemory for 320x512/);
  });

  it('a family@resolution with a need but no fleet, or a placement naming no fleet, fails', () => {
    expect(() => resolveConfig(ctx({ 'cil:gpuMemoryGiB': '{"svd@256x256": 8}' }))).toThrow(/svd@256x256 \(needs 8 GiB .*\) has no fleet: add cil:placement\.svd@256x256 \(one of gpu24, gpu48\)/);
    expect(() => resolveConfig(ctx({ 'cil:placement': '{"svd@320x512": "gpu12"}' }))).toThrow(/cil:placement\.svd@320x512 names the fleet 'gpu12', which cil:gpuFleets does not have \(it has: gpu24, gpu48\)/);
  });
});

describe('handlersFromContext', () => {
  it('accepts JSON text or an object with the known keys', () => {
    expect(handlersFromContext(undefined)).toBeUndefined();
    expect(handlersFromContext('{"notify": "a/b.ts"}')).toEqual({ notify: 'a/b.ts' });
    expect(handlersFromContext({ recordFailure: 'c.ts' })).toEqual({ recordFailure: 'c.ts' });
  });

  it('refuses unknown keys and non-JSON', () => {
    expect(() => handlersFromContext('{"validate": "x.ts"}')).toThrow(/unknown key 'validate'/);
    expect(() => handlersFromContext('notify=x.ts')).toThrow(/not JSON/);
  });
});
