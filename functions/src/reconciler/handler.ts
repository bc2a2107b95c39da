/**
 * The reconciler Lambda (an EventBridge schedule is its trigger): recent uploads with no job
 * record and no execution are started under the starter's execution name. Logic in core.ts.
 * Settings: CIL_RECONCILE_LOOKBACK_MINUTES (default 1440), CIL_RECONCILE_MIN_AGE_MINUTES (5),
 * CIL_RECONCILE_MAX_STARTS (100).
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { SFNClient } from '@aws-sdk/client-sfn';
import type { Context } from 'aws-lambda';
import { LAMBDA_ENV, intVar, requiredVar } from '../env.ts';
import { StarterConfigError } from '../errors.ts';
import { lambdaEntry, traced, tracer } from '../powertools.ts';
import { makeS3Client } from '../s3.ts';
import { startNamedExecution } from '../starter/core.ts';
import type { ReconcileReport } from './core.ts';
import { reconcile } from './core.ts';
import { keyExists, listUploadVersions } from './list.ts';

const logger = new Logger({ serviceName: 'cil-reconciler' });
let sfn: SFNClient | undefined;

export const RECONCILE_ENV = Object.freeze({
  lookbackMinutes: 'CIL_RECONCILE_LOOKBACK_MINUTES',
  minAgeMinutes: 'CIL_RECONCILE_MIN_AGE_MINUTES',
  maxStarts: 'CIL_RECONCILE_MAX_STARTS',
});

export const handler: (event?: unknown, context?: Context) => Promise<ReconcileReport> = lambdaEntry(() => ({ tracer, logger }), reconcileRecent);

async function reconcileRecent(): Promise<ReconcileReport> {
  const env = process.env;
  const bucket = requiredVar(env, LAMBDA_ENV.bucket, StarterConfigError);
  const arn = requiredVar(env, LAMBDA_ENV.generationStateMachineArn, StarterConfigError);
  const s3 = traced(makeS3Client(env));
  sfn ??= traced(new SFNClient({}));
  const client = sfn;
  const report = await reconcile(
    {
      bucket,
      // The data bucket is versioned: every version is an upload of its own (its own job).
      listUploads: (since) => listUploadVersions(s3, bucket, since),
      exists: (key) => keyExists(s3, bucket, key),
      start: (name, input) => startNamedExecution(client, arn, name, input),
    },
    {
      lookbackMs: intVar(env, RECONCILE_ENV.lookbackMinutes, 1440, 10, 7 * 1440) * 60_000,
      minAgeMs: intVar(env, RECONCILE_ENV.minAgeMinutes, 5, 1, 1440) * 60_000,
      maxStarts: intVar(env, RECONCILE_ENV.maxStarts, 100, 1, 10_000),
    },
  );
  // A started run is an upload whose event was lost: worth a warning (and the metric filter's count).
  if (report.started.length > 0) logger.warn('lost upload events recovered', { recovered: report.started.length, jobIds: report.started.slice(0, 50) });
  logger.info('reconciled', { considered: report.considered, recorded: report.recorded, tooRecent: report.tooRecent, started: report.started.length, alreadyRunning: report.alreadyRunning.length, deferred: report.deferred });
  return report;
}
