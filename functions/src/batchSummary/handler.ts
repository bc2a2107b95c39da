/** The SummarizeBatch Lambda: the adapter around core.ts `summarize` (clients and topic from the environment). */
import { Logger } from '@aws-lambda-powertools/logger';
import { S3Client } from '@aws-sdk/client-s3';
import { SFNClient } from '@aws-sdk/client-sfn';
import { SNSClient } from '@aws-sdk/client-sns';
import type { Context } from 'aws-lambda';
import { LAMBDA_ENV, requiredVar } from '../env.ts';
import { SummaryConfigError } from '../errors.ts';
import { lambdaEntry, traced, tracer } from '../powertools.ts';
import type { BatchSummary, Clients, ItemCounts, SummaryEvent } from './core.ts';
import { summarize } from './core.ts';

const logger = new Logger({ serviceName: 'cil-batch-summary' });
let clients: Clients | undefined;

type Outcome = { summaryKey: string; status: BatchSummary['status']; items: ItemCounts | null };

export const handler: (event: SummaryEvent, context?: Context) => Promise<Outcome> = lambdaEntry(() => ({ tracer, logger }), summarizeBatch);

async function summarizeBatch(event: SummaryEvent): Promise<Outcome> {
  const topicArn = requiredVar(process.env, LAMBDA_ENV.topicArn, SummaryConfigError);
  clients ??= { sfn: traced(new SFNClient({})), s3: traced(new S3Client({})), sns: traced(new SNSClient({})) };
  const r = await summarize(event, clients, topicArn, new Date());
  logger.info('batch summary written', { batchName: event.batch.batchName, ...r });
  return r;
}
