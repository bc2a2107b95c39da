/**
 * The whole product on AWS (docs/design.md §2.2): the data bucket, the upload triggers, the three
 * workflows, AWS Batch for the GPU work, notifications, alarms and a dashboard.
 */
import { CfnOutput, Stack } from 'aws-cdk-lib';
import type { StackProps } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import { GpuBudget } from './budget.ts';
import { GpuBatch } from './compute.ts';
import type { CilConfig } from './config.ts';
import { resolveConfig } from './config.ts';
import type { HandlerEntries } from './functions.ts';
import { PipelineFunctions } from './functions.ts';
import { FINETUNE_OUTPUT, OUTPUTS } from './names.ts';
import { applyNagSuppressions } from './nag.ts';
import { Observability } from './observability.ts';
import { DataStorage } from './storage.ts';
import { UploadTriggers } from './triggers.ts';
import { Reconciler } from './reconciler.ts';
import { BatchWorkflow } from './workflows/batch.ts';
import { FinetuneWorkflow } from './workflows/finetune.ts';
import { GenerationWorkflow } from './workflows/generation.ts';
import { StatisticsWorkflow } from './workflows/statistics.ts';

export interface CilStackProps extends StackProps {
  /** Parameters; anything not given comes from CDK context (`cil:<key>`), then the defaults. */
  readonly config?: Partial<CilConfig>;
  /** Handler files of the Lambdas written in functions/ (default: DEFAULT_HANDLER_ENTRIES in paths.ts). */
  readonly handlers?: Partial<HandlerEntries>;
  /** An existing VPC with private subnets that have egress; default: a new one. */
  readonly vpc?: ec2.IVpc;
  /** Acknowledge the reviewed cdk-nag findings (nag.ts). Default true; tests turn it off to see them all. */
  readonly nagAcknowledgements?: boolean;
}

export class CilStack extends Stack {
  readonly config: CilConfig;
  readonly storage: DataStorage;
  readonly eventBus: events.EventBus;
  readonly notificationTopic: sns.Topic;
  readonly alarmTopic: sns.Topic;
  readonly gpuBudget: GpuBudget;
  readonly topicKey: kms.Key;
  readonly gpu: GpuBatch;
  readonly functions: PipelineFunctions;
  readonly generation: GenerationWorkflow;
  readonly batchProduction: BatchWorkflow;
  readonly statistics: StatisticsWorkflow;
  readonly triggers: UploadTriggers;
  /** Starts uploads whose event was lost (a schedule and a Lambda). */
  readonly reconciler: Reconciler;
  readonly observability: Observability;
  /** The TimeNoise fine-tuning workflow, when `finetune` is on (docs/finetuning.md). */
  readonly finetune?: FinetuneWorkflow;

  constructor(scope: Construct, id: string, props: CilStackProps = {}) {
    super(scope, id, props);
    const c = resolveConfig((k) => this.node.tryGetContext(k), props.config);
    this.config = c;

    this.storage = new DataStorage(this, 'Storage', { config: c });
    this.eventBus = new events.EventBus(this, 'EventBus', { description: 'CIL job progress and outcome events' });

    // One key for both topics; CloudWatch alarms publish through it, so its key policy names them.
    this.topicKey = new kms.Key(this, 'TopicKey', { enableKeyRotation: true, description: 'CIL notification topics' });
    this.topicKey.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
        conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
      }),
    );
    this.notificationTopic = new sns.Topic(this, 'Notifications', { displayName: 'CIL job notifications', masterKey: this.topicKey, enforceSSL: true });
    this.alarmTopic = new sns.Topic(this, 'Alarms', { displayName: 'CIL alarms', masterKey: this.topicKey, enforceSSL: true });
    if (c.notificationEmail) this.notificationTopic.addSubscription(new subscriptions.EmailSubscription(c.notificationEmail));
    const alarmEmail = c.alarmEmail ?? c.notificationEmail;
    if (alarmEmail) this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(alarmEmail));

    this.gpu = new GpuBatch(this, 'Gpu', { config: c, storage: this.storage, eventBus: this.eventBus, vpc: props.vpc });
    this.functions = new PipelineFunctions(this, 'Functions', {
      config: c,
      storage: this.storage,
      eventBus: this.eventBus,
      topic: this.notificationTopic,
      entries: props.handlers,
    });

    // Step Functions logs go to /aws/vendedlogs/ (the prefix AWS recommends for vended logs).
    const workflowLogs = (name: string): logs.LogGroup =>
      new logs.LogGroup(this, `${name}WorkflowLogs`, { logGroupName: `/aws/vendedlogs/states/${this.stackName}-${name}`, retention: c.logRetentionDays });

    this.generation = new GenerationWorkflow(this, 'Generation', {
      config: c,
      functions: this.functions,
      batch: this.gpu,
      logGroup: workflowLogs('generation'),
    });
    this.batchProduction = new BatchWorkflow(this, 'BatchProduction', {
      config: c,
      storage: this.storage,
      generation: this.generation.stateMachine,
      prepareItem: this.functions.prepareItem,
      batchSummary: this.functions.batchSummary,
      logGroup: workflowLogs('batch'),
    });
    this.statistics = new StatisticsWorkflow(this, 'Statistics', {
      config: c,
      bucketName: this.storage.bucket.bucketName,
      batch: this.gpu,
      topic: this.notificationTopic,
      topicKey: this.topicKey,
      logGroup: workflowLogs('statistics'),
    });
    this.triggers = new UploadTriggers(this, 'Triggers', {
      config: c,
      storage: this.storage,
      generation: this.generation.stateMachine,
      batch: this.batchProduction.stateMachine,
    });
    this.reconciler = new Reconciler(this, 'Reconciler', { config: c, storage: this.storage, generation: this.generation.stateMachine });
    this.observability = new Observability(this, 'Observability', {
      config: c,
      alarmTopic: this.alarmTopic,
      workflows: { generation: this.generation.stateMachine, batch: this.batchProduction.stateMachine, statistics: this.statistics.stateMachine },
      gpu: this.gpu,
      startFailures: this.triggers.deadLetterQueue,
      functions: {
        starter: this.triggers.starter,
        validate: this.functions.validate,
        postProcess: this.functions.postProcess,
        notify: this.functions.notify,
        recordFailure: this.functions.recordFailure,
        batchSummary: this.functions.batchSummary,
      },
    });

    if (c.finetune) {
      this.finetune = new FinetuneWorkflow(this, 'Finetune', {
        config: c,
        storage: this.storage,
        gpu: this.gpu,
        statistics: this.statistics.stateMachine,
        topic: this.notificationTopic,
        topicKey: this.topicKey,
        alarmTopic: this.alarmTopic,
        logGroup: workflowLogs('finetune'),
      });
    }

    // After every construct: it tags what the stack holds, the fine-tuning fleet included.
    this.gpuBudget = new GpuBudget(this, 'GpuBudget', { config: c, alarmTopic: this.alarmTopic, topicKey: this.topicKey });

    const out = (key: string, value: string, description: string): CfnOutput => new CfnOutput(this, key, { value, description });
    out(OUTPUTS.bucket, this.storage.bucket.bucketName, 'Data bucket: upload images to inputs/, manifests to batches/; results under outputs/');
    out(OUTPUTS.generationStateMachine, this.generation.stateMachine.stateMachineArn, 'Generation workflow (execution name = job id)');
    out(OUTPUTS.batchStateMachine, this.batchProduction.stateMachine.stateMachineArn, 'Batch-production workflow');
    out(OUTPUTS.statisticsStateMachine, this.statistics.stateMachine.stateMachineArn, 'Statistics workflow (start it with a statistics request)');
    out(OUTPUTS.jobQueue, this.gpu.jobQueue.jobQueueArn, 'AWS Batch GPU job queue of the statistics fleet (docs/infra.md lists every queue)');
    out(OUTPUTS.eventBus, this.eventBus.eventBusName, 'Event bus with job progress and outcome events');
    out(OUTPUTS.notificationTopic, this.notificationTopic.topicArn, 'SNS topic of job notifications');
    out(OUTPUTS.dashboard, this.observability.dashboard.dashboardName, 'CloudWatch dashboard');
    if (this.finetune) out(FINETUNE_OUTPUT, this.finetune.stateMachine.stateMachineArn, 'TimeNoise fine-tuning workflow (docs/finetuning.md)');

    if (props.nagAcknowledgements ?? true) applyNagSuppressions(this);
  }
}
