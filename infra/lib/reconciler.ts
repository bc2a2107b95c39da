/**
 * The reconciler (docs/functions.md "Reconciler"): an EventBridge schedule invokes a Lambda that
 * lists recent uploads under inputs/ with no job record and no execution, and starts them under
 * the starter's execution name. It may list the bucket's versions, HEAD the job records
 * (jobs/, failures/, outputs/) and start the generation workflow; nothing else.
 */
import { Duration, Stack, Validations } from 'aws-cdk-lib';
import type { CfnElement } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { PREFIX } from '#shared/schemas';
import type { CilConfig } from './config.ts';
import { nodeFunction } from './lambdas.ts';
import { LAMBDA_ENV } from './names.ts';
import type { DataStorage } from './storage.ts';

/** The reconciler's Lambda entry (relative to the repository root). */
export const RECONCILER_ENTRY = 'functions/src/reconciler/handler.ts';

/** How often it runs, and how far back it looks (minutes); the schedule is well inside the window. */
export const RECONCILER_SCHEDULE = Object.freeze({ everyMinutes: 15, lookbackMinutes: 24 * 60, minAgeMinutes: 5 });

export interface ReconcilerProps {
  readonly config: CilConfig;
  readonly storage: DataStorage;
  readonly generation: sfn.IStateMachine;
}

export class Reconciler extends Construct {
  readonly fn: lambda.IFunction;
  readonly schedule: events.Rule;

  constructor(scope: Construct, id: string, props: ReconcilerProps) {
    super(scope, id);
    const bucket = props.storage.bucket;
    const f = nodeFunction(this, 'Function', props.config, {
      entry: RECONCILER_ENTRY,
      description: 'CIL reconciler: starts uploads whose object-created event was lost (same execution name as the starter)',
      timeout: Duration.minutes(5),
      environment: {
        [LAMBDA_ENV.bucket]: bucket.bucketName,
        [LAMBDA_ENV.generationStateMachineArn]: props.generation.stateMachineArn,
        CIL_RECONCILE_LOOKBACK_MINUTES: String(RECONCILER_SCHEDULE.lookbackMinutes),
        CIL_RECONCILE_MIN_AGE_MINUTES: String(RECONCILER_SCHEDULE.minAgeMinutes),
      },
    });
    this.fn = f.fn;
    props.generation.grantStartExecution(f.role);
    // The uploads' versions (every version is an upload of its own), under inputs/ only.
    f.role.addToPolicy(
      new iam.PolicyStatement({ actions: ['s3:ListBucketVersions'], resources: [bucket.bucketArn], conditions: { StringLike: { 's3:prefix': [PREFIX.inputs, `${PREFIX.inputs}*`] } } }),
    );
    // HEAD of the job records; ListBucket on their prefixes makes a missing record a 404, not a 403.
    const records = [PREFIX.jobs, PREFIX.failures, PREFIX.outputs];
    props.storage.grantObjects(f.role, 'read', ...records);
    props.storage.grantList(f.role, ...records);
    const bucketId = Stack.of(this).getLogicalId(bucket.node.defaultChild as CfnElement);
    Validations.of(f.role).acknowledge(
      ...records.map((p) => ({
        id: `AwsSolutions-IAM5[Resource::<${bucketId}.Arn>/${p}*]`,
        reason: `HEAD of the job records under ${p} (the wildcard is the job id and file name): whether an upload already became a job.`,
      })),
    );

    this.schedule = new events.Rule(this, 'Schedule', {
      description: 'Runs the CIL reconciler (lost upload events)',
      schedule: events.Schedule.rate(Duration.minutes(RECONCILER_SCHEDULE.everyMinutes)),
      targets: [new targets.LambdaFunction(f.fn, { retryAttempts: 2, maxEventAge: Duration.hours(1) })],
    });
  }
}
