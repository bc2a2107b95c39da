/**
 * AWS Batch for the GPU work: a VPC, managed EC2 compute environments of GPU instances (Spot
 * first, on-demand after it when configured), one job queue, and the job definitions of the
 * worker image (gpu-worker/Dockerfile, built by CDK as a Docker image asset at deploy time).
 */
import { Duration, IgnoreMode, Size, Stack } from 'aws-cdk-lib';
import * as batch from 'aws-cdk-lib/aws-batch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import type * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { PREFIX } from '#shared/schemas';
import type { CilConfig, ResourceProfile } from './config.ts';
import {
  STATISTICS_DATASETS_PREFIX,
  STATISTICS_PARTIALS_PREFIX,
  WORKER_COMMANDS,
  WORKER_ENV,
  WORKER_EXIT,
  WORKER_PATHS,
  WORKER_UID,
} from './names.ts';
import { REPO_ROOT, WORKER_DOCKERFILE, dockerignorePatterns } from './paths.ts';
import type { DataStorage } from './storage.ts';

/**
 * A job that fits no instance type would wait forever: every job queue cancels it after 10
 * minutes RUNNABLE (the workflow then records the failure). Capacity shortages are waited out and
 * alarmed on instead.
 */
export const CANCEL_UNFITTABLE_JOBS: batch.JobStateTimeLimitAction[] = [
  {
    action: batch.JobStateTimeLimitActionsAction.CANCEL,
    maxTime: Duration.minutes(10),
    reason: batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
    state: batch.JobStateTimeLimitActionsState.RUNNABLE,
  },
];

export interface GpuBatchProps {
  readonly config: CilConfig;
  readonly storage: DataStorage;
  readonly eventBus: events.IEventBus;
  /** Bring your own VPC (private subnets with egress); default: a new two-AZ VPC. */
  readonly vpc?: ec2.IVpc;
}

/**
 * Batch retry rules (evaluated in order, at most five). A reclaimed Spot instance or terminated
 * host, and the worker's "SIGTERM, checkpoint written" exit, are retried (the next attempt
 * resumes from the checkpoint); an image pull failure is transient; the worker's "input
 * refused" exit is final, since a retry would fail the same way. Other failures (exit 1: S3,
 * network, runtime) match no rule and take Batch's default, a retry while attempts remain.
 */
export function workerRetryStrategies(): batch.RetryStrategy[] {
  return [
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.custom({ onExitCode: String(WORKER_EXIT.interrupted) })),
    batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom({ onExitCode: String(WORKER_EXIT.refused) })),
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.CANNOT_PULL_CONTAINER),
  ];
}

/** User data of the GPU instances (Batch requires MIME multipart in launch templates). */
export function instanceUserData(): ec2.MultipartUserData {
  const script = ec2.UserData.forLinux();
  script.addCommands(
    'set -euo pipefail',
    // Spot interruption notice → ECS drains the instance → the worker gets SIGTERM and checkpoints.
    "cat >> /etc/ecs/ecs.config <<'EOF'",
    'ECS_ENABLE_SPOT_INSTANCE_DRAINING=true',
    // The CUDA image is large: reuse the cached copy on an instance that already pulled it.
    'ECS_IMAGE_PULL_BEHAVIOR=prefer-cached',
    // Time between SIGTERM and SIGKILL: room for the worker to write its checkpoint.
    'ECS_CONTAINER_STOP_TIMEOUT=110s',
    'EOF',
    // Model bundles cached across jobs on this instance, writable by the worker's user.
    `mkdir -p ${WORKER_PATHS.hostModelCache}`,
    `chown ${WORKER_UID}:${WORKER_UID} ${WORKER_PATHS.hostModelCache}`,
  );
  const ud = new ec2.MultipartUserData();
  ud.addUserDataPart(script, ec2.MultipartBody.SHELL_SCRIPT, true);
  return ud;
}

export class GpuBatch extends Construct {
  readonly vpc: ec2.IVpc;
  readonly securityGroup: ec2.SecurityGroup;
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly instanceRole: iam.Role;
  readonly spotEnvironment?: batch.ManagedEc2EcsComputeEnvironment;
  readonly onDemandEnvironment?: batch.ManagedEc2EcsComputeEnvironment;
  readonly jobQueue: batch.JobQueue;
  readonly workerImage: ecrAssets.DockerImageAsset;
  readonly logGroup: logs.LogGroup;
  readonly executionRole: iam.Role;
  readonly generateRole: iam.Role;
  readonly statisticsShardRole: iam.Role;
  readonly statisticsMergeRole: iam.Role;
  readonly generateJob: batch.EcsJobDefinition;
  readonly statisticsShardJob: batch.EcsJobDefinition;
  readonly statisticsMergeJob: batch.EcsJobDefinition;

  constructor(scope: Construct, id: string, props: GpuBatchProps) {
    super(scope, id);
    const c = props.config;
    const { storage, eventBus } = props;

    this.vpc = props.vpc ?? this.createVpc(c);
    this.securityGroup = new ec2.SecurityGroup(this, 'InstanceSecurityGroup', {
      vpc: this.vpc,
      description: 'CIL GPU workers: no inbound; outbound to S3, ECR, EventBridge and CloudWatch',
      allowAllOutbound: true,
    });

    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      userData: instanceUserData(),
      requireImdsv2: true,
      // Hop limit 1: containers (bridge network, one hop further) cannot reach the instance
      // metadata service, so a job only ever has its own job role, not the instance role.
      httpPutResponseHopLimit: 1,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(c.rootVolumeGiB, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3, deleteOnTermination: true }),
        },
      ],
    });

    this.instanceRole = new iam.Role(this, 'InstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'ECS agent on the CIL GPU instances',
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonEC2ContainerServiceforEC2Role')],
    });

    const environmentProps = {
      vpc: this.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [this.securityGroup],
      instanceTypes: c.instanceTypes.map((t) => new ec2.InstanceType(t)),
      useOptimalInstanceClasses: false,
      images: [{ imageType: batch.EcsMachineImageType.ECS_AL2023_NVIDIA }],
      launchTemplate: this.launchTemplate,
      instanceRole: this.instanceRole,
      minvCpus: 0,
      updateToLatestImageVersion: true,
    };
    const order: batch.OrderedComputeEnvironment[] = [];
    if (c.spot) {
      this.spotEnvironment = new batch.ManagedEc2EcsComputeEnvironment(this, 'SpotEnvironment', {
        ...environmentProps,
        spot: true,
        // Fewest interruptions at a low price: the right trade for long GPU jobs.
        allocationStrategy: batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED,
        maxvCpus: c.maxVcpus,
      });
      order.push({ computeEnvironment: this.spotEnvironment, order: 1 });
    }
    if (!c.spot || c.onDemandFallback) {
      this.onDemandEnvironment = new batch.ManagedEc2EcsComputeEnvironment(this, 'OnDemandEnvironment', {
        ...environmentProps,
        spot: false,
        allocationStrategy: batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
        maxvCpus: c.spot ? c.onDemandMaxVcpus : c.maxVcpus,
      });
      order.push({ computeEnvironment: this.onDemandEnvironment, order: order.length + 1 });
    }

    this.jobQueue = new batch.JobQueue(this, 'JobQueue', {
      computeEnvironments: order,
      priority: 1,
      jobStateTimeLimitActions: CANCEL_UNFITTABLE_JOBS,
    });

    this.workerImage = new ecrAssets.DockerImageAsset(this, 'WorkerImage', {
      directory: REPO_ROOT,
      file: WORKER_DOCKERFILE,
      exclude: dockerignorePatterns(WORKER_DOCKERFILE),
      ignoreMode: IgnoreMode.DOCKER,
      platform: ecrAssets.Platform.LINUX_AMD64,
      displayName: 'cil-gpu-worker',
    });

    this.logGroup = new logs.LogGroup(this, 'WorkerLogs', { retention: c.logRetentionDays });

    this.executionRole = new iam.Role(this, 'ExecutionRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Pulls the CIL worker image and writes its logs',
    });
    this.logGroup.grantWrite(this.executionRole);

    this.generateRole = this.jobRole('GenerateJobRole', 'CIL generation job: models and statistics in, its job folder out', eventBus);
    storage.grantObjects(this.generateRole, 'read', PREFIX.models, PREFIX.statistics, PREFIX.jobs);
    storage.grantObjects(this.generateRole, 'write', PREFIX.jobs);
    // The worker deletes its checkpoint once the job has finished, and may tag checkpoint
    // objects (cil-kind=checkpoint) so that a shorter lifecycle rule removes stragglers.
    storage.grantObjects(this.generateRole, 'delete', PREFIX.jobs);
    storage.grantObjects(this.generateRole, 'tag', PREFIX.jobs);
    storage.grantList(this.generateRole, PREFIX.models, PREFIX.jobs);

    this.statisticsShardRole = this.jobRole('StatisticsShardRole', 'CIL statistics shard: dataset videos and model in, partials out', eventBus);
    storage.grantObjects(this.statisticsShardRole, 'read', PREFIX.models, STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX);
    storage.grantObjects(this.statisticsShardRole, 'write', STATISTICS_PARTIALS_PREFIX);
    storage.grantList(this.statisticsShardRole, PREFIX.models, STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX);

    this.statisticsMergeRole = this.jobRole('StatisticsMergeRole', 'CIL statistics merge: partials in, statistics file out', eventBus);
    storage.grantObjects(this.statisticsMergeRole, 'read', STATISTICS_PARTIALS_PREFIX);
    storage.grantObjects(this.statisticsMergeRole, 'write', PREFIX.statistics);
    storage.grantList(this.statisticsMergeRole, STATISTICS_PARTIALS_PREFIX);

    const image = ecs.ContainerImage.fromDockerImageAsset(this.workerImage);
    const environment = {
      [WORKER_ENV.progressBus]: eventBus.eventBusName,
      [WORKER_ENV.modelCache]: WORKER_PATHS.modelCache,
      // Temporary files (decoded frames, downloads in flight) on the job's scratch volume.
      TMPDIR: WORKER_PATHS.scratch,
      // Containers cannot reach instance metadata (hop limit 1), so the SDK is told its Region.
      AWS_REGION: Stack.of(this).region,
      AWS_DEFAULT_REGION: Stack.of(this).region,
    };
    const volumes = [
      batch.EcsVolume.host({ name: 'model-cache', hostPath: WORKER_PATHS.hostModelCache, containerPath: WORKER_PATHS.modelCache }),
      // No host path: a Docker volume that lives as long as the job (local scratch; never an S3 mount).
      batch.EcsVolume.host({ name: 'scratch', containerPath: WORKER_PATHS.scratch }),
    ];
    const container = (cid: string, command: readonly string[], profile: ResourceProfile, gpu: number, jobRole: iam.IRole): batch.EcsEc2ContainerDefinition =>
      new batch.EcsEc2ContainerDefinition(this, cid, {
        image,
        command: [...command],
        cpu: profile.vcpus,
        memory: Size.mebibytes(profile.memoryMiB),
        gpu: gpu > 0 ? gpu : undefined,
        environment,
        volumes,
        jobRole,
        executionRole: this.executionRole,
        logging: ecs.LogDriver.awsLogs({ streamPrefix: cid.replace(/Container$/, '').toLowerCase(), logGroup: this.logGroup }),
        // An init process forwards SIGTERM to the worker and reaps ffmpeg children.
        linuxParameters: new batch.LinuxParameters(this, `${cid}Linux`, { initProcessEnabled: true }),
      });

    this.generateJob = new batch.EcsJobDefinition(this, 'GenerateJob', {
      container: container('GenerateContainer', WORKER_COMMANDS.generate, c.modelProfiles.dynamicrafter, 1, this.generateRole),
      timeout: Duration.minutes(c.generateAttemptMinutes),
      retryAttempts: c.batchRetryAttempts,
      retryStrategies: workerRetryStrategies(),
      propagateTags: true,
    });
    this.statisticsShardJob = new batch.EcsJobDefinition(this, 'StatisticsShardJob', {
      container: container('StatisticsShardContainer', [...WORKER_COMMANDS.statisticsShard, '--cache-dir', WORKER_PATHS.modelCache], c.statisticsProfile, 1, this.statisticsShardRole),
      timeout: Duration.hours(c.statisticsTimeoutHours),
      retryAttempts: c.batchRetryAttempts,
      retryStrategies: workerRetryStrategies(),
      propagateTags: true,
    });
    this.statisticsMergeJob = new batch.EcsJobDefinition(this, 'StatisticsMergeJob', {
      // Merging sums float64 accumulators: CPU only, little memory.
      container: container('StatisticsMergeContainer', WORKER_COMMANDS.statisticsMerge, { vcpus: 2, memoryMiB: 4096 }, 0, this.statisticsMergeRole),
      timeout: Duration.hours(2),
      retryAttempts: c.batchRetryAttempts,
      retryStrategies: workerRetryStrategies(),
      propagateTags: true,
    });
  }

  private createVpc(c: CilConfig): ec2.Vpc {
    const flowLogs = new logs.LogGroup(this, 'VpcFlowLogs', { retention: c.logRetentionDays });
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: c.natGateways,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'workers', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
      ],
      // Model bundles are gigabytes: reach S3 through a free gateway endpoint, not the NAT gateway.
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      flowLogs: {
        rejected: { destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs), trafficType: ec2.FlowLogTrafficType.REJECT },
      },
    });
    return vpc;
  }

  private jobRole(id: string, description: string, eventBus: events.IEventBus): iam.Role {
    const role = new iam.Role(this, id, { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'), description });
    // Per-step progress events reach users through the project's event bus.
    eventBus.grantPutEventsTo(role);
    return role;
  }
}
