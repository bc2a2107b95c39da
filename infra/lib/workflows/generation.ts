/**
 * The generation workflow (docs/design.md §2.2): Validate → Generate (Batch GPU job, .sync) →
 * PostProcess → NotifySuccess. Every step retries only transient service errors, has its own
 * timeout, and on failure goes to `<Step>Failed` (which records the step's name) → RecordFailure
 * (failures/<jobId>.json) → NotifyFailure → JobFailed.
 *
 * The execution's state stays small: the starter's input (S3 keys), the job spec from Validate
 * (S3 keys and scalars), and small results. Never tensors or images.
 */
import { Duration } from 'aws-cdk-lib';
import type { CfnResource } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import type { Family } from '#shared/schemas';
import { JOB_SPEC_FILE } from '#shared/schemas';
import type { GpuBatch } from '../compute.ts';
import type { CilConfig } from '../config.ts';
import { GENERATION_STATES as S, WORKER_ENV, WORKFLOW_METADATA_KEY, failedStateName, sizeStateName } from '../names.ts';
import { HANDLER_RETRY, LAMBDA_RETRY, batchSubmitJobSync, workflowStateMachine } from './asl.ts';

export interface GenerationFunctions {
  readonly validate: lambda.IFunction;
  readonly postProcess: lambda.IFunction;
  readonly notify: lambda.IFunction;
  readonly recordFailure: lambda.IFunction;
}

export interface GenerationWorkflowProps {
  readonly config: CilConfig;
  readonly functions: GenerationFunctions;
  readonly batch: Pick<GpuBatch, 'jobQueue' | 'generateJob'>;
  readonly logGroup: logs.ILogGroup;
}

/** Per-step Step Functions timeouts (each above the Lambda's own timeout). */
export const GENERATION_TIMEOUTS = Object.freeze({
  validate: Duration.seconds(120),
  postProcess: Duration.minutes(11),
  notify: Duration.seconds(60),
  recordFailure: Duration.seconds(60),
});

const FAMILIES: readonly Family[] = ['dynamicrafter', 'videocrafter', 'svd'];

export class GenerationWorkflow extends Construct {
  readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: GenerationWorkflowProps) {
    super(scope, id);
    const { config: c, functions: f } = props;

    const invoke = (stateId: string, fn: lambda.IFunction, timeout: Duration, resultPath: string, payload?: Record<string, unknown>, comment?: string): sfn.TaskStateBase =>
      new tasks.LambdaInvoke(this, stateId, {
        lambdaFunction: fn,
        payloadResponseOnly: true,
        retryOnServiceExceptions: false,
        payload: payload ? sfn.TaskInput.fromObject(payload) : undefined,
        resultPath,
        taskTimeout: sfn.Timeout.duration(timeout),
        comment,
      })
        .addRetry(LAMBDA_RETRY)
        .addRetry(HANDLER_RETRY);

    // Failure branch.
    const jobFailed = new sfn.Fail(this, S.jobFailed, {
      comment: 'The job failed; failures/<jobId>.json says where and why',
      errorPath: '$.error.Error',
      causePath: '$.error.Cause',
    });
    const notifyFailure = invoke(
      S.notifyFailure,
      f.notify,
      GENERATION_TIMEOUTS.notify,
      sfn.JsonPath.DISCARD,
      { status: 'FAILED', 'executionArn.$': '$$.Execution.Id', 'job.$': '$' },
      'Tells the user the job failed, which step and why',
    );
    notifyFailure.addCatch(jobFailed, { resultPath: '$.notifyError' });
    notifyFailure.next(jobFailed);
    const recordFailure = invoke(S.recordFailure, f.recordFailure, GENERATION_TIMEOUTS.recordFailure, '$.failureRecord', undefined, 'Writes failures/<jobId>.json');
    // A record that cannot be written must not swallow the notification.
    recordFailure.addCatch(notifyFailure, { resultPath: '$.recordError' });
    recordFailure.next(notifyFailure);
    const failedAt = (step: string): sfn.Chain =>
      new sfn.Pass(this, failedStateName(step), { result: sfn.Result.fromString(step), resultPath: '$.failedStep' }).next(recordFailure);
    const catchTo = (step: string): [sfn.IChainable, sfn.CatchProps] => [failedAt(step), { resultPath: '$.error' }];

    // Success path.
    const succeeded = new sfn.Succeed(this, S.succeeded);
    const notificationFailed = new sfn.Fail(this, S.notificationFailed, {
      error: 'CIL.NotificationFailed',
      cause: 'The outputs were written, but the success notification could not be sent',
    });
    const notifySuccess = invoke(S.notifySuccess, f.notify, GENERATION_TIMEOUTS.notify, sfn.JsonPath.DISCARD, {
      status: 'SUCCEEDED',
      'executionArn.$': '$$.Execution.Id',
      'job.$': '$',
    });
    notifySuccess.addCatch(notificationFailed, { resultPath: '$.error' });

    const postProcess = invoke(S.postProcess, f.postProcess, GENERATION_TIMEOUTS.postProcess, '$.result', { 'spec.$': '$.spec', 'generate.$': '$.generate' });
    postProcess.addCatch(...catchTo(S.postProcess));

    const generate = batchSubmitJobSync(this, S.generate, {
      comment: 'Runs the sampler on a GPU (Batch retries Spot reclaims itself)',
      jobName: { 'JobName.$': '$.spec.jobId' },
      jobQueueArn: props.batch.jobQueue.jobQueueArn,
      jobDefinitionArn: props.batch.generateJob.jobDefinitionArn,
      // By reference: Validate wrote the spec to jobs/<jobId>/request.json (whatever the prompt holds).
      environment: { [WORKER_ENV.jobSpecUri]: `States.Format('s3://{}/{}${JOB_SPEC_FILE}', $.spec.bucket, $.spec.workPrefix)` },
      resources: { vcpusPath: '$.resources.vcpus', memoryPath: '$.resources.memory' },
      resultPath: '$.generate',
      timeout: Duration.hours(c.generateTimeoutHours),
    });
    generate.addCatch(...catchTo(S.generate));

    const sizeForModel = new sfn.Choice(this, S.sizeForModel, { comment: 'vCPUs and memory of the Batch job, per model family' });
    for (const family of FAMILIES) {
      const p = c.modelProfiles[family];
      sizeForModel.when(
        sfn.Condition.stringEquals('$.spec.request.family', family),
        new sfn.Pass(this, sizeStateName(family), {
          // Batch takes resource values as strings.
          result: sfn.Result.fromObject({ vcpus: String(p.vcpus), memory: String(p.memoryMiB) }),
          resultPath: '$.resources',
        }).next(generate),
      );
    }
    sizeForModel.otherwise(
      new sfn.Pass(this, 'UnknownFamily', {
        result: sfn.Result.fromObject({ Error: 'CIL.UnknownFamily', Cause: 'the job spec names a model family with no Batch resource profile' }),
        resultPath: '$.error',
      }).next(failedAt(S.sizeForModel)),
    );

    const validate = invoke(S.validate, f.validate, GENERATION_TIMEOUTS.validate, '$.spec', undefined, 'Checks the upload and request; returns the job spec');
    validate.addCatch(...catchTo(S.validate));

    validate.next(sizeForModel);
    generate.next(postProcess);
    postProcess.next(notifySuccess);
    notifySuccess.next(succeeded);

    this.stateMachine = workflowStateMachine(this, {
      comment: 'CIL generation: one upload to one video',
      start: validate,
      // Longer than every step together: Validate, queueing and all Batch attempts, post-process.
      timeout: Duration.hours(c.generateTimeoutHours + 1),
      logGroup: props.logGroup,
      includeExecutionData: c.includeExecutionData,
      batchJobs: { queueArns: [props.batch.jobQueue.jobQueueArn], jobDefinitionArns: [props.batch.generateJob.jobDefinitionArn] },
    });
    (this.stateMachine.node.defaultChild as CfnResource).addMetadata(WORKFLOW_METADATA_KEY, 'generation');
  }
}
