/**
 * Two Lambda entry points in one module (one deployment artefact, two functions):
 * - `handler` (Notify): a job result or failure record in; publishes to SNS (TOPIC_ARN) and
 *   EventBridge (EVENT_BUS_NAME), each skipped when its variable is unset; presigned output URLs
 *   when PRESIGN_URLS is on.
 * - `recordFailure`: the state machine's Catch output in; writes `failures/<jobId>.json` and
 *   returns the record, which the failure branch then passes to Notify.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Context } from 'aws-lambda';
import type { Env } from '../env.ts';
import { dataBucket, eventBusName, MAX_PRESIGN_SECONDS, presignConfig, s3Config, topicArn } from '../env.ts';
import type { PresignConfig } from '../env.ts';
import { ConfigurationError, InvalidEvent, PublishFailed } from '../errors.ts';
import { logger, lazyHandler, stepHandler } from '../logger.ts';
import { traced } from '../powertools.ts';
import { makeS3Client, putObject } from '../s3.ts';
import type { FailureRecord } from './core.ts';
import { buildFailureRecord, buildNotification, EVENT_SOURCE, parseFailureInput, parseNotifyInput, PRESIGNED_KINDS } from './core.ts';

export interface NotifyDeps {
  readonly s3: S3Client;
  readonly sns: SNSClient;
  readonly events: EventBridgeClient;
  /** Null: no SNS message. */
  readonly topicArn: string | null;
  /** Null: no EventBridge event. */
  readonly eventBusName: string | null;
  /**
   * The data bucket (DATA_BUCKET): a job result naming another is refused, and URLs are signed
   * for this bucket only. Presigning needs it.
   */
  readonly dataBucket: string | null;
  readonly presign: PresignConfig;
  readonly now?: () => Date;
}

export interface NotifyOutcome {
  readonly jobId: string;
  readonly status: 'succeeded' | 'failed';
  readonly snsMessageId: string | null;
  readonly eventId: string | null;
}

export function notifyDepsFromEnv(env: Env = process.env): NotifyDeps {
  const region = s3Config(env).region;
  return {
    s3: traced(makeS3Client(env)),
    sns: traced(new SNSClient({ region })),
    events: traced(new EventBridgeClient({ region })),
    topicArn: topicArn(env),
    eventBusName: eventBusName(env),
    dataBucket: dataBucket(env),
    presign: presignConfig(env),
  };
}

export function createNotifyHandler(deps: NotifyDeps): (input: unknown, context?: Context) => Promise<NotifyOutcome> {
  const now = deps.now ?? ((): Date => new Date());
  // presignConfig bounds the environment's value; deps built by hand (local mode, tests) must not
  // get past SigV4's 7-day limit (an untyped SDK error at notify time) or sign already-dead URLs.
  const expiry = deps.presign.expirySeconds;
  if (deps.presign.enabled && !(Number.isInteger(expiry) && expiry >= 1 && expiry <= MAX_PRESIGN_SECONDS)) {
    throw new ConfigurationError(`presigned-URL expiry must be an integer 1 … ${MAX_PRESIGN_SECONDS} seconds (7 days), got ${expiry}`);
  }
  const bucket = deps.dataBucket;
  if (deps.presign.enabled && bucket === null) {
    throw new ConfigurationError('presigned URLs need the data bucket (DATA_BUCKET): Notify signs only the job\'s own outputs in it');
  }
  return stepHandler({ step: 'Notify', refused: 'notify refused', failed: 'notify failed' }, async (input) => {
    const n = parseNotifyInput(input, now(), bucket);
    const jobId = n.status === 'succeeded' ? n.result.jobId : n.failure.jobId;
    logger.appendKeys({ jobId });
    let urls: { byKey: Map<string, string>; expiresAt: string } | null = null;
    if (n.status === 'succeeded' && deps.presign.enabled && bucket !== null) {
      const byKey = new Map<string, string>();
      const expiresIn = deps.presign.expirySeconds;
      for (const o of n.result.outputs) {
        if (!PRESIGNED_KINDS.includes(o.kind)) continue;
        // The configured bucket, not the input's (parseNotifyInput has checked they agree).
        byKey.set(o.key, await getSignedUrl(deps.s3, new GetObjectCommand({ Bucket: bucket, Key: o.key }), { expiresIn }));
      }
      urls = { byKey, expiresAt: new Date(now().getTime() + expiresIn * 1000).toISOString() };
    }
    const note = buildNotification(n, urls);
    const body = JSON.stringify(note.detail);

    let snsMessageId: string | null = null;
    if (deps.topicArn !== null) {
      const attrs = Object.fromEntries(Object.entries(note.attributes).map(([k, v]) => [k, { DataType: 'String', StringValue: v }]));
      const r = await deps.sns.send(new PublishCommand({ TopicArn: deps.topicArn, Subject: note.subject, Message: body, MessageAttributes: attrs }));
      snsMessageId = r.MessageId ?? null;
    }
    let eventId: string | null = null;
    if (deps.eventBusName !== null) {
      const r = await deps.events.send(
        new PutEventsCommand({ Entries: [{ Source: EVENT_SOURCE, DetailType: note.detailType, Detail: body, EventBusName: deps.eventBusName }] }),
      );
      const entry = r.Entries?.[0];
      if ((r.FailedEntryCount ?? 0) > 0 || entry?.EventId === undefined) {
        throw new PublishFailed(`EventBridge refused the event: ${entry?.ErrorCode ?? 'no event id'} ${entry?.ErrorMessage ?? ''}`.trim());
      }
      eventId = entry.EventId;
    }
    if (snsMessageId === null && eventId === null) logger.warn('neither TOPIC_ARN nor EVENT_BUS_NAME is set: nothing published');
    logger.info('notified', { status: n.status, subject: note.subject, snsMessageId, eventId, presigned: urls?.byKey.size ?? 0 });
    if (urls !== null) logger.debug('presigned urls', { urls: Object.fromEntries(urls.byKey) });
    return { jobId, status: n.status, snsMessageId, eventId };
  });
}

export interface RecordFailureDeps {
  readonly s3: S3Client;
  /** The bucket the record goes to (DATA_BUCKET); when null, the job's own bucket. */
  readonly dataBucket: string | null;
  readonly now?: () => Date;
}

export function recordFailureDepsFromEnv(env: Env = process.env): RecordFailureDeps {
  return { s3: traced(makeS3Client(env)), dataBucket: dataBucket(env) };
}

export function createRecordFailureHandler(deps: RecordFailureDeps): (input: unknown, context?: Context) => Promise<FailureRecord> {
  const now = deps.now ?? ((): Date => new Date());
  return stepHandler({ step: 'RecordFailure', failed: 'recording the failure failed' }, async (input) => {
    const record = buildFailureRecord(parseFailureInput(input), now());
    logger.appendKeys({ jobId: record.jobId });
    const bucket = deps.dataBucket ?? record.bucket;
    if (bucket === null) throw new InvalidEvent(`job ${record.jobId}: no bucket known for the failure record (set DATA_BUCKET)`);
    await putObject(deps.s3, bucket, record.failureKey, `${JSON.stringify(record, null, 2)}\n`, 'application/json');
    logger.info('failure recorded', { failedStep: record.failedStep, error: record.error, failureKey: record.failureKey });
    return record;
  });
}

/** Notify's Lambda entry point. */
export const handler: (input: unknown, context?: Context) => Promise<NotifyOutcome> = lazyHandler(() => createNotifyHandler(notifyDepsFromEnv()));

/** The failure recorder's Lambda entry point (handler setting `notify/handler.recordFailure`). */
export const recordFailure: (input: unknown, context?: Context) => Promise<FailureRecord> = lazyHandler(() => createRecordFailureHandler(recordFailureDepsFromEnv()));
