/**
 * Validate, the Lambda: S3 object-created event in, job spec out (or a typed error). Reads the
 * upload, its request (sidecar or metadata), the model manifest and the statistics' existence
 * from the data bucket; writes `jobs/<jobId>/input.png` and `jobs/<jobId>/request.json`; never
 * touches the upload. All logic is in core.ts / image.ts.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { Context } from 'aws-lambda';
import type { JobSpec } from '#shared/schemas';
import { jobKeys, sidecarKey } from '#shared/schemas';
import type { Env } from '../env.ts';
import { dataBucket } from '../env.ts';
import { InputNotFound, InvalidImage, InvalidRequest, ModelNotFound, StatisticsNotFound } from '../errors.ts';
import { logger, redactPrompt, specSummary, lazyHandler, stepHandler } from '../logger.ts';
import { traced } from '../powertools.ts';
import { headObject, makeS3Client, putObject, readObject } from '../s3.ts';
import type { RequestSource } from './core.ts';
import {
  buildJobSpec,
  checkManifest,
  checkSidecarNotNewer,
  inlineWhere,
  manifestKey,
  MAX_SIDECAR_BYTES,
  parseRequest,
  parseUploadEvent,
  readRequestJson,
  requestWhere,
  resolveRequest,
  seedForJob,
} from './core.ts';
import type { ImageLimits } from './image.ts';
import { IMAGE_LIMITS, normaliseImage } from './image.ts';

/** Manifests are small JSON; anything bigger is not a manifest. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

export interface ValidateDeps {
  readonly s3: S3Client;
  /** When set, events for any other bucket are refused. */
  readonly dataBucket: string | null;
  readonly limits?: ImageLimits;
  /** The clock for createdAt when the event carries no time. */
  readonly now?: () => Date;
}

export function validateDepsFromEnv(env: Env = process.env): ValidateDeps {
  return { s3: traced(makeS3Client(env)), dataBucket: dataBucket(env) };
}

/** The Validate step with its clients given (tests point `s3` at a local server). */
export function createValidateHandler(deps: ValidateDeps): (event: unknown, context?: Context) => Promise<JobSpec> {
  const limits = deps.limits ?? IMAGE_LIMITS;
  const now = deps.now ?? ((): Date => new Date());
  return stepHandler({ step: 'Validate', refused: 'upload refused', failed: 'validate failed', reason: redactPrompt }, async (event) => {
    const upload = parseUploadEvent(event, deps.dataBucket);
    logger.appendKeys({ jobId: upload.jobId });
    logger.info('validating upload', { bucket: upload.bucket, key: upload.key, versionId: upload.versionId, size: upload.size });
    const { s3 } = deps;
    const bucket = upload.bucket;

    const head = await headObject(s3, { bucket, key: upload.key, versionId: upload.versionId });
    if (head === null) throw new InputNotFound(`${upload.key}: no such object${upload.versionId ? ` (version ${upload.versionId})` : ''}`);
    if (head.size === 0) throw new InvalidImage(`${upload.key}: the file is empty (0 bytes)`);
    if (head.size > limits.maxBytes) throw new InvalidImage(`${upload.key}: ${head.size} bytes is over the limit of ${limits.maxBytes} bytes`);

    let req: { json: unknown; source: RequestSource; where: string };
    if (upload.inlineRequest !== null) {
      req = { json: upload.inlineRequest, source: 'inline', where: inlineWhere(upload) };
    } else {
      const sidecar = sidecarKey(upload.key);
      const side = await readObject(s3, { bucket, key: sidecar }, MAX_SIDECAR_BYTES);
      // Checked on the very object read (its own Last-Modified), so no later write slips in
      // between. Manifest jobs pin no image version, so there is no upload time to hold it to.
      if (side.kind !== 'missing' && side.kind !== 'changed' && upload.batch === null) {
        checkSidecarNotNewer(sidecar, side.info.lastModified, upload.key, head.lastModified);
      }
      if (side.kind === 'tooLarge') throw new InvalidRequest(`${sidecar}: ${side.info.size} bytes is over the limit of ${MAX_SIDECAR_BYTES} bytes`);
      req = readRequestJson(side.kind === 'ok' ? side.bytes : null, head.metadata, requestWhere(upload.key, sidecar));
    }
    const parsed = parseRequest(req.json, req.where);

    const mKey = manifestKey(parsed.request.model);
    const m = await readObject(s3, { bucket, key: mKey }, MAX_MANIFEST_BYTES);
    if (m.kind === 'tooLarge') throw new ModelNotFound(`model '${parsed.request.model}': ${mKey} is ${m.info.size} bytes, over ${MAX_MANIFEST_BYTES}`);
    const manifest = checkManifest(m.kind === 'ok' ? m.bytes.toString('utf8') : null, parsed.request.model, mKey);

    const resolved = resolveRequest(parsed, manifest, () => seedForJob(upload.jobId), req.where);
    if (resolved.statistics !== null && (await headObject(s3, { bucket, key: resolved.statistics })) === null) {
      throw new StatisticsNotFound(`${req.where}: Analytic-Init needs statistics, but ${resolved.statistics} does not exist in ${bucket}`);
    }

    // The exact upload the event announced: its version, or (unversioned) its ETag.
    const img = await readObject(s3, { bucket, key: upload.key, versionId: upload.versionId, ifMatch: upload.versionId ? null : upload.etag }, limits.maxBytes);
    if (img.kind === 'missing') throw new InputNotFound(`${upload.key}: deleted before it could be read`);
    if (img.kind === 'changed') throw new InputNotFound(`${upload.key}: replaced since the event (ETag is no longer ${upload.etag}); the new upload is its own job`);
    if (img.kind === 'tooLarge') throw new InvalidImage(`${upload.key}: ${img.info.size} bytes is over the limit of ${limits.maxBytes} bytes`);
    const normalised = await normaliseImage(img.bytes, manifest.resolution, upload.key, limits);

    const createdAt = upload.time ?? img.info.lastModified?.toISOString() ?? now().toISOString();
    const spec = buildJobSpec(upload, img.bytes.length, resolved, createdAt, manifest.resolution);
    const keys = jobKeys(spec.jobId);
    await putObject(s3, bucket, keys.normalisedImage, normalised.png, 'image/png');
    await putObject(s3, bucket, keys.request, `${JSON.stringify(spec, null, 2)}\n`, 'application/json');
    logger.info('upload valid', { ...specSummary(spec), requestSource: req.source, sourceImage: normalised.source });
    logger.debug('prompt', { prompt: spec.request.prompt });
    return spec;
  });
}

/** The Lambda entry point (clients built from the environment on first use). */
export const handler: (event: unknown, context?: Context) => Promise<JobSpec> = lazyHandler(() => createValidateHandler(validateDepsFromEnv()));
