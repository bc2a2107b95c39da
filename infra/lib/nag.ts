/**
 * cdk-nag (AWS Solutions pack) acknowledgements. Each one names the exact finding (the rule and
 * the resource or action it is about) and says why it is acceptable; a new wildcard anywhere
 * else still fails synth. The findings left are of three kinds: object ARNs under one prefix
 * (the wildcard is the job id and file name), actions AWS offers no resource-level permission
 * for, and ARNs only known at run time (Batch jobs, executions, map runs).
 */
import { Stack, Validations } from 'aws-cdk-lib';
import type { CfnElement } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type { IConstruct } from 'constructs';
import { PREFIX } from '#shared/schemas';
import { BATCH_MAP_LABEL, FINETUNE_PREFIXES, STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX } from './names.ts';
import type { CilStack } from './stack.ts';

const IAM5 = 'AwsSolutions-IAM5';

function logicalId(c: IConstruct): string {
  const el = (c.node.defaultChild ?? c) as CfnElement;
  return Stack.of(c).getLogicalId(el);
}

/** The finding id cdk-nag reports for a wildcard resource. */
function resourceFinding(resource: string): string {
  return `${IAM5}[Resource::${resource}]`;
}

const PREFIX_PURPOSE: Readonly<Record<string, string>> = {
  [PREFIX.inputs]: 'uploads',
  [PREFIX.batches]: 'batch manifests and their images',
  [PREFIX.jobs]: 'per-job working files',
  [PREFIX.outputs]: 'finished outputs',
  [PREFIX.failures]: 'failure records',
  [PREFIX.models]: 'model bundles',
  [PREFIX.statistics]: 'dataset statistics',
  [STATISTICS_DATASETS_PREFIX]: 'statistics datasets (videos)',
  [STATISTICS_PARTIALS_PREFIX]: 'partial statistics of sharded runs',
  [PREFIX.reports]: 'batch reports',
  [FINETUNE_PREFIXES.inputs]: 'fine-tuning inputs: code, configs, base checkpoints, datasets',
  [FINETUNE_PREFIXES.runs]: 'fine-tuning runs: checkpoints, exported weights, parity data',
  [FINETUNE_PREFIXES.stagingModels]: 'bundles exported by fine-tuning runs, before publication',
  [FINETUNE_PREFIXES.stagingStatistics]: 'statistics of staged bundles, before publication',
};

export function applyNagSuppressions(stack: CilStack): void {
  const bucketArn = `<${logicalId(stack.storage.bucket)}.Arn>`;
  const arn = (service: string, rest: string): string => `arn:<AWS::Partition>:${service}:<AWS::Region>:<AWS::AccountId>:${rest}`;
  const smName = (c: IConstruct): string => JSON.stringify({ 'Fn::Select': [6, { 'Fn::Split': [':', { Ref: logicalId(c) }] }] });

  const prefixes = (c: IConstruct, ...ps: string[]): void => {
    Validations.of(c).acknowledge(
      ...ps.map((p) => ({
        id: resourceFinding(`${bucketArn}/${p}*`),
        reason: `Object access limited to the ${p} prefix of the data bucket (${PREFIX_PURPOSE[p] ?? 'see docs/infra.md'}); the wildcard stands for the job ids and file names under it.`,
      })),
    );
  };
  const functionVersions = (c: IConstruct, ...fns: IConstruct[]): void => {
    Validations.of(c).acknowledge(
      ...fns.map((fn) => ({
        id: resourceFinding(`<${logicalId(fn)}.Arn>:*`),
        reason: `Invoke grant on one function (${fn.node.id}) and its versions/aliases (the ':*' qualifier), as the Step Functions Lambda integration grants it.`,
      })),
    );
  };
  const star = (c: IConstruct, reason: string): void => {
    Validations.of(c).acknowledge({ id: resourceFinding('*'), reason });
  };
  const sfnStar =
    'Resource "*" only for actions with no resource-level permissions: X-Ray tracing (xray:PutTraceSegments, …), ' +
    'Step Functions log delivery (logs:CreateLogDelivery, …, which AWS requires on "*")';
  const batchJobs = (c: IConstruct): void => {
    Validations.of(c).acknowledge({
      id: resourceFinding(arn('batch', 'job/*')),
      reason: 'batch:TerminateJob on Batch jobs, whose ids exist only at run time: Step Functions stops the job it started when the execution is stopped or times out.',
    });
  };
  const topicKey = (c: IConstruct): void => {
    Validations.of(c).acknowledge({
      id: `${IAM5}[Action::kms:GenerateDataKey*]`,
      reason: 'Publishing to the KMS-encrypted topics needs kms:GenerateDataKey* (GenerateDataKey and GenerateDataKeyWithoutPlaintext) on the topic key only.',
    });
  };

  // Lambda roles.
  const f = stack.functions;
  prefixes(f.validate.role!, PREFIX.inputs, PREFIX.batches, PREFIX.models, PREFIX.statistics, PREFIX.jobs);
  prefixes(f.postProcess.role!, PREFIX.jobs, PREFIX.outputs);
  prefixes(f.notify.role!, PREFIX.outputs, PREFIX.failures);
  topicKey(f.notify.role!);
  prefixes(f.recordFailure.role!, PREFIX.failures);
  prefixes(f.batchSummary.role!, PREFIX.reports);
  topicKey(f.batchSummary.role!);
  // Every function traces to X-Ray (lambdas.ts TRACING), whose actions have no resource-level permissions.
  const xray = 'X-Ray tracing (xray:PutTraceSegments, xray:PutTelemetryRecords, xray:GetSampling*) has no resource-level permissions';
  const metricsRole = stack.observability.metricsFunction.role!;
  star(metricsRole, `${xray}; nor has batch:ListJobs: the function lists only the stack's queues (CIL_JOB_QUEUES).`);
  for (const c of stack.node.findAll()) {
    const traced = c instanceof lambda.Function && (c.node.defaultChild as lambda.CfnFunction).tracingConfig !== undefined;
    if (traced && c.role && c.role !== metricsRole) star(c.role, `${xray}.`);
  }

  // Batch roles.
  const g = stack.gpu;
  prefixes(g.generateRole, PREFIX.models, PREFIX.statistics, PREFIX.jobs);
  prefixes(g.statisticsShardRole, PREFIX.models, STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX);
  prefixes(g.statisticsMergeRole, STATISTICS_PARTIALS_PREFIX, PREFIX.statistics);
  star(g.executionRole, 'ecr:GetAuthorizationToken has no resource-level permissions; image pulls are limited to the asset repository.');
  Validations.of(g.instanceRole).acknowledge({
    id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role]',
    reason:
      'The AWS-maintained policy the ECS agent on Batch instances needs (register the instance, poll for tasks, pull images, ship logs); jobs cannot use it, since the instance metadata hop limit of 1 keeps containers away from instance credentials.',
  });

  // Workflow roles.
  const gen = stack.generation.stateMachine;
  functionVersions(gen.role, f.validate, f.postProcess, f.notify, f.recordFailure);
  star(gen.role, `${sfnStar}, and batch:DescribeJobs (no resource-level permissions).`);
  batchJobs(gen.role);

  const bp = stack.batchProduction.stateMachine;
  const bpName = smName(bp);
  functionVersions(bp.role, f.prepareItem, f.batchSummary);
  star(bp.role, `${sfnStar}.`);
  prefixes(bp.role, PREFIX.batches, PREFIX.reports);
  Validations.of(bp.role).acknowledge({
    id: resourceFinding(arn('states', `execution:${smName(gen)}:*`)),
    reason: 'RunJob follows the generation executions it starts (DescribeExecution, StopExecution); their names (job ids) exist only at run time.',
  });
  const ownExecutions = {
    id: resourceFinding(arn('states', `execution:${bpName}:*`)),
    reason: 'The Distributed Map starts, follows and redrives child executions of this state machine, named at run time.',
  };
  Validations.of(stack.batchProduction.node.findChild('DistributedMapPolicy')).acknowledge(ownExecutions, {
    id: resourceFinding(arn('states', `execution:${bpName}/${BATCH_MAP_LABEL}:*`)),
    reason: 'RedriveExecution on the map run children of this state machine (label "manifest"), named at run time.',
  });
  Validations.of(stack.batchProduction.node.findChild('SummaryMapRunPolicy')).acknowledge(
    { id: ownExecutions.id, reason: 'BatchSummary lists the map runs of the execution that called it (ListMapRuns is authorised on executions of this state machine).' },
    { id: resourceFinding(arn('states', `mapRun:${bpName}/*`)), reason: 'BatchSummary reads the item counts of this state machine\'s map runs, created at run time.' },
  );

  const st = stack.statistics.stateMachine;
  star(st.role, `${sfnStar}, and batch:DescribeJobs (no resource-level permissions).`);
  batchJobs(st.role);
  topicKey(st.role);

  // Fine-tuning (only when `finetune` is on).
  const ft = stack.finetune;
  if (ft) {
    const F = FINETUNE_PREFIXES;
    prefixes(ft.trainRole, F.inputs, F.runs);
    prefixes(ft.exportRole, F.inputs, F.runs, F.stagingModels);
    // Publishing writes models/<id>/ and statistics/<id>.safetensors for an id chosen at run time.
    prefixes(ft.publishRole, PREFIX.models, PREFIX.statistics, F.runs, F.stagingModels, F.stagingStatistics);
    const fsm = ft.stateMachine;
    star(fsm.role, `${sfnStar}, and batch:DescribeJobs (no resource-level permissions).`);
    batchJobs(fsm.role);
    topicKey(fsm.role);
    Validations.of(fsm.role).acknowledge({
      id: resourceFinding(arn('states', `execution:${smName(st)}:*`)),
      reason: 'ComputeStatistics follows the statistics executions it starts (DescribeExecution, StopExecution); their names exist only at run time.',
    });
  }
}
