import { describe, expect, it } from 'vitest';
import { JobSpec } from '#shared/schemas';
import { jobIdFor } from '#shared/schemas';
import { parseManifest } from '#shared/schemas';
import { InvalidEvent, InvalidKey, InvalidRequest, ModelNotFound, PipelineError, StatisticsNotFound } from '../src/errors.ts';
import {
  buildJobSpec,
  checkManifest,
  decodeEventKey,
  FALLBACK_FPS,
  MAX_SIDECAR_BYTES,
  parseRequest,
  parseUploadEvent,
  readRequestJson,
  resolveRequest,
  SEED_LIMIT,
  seedForJob,
} from '../src/validate/core.ts';
import { tinyManifest, tinySvdManifest, uploadEvent } from './helpers/fixtures.ts';

const tiny = parseManifest(tinyManifest(), 'tiny');
const svd = parseManifest(tinySvdManifest(), 'svd');
const W = { sidecar: 'inputs/cat.json', metadata: 'inputs/cat.png (x-amz-meta-request)' };

function thrown(f: () => unknown): PipelineError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PipelineError);
    return e as PipelineError;
  }
  throw new Error('expected a throw');
}

function resolve(json: unknown, manifest = tiny, seed = 1234) {
  return resolveRequest(parseRequest(json, 'inputs/cat.json'), manifest, () => seed, 'inputs/cat.json');
}

describe('parseUploadEvent', () => {
  it('reads the EventBridge event Step Functions passes', () => {
    const u = parseUploadEvent(uploadEvent('data', 'inputs/cats/tabby.png', { size: 1234, etag: '"abc"', versionId: 'v1', time: '2025-01-15T12:00:00Z' }));
    expect(u).toEqual({
      bucket: 'data',
      key: 'inputs/cats/tabby.png',
      versionId: 'v1',
      etag: 'abc',
      size: 1234,
      time: '2025-01-15T12:00:00.000Z',
      jobId: jobIdFor('data', 'inputs/cats/tabby.png', 'v1'),
      inlineRequest: null,
      batch: null,
    });
  });

  it("reads the workflow's generation input: its job id, an inline request, batches/ images for manifest jobs only", () => {
    const jobId = 'j-0123456789abcdef01234567';
    const base = { jobId, bucket: 'data', key: 'inputs/a.png', versionId: 'v', etag: 'e', size: 5, request: null, batch: null };
    expect(parseUploadEvent(base)).toMatchObject({ jobId, key: 'inputs/a.png', versionId: 'v', etag: 'e', size: 5, inlineRequest: null, batch: null, time: null });
    const batch = { name: 'b1', manifestKey: 'batches/b1.jsonl', line: 3 };
    const item = { ...base, key: 'batches/img/a.jpg', versionId: null, etag: null, size: null, request: { steps: 4 }, batch };
    expect(parseUploadEvent(item)).toMatchObject({ key: 'batches/img/a.jpg', inlineRequest: { steps: 4 }, batch });
    expect(thrown(() => parseUploadEvent({ ...item, batch: null })).reason).toMatch(/must start with 'inputs\/'/);
    expect(thrown(() => parseUploadEvent({ ...item, key: 'batches/../x.png' })).reason).toMatch(/no '\.\.'/);
    expect(thrown(() => parseUploadEvent({ ...base, jobId: 'nope' }))).toBeInstanceOf(InvalidEvent);
  });

  it('takes the detail alone, and uses the ETag as the version of an unversioned upload', () => {
    const ev = uploadEvent('data', 'inputs/a.jpg', { etag: 'e1' }).detail;
    const u = parseUploadEvent(ev);
    expect(u.time).toBeNull();
    expect(u.jobId).toBe(jobIdFor('data', 'inputs/a.jpg', 'e1'));
    expect(u.jobId).toMatch(/^j-[0-9a-f]{24}$/);
    expect(parseUploadEvent(uploadEvent('data', 'inputs/a.jpg', { etag: 'e2' })).jobId).not.toBe(u.jobId);
  });

  it('decodes URL-encoded keys, then checks them', () => {
    expect(decodeEventKey('inputs/my%2Dcat.png')).toBe('inputs/my-cat.png');
    expect(parseUploadEvent(uploadEvent('data', 'inputs/my%2Dcat.png')).key).toBe('inputs/my-cat.png');
    expect(decodeEventKey('inputs/plain.png')).toBe('inputs/plain.png');
    expect(thrown(() => parseUploadEvent(uploadEvent('data', 'inputs/my+cat.png'))).reason).toMatch(/"inputs\/my cat.png" refused/);
    expect(thrown(() => parseUploadEvent(uploadEvent('data', 'inputs/%2e%2e/x.png'))).name).toBe('InvalidKey');
    expect(thrown(() => parseUploadEvent(uploadEvent('data', 'inputs/bad%E0%A4%A.png'))).reason).toMatch(/not valid URL encoding/);
  });

  it.each([
    ['..', 'inputs/../models/tiny/manifest.png'],
    ['spaces', 'inputs/my cat.png'],
    ['unicode', 'inputs/kätzchen.png'],
    ['leading /', '/inputs/cat.png'],
    ['outside inputs/', 'models/cat.png'],
    ['hidden segment', 'inputs/.cat.png'],
    ['empty segment', 'inputs//cat.png'],
    ['not an image extension', 'inputs/cat.json'],
    ['backslash', 'inputs\\cat.png'],
  ])('refuses a key with %s (InvalidKey)', (_what, key) => {
    const e = thrown(() => parseUploadEvent(uploadEvent('data', key)));
    expect(e).toBeInstanceOf(InvalidKey);
    expect(e.toJSON().error).toBe('InvalidKey');
  });

  it('refuses malformed events and other buckets (InvalidEvent)', () => {
    expect(thrown(() => parseUploadEvent(null))).toBeInstanceOf(InvalidEvent);
    expect(thrown(() => parseUploadEvent({ detail: { bucket: { name: 'data' } } })).reason).toMatch(/object/);
    expect(thrown(() => parseUploadEvent({ Records: [] }))).toBeInstanceOf(InvalidEvent);
    expect(thrown(() => parseUploadEvent(uploadEvent('other', 'inputs/a.png'), 'data')).reason).toMatch(/bucket 'other'.*'data'/);
  });
});

describe('readRequestJson', () => {
  const meta = { request: '{"steps": 7}' };
  it('prefers the sidecar, then metadata, then all defaults', () => {
    expect(readRequestJson(Buffer.from('{"steps": 5}'), meta, W)).toEqual({ json: { steps: 5 }, source: 'sidecar', where: W.sidecar });
    expect(readRequestJson(null, meta, W)).toEqual({ json: { steps: 7 }, source: 'metadata', where: W.metadata });
    expect(readRequestJson(null, {}, W)).toEqual({ json: {}, source: 'none', where: W.sidecar });
  });

  it.each([
    ['not JSON', Buffer.from('{steps: 5}'), /not valid JSON/],
    ['empty', Buffer.from('  \n'), /empty/],
    ['not UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), /not valid UTF-8/],
    ['too large', Buffer.alloc(MAX_SIDECAR_BYTES + 1, 0x20), /over the limit/],
  ])('refuses a sidecar that is %s', (_what, bytes, reason) => {
    const e = thrown(() => readRequestJson(bytes, {}, W));
    expect(e).toBeInstanceOf(InvalidRequest);
    expect(e.reason).toMatch(reason);
  });

  // Defect 4 of issue 19: V8's SyntaxError quotes ~10 characters around the fault, and for a
  // sidecar those are often the prompt; the reason travels to the failure record, SNS/EventBridge
  // and the WARN log. Each text below has its fault inside (or next to) a secret-looking prompt.
  const SECRET = 'Zq9xK7wV3mTbB2nQ';
  /** Every 4-character window of the secret: none may appear in what is reported. */
  const fragments = Array.from({ length: SECRET.length - 3 }, (_, i) => SECRET.slice(i, i + 4));
  it.each([
    ['single-quoted prompt', `{"model": "tiny", "prompt": '${SECRET} a cat', "steps": 4}`, 'unexpected character', 1, 29],
    ['unquoted prompt', `{"model": "tiny",\n "prompt": ${SECRET}}`, 'unexpected character', 2, 12],
    ['bare word inside the prompt', `{"prompt": "a" ${SECRET}"}`, 'unexpected character', 1, 16],
    ['unterminated string', `{"prompt": "${SECRET}`, 'unterminated string', 1, 29],
    ['bad escape', `{"prompt": "${SECRET.slice(0, 8)}\\q${SECRET.slice(8)}"}`, 'invalid escape sequence', 1, 22],
    ['control character', `{"prompt": "${SECRET.slice(0, 8)}\u0001${SECRET.slice(8)}"}`, 'control character in a string (escape it)', 1, 21],
    ['cut short', `{"prompt": "${SECRET}", `, 'unexpected end of input', 1, 32],
  ])('a JSON syntax error names its kind and position, never the text (%s; sidecar and x-amz-meta-request)', (_what, text, kind, line, column) => {
    for (const [bytes, meta, at] of [
      [Buffer.from(text), {}, W.sidecar],
      [null, { request: text }, W.metadata],
    ] as const) {
      const e = thrown(() => readRequestJson(bytes, meta, W));
      expect(e).toBeInstanceOf(InvalidRequest);
      expect(e.reason).toBe(`${at}: not valid JSON (${kind} at line ${line}, column ${column})`);
      const everything = JSON.stringify({ ...e.toJSON(), message: e.message, stack: e.stack, cause: (e as Error).cause });
      for (const f of fragments) expect(everything).not.toContain(f);
    }
  });
});

describe('resolveRequest', () => {
  it('fills every null field from the manifest (values written out by hand)', () => {
    expect(resolve({ model: 'tiny' })).toEqual({
      model: 'tiny',
      family: 'dynamicrafter',
      prompt: '',
      steps: 10,
      start: 940,
      analyticInit: true,
      statistics: 'statistics/tiny-stats.safetensors',
      guidanceScale: 7.5,
      imageGuidanceScale: null,
      guidanceRescale: null,
      eta: 1,
      seed: 1234,
      frames: 4,
      fps: 10,
      frameStride: 10,
      motionBucketId: null,
      noiseAugStrength: null,
      minGuidanceScale: null,
      maxGuidanceScale: null,
      outputs: ['mp4', 'gif'],
      compat: 'paper',
    });
  });

  it('keeps what the request sets', () => {
    const r = resolve({ model: 'tiny', prompt: 'a cat', steps: 25, start: 900, seed: 7, frames: 8, fps: 12, guidanceRescale: 0.7, statistics: 'other/s1', outputs: ['webp'], compat: 'reference' });
    expect(r).toMatchObject({ prompt: 'a cat', steps: 25, start: 900, seed: 7, frames: 8, fps: 12, guidanceRescale: 0.7, statistics: 'statistics/other/s1.safetensors', outputs: ['webp'], compat: 'reference' });
  });

  it('follows the manifest analyticInit default when the request leaves it out', () => {
    const off = parseManifest(tinyManifest({ defaults: { ...tinyManifest().defaults, analyticInit: false, statistics: undefined } }), 'off');
    expect(resolve({ model: 'tiny' }, off)).toMatchObject({ analyticInit: false, statistics: null });
    const e = thrown(() => resolve({ model: 'tiny', analyticInit: true }, off));
    expect(e).toBeInstanceOf(StatisticsNotFound);
    expect(e.reason).toMatch(/names no default statistics/);
    expect(resolve({ model: 'tiny', analyticInit: false })).toMatchObject({ analyticInit: false, statistics: null });
  });

  it('falls back to 8 fps when neither the request nor the manifest says', () => {
    const { fps: _fps, ...noFps } = tinyManifest().defaults;
    expect(FALLBACK_FPS).toBe(8);
    expect(resolve({ model: 'tiny' }, parseManifest(tinyManifest({ defaults: noFps }), 'nofps')).fps).toBe(8);
  });

  it('resolves an SVD request: VP-only fields stay null', () => {
    expect(resolve({ model: 'tiny-svd' }, svd)).toMatchObject({
      family: 'svd', steps: 25, start: 700, analyticInit: false, statistics: null, guidanceScale: null, eta: null, frameStride: null,
      fps: 7, motionBucketId: 127, noiseAugStrength: 0.02, minGuidanceScale: 1, maxGuidanceScale: 3, frames: 6,
    });
  });

  it.each([
    ['unknown fields', { model: 'tiny', stpes: 5, sead: 1 }, /unknown fields "stpes", "sead"/],
    ['wrong types', { model: 'tiny', steps: '50', analyticInit: 'yes' }, /steps: .*expected number[\s\S]*analyticInit/],
    ['out-of-range values', { model: 'tiny', steps: 5000, guidanceScale: -1, frames: 65 }, /steps: Too big[\s\S]*guidanceScale: Too small[\s\S]*frames: Too big/],
    ['a 100 kB prompt', { model: 'tiny', prompt: 'x'.repeat(100_000) }, /prompt: Too big: expected string to have <=2000 characters/],
    ['a field of another family', { model: 'tiny', motionBucketId: 100 }, /motionBucketId: does not apply to dynamicrafter/],
    ['more steps than the default M', { model: 'tiny', steps: 950 }, /steps: must not exceed start M = 940.*after filling model defaults/],
    ['a non-integer M', { model: 'tiny', start: 900.5 }, /start: must be an integer/],
    ['M past the schedule', { model: 'tiny', start: 1000, steps: 10 }, null],
    ['another model', { model: 'other' }, /model: names 'other', but the manifest is 'tiny'/],
    ['a prompt for SVD', { model: 'tiny-svd', prompt: 'no' }, /svd models take no text prompt/],
  ])('refuses %s (InvalidRequest)', (_what, json, reason) => {
    const m = json.model === 'tiny-svd' ? svd : tiny;
    if (reason === null) {
      expect(resolve(json, m).start).toBe(1000); // the edge is allowed
      return;
    }
    const e = thrown(() => resolve(json, m));
    expect(e).toBeInstanceOf(InvalidRequest);
    expect(e.reason).toMatch(reason);
  });

  it('draws a seed per job: deterministic, below 2^48, different between jobs', () => {
    const a = seedForJob('j-000000000000000000000001');
    expect(seedForJob('j-000000000000000000000001')).toBe(a);
    expect(seedForJob('j-000000000000000000000002')).not.toBe(a);
    expect(Number.isInteger(a) && a >= 0 && a < SEED_LIMIT).toBe(true);
    expect(resolve({ model: 'tiny', seed: 0 }).seed).toBe(0);
  });
});

describe('checkManifest', () => {
  it('parses a valid manifest', () => {
    expect(checkManifest(JSON.stringify(tinyManifest()), 'tiny', 'models/tiny/manifest.json').id).toBe('tiny');
  });
  it.each([
    ['missing', null, /no manifest at models\/tiny\/manifest.json/],
    ['not JSON', '{', /not valid JSON/],
    ['invalid', JSON.stringify({ ...tinyManifest(), frames: 0 }), /invalid model manifest[\s\S]*frames/],
    ['another model', JSON.stringify({ ...tinyManifest(), id: 'other' }), /is the manifest of 'other'/],
  ])('%s → ModelNotFound', (_what, text, reason) => {
    const e = thrown(() => checkManifest(text, 'tiny', 'models/tiny/manifest.json'));
    expect(e).toBeInstanceOf(ModelNotFound);
    expect(e.reason).toMatch(reason);
  });
  it('a manifest that is not JSON is reported by kind and position, without quoting it', () => {
    const e = thrown(() => checkManifest(`{"id": "tiny", "description": 'Zq9xK7wV3mTbB2nQ'}`, 'tiny', 'models/tiny/manifest.json'));
    expect(e.reason).toBe("model 'tiny': models/tiny/manifest.json is not valid JSON (unexpected character at line 1, column 31)");
  });
});

describe('buildJobSpec', () => {
  it('builds a spec the shared schema accepts, with the job’s own keys', () => {
    const u = parseUploadEvent(uploadEvent('data', 'inputs/cat.png', { etag: 'e' }));
    const spec = buildJobSpec(u, 42, resolve({ model: 'tiny' }), '2025-01-15T12:00:00.000Z');
    expect(JobSpec.parse(spec)).toEqual(spec);
    expect(spec).toMatchObject({
      jobId: u.jobId,
      input: { key: 'inputs/cat.png', versionId: null, etag: 'e', size: 42 },
      imageKey: `jobs/${u.jobId}/input.png`,
      modelPrefix: 'models/tiny',
      workPrefix: `jobs/${u.jobId}/`,
      outputPrefix: `outputs/${u.jobId}/`,
    });
  });
});
