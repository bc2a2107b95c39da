/**
 * The S3 layout (docs/design.md §5.5): one data bucket, one prefix per kind of object. The same layout is
 * used in AWS and by the local pipeline's S3 server. Keys never collide between jobs (every job
 * object lives under its job id, derived from the upload's key and version) and are safe against
 * path tricks (job ids and model ids are single safe segments; user keys are validated).
 */
import { createHash } from 'node:crypto';
import { isSafeRelativeKey } from './common.ts';

export const PREFIX = Object.freeze({
  /** Uploads: `inputs/<path>/<name>.png|jpg|jpeg|webp`, optional sidecar `<name>.json` beside it. */
  inputs: 'inputs/',
  /** Batch manifests (JSON Lines of requests): `batches/<name>.jsonl`. */
  batches: 'batches/',
  /** Per-job working area: normalised image, resolved request, worker frames, checkpoints. */
  jobs: 'jobs/',
  /** Finished outputs: `outputs/<jobId>/video.mp4`, `video.gif`, `poster.png`, `metadata.json`, `result.json`. */
  outputs: 'outputs/',
  /** Failure records: `failures/<jobId>.json`. */
  failures: 'failures/',
  /** Model bundles: `models/<modelId>/manifest.json` and its ONNX files. */
  models: 'models/',
  /** Dataset statistics: `statistics/<id>.safetensors`; partial shards under `statistics/partials/`. */
  statistics: 'statistics/',
  /** Batch-production summaries: `reports/<batchName>/summary.json`. */
  reports: 'reports/',
});

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'] as const;
/** S3's key limit (1024 bytes; accepted keys are ASCII, so characters), which job specs also enforce. */
export const MAX_KEY_CHARS = 1024;
export const JOB_ID_PATTERN = /^j-[0-9a-f]{24}$/;

/**
 * The job id of an upload: `j-` + 24 hex of SHA-256(bucket, key, version). The same upload event
 * delivered twice gives the same id (and so the same Step Functions execution name, which AWS
 * refuses to start twice); a re-upload (new version or ETag) gives a new job.
 */
export function jobIdFor(bucket: string, key: string, version: string): string {
  return `j-${createHash('sha256').update(`${bucket}\u0000${key}\u0000${version}`).digest('hex').slice(0, 24)}`;
}

export function isJobId(s: string): boolean {
  return JOB_ID_PATTERN.test(s);
}

export interface JobKeys {
  readonly work: string;
  readonly normalisedImage: string;
  readonly request: string;
  readonly frames: string;
  readonly workerMetadata: string;
  readonly latent: string;
  readonly checkpoint: string;
  readonly output: string;
  readonly failure: string;
}

/** Every key a job writes, all under its own id. */
export function jobKeys(jobId: string): JobKeys {
  if (!isJobId(jobId)) throw new Error(`invalid job id '${jobId}' (expected j- and 24 hex digits)`);
  const work = `${PREFIX.jobs}${jobId}/`;
  return {
    work,
    normalisedImage: `${work}input.png`,
    request: `${work}request.json`,
    frames: `${work}frames/`,
    workerMetadata: `${work}metadata.json`,
    latent: `${work}latent.npy`,
    checkpoint: `${work}checkpoint/`,
    output: `${PREFIX.outputs}${jobId}/`,
    failure: `${PREFIX.failures}${jobId}.json`,
  };
}

export function modelPrefix(modelId: string): string {
  if (!isSafeRelativeKey(modelId) || modelId.includes('/')) throw new Error(`invalid model id '${modelId}'`);
  return `${PREFIX.models}${modelId}/`;
}

export function statisticsKey(id: string): string {
  if (!isSafeRelativeKey(id)) throw new Error(`invalid statistics id '${id}'`);
  return `${PREFIX.statistics}${id.endsWith('.safetensors') ? id : `${id}.safetensors`}`;
}

/**
 * Checks an uploaded key: under inputs/, safe segments only (after URL-decoding, which S3 event
 * keys need), an image extension. Returns a reason when it is refused, null when fine.
 */
export function inputKeyProblem(key: string): string | null {
  if (!key.startsWith(PREFIX.inputs)) return `key must start with '${PREFIX.inputs}'`;
  if (key.length > MAX_KEY_CHARS) return `key is ${key.length} characters; S3 keys are at most ${MAX_KEY_CHARS}`;
  const rest = key.slice(PREFIX.inputs.length);
  if (!isSafeRelativeKey(rest)) {
    return "key segments must be A-Z a-z 0-9 . _ - and start with a letter or digit (no '..', spaces, leading '/', or other characters)";
  }
  const lower = rest.toLowerCase();
  if (!IMAGE_EXTENSIONS.some((e) => lower.endsWith(e))) return `key must end in ${IMAGE_EXTENSIONS.join(', ')}`;
  return null;
}

/** The sidecar request key beside an upload: same name, `.json`. */
export function sidecarKey(inputKey: string): string {
  return inputKey.replace(/\.[^./]+$/, '.json');
}
