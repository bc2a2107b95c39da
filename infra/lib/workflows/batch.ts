/**
 * Batch production: a manifest (`batches/<name>.jsonl`, one JSON object per line) runs through a
 * Distributed Map. Each line becomes one child execution: PrepareItem (checks the line, derives
 * its job id) → RunJob (the generation workflow, `startExecution.sync:2`, named by the job id).
 * Concurrency is bounded (below Batch's SubmitJob rate), a percentage of failed lines is
 * tolerated, the map run's per-item results go to `reports/<name>/`, and SummarizeBatch writes
 * `reports/<name>/summary.json` and publishes it, on success and on failure alike.
 *
 * The map is written as ASL (a CustomState) rather than with the L2 DistributedMap, whose
 * ItemReader/ResultWriter grant S3 access to the whole bucket (or to every bucket when the
 * bucket comes from the input); here the role gets batches/ to read and reports/ to write.
 */
import { ArnFormat, Aws, Duration, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { PREFIX } from '#shared/schemas';
import { BATCH_MAP_LABEL, BATCH_STATES as S } from '../names.ts';
import type { DataStorage } from '../storage.ts';
import { HANDLER_RETRY, LAMBDA_RETRY, SFN_RETRY, childExecutionPolicy, retrierJson, workflowStateMachine } from './asl.ts';
import type { WorkflowBaseProps } from './asl.ts';

export interface BatchWorkflowProps extends WorkflowBaseProps {
  readonly storage: DataStorage;
  readonly generation: sfn.IStateMachine;
  readonly prepareItem: lambda.IFunction;
  readonly batchSummary: lambda.IFunction;
}

export class BatchWorkflow extends Construct {
  readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: BatchWorkflowProps) {
    super(scope, id);
    const { config: c, storage } = props;
    const stack = Stack.of(this);

    const itemProcessor = {
      ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' },
      StartAt: S.prepareItem,
      States: {
        [S.prepareItem]: {
          Type: 'Task',
          Comment: 'Checks the manifest line; derives the job id from the manifest key, version and line',
          Resource: props.prepareItem.functionArn,
          TimeoutSeconds: 30,
          Retry: [retrierJson(LAMBDA_RETRY)],
          Next: S.runJob,
        },
        [S.runJob]: {
          Type: 'Task',
          Comment: 'Runs the generation workflow for the line and waits for it',
          Resource: `arn:${Aws.PARTITION}:states:::states:startExecution.sync:2`,
          Parameters: {
            StateMachineArn: props.generation.stateMachineArn,
            'Name.$': '$.jobId',
            Input: {
              'jobId.$': '$.jobId',
              'bucket.$': '$.bucket',
              'key.$': '$.key',
              'versionId.$': '$.versionId',
              'etag.$': '$.etag',
              'size.$': '$.size',
              'request.$': '$.request',
              'batch.$': '$.batch',
              'AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$': '$$.Execution.Id',
            },
          },
          ResultSelector: { 'executionArn.$': '$.ExecutionArn', 'status.$': '$.Status' },
          TimeoutSeconds: Duration.hours(c.generateTimeoutHours + 2).toSeconds(),
          Retry: [retrierJson(SFN_RETRY)],
          End: true,
        },
      },
    };

    const runManifest = new sfn.CustomState(this, S.runManifest, {
      stateJson: {
        Type: 'Map',
        Comment: 'One generation run per manifest line',
        Label: BATCH_MAP_LABEL,
        ItemReader: {
          Resource: `arn:${Aws.PARTITION}:states:::s3:getObject`,
          ReaderConfig: { InputType: 'JSONL' },
          Parameters: { 'Bucket.$': '$.bucket', 'Key.$': '$.key' },
        },
        ItemSelector: {
          'bucket.$': '$.bucket',
          'manifestKey.$': '$.key',
          'manifestVersion.$': '$.versionId',
          'batchName.$': '$.batchName',
          'index.$': '$$.Map.Item.Index',
          'line.$': '$$.Map.Item.Value',
        },
        ItemProcessor: itemProcessor,
        MaxConcurrency: c.batchMaxConcurrency,
        ToleratedFailurePercentage: c.batchToleratedFailurePercentage,
        ResultWriter: {
          Resource: `arn:${Aws.PARTITION}:states:::s3:putObject`,
          Parameters: { 'Bucket.$': '$.bucket', 'Prefix.$': '$.reportPrefix' },
        },
        ResultPath: '$.map',
      },
    });

    const succeeded = new sfn.Succeed(this, S.succeeded);
    const failed = new sfn.Fail(this, S.failed, { errorPath: '$.mapError.Error', causePath: '$.mapError.Cause' });
    const summaryFailed = new sfn.Fail(this, S.summaryFailed, {
      error: 'CIL.SummaryFailed',
      cause: 'The batch ran, but reports/<name>/summary.json could not be written or published',
    });
    const outcome = new sfn.Choice(this, S.outcome).when(sfn.Condition.isPresent('$.mapError'), failed).otherwise(succeeded);
    const summarize = new tasks.LambdaInvoke(this, S.summarize, {
      lambdaFunction: props.batchSummary,
      payloadResponseOnly: true,
      retryOnServiceExceptions: false,
      payload: sfn.TaskInput.fromObject({ 'batch.$': '$', 'executionArn.$': '$$.Execution.Id', 'startedAt.$': '$$.Execution.StartTime' }),
      resultPath: '$.summary',
      taskTimeout: sfn.Timeout.duration(Duration.seconds(120)),
      comment: 'Writes reports/<name>/summary.json and publishes it',
    })
      .addRetry(LAMBDA_RETRY)
      .addRetry(HANDLER_RETRY)
      .addCatch(summaryFailed, { resultPath: '$.summaryError' });
    runManifest.addCatch(summarize, { resultPath: '$.mapError' });
    runManifest.next(summarize);
    summarize.next(outcome);

    this.stateMachine = workflowStateMachine(this, props, {
      workflow: 'batch',
      comment: 'CIL batch production: one manifest to many generation runs',
      start: runManifest,
      // Long enough for thousands of lines at the configured concurrency.
      timeout: Duration.days(7),
    });
    const sm = this.stateMachine;
    props.prepareItem.grantInvoke(sm);
    // ItemReader and ResultWriter.
    storage.grantObjects(sm, 'read', PREFIX.batches);
    sm.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:PutObject', 's3:GetObject', 's3:ListMultipartUploadParts', 's3:AbortMultipartUpload'],
        resources: [storage.objectsArn(PREFIX.reports)],
      }),
    );
    // RunJob: start the generation workflow and follow it.
    for (const st of childExecutionPolicy(this, props.generation.stateMachineArn)) sm.addToRolePolicy(st);

    // Permissions that name this state machine itself live in separate policies (they depend on
    // the state machine, which depends on its role's default policy).
    const ownName = stack.splitArn(sm.stateMachineArn, ArnFormat.COLON_RESOURCE_NAME).resourceName ?? '';
    const ownExecutions = stack.formatArn({ service: 'states', resource: 'execution', arnFormat: ArnFormat.COLON_RESOURCE_NAME, resourceName: `${ownName}:*` });
    const mapRunExecutions = stack.formatArn({
      service: 'states',
      resource: 'execution',
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
      resourceName: `${ownName}/${BATCH_MAP_LABEL}:*`,
    });
    new iam.Policy(this, 'DistributedMapPolicy', {
      roles: [sm.role],
      statements: [
        new iam.PolicyStatement({ actions: ['states:StartExecution'], resources: [sm.stateMachineArn] }),
        new iam.PolicyStatement({ actions: ['states:DescribeExecution', 'states:StopExecution'], resources: [ownExecutions] }),
        new iam.PolicyStatement({ actions: ['states:RedriveExecution'], resources: [mapRunExecutions] }),
      ],
    });
    const summaryRole = props.batchSummary.role;
    if (summaryRole) {
      new iam.Policy(this, 'SummaryMapRunPolicy', {
        roles: [summaryRole],
        statements: [
          new iam.PolicyStatement({ actions: ['states:ListMapRuns'], resources: [ownExecutions] }),
          new iam.PolicyStatement({
            actions: ['states:DescribeMapRun'],
            resources: [stack.formatArn({ service: 'states', resource: 'mapRun', arnFormat: ArnFormat.COLON_RESOURCE_NAME, resourceName: `${ownName}/*` })],
          }),
        ],
      });
    }
  }
}
