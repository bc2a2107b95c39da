/**
 * The generation workflow (docs/design.md §2.2): Validate → SizeForModel (the family and
 * resolution pick the GPU fleet, vCPUs and memory) → ChooseTier (an upload goes to the
 * interactive queue, a manifest line to the production queue) → Generate (Batch GPU job, .sync) →
 * PostProcess → NotifySuccess. A Generate job that its Spot queue cancelled for want of Spot
 * capacity is resubmitted once to the fleet's on-demand queue (GenerateOnDemand); `$.placement`
 * records it and goes to the Batch job as its `placement` parameter (metadata.json, result.json). Every step retries only transient service errors, has its own
 * timeout, and on failure goes to `<Step>Failed` (which records the step's name) → RecordFailure
 * (failures/<jobId>.json) → NotifyFailure → JobFailed.
 *
 * The execution's state stays small: the starter's input (S3 keys), the job spec from Validate
 * (S3 keys and scalars), and small results. Never tensors or images.
 */
import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { JOB_SPEC_FILE } from '#shared/schemas';
import type { GpuBatch } from '../compute.ts';
import { SPOT_CAPACITY_CANCEL_PATTERN } from '../compute.ts';
import type { CilConfig } from '../config.ts';
import { GENERATION_STATES as S, WORKER_ENV, failedStateName, sizeStateName } from '../names.ts';
import { HANDLER_RETRY, LAMBDA_RETRY, batchSubmitJobSync, workflowStateMachine } from './asl.ts';
import type { WorkflowBaseProps } from './asl.ts';

export interface GenerationFunctions {
  readonly validate: lambda.IFunction;
  readonly postProcess: lambda.IFunction;
  readonly notify: lambda.IFunction;
  readonly recordFailure: lambda.IFunction;
}

export interface GenerationWorkflowProps extends WorkflowBaseProps {
  /** The Lambdas of the Task states. */
  readonly functions: GenerationFunctions;
  /** The GPU fleets' queues and the generate job definition. */
  readonly batch: Pick<GpuBatch, 'fleets' | 'generateJob'>;
}

/** Per-step Step Functions timeouts (each above the Lambda's own timeout). */
export const GENERATION_TIMEOUTS = Object.freeze({
  validate: Duration.seconds(120),
  postProcess: Duration.minutes(11),
  notify: Duration.seconds(60),
  recordFailure: Duration.seconds(60),
});

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
    const failedStates = new Map<string, sfn.Chain>();
    const failedAt = (step: string): sfn.Chain => {
      let st = failedStates.get(step);
      if (!st) failedStates.set(step, (st = new sfn.Pass(this, failedStateName(step), { result: sfn.Result.fromString(step), resultPath: '$.failedStep' }).next(recordFailure)));
      return st;
    };
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

    const submit = (id: string, comment: string, queuePath: string): sfn.CustomState =>
      batchSubmitJobSync(this, id, {
        comment,
        jobName: { 'JobName.$': '$.spec.jobId' },
        jobQueuePath: queuePath,
        jobDefinitionArn: props.batch.generateJob.jobDefinitionArn,
        // By reference: Validate wrote the spec to jobs/<jobId>/request.json (whatever the prompt holds).
        environment: { [WORKER_ENV.jobSpecUri]: `States.Format('s3://{}/{}${JOB_SPEC_FILE}', $.spec.bucket, $.spec.workPrefix)` },
        resources: { vcpusPath: '$.resources.vcpus', memoryPath: '$.resources.memory' },
        // The job's placement as the `placement` parameter (the command's Ref::placement): the
        // worker records it in metadata.json; the overrides keep only the spec's URI.
        parameters: { placement: 'States.JsonToString($.placement)' },
        resultPath: '$.generate',
        timeout: Duration.hours(c.generateTimeoutHours),
      });
    const generate = submit(S.generate, 'Runs the sampler on a GPU of the fleet placed for the model (Batch retries Spot reclaims itself)', '$.placement.queue');

    const onDemand = c.spot && c.onDemandFallback;
    if (onDemand) {
      // Spot had no capacity: the queue's time-limit action cancelled the job (compute.ts,
      // spotCapacityActions). Read the job description the .sync error carries, and resubmit the
      // job once to the fleet's on-demand queue; anything else is a failure of Generate.
      const generateOnDemand = submit(S.generateOnDemand, 'The same job on the fleet\'s on-demand queue (Spot had no capacity)', '$.placement.queue');
      generateOnDemand.addCatch(...catchTo(S.generate));
      generateOnDemand.next(postProcess);
      const recordResubmission = new sfn.Pass(this, S.recordResubmission, {
        comment: 'Records the cancelled Spot job; the on-demand job gets $.placement (its metadata.json and result.json record it), and so does the execution output',
        parameters: {
          'tier.$': '$.placement.tier',
          'queue.$': '$.resources.queues.onDemand',
          capacity: 'on-demand',
          'spotCancellations.$': 'States.MathAdd($.placement.spotCancellations, 1)',
          'executionStartedAt.$': '$.placement.executionStartedAt',
          'resubmittedFrom.$': '$.resubmission.job.JobId',
          'resubmitReason.$': '$.resubmission.job.StatusReason',
        },
        resultPath: '$.placement',
      }).next(generateOnDemand);
      const cancelledForCapacity = new sfn.Choice(this, S.spotCapacityCheck, { comment: 'Cancelled by the Spot queue for want of capacity?' })
        .when(
          sfn.Condition.and(
            sfn.Condition.isPresent('$.resubmission.job.JobId'),
            sfn.Condition.isPresent('$.resubmission.job.StatusReason'),
            sfn.Condition.isString('$.resubmission.job.StatusReason'),
            sfn.Condition.stringMatches('$.resubmission.job.StatusReason', SPOT_CAPACITY_CANCEL_PATTERN),
          ),
          recordResubmission,
        )
        .otherwise(failedAt(S.generate));
      const readFailure = new sfn.Pass(this, S.readGenerateFailure, {
        comment: 'The .sync error of a failed job carries its DescribeJobs record as JSON',
        parameters: { 'job.$': 'States.StringToJson($.error.Cause)' },
        resultPath: '$.resubmission',
      }).next(cancelledForCapacity);
      const isJobFailure = new sfn.Choice(this, 'GenerateFailureKind')
        .when(
          sfn.Condition.and(
            sfn.Condition.stringEquals('$.error.Error', 'States.TaskFailed'),
            sfn.Condition.isPresent('$.error.Cause'),
            sfn.Condition.isString('$.error.Cause'),
            sfn.Condition.stringMatches('$.error.Cause', '{*}'),
          ),
          readFailure,
        )
        .otherwise(failedAt(S.generate));
      generate.addCatch(isJobFailure, { resultPath: '$.error' });
    } else {
      generate.addCatch(...catchTo(S.generate));
    }

    // Uploads a user waits for go to the interactive queue, manifest lines (`batch` set by PrepareItem) to production.
    const tier = (id: string, name: 'interactive' | 'production'): sfn.Pass =>
      new sfn.Pass(this, id, {
        // The worker measures the queue wait from the execution's start (Validate takes seconds of it).
        parameters: { tier: name, 'queue.$': `$.resources.queues.${name}`, capacity: c.spot ? 'spot' : 'on-demand', spotCancellations: 0, 'executionStartedAt.$': '$$.Execution.StartTime' },
        resultPath: '$.placement',
      });
    const chooseTier = new sfn.Choice(this, S.chooseTier, { comment: 'An upload (interactive) or a manifest line (production)?' })
      // Not(IsNull) rather than IsNull: false, which the local interpreter (aws-local-stepfunctions) never matches.
      .when(sfn.Condition.and(sfn.Condition.isPresent('$.batch'), sfn.Condition.not(sfn.Condition.isNull('$.batch'))), tier(S.tierProduction, 'production').next(generate))
      .otherwise(tier(S.tierInteractive, 'interactive').next(generate));

    const sizeForModel = new sfn.Choice(this, S.sizeForModel, { comment: 'GPU fleet, vCPUs and memory of the Batch job, per model family and resolution' });
    for (const [key, fleetName] of Object.entries(c.placement)) {
      const [family, res] = key.split('@') as [keyof CilConfig['modelProfiles'], string];
      const [height, width] = res.split('x').map(Number) as [number, number];
      const p = c.modelProfiles[family];
      const fleet = props.batch.fleets[fleetName];
      if (!fleet) throw new Error(`placement ${key}: no fleet ${fleetName}`);
      const queues: Record<string, string> = {};
      for (const [t, q] of Object.entries(fleet.queues)) if (t !== 'statistics') queues[t] = q.jobQueueArn;
      sizeForModel.when(
        sfn.Condition.and(
          sfn.Condition.stringEquals('$.spec.request.family', family),
          sfn.Condition.isPresent('$.spec.resolution'),
          sfn.Condition.numberEquals('$.spec.resolution.height', height),
          sfn.Condition.numberEquals('$.spec.resolution.width', width),
        ),
        new sfn.Pass(this, sizeStateName(family, res), {
          comment: `${key} needs about ${c.gpuMemoryGiB[key] ?? '?'} GiB of GPU memory: fleet ${fleetName} (${fleet.gpuMemoryGiB.toFixed(1)} GiB per GPU)`,
          // Batch takes resource values as strings.
          result: sfn.Result.fromObject({ fleet: fleetName, vcpus: String(p.vcpus), memory: String(p.memoryMiB), queues }),
          resultPath: '$.resources',
        }).next(chooseTier),
      );
    }
    sizeForModel.otherwise(
      new sfn.Pass(this, 'NoFleetForModel', {
        result: sfn.Result.fromObject({ Error: 'CIL.NoFleetForModel', Cause: 'no GPU fleet is placed for the model family and resolution of the job spec (deployment parameter placement)' }),
        resultPath: '$.error',
      }).next(failedAt(S.sizeForModel)),
    );

    const validate = invoke(S.validate, f.validate, GENERATION_TIMEOUTS.validate, '$.spec', undefined, 'Checks the upload and request; returns the job spec');
    validate.addCatch(...catchTo(S.validate));

    validate.next(sizeForModel);
    generate.next(postProcess);
    postProcess.next(notifySuccess);
    notifySuccess.next(succeeded);

    this.stateMachine = workflowStateMachine(this, props, {
      workflow: 'generation',
      comment: 'CIL generation: one upload to one video',
      start: validate,
      // Longer than every step together: Validate, queueing and all Batch attempts, post-process.
      timeout: Duration.hours(c.generateTimeoutHours + 1),
      batchJobs: {
        queueArns: Object.values(props.batch.fleets).flatMap((f) => Object.entries(f.queues).filter(([t]) => t !== 'statistics').map(([, q]) => q.jobQueueArn)),
        jobDefinitionArns: [props.batch.generateJob.jobDefinitionArn],
      },
    });
  }
}
