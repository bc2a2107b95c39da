/**
 * Upload triggers: S3 "Object Created" events for images under inputs/ and manifests under
 * batches/ go to the starter Lambda, which starts the generation or batch-production workflow
 * under an execution name derived from the object (see functions/src/starter/core.ts). Events that
 * cannot be delivered, and invocations that keep failing, land in a dead-letter queue that
 * raises an alarm.
 */
import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { IMAGE_EXTENSIONS, PREFIX } from '#shared/schemas';
import type { CilConfig } from './config.ts';
import { nodeFunction } from './lambdas.ts';
import { LAMBDA_ENV } from './names.ts';
import { RUNTIME_ENTRIES } from './paths.ts';
import type { DataStorage } from './storage.ts';

export interface UploadTriggersProps {
  readonly config: CilConfig;
  readonly storage: DataStorage;
  readonly generation: sfn.IStateMachine;
  readonly batch: sfn.IStateMachine;
}

/** EventBridge wildcard patterns of the keys that start a run (both cases of each extension). */
export function keyPatterns(prefix: string, extensions: readonly string[]): string[] {
  const out = new Set<string>();
  for (const e of extensions) {
    out.add(`${prefix}*${e.toLowerCase()}`);
    out.add(`${prefix}*${e.toUpperCase()}`);
  }
  return [...out];
}

export class UploadTriggers extends Construct {
  readonly starter: lambda.Function;
  readonly deadLetterQueue: sqs.Queue;
  readonly inputsRule: events.Rule;
  readonly batchesRule: events.Rule;

  constructor(scope: Construct, id: string, props: UploadTriggersProps) {
    super(scope, id);
    const { config: c, storage } = props;

    this.deadLetterQueue = new sqs.Queue(this, 'StartFailures', {
      enforceSSL: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: Duration.days(14),
    });

    const starter = nodeFunction(this, 'Starter', c, {
      entry: RUNTIME_ENTRIES.starter,
      description: 'CIL starter: names the execution after the upload (job id) so a duplicate event starts nothing',
      timeout: Duration.seconds(15),
      deadLetterQueue: this.deadLetterQueue,
      environment: {
        [LAMBDA_ENV.generationStateMachineArn]: props.generation.stateMachineArn,
        [LAMBDA_ENV.batchStateMachineArn]: props.batch.stateMachineArn,
      },
    });
    this.starter = starter.fn;
    props.generation.grantStartExecution(starter.role);
    props.batch.grantStartExecution(starter.role);
    // Asynchronous invocations that still fail after Lambda's own retries.
    this.starter.configureAsyncInvoke({ retryAttempts: 2, maxEventAge: Duration.hours(6) });

    const target = new targets.LambdaFunction(this.starter, {
      deadLetterQueue: this.deadLetterQueue,
      retryAttempts: 8,
      maxEventAge: Duration.hours(6),
    });
    const objectCreated = (patterns: string[]): events.EventPattern => ({
      source: ['aws.s3'],
      detailType: ['Object Created'],
      detail: { bucket: { name: [storage.bucket.bucketName] }, object: { key: patterns.flatMap((p) => events.Match.wildcard(p)) } },
    });
    this.inputsRule = new events.Rule(this, 'InputsRule', {
      description: `Images uploaded under ${PREFIX.inputs} start the generation workflow`,
      eventPattern: objectCreated(keyPatterns(PREFIX.inputs, IMAGE_EXTENSIONS)),
      targets: [target],
    });
    this.batchesRule = new events.Rule(this, 'BatchesRule', {
      description: `Manifests uploaded under ${PREFIX.batches} start the batch-production workflow`,
      eventPattern: objectCreated(keyPatterns(PREFIX.batches, ['.jsonl'])),
      targets: [target],
    });
  }
}
