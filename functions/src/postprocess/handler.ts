/**
 * Post-process, the Lambda: job spec in, job result out. Reads the worker's frames and
 * metadata.json under `jobs/<jobId>/`, writes the videos, poster, metadata copy and (last)
 * `result.json` under `outputs/<jobId>/`. Idempotent: a run whose job already has its
 * `result.json` (an earlier run finished) writes nothing and returns that result, so finished
 * outputs are never rewritten; a run after a partial one (no result.json yet) writes the same
 * keys with the same bytes. It never deletes anything (the worker's frames and the input stay).
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { Context } from 'aws-lambda';
import { jobKeys } from '#shared/schemas';
import type { Env } from '../env.ts';
import { dataBucket, ffmpegPath } from '../env.ts';
import { InvalidWorkerOutput, OutputConflict, WorkerOutputNotFound } from '../errors.ts';
import { logger, lazyHandler, stepHandler } from '../logger.ts';
import { traced } from '../powertools.ts';
import { headObject, listKeys, makeS3Client, mapLimit, putObject, readObject } from '../s3.ts';
import type { JobSpec } from '#shared/schemas';
import type { JobResult } from './core.ts';
import { orderFrameKeys, parsePostprocessInput, postprocess, priorResult, resultBytes, resultKeyOf } from './core.ts';

/** One frame at the largest model resolution is a few MB; 64 MB means something is wrong. */
const MAX_FRAME_BYTES = 64 * 1024 * 1024;
const MAX_METADATA_BYTES = 16 * 1024 * 1024;
const MAX_LATENT_BYTES = 512 * 1024 * 1024;
const MAX_RESULT_BYTES = 1024 * 1024;
const S3_CONCURRENCY = 8;

export interface PostprocessDeps {
  readonly s3: S3Client;
  readonly dataBucket: string | null;
  readonly ffmpegPath: string;
  readonly tmpRoot?: string;
}

export function postprocessDepsFromEnv(env: Env = process.env): PostprocessDeps {
  return { s3: traced(makeS3Client(env)), dataBucket: dataBucket(env), ffmpegPath: ffmpegPath(env) };
}

/**
 * The result of an earlier run of this job whose outputs are all still there (sizes as recorded),
 * or null when there is none or some output is gone (then the outputs are written again).
 */
async function finishedResult(s3: S3Client, spec: JobSpec): Promise<JobResult | null> {
  const key = resultKeyOf(spec.jobId);
  const r = await readObject(s3, { bucket: spec.bucket, key }, MAX_RESULT_BYTES);
  if (r.kind === 'missing') return null;
  if (r.kind !== 'ok') throw new OutputConflict(`${key} exists but is over ${MAX_RESULT_BYTES} bytes; refusing to write over it`);
  const prior = priorResult(r.bytes, spec);
  const present = await mapLimit(prior.outputs, S3_CONCURRENCY, async (o) => (await headObject(s3, { bucket: spec.bucket, key: o.key }))?.size === o.bytes);
  return present.every(Boolean) ? prior : null;
}

async function mustRead(s3: S3Client, bucket: string, key: string, max: number, missing: () => Error): Promise<Buffer> {
  const r = await readObject(s3, { bucket, key }, max);
  if (r.kind === 'ok') return r.bytes;
  if (r.kind === 'tooLarge') throw new InvalidWorkerOutput(`${key}: ${r.info.size} bytes is over the limit of ${max} bytes`);
  throw missing();
}

export function createPostprocessHandler(deps: PostprocessDeps): (input: unknown, context?: Context) => Promise<JobResult> {
  return stepHandler({ step: 'PostProcess', refused: 'post-process refused', failed: 'post-process failed' }, async (input) => {
    const spec = parsePostprocessInput(input, deps.dataBucket);
    logger.appendKeys({ jobId: spec.jobId });
    const { s3 } = deps;
    const bucket = spec.bucket;
    const keys = jobKeys(spec.jobId);
    const finished = await finishedResult(s3, spec);
    if (finished !== null) {
      logger.info('outputs already complete from an earlier run; nothing written', { resultKey: finished.resultKey, outputs: finished.outputs.length });
      return finished;
    }

    const frameKeys = orderFrameKeys(await listKeys(s3, bucket, keys.frames), keys.frames, spec.request.frames);
    const frames = await mapLimit(frameKeys, S3_CONCURRENCY, (k) =>
      mustRead(s3, bucket, k, MAX_FRAME_BYTES, () => new WorkerOutputNotFound(`${k}: listed but gone`)),
    );
    const metadata = await mustRead(s3, bucket, keys.workerMetadata, MAX_METADATA_BYTES, () => new WorkerOutputNotFound(`${keys.workerMetadata}: the worker wrote no metadata`));
    const latent = spec.request.outputs.includes('latent-npy')
      ? await mustRead(s3, bucket, keys.latent, MAX_LATENT_BYTES, () => new WorkerOutputNotFound(`${keys.latent}: the job asked for latent-npy, but the worker wrote none`))
      : null;

    const t0 = Date.now();
    const { files, result } = await postprocess({ spec, frames, frameNames: frameKeys, metadata, latent }, { ffmpegPath: deps.ffmpegPath, tmpRoot: deps.tmpRoot });
    const encodeMs = Date.now() - t0;
    await mapLimit(files, S3_CONCURRENCY, (f) => putObject(s3, bucket, f.key, f.body, f.contentType));
    await putObject(s3, bucket, result.resultKey, resultBytes(result), 'application/json');
    logger.info('outputs written', { encodeMs, frames: result.video.frames, outputs: result.outputs.map((o) => ({ key: o.key, bytes: o.bytes })) });
    return result;
  });
}

/** The Lambda entry point (clients built from the environment on first use). */
export const handler: (input: unknown, context?: Context) => Promise<JobResult> = lazyHandler(() => createPostprocessHandler(postprocessDepsFromEnv()));
