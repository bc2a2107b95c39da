/**
 * The pure core of Post-process (no AWS SDK): checks the worker's frames and metadata, encodes
 * the requested videos (encode.ts), and plans every output object and the `result.json` manifest
 * listing them with size and SHA-256. Deterministic: the same job gives the same keys and bytes.
 * Documented in docs/functions.md.
 */
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import type { Metadata } from 'sharp';
import { z } from 'zod';
import { parseJsonText } from '#shared/formats';
import { formatIssues, parseOrThrow, RecordedPlacement, toSchemaIssues } from '#shared/schemas';
import { jobKeys, JOB_ID_PATTERN } from '#shared/schemas';
import { JobSpec } from '#shared/schemas';
import { InvalidEvent, InvalidWorkerOutput, OutputConflict, WorkerOutputNotFound } from '../errors.ts';
import type { EncodeOptions, VideoFormat } from './encode.ts';
import { encodeVideos } from './encode.ts';

export const RESULT_FORMAT = 'cil-result/1';

export const OUTPUT_KINDS = ['mp4', 'gif', 'webp', 'poster', 'metadata', 'png-frame', 'latent-npy'] as const;
export const OutputKind = z.enum(OUTPUT_KINDS);
export type OutputKind = z.infer<typeof OutputKind>;

export const OutputEntry = z.strictObject({
  kind: OutputKind,
  key: z.string().min(1).max(1024),
  contentType: z.string().min(1).max(128),
  bytes: z.int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type OutputEntry = z.infer<typeof OutputEntry>;

/** The fields every job record (result.json, failures/<jobId>.json) starts with: its format, its outcome, the job. */
export function jobRecordHead<F extends string, S extends string>(format: F, status: S): { format: z.ZodLiteral<F>; status: z.ZodLiteral<S>; jobId: z.ZodString } {
  return { format: z.literal(format), status: z.literal(status), jobId: z.string().regex(JOB_ID_PATTERN) };
}

/** `outputs/<jobId>/result.json`: what Post-process produced, and the input of a success Notify. */
export const JobResult = z.strictObject({
  ...jobRecordHead(RESULT_FORMAT, 'succeeded'),
  bucket: z.string().min(3).max(63),
  model: z.string().min(1).max(64),
  input: z.strictObject({ key: z.string().min(1).max(1024), versionId: z.string().max(1024).nullable() }),
  outputPrefix: z.string().min(1).max(1024),
  resultKey: z.string().min(1).max(1024),
  video: z.strictObject({ frames: z.int().min(1), fps: z.int().min(1).max(60), width: z.int().min(1), height: z.int().min(1) }),
  outputs: z.array(OutputEntry).min(1),
  /** Numeric timings (milliseconds or seconds, as the worker names them) from the worker's metadata.json, if it has a `timings` object. */
  timings: z.record(z.string(), z.number()).nullable(),
  /** Where the workflow placed the Batch job (queue, Spot or on-demand, Spot cancellations, queue wait), from metadata.json; absent when the worker was not given one. */
  placement: RecordedPlacement.optional(),
  /** The job's createdAt (the upload's time), not the time of this run: re-runs write the same bytes. */
  createdAt: z.iso.datetime(),
});
export type JobResult = z.infer<typeof JobResult>;

/**
 * A `result.json` already under the job's output prefix, from an earlier run of the same job:
 * that run finished, so its outputs are kept rather than rewritten. OutputConflict when the file
 * is not a result of this job and input — then nothing is written over it.
 */
export function resultKeyOf(jobId: string): string {
  return `${jobKeys(jobId).output}result.json`;
}

/**
 * The name under `outputs/<jobId>/` of each kind of output, exactly as `postprocess` writes it.
 * A result naming anything else (another job's outputs, failures/, an upload, `..`, encoded or
 * doubled separators) is not a result Post-process wrote, whatever its other fields say.
 */
const OUTPUT_NAMES: Readonly<Record<OutputKind, { readonly pattern: RegExp; readonly shown: string }>> = {
  mp4: { pattern: /^video\.mp4$/, shown: 'video.mp4' },
  gif: { pattern: /^video\.gif$/, shown: 'video.gif' },
  webp: { pattern: /^video\.webp$/, shown: 'video.webp' },
  poster: { pattern: /^poster\.png$/, shown: 'poster.png' },
  metadata: { pattern: /^metadata\.json$/, shown: 'metadata.json' },
  'png-frame': { pattern: /^frames\/[0-9]{4}\.png$/, shown: 'frames/NNNN.png' },
  'latent-npy': { pattern: /^latent\.npy$/, shown: 'latent.npy' },
};

/**
 * What in a job result points outside its own job: the output prefix, the result key and every
 * output key must be the job's own (`outputs/<jobId>/<name of its kind>`). Each problem says what
 * was expected, never the text found (it may be forged, or another user's key).
 */
export function resultScopeProblems(r: JobResult): string[] {
  const out = jobKeys(r.jobId).output;
  const problems: string[] = [];
  if (r.outputPrefix !== out) problems.push(`outputPrefix is not ${out}`);
  if (r.resultKey !== resultKeyOf(r.jobId)) problems.push(`resultKey is not ${resultKeyOf(r.jobId)}`);
  r.outputs.forEach((o, i) => {
    const name = OUTPUT_NAMES[o.kind];
    if (!o.key.startsWith(out) || !name.pattern.test(o.key.slice(out.length))) problems.push(`outputs[${i}] (${o.kind}): key is not ${out}${name.shown}`);
  });
  const MAX_LISTED = 5;
  return problems.length > MAX_LISTED ? [...problems.slice(0, MAX_LISTED), `and ${problems.length - MAX_LISTED} more`] : problems;
}

export function priorResult(bytes: Buffer, spec: JobSpec): JobResult {
  const where = resultKeyOf(spec.jobId);
  let json: unknown;
  try {
    json = parseJsonText(bytes.toString('utf8'));
  } catch (e) {
    throw new OutputConflict(`${where} exists but is not JSON (${(e as Error).message}); refusing to write over it`);
  }
  const r = JobResult.safeParse(json);
  if (!r.success) throw new OutputConflict(formatIssues(where, 'exists but is not a cil-result/1 document; refusing to write over it', toSchemaIssues(r.error.issues)));
  const p = r.data;
  if (p.jobId !== spec.jobId || p.bucket !== spec.bucket || p.input.key !== spec.input.key || p.input.versionId !== spec.input.versionId) {
    throw new OutputConflict(`${where} belongs to job ${p.jobId} (input s3://${p.bucket}/${p.input.key}), not to this job's input s3://${spec.bucket}/${spec.input.key}; refusing to write over it`);
  }
  // Taken as finished, it would go to Notify, which presigns what it lists.
  const scope = resultScopeProblems(p);
  if (scope.length > 0) throw new OutputConflict(`${where} lists objects outside this job's outputs (${scope.join('; ')}); refusing to take it as this job's result or to write over it`);
  return p;
}

/** One object Post-process writes. */
export interface OutputFile {
  readonly kind: OutputKind;
  readonly key: string;
  readonly contentType: string;
  readonly body: Buffer;
}

export const FRAME_NAME = /^(\d{4})\.png$/;

/**
 * Reads the Post-process input: a JobSpec, or `{spec: JobSpec}` (the state machine may keep the
 * spec under a key). Refuses a spec whose prefixes are not the job's own (a forged spec must not
 * make the function write elsewhere).
 */
export function parsePostprocessInput(input: unknown, expectBucket: string | null): JobSpec {
  const raw = typeof input === 'object' && input !== null && 'spec' in input ? input.spec : input;
  const r = JobSpec.safeParse(raw, { reportInput: true });
  if (!r.success) throw new InvalidEvent(formatIssues('post-process input', 'not a job spec', toSchemaIssues(r.error.issues)));
  const spec = r.data;
  const keys = jobKeys(spec.jobId);
  if (spec.workPrefix !== keys.work || spec.outputPrefix !== keys.output) {
    throw new InvalidEvent(`job spec ${spec.jobId}: workPrefix/outputPrefix must be ${keys.work} and ${keys.output}`);
  }
  if (expectBucket !== null && spec.bucket !== expectBucket) {
    throw new InvalidEvent(`job spec ${spec.jobId} names bucket '${spec.bucket}', but this pipeline serves '${expectBucket}'`);
  }
  return spec;
}

/**
 * The worker's frame keys in order: `<framesPrefix>NNNN.png`, numbered 0 … expected − 1 with no
 * gaps (other names are ignored). WorkerOutputNotFound when there are none.
 */
export function orderFrameKeys(keys: readonly string[], framesPrefix: string, expected: number): string[] {
  const byIndex = new Map<number, string>();
  for (const k of keys) {
    if (!k.startsWith(framesPrefix)) continue;
    const m = FRAME_NAME.exec(k.slice(framesPrefix.length));
    if (m) byIndex.set(Number(m[1]), k);
  }
  if (byIndex.size === 0) throw new WorkerOutputNotFound(`no frames under ${framesPrefix} (expected ${expected} files 0000.png …)`);
  const out: string[] = [];
  for (let i = 0; i < byIndex.size; i++) {
    const k = byIndex.get(i);
    if (k === undefined) throw new InvalidWorkerOutput(`${framesPrefix}: frame ${String(i).padStart(4, '0')}.png is missing (found ${byIndex.size} frames)`);
    out.push(k);
  }
  if (out.length !== expected) throw new InvalidWorkerOutput(`${framesPrefix}: ${out.length} frames, but the job asked for ${expected}`);
  return out;
}

/** Every frame a PNG, all the same size; returns the size. */
export async function checkFrames(frames: readonly Buffer[], names: readonly string[]): Promise<{ width: number; height: number }> {
  let size: { width: number; height: number } | null = null;
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i];
    const name = names[i] ?? `frame ${i}`;
    if (f.length < 8 || f.readUInt32BE(0) !== 0x89504e47) throw new InvalidWorkerOutput(`${name}: not a PNG`);
    let meta: Metadata;
    try {
      meta = await sharp(f).metadata();
    } catch (e) {
      throw new InvalidWorkerOutput(`${name}: unreadable PNG (${(e as Error).message})`);
    }
    const w = meta.width ?? 0;
    const h = meta.height ?? 0;
    if (w < 2 || h < 2) throw new InvalidWorkerOutput(`${name}: ${w}×${h} is too small to encode`);
    if (size === null) size = { width: w, height: h };
    else if (w !== size.width || h !== size.height) {
      throw new InvalidWorkerOutput(`${name}: ${w}×${h}, but frame 0 is ${size.width}×${size.height}`);
    }
  }
  if (size === null) throw new WorkerOutputNotFound('no frames');
  return size;
}

/** The worker's metadata.json: a JSON object; its `timings` object's numeric fields and its `placement` are picked up. */
export function parseWorkerMetadata(bytes: Buffer, where: string): { timings: Record<string, number> | null; placement?: RecordedPlacement } {
  let json: unknown;
  try {
    json = parseJsonText(bytes.toString('utf8'));
  } catch (e) {
    throw new InvalidWorkerOutput(`${where}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new InvalidWorkerOutput(`${where}: must be a JSON object`);
  const raw = (json as { placement?: unknown }).placement;
  let placement: { placement?: RecordedPlacement } = {};
  if (raw !== undefined) {
    placement = { placement: parseOrThrow(RecordedPlacement, raw, (issues) => new InvalidWorkerOutput(formatIssues(`${where} placement`, 'invalid placement', issues))) };
  }
  const t = (json as { timings?: unknown }).timings;
  if (typeof t !== 'object' || t === null || Array.isArray(t)) return { timings: null, ...placement };
  const timings: Record<string, number> = {};
  for (const [k, v] of Object.entries(t).slice(0, 64)) {
    if (typeof v === 'number' && Number.isFinite(v) && /^[A-Za-z0-9_.-]{1,64}$/.test(k)) timings[k] = v;
  }
  return { timings: Object.keys(timings).length > 0 ? timings : null, ...placement };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface PostprocessInput {
  readonly spec: JobSpec;
  /** The worker's frames in order (0000.png …). */
  readonly frames: readonly Buffer[];
  readonly frameNames?: readonly string[];
  /** The worker's metadata.json. */
  readonly metadata: Buffer;
  /** The worker's latent.npy when the job asked for 'latent-npy'. */
  readonly latent: Buffer | null;
}

/**
 * Checks the worker output, encodes, and returns every object to write (outputs first) plus the
 * result manifest (written last, as `result.json`, so its presence means the job's outputs are
 * complete).
 */
export async function postprocess(input: PostprocessInput, opts: EncodeOptions): Promise<{ files: OutputFile[]; result: JobResult }> {
  const { spec } = input;
  const keys = jobKeys(spec.jobId);
  const names = input.frameNames ?? input.frames.map((_, i) => `${keys.frames}${String(i).padStart(4, '0')}.png`);
  if (input.frames.length !== spec.request.frames) {
    throw new InvalidWorkerOutput(`${keys.frames}: ${input.frames.length} frames, but the job asked for ${spec.request.frames}`);
  }
  const size = await checkFrames(input.frames, names);
  const { timings, placement } = parseWorkerMetadata(input.metadata, keys.workerMetadata);
  const formats = spec.request.outputs.filter((f): f is VideoFormat => f === 'mp4' || f === 'gif' || f === 'webp');
  const encoded = await encodeVideos(input.frames, spec.request.fps, formats, opts);

  const out = keys.output;
  const files: OutputFile[] = [];
  const contentType: Record<VideoFormat, string> = { mp4: 'video/mp4', gif: 'image/gif', webp: 'image/webp' };
  for (const f of formats) files.push({ kind: f, key: `${out}video.${f}`, contentType: contentType[f], body: encoded.get(f) as Buffer });
  files.push({ kind: 'poster', key: `${out}poster.png`, contentType: 'image/png', body: input.frames[0] });
  if (spec.request.outputs.includes('png-frames')) {
    input.frames.forEach((body, i) => files.push({ kind: 'png-frame', key: `${out}frames/${String(i).padStart(4, '0')}.png`, contentType: 'image/png', body }));
  }
  if (spec.request.outputs.includes('latent-npy')) {
    if (input.latent === null) throw new WorkerOutputNotFound(`${keys.latent}: the job asked for latent-npy, but the worker wrote none`);
    files.push({ kind: 'latent-npy', key: `${out}latent.npy`, contentType: 'application/octet-stream', body: input.latent });
  }
  files.push({ kind: 'metadata', key: `${out}metadata.json`, contentType: 'application/json', body: input.metadata });

  const result = JobResult.parse({
    format: RESULT_FORMAT,
    status: 'succeeded',
    jobId: spec.jobId,
    bucket: spec.bucket,
    model: spec.request.model,
    input: { key: spec.input.key, versionId: spec.input.versionId },
    outputPrefix: out,
    resultKey: resultKeyOf(spec.jobId),
    video: { frames: input.frames.length, fps: spec.request.fps, width: size.width, height: size.height },
    outputs: files.map((f) => ({ kind: f.kind, key: f.key, contentType: f.contentType, bytes: f.body.length, sha256: sha256(f.body) })),
    timings,
    ...(placement ? { placement } : {}),
    createdAt: spec.createdAt,
  });
  return { files, result };
}

/** The bytes of result.json (stable formatting, so identical results give identical objects). */
export function resultBytes(result: JobResult): Buffer {
  return Buffer.from(`${JSON.stringify(result, null, 2)}\n`, 'utf8');
}
