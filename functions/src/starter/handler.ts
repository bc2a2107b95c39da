/**
 * The glue Lambdas between S3 events and the workflows (one bundle, two functions); the logic is
 * in core.ts.
 *
 * - `handler` (the starter): target of the EventBridge rules on object-created events; starts the
 *   workflow under the execution name `planStart` derives (a duplicate event starts nothing).
 * - `prepareItemHandler` (PrepareItem): first state of each batch-production item.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { SFNClient } from '@aws-sdk/client-sfn';
import type { Context, EventBridgeEvent } from 'aws-lambda';
import { LAMBDA_ENV, requiredVar } from '../env.ts';
import { StarterConfigError } from '../errors.ts';
import { lambdaEntry, traced, tracer } from '../powertools.ts';
import type { GenerationInput, ManifestItem, ObjectCreatedDetail, StartOutcome } from './core.ts';
import { planStart, prepareItem, startNamedExecution } from './core.ts';

const logger = new Logger({ serviceName: 'cil-starter' });
let sfnClient: SFNClient | undefined;
const instruments = (): { tracer: typeof tracer; logger: Logger } => ({ tracer, logger });

export const handler: (event: EventBridgeEvent<'Object Created', ObjectCreatedDetail>, context?: Context) => Promise<{ outcome: StartOutcome | 'ignored'; name?: string }> = lambdaEntry(instruments, start);

async function start(event: EventBridgeEvent<'Object Created', ObjectCreatedDetail>): Promise<{ outcome: StartOutcome | 'ignored'; name?: string }> {
  const plan = planStart(event.detail);
  if (plan.kind === 'ignored') {
    logger.warn('event ignored', { reason: plan.reason, eventId: event.id });
    return { outcome: 'ignored' };
  }
  const arn = requiredVar(process.env, plan.kind === 'generation' ? LAMBDA_ENV.generationStateMachineArn : LAMBDA_ENV.batchStateMachineArn, StarterConfigError);
  sfnClient ??= traced(new SFNClient({}));
  const outcome = await startNamedExecution(sfnClient, arn, plan.name, plan.input);
  logger.info(outcome === 'started' ? 'execution started' : 'duplicate event: execution already exists', {
    workflow: plan.kind,
    name: plan.name,
    key: plan.input.key,
    eventId: event.id,
  });
  return { outcome, name: plan.name };
}

export const prepareItemHandler: (item: ManifestItem, context?: Context) => Promise<GenerationInput> = lambdaEntry(instruments, (item: ManifestItem) => Promise.resolve(prepareItem(item)));
