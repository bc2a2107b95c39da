/**
 * The reconciler's logic (handler.ts is the Lambda adapter): an upload whose EventBridge event was
 * lost never becomes a job, and nothing else notices. On a schedule, the reconciler lists the
 * recent uploads under inputs/, skips those that already have a job record (Validate's
 * `jobs/<jobId>/request.json`, a failure record or finished outputs), and starts the rest exactly
 * as the starter would have: the same execution name (`jobIdFor(bucket, key, version)`) and the
 * same input (`planStart`). A run already there answers ExecutionAlreadyExists, so a late event,
 * a second reconciler run or a running job never gives a second run.
 *
 * Pure but for the clients it is handed. Documented in docs/functions.md.
 */
import { jobKeys, PREFIX } from '#shared/schemas';
import type { ObjectCreatedDetail, StartOutcome } from '../starter/core.ts';
import { planStart } from '../starter/core.ts';

/** One object version under inputs/ as a listing gives it. */
export interface ListedUpload {
  readonly key: string;
  /** The version id (versioned bucket), null when unversioned (then the ETag names the job, as in the starter). */
  readonly versionId: string | null;
  /** With or without S3's quotes. */
  readonly etag: string | null;
  readonly size: number | null;
  readonly lastModified: Date;
}

export interface ReconcileSettings {
  /** How far back to look (default 24 h). */
  readonly lookbackMs: number;
  /** Uploads younger than this are left to their event (default 5 min). */
  readonly minAgeMs: number;
  /** At most this many runs started per pass (default 100); the rest wait for the next pass. */
  readonly maxStarts: number;
}

export const DEFAULT_RECONCILE: ReconcileSettings = Object.freeze({ lookbackMs: 24 * 3600_000, minAgeMs: 5 * 60_000, maxStarts: 100 });

export interface ReconcileDeps {
  readonly bucket: string;
  /** Every object version under inputs/ modified at or after `since`. */
  listUploads(since: Date): AsyncIterable<ListedUpload>;
  /** Whether a key exists in the data bucket. */
  exists(key: string): Promise<boolean>;
  /** StartExecution of the generation workflow under `name` (starter/core.ts startNamedExecution). */
  start(name: string, input: unknown): Promise<StartOutcome>;
  readonly now?: () => Date;
}

export interface ReconcileReport {
  /** Uploads in the window that are images under inputs/. */
  readonly considered: number;
  /** Already had a job record. */
  readonly recorded: number;
  /** Too recent: their event may still be on its way. */
  readonly tooRecent: number;
  /** Runs started now: uploads whose event was lost (job ids). */
  readonly started: string[];
  /** An execution of that name was already there (running, or ended without a record). */
  readonly alreadyRunning: string[];
  /** Left for the next pass (maxStarts reached). */
  readonly deferred: number;
}

/** The detail the starter would have received for this upload (S3 events carry the ETag without quotes). */
export function detailFor(bucket: string, u: ListedUpload): ObjectCreatedDetail {
  const etag = u.etag?.replace(/^"|"$/g, '');
  return {
    bucket: { name: bucket },
    object: { key: u.key, ...(u.size !== null ? { size: u.size } : {}), ...(etag ? { etag } : {}), ...(u.versionId !== null ? { 'version-id': u.versionId } : {}) },
  };
}

/** Keys whose existence shows that the job got past the starter. */
export function jobRecordKeys(jobId: string): string[] {
  const k = jobKeys(jobId);
  return [k.request, k.failure, `${k.output}result.json`];
}

export async function reconcile(deps: ReconcileDeps, settings: Partial<ReconcileSettings> = {}): Promise<ReconcileReport> {
  const s = { ...DEFAULT_RECONCILE, ...settings };
  const now = (deps.now ?? ((): Date => new Date()))();
  const since = new Date(now.getTime() - s.lookbackMs);
  let considered = 0;
  let recorded = 0;
  let tooRecent = 0;
  let deferred = 0;
  const started: string[] = [];
  const alreadyRunning: string[] = [];
  for await (const u of deps.listUploads(since)) {
    if (!u.key.startsWith(PREFIX.inputs) || u.lastModified < since) continue;
    const plan = planStart(detailFor(deps.bucket, u));
    if (plan.kind !== 'generation') continue;
    considered++;
    if (now.getTime() - u.lastModified.getTime() < s.minAgeMs) {
      tooRecent++;
      continue;
    }
    let has = false;
    for (const key of jobRecordKeys(plan.name)) {
      if (await deps.exists(key)) {
        has = true;
        break;
      }
    }
    if (has) {
      recorded++;
      continue;
    }
    if (started.length + alreadyRunning.length >= s.maxStarts) {
      deferred++;
      continue;
    }
    const outcome = await deps.start(plan.name, plan.input);
    (outcome === 'started' ? started : alreadyRunning).push(plan.name);
  }
  return { considered, recorded, tooRecent, started, alreadyRunning, deferred };
}
