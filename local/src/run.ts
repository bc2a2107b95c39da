/**
 * One image through the local pipeline, as `cil local run` and `npm run demo` do it: upload (the
 * sidecar request first, then the image, whose object-created event starts the run), follow the
 * execution, copy the outputs (or the failure record) out of the bucket, and collect the job's
 * notifications. Works against a pipeline in this process, or against `cil local up` running in
 * another one (through its S3 endpoint and the execution files it writes).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { jobIdFor, jobKeys } from '#shared/schemas';
import { getObjectBytes } from '../../storage/src/location.ts';
import type { ExecutionObserver } from '../../cli/remote/client.ts';
import { contentTypeOf, downloadPrefix, uploadImage, uploadKeyFor } from '../../cli/remote/client.ts';
import { processAlive } from './dataDir.ts';
import type { ExecutionRecord } from './executions.ts';
import { readExecutionFile } from './executions.ts';
import { followExecution } from './follow.ts';
import { notificationJobId, readNotifications } from './notifications.ts';
import type { LocalNotification } from './notifications.ts';
import type { LocalPipeline } from './pipeline.ts';
import { localS3Client } from './s3.ts';

/** What `cil local up` writes to `<dataDir>/up.json` while it runs. */
export interface UpInfo {
  readonly pid: number;
  readonly endpoint: string;
  readonly bucket: string;
  readonly dataDir: string;
  readonly startedAt: string;
}

export const UP_FILE = 'up.json';

export class LocalRunError extends Error {
  override readonly name = 'LocalRunError';
}

/** The running `cil local up` of this data folder, or null (a stale file is removed). */
export function runningUp(dataDir: string): UpInfo | null {
  const f = join(dataDir, UP_FILE);
  if (!existsSync(f)) return null;
  let info: UpInfo;
  try {
    info = JSON.parse(readFileSync(f, 'utf8')) as UpInfo;
  } catch {
    return null;
  }
  if (Number.isInteger(info.pid) && processAlive(info.pid)) return info;
  rmSync(f, { force: true });
  return null;
}

export interface RunImageOptions {
  readonly dataDir: string;
  readonly image: Uint8Array;
  /** Used for the key (its stem and extension). */
  readonly fileName: string;
  readonly request: Readonly<Record<string, unknown>>;
  /** Upload key (default uploadKeyFor). */
  readonly key?: string;
  /** Where the outputs are copied (default `<dataDir>/outputs/<jobId>`). */
  readonly outDir?: string;
  /** A pipeline in this process; without one, the `cil local up` of `dataDir`. */
  readonly pipeline?: LocalPipeline;
  readonly wait?: boolean;
  readonly timeoutMs?: number;
  readonly observer?: ExecutionObserver;
  /** Called once the image is uploaded (before following the job). */
  readonly onUploaded?: (u: { readonly jobId: string; readonly key: string; readonly bucket: string; readonly reused: boolean }) => void;
}

export interface RunImageResult {
  readonly jobId: string;
  readonly key: string;
  /** The job had run before (same key and bytes): nothing new was started. */
  readonly reused: boolean;
  /** Null when not waited for. */
  readonly record: ExecutionRecord | null;
  readonly outDir: string | null;
  readonly files: string[];
  readonly failure: Record<string, unknown> | null;
  readonly notifications: LocalNotification[];
}

export async function runImage(o: RunImageOptions): Promise<RunImageResult> {
  let s3: S3Client;
  let bucket: string;
  let get: (id: string) => ExecutionRecord | null | undefined;
  let own: S3Client | null = null;
  if (o.pipeline) {
    s3 = o.pipeline.s3;
    bucket = o.pipeline.bucket;
    const p = o.pipeline;
    get = (id) => p.execution('generation', id);
  } else {
    const up = runningUp(o.dataDir);
    if (!up) throw new LocalRunError(`no local pipeline is running for ${o.dataDir} (start one with \`npx cil local up\`)`);
    s3 = own = localS3Client(up.endpoint);
    bucket = up.bucket;
    get = (id) => readExecutionFile(join(o.dataDir, 'executions'), 'generation', id);
  }
  try {
    const key = o.key ?? uploadKeyFor(o.fileName, o.image, o.request);
    // s3rver's ETag of a single PUT is the MD5 of the bytes (as S3's is without SSE-KMS): an
    // execution of that name before the upload means the starter will see a duplicate.
    const expected = jobIdFor(bucket, key, createHash('md5').update(o.image).digest('hex'));
    const prior = get(expected);
    const { jobId } = await uploadImage(s3, bucket, key, o.image, { request: Object.keys(o.request).length > 0 ? o.request : null, contentType: contentTypeOf(key) });
    const reused = jobId === expected && prior !== null && prior !== undefined;
    o.onUploaded?.({ jobId, key, bucket, reused });
    if (o.wait === false) return { jobId, key, reused, record: null, outDir: null, files: [], failure: null, notifications: [] };
    const record = await followExecution(`job ${jobId}`, () => get(jobId), { observer: reused ? undefined : o.observer, timeoutMs: o.timeoutMs });
    const outDir = o.outDir ?? join(o.dataDir, 'outputs', jobId);
    let files: string[] = [];
    let failure: Record<string, unknown> | null = null;
    if (record.status === 'SUCCEEDED') {
      files = await downloadPrefix(s3, bucket, jobKeys(jobId).output, outDir);
    } else {
      const f = await getObjectBytes(s3, bucket, jobKeys(jobId).failure);
      if (f !== null) {
        failure = JSON.parse(Buffer.from(f).toString('utf8')) as Record<string, unknown>;
        mkdirSync(outDir, { recursive: true });
        const file = join(outDir, 'failure.json');
        writeFileSync(file, f);
        files = [file];
      }
    }
    const notifications = readNotifications(join(o.dataDir, 'notifications.jsonl')).filter((n) => notificationJobId(n) === jobId);
    return { jobId, key, reused, record, outDir, files, failure, notifications };
  } finally {
    own?.destroy();
  }
}

