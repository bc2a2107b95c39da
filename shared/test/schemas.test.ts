import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors } from '../src/formats/safetensors.ts';
import type { JobRequest, ManifestInput, StatisticsMetadata } from '../src/schemas/index.ts';
import {
  NO_PLACEMENT,
  parsePlacementArg,
  PlacementError,
  checkJobRequestForFamily,
  checkStatisticsTensors,
  checkStatisticsValues,
  decodeStatisticsMetadata,
  encodeStatisticsMetadata,
  Family,
  InvalidRequestError,
  isSafeRelativeKey,
  ManifestError,
  parseJobRequest,
  parseManifest,
  StatisticsFormatError,
} from '../src/schemas/index.ts';
import { tensor } from '../src/sampler/tensor.ts';

/** The JSON block after `<!-- example: NAME -->` in docs/contracts.md. */
function docExample(name: string): unknown {
  const doc = readFileSync(new URL('../../docs/contracts.md', import.meta.url), 'utf8');
  const m = new RegExp(`<!-- example: ${name} -->\\s*\`\`\`json\\n([\\s\\S]*?)\`\`\``).exec(doc);
  if (m === null) throw new Error(`no example "${name}" in docs/contracts.md`);
  return JSON.parse(m[1]) as unknown;
}

function catchError(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error');
}

function requestError(json: unknown): InvalidRequestError {
  const e = catchError(() => parseJobRequest(json, 'inputs/job-1.json'));
  expect(e).toBeInstanceOf(InvalidRequestError);
  const err = e as InvalidRequestError;
  expect(err.name).toBe('InvalidRequestError');
  expect(err.message.startsWith('inputs/job-1.json: invalid job request:')).toBe(true);
  return err;
}

describe('Family', () => {
  it('is the three families', () => {
    expect(Family.options).toEqual(['dynamicrafter', 'videocrafter', 'svd']);
    expect(Family.safeParse('sd').success).toBe(false);
  });
});

describe('job request', () => {
  it('fills every default from an empty object', () => {
    const expected: JobRequest = {
      model: 'demo',
      prompt: '',
      steps: null,
      start: null,
      analyticInit: true,
      statistics: null,
      guidanceScale: null,
      imageGuidanceScale: null,
      guidanceRescale: null,
      eta: null,
      seed: null,
      frames: null,
      fps: null,
      frameStride: null,
      motionBucketId: null,
      noiseAugStrength: null,
      minGuidanceScale: null,
      maxGuidanceScale: null,
      outputs: ['mp4', 'gif'],
      compat: 'paper',
    };
    expect(parseJobRequest({}, 'x')).toEqual(expected);
  });

  it('gives each parse its own outputs array', () => {
    const a = parseJobRequest({}, 'a');
    a.outputs.push('webp');
    expect(parseJobRequest({}, 'b').outputs).toEqual(['mp4', 'gif']);
  });

  it('keeps given values, explicit nulls included', () => {
    const r = parseJobRequest(
      { model: 'svd-xt_1.1', steps: 25, start: 100.5, seed: 2 ** 53 - 1, outputs: ['latent-npy'], compat: 'reference', fps: null },
      'x',
    );
    expect(r).toMatchObject({ model: 'svd-xt_1.1', steps: 25, start: 100.5, seed: 2 ** 53 - 1, outputs: ['latent-npy'], compat: 'reference', fps: null });
  });

  it('parses the documented example', () => {
    const r = parseJobRequest(docExample('job-request'), 'docs');
    expect(r.model).toBe('dynamicrafter-512');
    expect(r.start).toBe(940);
    expect(r.compat).toBe('paper');
  });

  const violations: [string, Record<string, unknown>][] = [
    ['model', { model: 'Bad/Name' }],
    ['model', { model: '../etc' }],
    ['model', { model: '.hidden' }],
    ['model', { model: 'a'.repeat(65) }],
    ['prompt', { prompt: 42 }],
    ['steps', { steps: 0 }],
    ['steps', { steps: 1001 }],
    ['steps', { steps: 2.5 }],
    ['steps', { steps: '50' }],
    ['start', { start: 0 }],
    ['start', { start: -3 }],
    ['start', { start: 1000.5 }],
    ['analyticInit', { analyticInit: 'yes' }],
    ['statistics', { statistics: '../other-tenant/stats.safetensors' }],
    ['statistics', { statistics: '/abs/key' }],
    ['statistics', { statistics: 'a//b' }],
    ['statistics', { statistics: 's3://bucket/key' }],
    ['guidanceScale', { guidanceScale: 50.5 }],
    ['guidanceScale', { guidanceScale: -1 }],
    ['imageGuidanceScale', { imageGuidanceScale: 51 }],
    ['guidanceRescale', { guidanceRescale: 1.01 }],
    ['eta', { eta: -0.1 }],
    ['seed', { seed: -1 }],
    ['seed', { seed: 2 ** 53 }],
    ['seed', { seed: 1.5 }],
    ['frames', { frames: 0 }],
    ['frames', { frames: 65 }],
    ['fps', { fps: 61 }],
    ['frameStride', { frameStride: 65 }],
    ['motionBucketId', { motionBucketId: 256 }],
    ['motionBucketId', { motionBucketId: -1 }],
    ['noiseAugStrength', { noiseAugStrength: 1.5 }],
    ['minGuidanceScale', { minGuidanceScale: 51 }],
    ['maxGuidanceScale', { maxGuidanceScale: -1 }],
    ['minGuidanceScale', { minGuidanceScale: 3, maxGuidanceScale: 1 }],
    ['outputs', { outputs: [] }],
    ['outputs', { outputs: ['mp4', 'mp4'] }],
    ['outputs[1]', { outputs: ['mp4', 'avi'] }],
    ['outputs', { outputs: 'mp4' }],
    ['compat', { compat: 'exact' }],
  ];
  it.each(violations)('names the field: %s in %j', (path, input) => {
    const err = requestError(input);
    expect(err.issues.map((i) => i.path)).toEqual([path]);
    expect(err.message).toContain(`  - ${path}: `);
  });

  it('refuses non-finite numbers', () => {
    expect(requestError({ guidanceScale: Infinity }).issues[0].path).toBe('guidanceScale');
    expect(requestError({ eta: NaN }).issues[0].path).toBe('eta');
  });

  it('rejects unknown fields by name and lists the allowed ones', () => {
    const err = requestError({ stpes: 50, sead: 1 });
    expect(err.issues).toHaveLength(1);
    expect(err.issues[0].path).toBe('(root)');
    expect(err.message).toContain('unknown fields "stpes", "sead"');
    expect(err.message).toContain('allowed: model, prompt, steps');
  });

  it('lists every issue at once', () => {
    const err = requestError({ steps: 0, eta: 2, bogus: true });
    expect(err.issues.map((i) => i.path).sort()).toEqual(['(root)', 'eta', 'steps']);
  });

  it('rejects a 100 kB prompt without echoing it', () => {
    const err = requestError({ prompt: 'x'.repeat(100_000) });
    expect(err.issues[0].path).toBe('prompt');
    expect(err.message).toContain('100000 characters');
    expect(err.message.length).toBeLessThan(400);
  });

  it('accepts a 2000-character prompt', () => {
    expect(parseJobRequest({ prompt: 'é'.repeat(2000) }, 'x').prompt).toHaveLength(2000);
  });

  it('rejects a non-object', () => {
    expect(requestError([1, 2]).issues[0].path).toBe('(root)');
    expect(requestError(null).issues[0].path).toBe('(root)');
    expect(requestError('{"steps": 5}').issues[0].path).toBe('(root)');
  });
});

describe('family check', () => {
  const check = (input: Record<string, unknown>, family: Family): string[] => {
    try {
      checkJobRequestForFamily(parseJobRequest(input, 'j'), family, 'j');
      return [];
    } catch (e) {
      expect(e).toBeInstanceOf(InvalidRequestError);
      return (e as InvalidRequestError).issues.map((i) => i.path);
    }
  };

  it('accepts fields that apply', () => {
    expect(check({ guidanceScale: 7.5, eta: 1, frameStride: 24, imageGuidanceScale: 2, start: 940, steps: 50 }, 'dynamicrafter')).toEqual([]);
    expect(check({ guidanceScale: 12, fps: 24, start: 1000 }, 'videocrafter')).toEqual([]);
    expect(check({ motionBucketId: 127, minGuidanceScale: 1, maxGuidanceScale: 3, start: 100.5, steps: 200 }, 'svd')).toEqual([]);
  });

  it('rejects fields that do not apply, by name', () => {
    expect(check({ guidanceScale: 3, eta: 0.5 }, 'svd')).toEqual(['guidanceScale', 'eta']);
    expect(check({ motionBucketId: 100 }, 'dynamicrafter')).toEqual(['motionBucketId']);
    expect(check({ frameStride: 10, imageGuidanceScale: 1 }, 'videocrafter')).toEqual(['imageGuidanceScale', 'frameStride']);
    expect(check({ prompt: 'a cat' }, 'svd')).toEqual(['prompt']);
  });

  it('requires an integer M, and steps ≤ M, for VP models', () => {
    expect(check({ start: 940.5 }, 'dynamicrafter')).toEqual(['start']);
    expect(check({ start: 20, steps: 50 }, 'videocrafter')).toEqual(['steps']);
  });
});

describe('safe relative keys', () => {
  it('accept ids and nested keys, refuse path tricks', () => {
    for (const k of ['dynamicrafter-320x512', 'stats/dc/v1.safetensors', 'A_b.c-d']) expect(isSafeRelativeKey(k)).toBe(true);
    for (const k of ['', '.', '..', 'a/../b', './a', '/a', 'a/', 'a//b', 'a\\b', '.hidden', 'a b', 'x'.repeat(1025), 'é']) {
      expect(isSafeRelativeKey(k)).toBe(false);
    }
  });
});

describe('manifest', () => {
  const dc = (): ManifestInput => docExample('manifest-dynamicrafter') as ManifestInput;

  function manifestIssues(json: unknown): string[] {
    const e = catchError(() => parseManifest(json, 'models/x/manifest.json'));
    expect(e).toBeInstanceOf(ManifestError);
    const err = e as ManifestError;
    expect(err.name).toBe('ManifestError');
    expect(err.message.startsWith('models/x/manifest.json: invalid model manifest:')).toBe(true);
    return err.issues.map((i) => `${i.path}: ${i.message}`);
  }

  it('parses the documented DynamiCrafter and SVD examples', () => {
    const m = parseManifest(dc(), 'docs');
    expect(m.family).toBe('dynamicrafter');
    expect(m.schedule.kind).toBe('vp-ddim');
    if (m.schedule.kind === 'vp-ddim') expect(m.schedule.dynamicRescale?.finalPrev).toBe('tau0');
    expect(m.components.unet.inputs.map((i) => i.name)).toEqual(['x', 't', 'context', 'fs']);
    const svd = parseManifest(docExample('manifest-svd'), 'docs');
    expect(svd.schedule).toEqual({ kind: 'edm-euler', sigmaMin: 0.002, sigmaMax: 700, rho: 7, parameterization: 'v' });
  });

  it('fills dynamicRescale defaults', () => {
    const j = dc();
    if (j.schedule.kind !== 'vp-ddim') throw new Error('example changed');
    j.schedule.dynamicRescale = { enabled: true, base: 0.7 };
    const m = parseManifest(j, 'x');
    if (m.schedule.kind !== 'vp-ddim') throw new Error('kind');
    expect(m.schedule.dynamicRescale).toEqual({ enabled: true, base: 0.7, rampSteps: 400, finalPrev: 'tau0' });
  });

  const invalid: [string, (j: Record<string, unknown> & ManifestInput) => void, RegExp][] = [
    ['wrong format', (j) => void (j.format = 'cil-bundle/2' as 'cil-bundle/1'), /^format: /],
    ['unknown top-level field', (j) => void ((j as Record<string, unknown>).extra = 1), /^\(root\): unknown field "extra"/],
    ['unknown schedule kind', (j) => void ((j.schedule as { kind: string }).kind = 'ddpm'), /^schedule\.kind: /],
    ['svd schedule for a VP family', (j) => void (j.schedule = { kind: 'edm-euler', sigmaMin: 0.002, sigmaMax: 700, rho: 7, parameterization: 'v' }), /^schedule\.kind: dynamicrafter models use 'vp-ddim'/],
    ['linearStart ≥ linearEnd', (j) => void ((j.schedule as { linearStart: number }).linearStart = 0.5), /^schedule\.linearEnd: must exceed linearStart/],
    ['unknown schedule field', (j) => void ((j.schedule as Record<string, unknown>).betaStart = 1), /^schedule: unknown field "betaStart"/],
    ['resolution not a multiple of 8', (j) => void (j.resolution.width = 500), /^resolution\.width: 500 is not a multiple of latent\.downsample/],
    ['missing a family default', (j) => void delete j.defaults.frameStride, /^defaults\.frameStride: required for dynamicrafter/],
    ['missing statistics with Analytic-Init on', (j) => void delete j.defaults.statistics, /^defaults\.statistics: required unless/],
    ['a default that does not apply', (j) => void (j.defaults.motionBucketId = 127), /^defaults\.motionBucketId: does not apply/],
    ['start beyond the schedule', (j) => void ((j.schedule as { timesteps: number }).timesteps = 500), /^defaults\.start: must not exceed schedule\.timesteps/],
    ['a default out of range', (j) => void (j.defaults.steps = 0), /^defaults\.steps: /],
    ['a component file escaping the bundle', (j) => void (j.components.unet.file = '../unet.onnx'), /^components\.unet\.file: must be a relative key/],
    ['a component file that is not .onnx', (j) => void (j.components.unet.file = 'unet.bin'), /^components\.unet\.file: must name a \.onnx file/],
    ['duplicate input names', (j) => void (j.components.unet.inputs[1].name = 'x'), /^components\.unet\.inputs\[1\]\.name: duplicate inputs name "x"/],
    ['a bad symbolic dim', (j) => void (j.components.unet.inputs[0].dims[0] = 'batch size'), /^components\.unet\.inputs\[0\]\.dims\[0\]: /],
    ['an unknown tensor dtype', (j) => void ((j.components.unet.outputs[0] as { dtype: string }).dtype = 'bfloat16'), /^components\.unet\.outputs\[0\]\.dtype: /],
    ['a bad component name', (j) => void (j.components['bad name'] = j.components.unet), /^components\.bad name: invalid key/],
    ['no components', (j) => void (j.components = {}), /^components: must list at least one component/],
    ['empty outputs', (j) => void (j.components.unet.outputs = []), /^components\.unet\.outputs: /],
  ];
  it.each(invalid)('rejects %s, naming the field', (_label, mutate, pattern) => {
    const j = dc() as Record<string, unknown> & ManifestInput;
    mutate(j);
    const issues = manifestIssues(j);
    expect(issues.some((i) => pattern.test(i)), issues.join('\n')).toBe(true);
  });

  it('requires the SVD defaults and edm-euler start above sigmaMin', () => {
    const svd = docExample('manifest-svd') as ManifestInput;
    delete svd.defaults.motionBucketId;
    svd.defaults.start = 0.001;
    const issues = manifestIssues(svd);
    expect(issues.some((i) => i.startsWith('defaults.motionBucketId: required for svd'))).toBe(true);
    expect(issues.some((i) => i.startsWith('defaults.start: σ_max must exceed schedule.sigmaMin'))).toBe(true);
  });

  it('rejects a non-object', () => {
    expect(manifestIssues('manifest')[0]).toMatch(/^\(root\): /);
  });
});

describe('statistics metadata', () => {
  const meta: StatisticsMetadata = {
    format: 'cil-stats/1',
    family: 'dynamicrafter',
    height: 320,
    width: 512,
    frames: 16,
    latentShape: [4, 16, 40, 64],
    sampleCount: 10000,
    vaeId: 'dynamicrafter-512/vae',
    createdAt: '2025-01-15T12:00:00Z',
    source: 'computed',
  };

  it('encodes to strings and decodes back', () => {
    const record = encodeStatisticsMetadata(meta);
    expect(record).toEqual(docExample('statistics-metadata'));
    expect(decodeStatisticsMetadata(record, 's')).toEqual(meta);
  });

  it('round-trips through a safetensors file with the required tensors', () => {
    const x0 = tensor(Float32Array.from({ length: 4 * 16 * 40 * 64 }, (_, i) => (i % 7) / 7), meta.latentShape);
    const bytes = writeSafetensors({ expectation_x0: x0, tr_cov_d: tensor(Float32Array.of(0.25), []) }, encodeStatisticsMetadata(meta));
    const st = readSafetensors(bytes, 'stats/dc.safetensors');
    const decoded = decodeStatisticsMetadata(st.metadata, 'stats/dc.safetensors');
    expect(decoded).toEqual(meta);
    checkStatisticsTensors(st.tensors, decoded, 'stats/dc.safetensors');
    checkStatisticsValues(st.tensors.get('expectation_x0')!.tensor(), st.tensors.get('tr_cov_d')!.tensor(), 'stats/dc.safetensors');
  });

  it('ignores extra keys', () => {
    expect(decodeStatisticsMetadata({ ...encodeStatisticsMetadata(meta), tool: 'x' }, 's')).toEqual(meta);
  });

  function statsIssues(f: () => unknown): string[] {
    const e = catchError(f);
    expect(e).toBeInstanceOf(StatisticsFormatError);
    const err = e as StatisticsFormatError;
    expect(err.name).toBe('StatisticsFormatError');
    return err.issues.map((i) => `${i.path}: ${i.message}`);
  }

  const bad: [string, Record<string, string>, string][] = [
    ['non-numeric height', { height: 'abc' }, 'height'],
    ['signed height', { height: '+320' }, 'height'],
    ['fractional frames', { frames: '16.5' }, 'frames'],
    ['zero sampleCount', { sampleCount: '0' }, 'sampleCount'],
    ['latentShape not JSON', { latentShape: '4x16x40x64' }, 'latentShape'],
    ['latentShape with a negative', { latentShape: '[4,-1]' }, 'latentShape[1]'],
    ['a foreign format tag', { format: 'pt' }, 'format'],
    ['an unknown family', { family: 'sora' }, 'family'],
    ['a non-ISO date', { createdAt: 'yesterday' }, 'createdAt'],
    ['an unknown source', { source: 'guessed' }, 'source'],
  ];
  it.each(bad)('rejects %s, naming the key', (_label, patch, path) => {
    const issues = statsIssues(() => decodeStatisticsMetadata({ ...encodeStatisticsMetadata(meta), ...patch }, 'stats/x'));
    expect(issues.map((i) => i.split(':')[0])).toEqual([path]);
  });

  it('reports every missing key', () => {
    const issues = statsIssues(() => decodeStatisticsMetadata({ format: 'pt' }, 'stats/authors.safetensors'));
    expect(issues.length).toBe(10);
  });

  it('refuses to encode invalid metadata', () => {
    expect(statsIssues(() => encodeStatisticsMetadata({ ...meta, height: -1 }))[0]).toMatch(/^height: /);
  });

  it('checks tensor names, dtypes and dims, pointing at the importer for authors files', () => {
    const entries = (e: Record<string, { dtype: string; dims: number[] }>) => new Map(Object.entries(e));
    expect(statsIssues(() => checkStatisticsTensors(entries({ Expectation_X0: { dtype: 'F32', dims: [4] }, Tr_Cov_d: { dtype: 'F32', dims: [] } }), meta, 's'))).toEqual([
      "expectation_x0: missing (found Expectation_X0, Tr_Cov_d: an authors' file; import it first)",
      "tr_cov_d: missing (found Expectation_X0, Tr_Cov_d: an authors' file; import it first)",
    ]);
    const issues = statsIssues(() =>
      checkStatisticsTensors(entries({ expectation_x0: { dtype: 'F16', dims: [4, 16, 40, 63] }, tr_cov_d: { dtype: 'F32', dims: [2] } }), meta, 's'),
    );
    expect(issues).toEqual([
      'expectation_x0: must be F32, got F16',
      'expectation_x0: dims [4, 16, 40, 63] differ from metadata latentShape [4, 16, 40, 64]',
      'tr_cov_d: must be a scalar (dims [] or [1]), got [2]',
    ]);
    expect(() =>
      checkStatisticsTensors(entries({ expectation_x0: { dtype: 'F32', dims: [4, 16, 40, 64] }, tr_cov_d: { dtype: 'F32', dims: [1] } }), meta, 's'),
    ).not.toThrow();
  });

  it('checks the values', () => {
    const x0 = tensor(Float32Array.of(0, NaN), [2]);
    const issues = statsIssues(() => checkStatisticsValues(x0, tensor(Float32Array.of(-0.5), []), 's'));
    expect(issues).toEqual(['expectation_x0: element 1 is NaN; all must be finite', 'tr_cov_d: must be one finite value ≥ 0, got [-0.5]']);
  });
});

describe('placement (the worker\'s --placement argument)', () => {
  const p = { tier: 'production', queue: 'arn:aws:batch:us-east-1:1:job-queue/q', capacity: 'spot', spotCancellations: 0, executionStartedAt: '2026-01-01T00:00:00Z' };
  it('parses the workflow\'s JSON; `none` (the job definition\'s default) is no placement', () => {
    expect(parsePlacementArg(JSON.stringify(p))).toEqual(p);
    expect(parsePlacementArg(NO_PLACEMENT)).toBeNull();
  });
  it('refuses what is not a placement, naming the field', () => {
    expect(() => parsePlacementArg('Ref::placement')).toThrow(PlacementError);
    expect(() => parsePlacementArg('Ref::placement')).toThrow(/--placement: neither 'none' nor JSON/);
    expect(() => parsePlacementArg(JSON.stringify({ ...p, capacity: 'spotty' }))).toThrow(/--placement: invalid placement:\n\s+- capacity:/);
    expect(() => parsePlacementArg(JSON.stringify({ ...p, extra: 1 }))).toThrow(/extra/);
    expect(() => parsePlacementArg(JSON.stringify({ ...p, executionStartedAt: 'yesterday' }))).toThrow(/executionStartedAt/);
  });
});
