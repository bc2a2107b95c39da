/**
 * Pieces shared by the workflows: which errors are transient (retried with backoff and jitter),
 * the state machine itself, the SNS notification step, the permissions of a `.sync` child
 * execution, and the Batch `submitJob.sync` task, written as Amazon States Language because its
 * resource requirements and array size come from the execution's data (the L2 task only takes
 * constants for them).
 */
import type { CfnResource } from 'aws-cdk-lib';
import { ArnFormat, Aws, Duration, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import type { WorkflowName } from '../names.ts';
import { WORKFLOW_METADATA_KEY } from '../names.ts';
import type { CilConfig } from '../config.ts';

/** Lambda service errors (not the handler's own typed errors, which are final). */
export const LAMBDA_TRANSIENT_ERRORS = [
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.TooManyRequestsException',
] as const;

/**
 * Transient errors a handler itself may report after the SDK's own retries: S3 and EventBridge
 * throttling or 5xx (the SDK error's name becomes the Lambda error type), and the functions'
 * PublishFailed and S3Unreachable (connection refused/reset; functions/src/errors.ts). The handlers' typed errors (InvalidImage, ModelNotFound, …)
 * are final and go straight to the Catch.
 */
export const HANDLER_TRANSIENT_ERRORS = ['PublishFailed', 'SlowDown', 'ServiceUnavailable', 'InternalError', 'ThrottlingException', 'TimeoutError', 'S3Unreachable'] as const;

/** Batch service errors and throttling of SubmitJob (a FAILED job is final: Batch already retried it). */
export const BATCH_TRANSIENT_ERRORS = ['Batch.ServerException', 'Batch.AWSBatchException', 'Batch.TooManyRequestsException', 'Batch.ThrottlingException'] as const;

/** Step Functions errors when starting a child execution. */
export const SFN_TRANSIENT_ERRORS = ['StepFunctions.ExecutionLimitExceeded', 'StepFunctions.ThrottlingException', 'StepFunctions.AWSStepFunctionsException', 'StepFunctions.SdkClientException'] as const;

export const SNS_TRANSIENT_ERRORS = ['SNS.AmazonSNSException', 'SNS.SdkClientException', 'SNS.ThrottledException'] as const;

/** Retries of transient errors: exponential backoff (×2) with full jitter, each wait capped at `maxDelay`. */
function transientRetry(errors: readonly string[], interval: Duration, maxAttempts: number, maxDelay: Duration): sfn.RetryProps {
  return { errors: [...errors], interval, maxAttempts, backoffRate: 2, maxDelay, jitterStrategy: sfn.JitterType.FULL };
}

export const LAMBDA_RETRY = transientRetry(LAMBDA_TRANSIENT_ERRORS, Duration.seconds(2), 5, Duration.seconds(30));
export const HANDLER_RETRY = transientRetry(HANDLER_TRANSIENT_ERRORS, Duration.seconds(5), 3, Duration.seconds(60));
export const BATCH_RETRY = transientRetry(BATCH_TRANSIENT_ERRORS, Duration.seconds(5), 6, Duration.seconds(120));
export const SFN_RETRY = transientRetry(SFN_TRANSIENT_ERRORS, Duration.seconds(5), 6, Duration.seconds(120));
export const SNS_RETRY = transientRetry(SNS_TRANSIENT_ERRORS, Duration.seconds(2), 4, Duration.seconds(30));

/** The ASL form of a RetryProps (for states written as JSON). */
export function retrierJson(r: sfn.RetryProps): Record<string, unknown> {
  return {
    ErrorEquals: r.errors,
    IntervalSeconds: r.interval?.toSeconds(),
    MaxAttempts: r.maxAttempts,
    BackoffRate: r.backoffRate,
    MaxDelaySeconds: r.maxDelay?.toSeconds(),
    JitterStrategy: r.jitterStrategy,
  };
}

export interface BatchTaskProps {
  readonly comment: string;
  readonly jobName: Record<string, string>;
  /** The queue: an ARN, or a JSONPath giving one (`jobQueuePath`). */
  readonly jobQueueArn?: string;
  readonly jobQueuePath?: string;
  readonly jobDefinitionArn: string;
  /** Container environment: name → JSONPath or intrinsic giving a string. */
  readonly environment?: Record<string, string>;
  /** Job parameters (the `Ref::<name>` of the job definition's command): name → JSONPath or intrinsic giving a string. */
  readonly parameters?: Record<string, string>;
  /** JSONPaths of string values for VCPU and MEMORY overrides. */
  readonly resources?: { readonly vcpusPath: string; readonly memoryPath: string };
  /** JSONPath of the array size (2–10000) for an array job. */
  readonly arraySizePath?: string;
  readonly resultPath: string;
  readonly timeout: Duration;
}

/** A `batch:submitJob.sync` task state: waits for the job, keeps only a small result. */
export function batchSubmitJobSync(scope: Construct, id: string, p: BatchTaskProps): sfn.CustomState {
  const overrides: Record<string, unknown> = {};
  if (p.environment) overrides.Environment = Object.entries(p.environment).map(([Name, path]) => ({ Name, 'Value.$': path }));
  if (p.resources) {
    overrides.ResourceRequirements = [
      { Type: 'VCPU', 'Value.$': p.resources.vcpusPath },
      { Type: 'MEMORY', 'Value.$': p.resources.memoryPath },
    ];
  }
  if ((p.jobQueueArn === undefined) === (p.jobQueuePath === undefined)) throw new Error(`${id}: give jobQueueArn or jobQueuePath, not both or neither`);
  const parameters: Record<string, unknown> = {
    ...p.jobName,
    ...(p.jobQueuePath !== undefined ? { 'JobQueue.$': p.jobQueuePath } : { JobQueue: p.jobQueueArn }),
    JobDefinition: p.jobDefinitionArn,
  };
  if (Object.keys(overrides).length > 0) parameters.ContainerOverrides = overrides;
  if (p.parameters) parameters.Parameters = Object.fromEntries(Object.entries(p.parameters).map(([k, path]) => [`${k}.$`, path]));
  if (p.arraySizePath) parameters.ArrayProperties = { 'Size.$': p.arraySizePath };
  const state = new sfn.CustomState(scope, id, {
    stateJson: {
      Type: 'Task',
      Comment: p.comment,
      Resource: `arn:${Aws.PARTITION}:states:::batch:submitJob.sync`,
      Parameters: parameters,
      // The .sync result is the whole DescribeJobs record; the workflow needs only this.
      ResultSelector: { 'batchJobId.$': '$.JobId', 'status.$': '$.Status' },
      ResultPath: p.resultPath,
      TimeoutSeconds: p.timeout.toSeconds(),
    },
  });
  state.addRetry(BATCH_RETRY);
  return state;
}

/**
 * What a role needs for `batch:submitJob.sync` on these queues and job definitions: submit; the
 * managed rule through which Step Functions hears of the job's end; describe; and terminate,
 * so that a stopped or timed-out execution does not leave a GPU job running.
 */
export function batchSyncPolicy(scope: Construct, jobQueueArns: readonly string[], jobDefinitionArns: readonly string[]): iam.PolicyStatement[] {
  const stack = Stack.of(scope);
  return [
    new iam.PolicyStatement({ actions: ['batch:SubmitJob'], resources: [...jobQueueArns, ...jobDefinitionArns] }),
    new iam.PolicyStatement({ actions: ['batch:DescribeJobs'], resources: ['*'] }),
    new iam.PolicyStatement({ actions: ['batch:TerminateJob'], resources: [stack.formatArn({ service: 'batch', resource: 'job', resourceName: '*' })] }),
    new iam.PolicyStatement({
      actions: ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'],
      resources: [stack.formatArn({ service: 'events', resource: 'rule', resourceName: 'StepFunctionsGetEventsForBatchJobsRule' })],
    }),
  ];
}

/** What every workflow construct is given: the deployment parameters and the log group its state machine logs to. */
export interface WorkflowBaseProps {
  /** Deployment parameters (`includeExecutionData` among them). */
  readonly config: CilConfig;
  /** Where the state machine logs. */
  readonly logGroup: logs.ILogGroup;
}

export interface WorkflowProps {
  /** Which workflow this is: the state machine's WORKFLOW_METADATA_KEY metadata (local mode finds it by that). */
  readonly workflow: WorkflowName | 'finetune';
  readonly comment: string;
  readonly start: sfn.IChainable;
  readonly timeout: Duration;
  /** The Batch queues and job definitions its `submitJob.sync` tasks use (batchSyncPolicy). */
  readonly batchJobs?: { readonly queueArns: readonly string[]; readonly jobDefinitionArns: readonly string[] };
}

/** Every workflow is a STANDARD state machine with X-Ray tracing and every event logged. */
export function workflowStateMachine(scope: Construct, base: WorkflowBaseProps, p: WorkflowProps): sfn.StateMachine {
  const sm = new sfn.StateMachine(scope, 'StateMachine', {
    comment: p.comment,
    stateMachineType: sfn.StateMachineType.STANDARD,
    definitionBody: sfn.DefinitionBody.fromChainable(p.start),
    timeout: p.timeout,
    tracingEnabled: true,
    logs: { destination: base.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: base.config.includeExecutionData },
  });
  if (p.batchJobs) for (const st of batchSyncPolicy(scope, p.batchJobs.queueArns, p.batchJobs.jobDefinitionArns)) sm.addToRolePolicy(st);
  (sm.node.defaultChild as CfnResource).addMetadata(WORKFLOW_METADATA_KEY, p.workflow);
  return sm;
}

/**
 * An SNS notification step that then goes on to `next` whatever happens: a lost notification must
 * not turn a finished run into a failed one, nor the reverse (its error lands in `$.notifyError`).
 */
export function notifyStep(scope: Construct, id: string, p: { readonly topic: sns.ITopic; readonly subject: string; readonly message: Record<string, unknown>; readonly next: sfn.IChainable }): sfn.IChainable {
  const t = new tasks.SnsPublish(scope, id, {
    topic: p.topic,
    subject: p.subject,
    message: sfn.TaskInput.fromObject(p.message),
    resultPath: sfn.JsonPath.DISCARD,
    taskTimeout: sfn.Timeout.duration(Duration.seconds(60)),
  }).addRetry(SNS_RETRY);
  t.addCatch(p.next, { resultPath: '$.notifyError' });
  return t.next(p.next);
}

/**
 * What a role needs for `states:startExecution.sync:2` of a child state machine: start it,
 * describe and stop its executions, and the managed rule through which Step Functions hears of
 * their end.
 */
export function childExecutionPolicy(scope: Construct, childStateMachineArn: string): iam.PolicyStatement[] {
  const stack = Stack.of(scope);
  const childName = stack.splitArn(childStateMachineArn, ArnFormat.COLON_RESOURCE_NAME).resourceName ?? '';
  return [
    new iam.PolicyStatement({ actions: ['states:StartExecution'], resources: [childStateMachineArn] }),
    new iam.PolicyStatement({
      actions: ['states:DescribeExecution', 'states:StopExecution'],
      resources: [stack.formatArn({ service: 'states', resource: 'execution', arnFormat: ArnFormat.COLON_RESOURCE_NAME, resourceName: `${childName}:*` })],
    }),
    new iam.PolicyStatement({
      actions: ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'],
      resources: [stack.formatArn({ service: 'events', resource: 'rule', resourceName: 'StepFunctionsGetEventsForStepFunctionsExecutionRule' })],
    }),
  ];
}
