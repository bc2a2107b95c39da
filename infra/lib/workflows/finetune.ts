/**
 * The TimeNoise fine-tuning workflow (docs/finetuning.md): from a base checkpoint to a served CIL
 * model in one execution.
 *
 *   FineTune      AWS Batch multi-node parallel job (`python3 -m tools.finetune.batch train` on every
 *                 node; torch.distributed across all GPUs), checkpoints under finetune/runs/<run>/,
 *                 resumable: a retried attempt continues from the newest checkpoint
 *   ExportBundle  one-GPU Batch job: tools/export turns the fine-tuned weights into a CIL bundle in
 *                 models/_staging/<run>/ (parity data under finetune/runs/<run>/parity/)
 *   ComputeStatistics  (when the input asks for it) the statistics workflow as a nested execution
 *                 (startExecution.sync:2) on the staged bundle → statistics/_staging/<run>.safetensors
 *   PublishModel  CPU Batch job: statistics/<id>.safetensors, then models/<id>/ (manifest.json last);
 *                 refuses an id that is already published
 *
 * Started by hand or by the CLI with an input such as
 *   {"modelId": "dynamicrafter-320x512-cil-webvid", "family": "dynamicrafter", "nodes": 2,
 *    "code": "finetune/inputs/code/DynamiCrafter.tar.gz", "checkpoint": "finetune/inputs/ckpt/dc512.ckpt",
 *    "trainConfig": "finetune/inputs/configs/train_512.yaml", "inferenceConfig": "finetune/inputs/configs/inference_512_v1.0.yaml",
 *    "tokenizer": "finetune/inputs/tokenizer.json", "data": "finetune/inputs/datasets/webvid/",
 *    "train": {"steps": 20000, "batchSize": 2, "precision": "fp16"},
 *    "statistics": {"videosPrefix": "statistics/datasets/webvid/", "shards": 16}}
 * (every field: tools/finetune/spec.py parse_spec, which each job checks first; exit 3 = refused).
 *
 * Multi-node parallel jobs cannot run on Spot and want their nodes close together, so the workflow
 * has its own on-demand compute environment in one subnet with a cluster placement group, a
 * security group open between its own instances only (NCCL, the torch.distributed store), and its
 * own job queue; it scales to zero when idle. The Python image is recorded as a Docker image asset
 * (built at deploy time; synth needs no Docker).
 */
import { Aws, Duration, IgnoreMode, Size, Stack } from 'aws-cdk-lib';
import * as batch from 'aws-cdk-lib/aws-batch';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { PREFIX } from '#shared/schemas';
import type { GpuBatch } from '../compute.ts';
import { CANCEL_UNFITTABLE_JOBS, workerRetryStrategies } from '../compute.ts';
import { FINETUNE_COMMANDS, FINETUNE_ENV, FINETUNE_PREFIXES as P, FINETUNE_STATES as S } from '../names.ts';
import { REPO_ROOT, dockerignorePatterns } from '../paths.ts';
import type { DataStorage } from '../storage.ts';
import { BATCH_RETRY, SFN_RETRY, childExecutionPolicy, notifyStep, workflowStateMachine } from './asl.ts';
import type { WorkflowBaseProps } from './asl.ts';

/** The fine-tuning image: Python, torch, the models' dependencies, the AWS CLI and tools/. */
export const FINETUNE_DOCKERFILE = 'tools/finetune/Dockerfile';
/** The export traces the model on one GPU; loading and converting needs tens of GB of RAM (docs/models.md §1). */
export const EXPORT_PROFILE = Object.freeze({ vcpus: 8, memoryMiB: 60_000, gpus: 1 });
/** Publishing copies objects: CPU only, on the pipeline's GPU queue as the statistics merge does. */
export const PUBLISH_PROFILE = Object.freeze({ vcpus: 2, memoryMiB: 4096 });
/** torch.distributed's rendezvous port on the main node (tools/finetune/nodes.py MASTER_PORT). */
export const RENDEZVOUS_PORT = 29500;
const SCRATCH = '/scratch';

export interface FinetuneWorkflowProps extends WorkflowBaseProps {
  readonly storage: DataStorage;
  /** The pipeline's Batch pieces this workflow shares: VPC, instance and execution roles, logs, the GPU queue (publish). */
  readonly gpu: Pick<GpuBatch, 'vpc' | 'workerSubnets' | 'instanceRole' | 'executionRole' | 'logGroup' | 'jobQueue'>;
  /** The statistics workflow, run as a nested execution. */
  readonly statistics: sfn.IStateMachine;
  readonly topic: sns.ITopic;
  readonly topicKey?: kms.IKey;
  /** Alarm on failed executions to this topic. */
  readonly alarmTopic?: sns.ITopic;
}

export class FinetuneWorkflow extends Construct {
  readonly securityGroup: ec2.SecurityGroup;
  readonly placementGroup: ec2.PlacementGroup;
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly computeEnvironment: batch.ManagedEc2EcsComputeEnvironment;
  readonly jobQueue: batch.JobQueue;
  readonly image: ecrAssets.DockerImageAsset;
  readonly trainRole: iam.Role;
  readonly exportRole: iam.Role;
  readonly publishRole: iam.Role;
  readonly trainJob: batch.MultiNodeJobDefinition;
  readonly exportJob: batch.EcsJobDefinition;
  readonly publishJob: batch.EcsJobDefinition;
  readonly stateMachine: sfn.StateMachine;
  readonly failedAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: FinetuneWorkflowProps) {
    super(scope, id);
    const { config: c, storage, gpu } = props;
    const stack = Stack.of(this);
    const maxNodes = Math.max(1, Math.floor(c.finetuneMaxVcpus / c.finetuneNode.vcpus));

    // ------------------------------------------------------------------ compute

    this.securityGroup = new ec2.SecurityGroup(this, 'NodeSecurityGroup', {
      vpc: gpu.vpc,
      description: 'CIL fine-tuning nodes: open between the nodes of a job (NCCL, torch.distributed); outbound to S3, ECR and CloudWatch',
      allowAllOutbound: true,
    });
    this.securityGroup.connections.allowInternally(ec2.Port.allTcp(), 'NCCL and the torch.distributed store between the nodes of one job');
    this.placementGroup = new ec2.PlacementGroup(this, 'PlacementGroup', { strategy: ec2.PlacementGroupStrategy.CLUSTER });

    const userData = ec2.UserData.forLinux();
    userData.addCommands(
      'set -euo pipefail',
      "cat >> /etc/ecs/ecs.config <<'EOF'",
      // awsvpc tasks (multi-node jobs) would otherwise reach the instance metadata service.
      'ECS_AWSVPC_BLOCK_IMDS=true',
      'ECS_IMAGE_PULL_BEHAVIOR=prefer-cached',
      // SIGTERM → every rank saves its part of the checkpoint and it is uploaded before SIGKILL.
      'ECS_CONTAINER_STOP_TIMEOUT=600s',
      'EOF',
    );
    const multipart = new ec2.MultipartUserData();
    multipart.addUserDataPart(userData, ec2.MultipartBody.SHELL_SCRIPT, true);
    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      userData: multipart,
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(c.finetuneVolumeGiB, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3, deleteOnTermination: true, throughput: 1000, iops: 16_000 }),
        },
      ],
    });

    // One subnet: a cluster placement group lives in one Availability Zone.
    const subnets = gpu.vpc.selectSubnets(gpu.workerSubnets).subnets.slice(0, 1);
    this.computeEnvironment = new batch.ManagedEc2EcsComputeEnvironment(this, 'Environment', {
      vpc: gpu.vpc,
      vpcSubnets: { subnets },
      securityGroups: [this.securityGroup],
      instanceTypes: c.finetuneInstanceTypes.map((t) => new ec2.InstanceType(t)),
      useOptimalInstanceClasses: false,
      images: [{ imageType: batch.EcsMachineImageType.ECS_AL2023_NVIDIA }],
      launchTemplate: this.launchTemplate,
      instanceRole: gpu.instanceRole,
      placementGroup: this.placementGroup,
      // Multi-node parallel jobs are not supported on Spot.
      spot: false,
      allocationStrategy: batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
      minvCpus: 0,
      maxvCpus: c.finetuneMaxVcpus,
      updateToLatestImageVersion: true,
    });
    this.jobQueue = new batch.JobQueue(this, 'JobQueue', {
      computeEnvironments: [{ computeEnvironment: this.computeEnvironment, order: 1 }],
      priority: 1,
      jobStateTimeLimitActions: CANCEL_UNFITTABLE_JOBS,
    });

    this.image = new ecrAssets.DockerImageAsset(this, 'Image', {
      directory: REPO_ROOT,
      file: FINETUNE_DOCKERFILE,
      exclude: dockerignorePatterns(FINETUNE_DOCKERFILE),
      ignoreMode: IgnoreMode.DOCKER,
      platform: ecrAssets.Platform.LINUX_AMD64,
      displayName: 'cil-finetune',
    });

    // ------------------------------------------------------------------ roles (prefix-scoped)

    const role = (rid: string, description: string): iam.Role => new iam.Role(this, rid, { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'), description });
    this.trainRole = role('TrainJobRole', 'CIL fine-tuning: inputs in, checkpoints and the export of its run out');
    storage.grantObjects(this.trainRole, 'read', P.inputs, P.runs);
    storage.grantObjects(this.trainRole, 'write', P.runs);
    // Old checkpoints are removed as new ones land (--keep-checkpoints).
    storage.grantObjects(this.trainRole, 'delete', P.runs);
    storage.grantList(this.trainRole, P.inputs, P.runs);

    this.exportRole = role('ExportJobRole', 'CIL fine-tuning export: the run and the inputs in, the bundle to staging out');
    storage.grantObjects(this.exportRole, 'read', P.inputs, P.runs);
    storage.grantObjects(this.exportRole, 'write', P.stagingModels, P.runs);
    storage.grantObjects(this.exportRole, 'delete', P.stagingModels);
    storage.grantList(this.exportRole, P.inputs, P.runs, P.stagingModels);

    this.publishRole = role('PublishJobRole', 'CIL fine-tuning publish: staging in, models/<id>/ and statistics/<id> out');
    // models/ to read: the staged bundle, and whether the id is already taken (HeadObject).
    storage.grantObjects(this.publishRole, 'read', PREFIX.models, P.stagingStatistics);
    storage.grantObjects(this.publishRole, 'write', PREFIX.models, PREFIX.statistics, P.runs);
    storage.grantObjects(this.publishRole, 'delete', P.stagingModels, P.stagingStatistics);
    storage.grantList(this.publishRole, PREFIX.models, P.stagingStatistics);

    // Checkpoints are tens of GB and replaced every few thousand steps: do not keep their old
    // versions for the bucket's default noncurrent period.
    storage.bucket.addLifecycleRule({ id: 'finetune-runs-noncurrent', prefix: P.runs, noncurrentVersionExpiration: Duration.days(1), abortIncompleteMultipartUploadAfter: Duration.days(1) });

    // ------------------------------------------------------------------ job definitions

    const image = ecs.ContainerImage.fromDockerImageAsset(this.image);
    const environment = {
      [FINETUNE_ENV.scratch]: SCRATCH,
      TMPDIR: SCRATCH,
      AWS_REGION: stack.region,
      AWS_DEFAULT_REGION: stack.region,
      PYTHONUNBUFFERED: '1',
    };
    const volumes = [batch.EcsVolume.host({ name: 'scratch', containerPath: SCRATCH })];
    const container = (cid: string, command: readonly string[], p: { vcpus: number; memoryMiB: number; gpus?: number }, jobRole: iam.IRole, shmGiB: number): batch.EcsEc2ContainerDefinition =>
      new batch.EcsEc2ContainerDefinition(this, cid, {
        image,
        command: [...command],
        cpu: p.vcpus,
        memory: Size.mebibytes(p.memoryMiB),
        gpu: p.gpus,
        environment,
        volumes,
        jobRole,
        executionRole: gpu.executionRole,
        logging: ecs.LogDriver.awsLogs({ streamPrefix: cid.replace(/Container$/, '').toLowerCase(), logGroup: gpu.logGroup }),
        // An init process forwards SIGTERM to the launcher, which forwards it to every rank.
        linuxParameters: new batch.LinuxParameters(this, `${cid}Linux`, { initProcessEnabled: true, sharedMemorySize: Size.gibibytes(shmGiB) }),
        // NCCL pins memory for its transfers.
        ulimits: [{ name: batch.UlimitName.MEMLOCK, softLimit: -1, hardLimit: -1 }],
      });

    this.trainJob = new batch.MultiNodeJobDefinition(this, 'TrainJob', {
      containers: [
        { startNode: 0, endNode: c.finetuneNodes - 1, container: container('TrainContainer', FINETUNE_COMMANDS.train, c.finetuneNode, this.trainRole, 64) },
      ],
      mainNode: 0,
      timeout: Duration.hours(c.finetuneTimeoutHours),
      retryAttempts: c.batchRetryAttempts,
      // Host terminations and SIGTERM (exit 143, checkpoint saved) are retried and resume; exit 3
      // (refused spec or inputs) is final.
      retryStrategies: workerRetryStrategies(),
      propagateTags: true,
    });
    // An open-ended node range, so that an execution may set the node count (NodeOverrides.NumNodes).
    (this.trainJob.node.defaultChild as batch.CfnJobDefinition).addPropertyOverride('NodeProperties.NodeRangeProperties.0.TargetNodes', '0:');

    this.exportJob = new batch.EcsJobDefinition(this, 'ExportJob', {
      container: container('ExportContainer', FINETUNE_COMMANDS.export, EXPORT_PROFILE, this.exportRole, 8),
      timeout: Duration.hours(4),
      retryAttempts: 2,
      retryStrategies: workerRetryStrategies(),
      propagateTags: true,
    });
    this.publishJob = new batch.EcsJobDefinition(this, 'PublishJob', {
      container: container('PublishContainer', FINETUNE_COMMANDS.publish, PUBLISH_PROFILE, this.publishRole, 1),
      timeout: Duration.hours(2),
      retryAttempts: c.batchRetryAttempts,
      retryStrategies: workerRetryStrategies(),
      propagateTags: true,
    });

    // ------------------------------------------------------------------ the state machine

    const failed = new sfn.Fail(this, S.failed, { errorPath: '$.error.Error', causePath: '$.error.Cause' });
    const succeeded = new sfn.Succeed(this, S.succeeded);
    const invalid = new sfn.Fail(this, S.invalidInput, {
      error: 'CIL.InvalidFinetuneInput',
      cause: `expected {"modelId": string, "family": "dynamicrafter"|"videocrafter"|"svd", "train": {"steps": n, …}, "nodes": 1–${maxNodes}, …} (docs/finetuning.md)`,
    });
    const notify = (sid: string, status: string, next: sfn.IChainable): sfn.IChainable =>
      notifyStep(this, sid, { topic: props.topic, subject: `CIL fine-tuning: ${status}`, message: { status, 'execution.$': '$$.Execution.Id', 'modelId.$': '$.input.modelId', 'run.$': '$.runId' }, next });
    const notifyFailed = notify(S.notifyFailed, 'FAILED', failed);
    const notifySucceeded = notify(S.notifySucceeded, 'SUCCEEDED', succeeded);

    // Every job gets only the spec's location; a multi-node job through its main node's container.
    const specOverrides = { ContainerOverrides: { Environment: [{ Name: FINETUNE_ENV.spec, 'Value.$': '$.spec' }] } };
    /** State S[job], a `submitJob.sync` of Batch job `cil-finetune-<job>`; its result goes to `$.<job>Result`. */
    const batchTask = (
      job: 'train' | 'export' | 'publish',
      comment: string,
      target: { readonly queue: batch.IJobQueue; readonly definition: batch.IJobDefinition; readonly overrides: Record<string, unknown> },
      timeout: Duration,
    ): sfn.CustomState => {
      const state = new sfn.CustomState(this, S[job], {
        stateJson: {
          Type: 'Task',
          Comment: comment,
          Resource: `arn:${Aws.PARTITION}:states:::batch:submitJob.sync`,
          Parameters: { JobName: `cil-finetune-${job}`, JobQueue: target.queue.jobQueueArn, JobDefinition: target.definition.jobDefinitionArn, ...target.overrides },
          ResultSelector: { 'batchJobId.$': '$.JobId', 'status.$': '$.Status' },
          ResultPath: `$.${job}Result`,
          TimeoutSeconds: timeout.toSeconds(),
        },
      });
      state.addRetry(BATCH_RETRY);
      state.addCatch(notifyFailed, { resultPath: '$.error' });
      return state;
    };
    const trainTimeout = Duration.hours(c.finetuneTimeoutHours * c.batchRetryAttempts + 12);
    const train = batchTask(
      'train',
      'Multi-node parallel job: TimeNoise fine-tuning on every GPU; checkpoints and the export under finetune/runs/<run>/',
      { queue: this.jobQueue, definition: this.trainJob, overrides: { NodeOverrides: { 'NumNodes.$': '$.nodes', NodePropertyOverrides: [{ TargetNodes: '0:', ...specOverrides }] } } },
      trainTimeout,
    );
    const exportBundle = batchTask(
      'export',
      'tools/export: the fine-tuned weights → a CIL bundle in models/_staging/<run>/',
      { queue: this.jobQueue, definition: this.exportJob, overrides: specOverrides },
      Duration.hours(6),
    );
    const publish = batchTask(
      'publish',
      'statistics/<id>.safetensors, then models/<id>/ (manifest.json last); refuses an id already published',
      { queue: gpu.jobQueue, definition: this.publishJob, overrides: specOverrides },
      Duration.hours(4),
    );
    const statistics = new sfn.CustomState(this, S.statistics, {
      stateJson: {
        Type: 'Task',
        Comment: 'The statistics workflow on the staged bundle (nested execution); writes statistics/_staging/<run>.safetensors',
        Resource: `arn:${Aws.PARTITION}:states:::states:startExecution.sync:2`,
        Parameters: {
          StateMachineArn: props.statistics.stateMachineArn,
          Input: {
            'model.$': `States.Format('_staging/{}', $.runId)`,
            'videosPrefix.$': '$.input.statistics.videosPrefix',
            'shards.$': '$.input.statistics.shards',
            'output.$': `States.Format('_staging/{}', $.runId)`,
            'AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$': '$$.Execution.Id',
          },
        },
        ResultSelector: { 'executionArn.$': '$.ExecutionArn', 'status.$': '$.Status' },
        ResultPath: '$.statisticsResult',
        TimeoutSeconds: Duration.hours(c.statisticsTimeoutHours + 4).toSeconds(),
      },
    });
    statistics.addRetry(SFN_RETRY);
    statistics.addCatch(notifyFailed, { resultPath: '$.error' });
    const hasStatistics = new sfn.Choice(this, S.hasStatistics).when(sfn.Condition.isPresent('$.input.statistics'), statistics).otherwise(publish);
    statistics.next(publish);
    publish.next(notifySucceeded);
    exportBundle.next(hasStatistics);
    train.next(exportBundle);

    // The run's spec: the input, with the bucket and the run id (the execution name) added.
    const buildSpec = new sfn.Pass(this, S.buildSpec, {
      comment: 'The spec every job reads from CIL_FINETUNE_SPEC (tools/finetune/spec.py parse_spec)',
      parameters: {
        'input.$': '$.input',
        'runId.$': '$.ids.runId',
        'nodes.$': '$.input.nodes',
        'spec.$': 'States.JsonToString(States.JsonMerge($.input, $.ids, false))',
      },
    });
    buildSpec.next(train);
    const prepare = new sfn.Pass(this, S.prepare, {
      comment: 'Run id = execution name: checkpoints under finetune/runs/<run>/, so a redriven execution resumes',
      parameters: { 'input.$': '$', ids: { bucket: storage.bucket.bucketName, 'runId.$': '$$.Execution.Name' } },
    });
    prepare.next(buildSpec);

    const present = ['$.modelId', '$.family', '$.train', '$.train.steps', '$.nodes'].map((p) => sfn.Condition.isPresent(p));
    const wellFormed = sfn.Condition.and(
      sfn.Condition.isString('$.modelId'),
      sfn.Condition.or(...['dynamicrafter', 'videocrafter', 'svd'].map((f) => sfn.Condition.stringEquals('$.family', f))),
      sfn.Condition.isNumeric('$.train.steps'),
      sfn.Condition.numberGreaterThanEquals('$.train.steps', 1),
      sfn.Condition.isNumeric('$.nodes'),
      sfn.Condition.numberGreaterThanEquals('$.nodes', 1),
      sfn.Condition.numberLessThanEquals('$.nodes', maxNodes),
    );
    // Two choices: a rule on a missing field is a runtime error, so presence is checked first.
    const checkValues = new sfn.Choice(this, `${S.checkInput}Values`).when(wellFormed, prepare).otherwise(invalid);
    const checkInput = new sfn.Choice(this, S.checkInput).when(sfn.Condition.and(...present), checkValues).otherwise(invalid);
    // Defaults for what the input leaves out, merged under it (no string literals in intrinsics).
    const defaults = new sfn.Pass(this, S.applyDefaults, {
      comment: `Defaults for what the input leaves out: nodes = ${c.finetuneNodes}`,
      parameters: { 'input.$': '$', defaults: { nodes: c.finetuneNodes } },
    });
    const merge = new sfn.Pass(this, S.mergeDefaults, {
      parameters: { 'merged.$': 'States.JsonMerge($.defaults, $.input, false)' },
      outputPath: '$.merged',
    });
    defaults.next(merge);
    merge.next(checkInput);

    this.stateMachine = workflowStateMachine(this, props, {
      workflow: 'finetune',
      comment: 'CIL TimeNoise fine-tuning: fine-tune → export → statistics → publish',
      start: defaults,
      timeout: trainTimeout.plus(Duration.hours(6 + c.statisticsTimeoutHours + 4 + 4 + 1)),
      batchJobs: { queueArns: [this.jobQueue.jobQueueArn, gpu.jobQueue.jobQueueArn], jobDefinitionArns: [this.trainJob.jobDefinitionArn, this.exportJob.jobDefinitionArn, this.publishJob.jobDefinitionArn] },
    });
    const sm = this.stateMachine;
    for (const st of childExecutionPolicy(this, props.statistics.stateMachineArn)) sm.addToRolePolicy(st);
    props.topicKey?.grant(sm, 'kms:GenerateDataKey*', 'kms:Decrypt');

    this.failedAlarm = new cloudwatch.Alarm(this, 'FailedAlarm', {
      alarmDescription: 'A CIL fine-tuning execution failed, timed out or was aborted',
      metric: new cloudwatch.MathExpression({
        expression: 'f + t + a',
        usingMetrics: { f: sm.metricFailed(), t: sm.metricTimedOut(), a: sm.metricAborted() },
        period: Duration.minutes(5),
      }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (props.alarmTopic) this.failedAlarm.addAlarmAction(new cwActions.SnsAction(props.alarmTopic));
  }
}
