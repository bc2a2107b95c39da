/**
 * AWS Batch for the GPU work: a VPC (NAT gateways or VPC endpoints), per GPU fleet a Spot and an
 * on-demand managed EC2 compute environment of one instance size, job queues per tier (uploads
 * above manifest production above statistics; QUEUE_PRIORITIES), and the job definitions of the
 * worker image (gpu-worker/Dockerfile, built by CDK as a Docker image asset at deploy time).
 * docs/infra.md shows the layout.
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
import { NO_PLACEMENT, PREFIX } from '#shared/schemas';
import type { CilConfig, ResourceProfile } from './config.ts';
import { gpuMemoryGiB } from './config.ts';
import { instanceUserData } from './instanceSetup.ts';
import type { QueueTier } from './names.ts';
import {
  QUEUE_PRIORITIES,
  STATISTICS_DATASETS_PREFIX,
  STATISTICS_PARTIALS_PREFIX,
  WORKER_COMMANDS,
  WORKER_ENV,
  WORKER_EXIT,
  WORKER_PATHS,
  METRICS_NAMESPACE,
  WORKER_METRICS,
} from './names.ts';
import { REPO_ROOT, WORKER_DOCKERFILE, dockerignorePatterns } from './paths.ts';
import type { DataStorage } from './storage.ts';

/**
 * A job that fits no instance type would wait forever: every job queue cancels it after 10
 * minutes RUNNABLE (the workflow then records the failure). Capacity shortages on on-demand
 * queues are waited out and alarmed on; Spot queues cancel them too (spotCapacityActions).
 */
export const CANCEL_UNFITTABLE_JOBS: batch.JobStateTimeLimitAction[] = [
  {
    action: batch.JobStateTimeLimitActionsAction.CANCEL,
    maxTime: Duration.minutes(10),
    reason: batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
    state: batch.JobStateTimeLimitActionsState.RUNNABLE,
  },
];

/**
 * A Spot queue's time-limit actions: a job left RUNNABLE because no Spot capacity can be had is
 * cancelled after `minutes` (Batch then sets its status reason to "Canceled by JobStateTimeLimit
 * action due to reason: CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"), and the generation workflow
 * resubmits it to the fleet's on-demand queue. Batch alone moves to a later compute environment
 * only when the earlier one is at its vCPU maximum, not when Spot has no capacity.
 */
export function spotCapacityActions(minutes: number): batch.JobStateTimeLimitAction[] {
  return [
    ...CANCEL_UNFITTABLE_JOBS,
    {
      action: batch.JobStateTimeLimitActionsAction.CANCEL,
      maxTime: Duration.minutes(minutes),
      reason: batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY,
      state: batch.JobStateTimeLimitActionsState.RUNNABLE,
    },
  ];
}

/** What the generation workflow matches in a cancelled job's status reason to resubmit it on-demand. */
export const SPOT_CAPACITY_CANCEL_PATTERN = `*JobStateTimeLimit*${batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY}*`;

export interface GpuBatchProps {
  /** Deployment parameters (fleets, placement, networking, volumes). */
  readonly config: CilConfig;
  /** The data bucket the job roles are granted on. */
  readonly storage: DataStorage;
  /** The project's event bus (progress events). */
  readonly eventBus: events.IEventBus;
  /** Bring your own VPC (private subnets with egress, or with the endpoints of docs/infra.md); default: a new two-AZ VPC. */
  readonly vpc?: ec2.IVpc;
}

/** One GPU fleet: its compute environments and its job queues by tier. */
export interface GpuFleetResources {
  /** Fleet name (a key of the `gpuFleets` parameter). */
  readonly name: string;
  /** GPU memory (GiB) of one GPU of the fleet's smallest instance type. */
  readonly gpuMemoryGiB: number;
  /** Instance types of the fleet (one size). */
  readonly instanceTypes: readonly string[];
  readonly spotEnvironment?: batch.ManagedEc2EcsComputeEnvironment;
  readonly onDemandEnvironment?: batch.ManagedEc2EcsComputeEnvironment;
  /** interactive and production always; statistics on the statistics fleet; onDemand with spot and onDemandFallback on. */
  readonly queues: Readonly<Partial<Record<QueueTier, batch.JobQueue>>>;
}

/** Interface endpoints the GPU instances use with `networking: endpoints` (S3 is a gateway endpoint in both modes). */
export const WORKER_INTERFACE_ENDPOINTS = Object.freeze({
  EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
  EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
  Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
  Events: ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
  Sts: ec2.InterfaceVpcEndpointAwsService.STS,
  // The ECS agent registers the instance and runs the jobs' containers through these.
  Ecs: ec2.InterfaceVpcEndpointAwsService.ECS,
  EcsAgent: ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
  EcsTelemetry: ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
});

/**
 * Batch retry rules (evaluated in order, at most five). A reclaimed Spot instance or terminated
 * host, and the worker's "SIGTERM, checkpoint written" exit, are retried (the next attempt
 * resumes from the checkpoint); an image pull failure is transient; the worker's "input
 * refused" and "GPU unavailable" exits are final, since a retry would fail the same way. Other failures (exit 1: S3,
 * network, runtime) match no rule and take Batch's default, a retry while attempts remain.
 */
export function workerRetryStrategies(): batch.RetryStrategy[] {
  return [
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.custom({ onExitCode: String(WORKER_EXIT.interrupted) })),
    batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom({ onExitCode: String(WORKER_EXIT.refused) })),
    // GpuUnavailable: the image or host cannot give CUDA; another attempt would burn an hour on the CPU.
    batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom({ onExitCode: String(WORKER_EXIT.gpuUnavailable) })),
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.CANNOT_PULL_CONTAINER),
  ];
}

export class GpuBatch extends Construct {
  readonly vpc: ec2.IVpc;
  /** Where the GPU instances run: private subnets with a NAT route, or isolated ones with `networking: endpoints`. */
  readonly workerSubnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.SecurityGroup;
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly instanceRole: iam.Role;
  /** Each GPU fleet's compute environments and queues, by fleet name. */
  readonly fleets: Readonly<Record<string, GpuFleetResources>>;
  /**
   * The queue of the jobs that are not placed by model: the statistics fleet's statistics queue
   * (statistics merge, fine-tuning's publish step).
   */
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
    this.workerSubnets = { subnetType: c.networking === 'endpoints' ? ec2.SubnetType.PRIVATE_ISOLATED : ec2.SubnetType.PRIVATE_WITH_EGRESS };
    this.securityGroup = new ec2.SecurityGroup(this, 'InstanceSecurityGroup', {
      vpc: this.vpc,
      description: 'CIL GPU workers: no inbound; outbound to S3, ECR, EventBridge and CloudWatch',
      allowAllOutbound: true,
    });
    if (c.networking === 'endpoints') this.addEndpoints();

    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      userData: instanceUserData(),
      requireImdsv2: true,
      // Hop limit 1: containers (bridge network, one hop further) cannot reach the instance
      // metadata service, so a job only ever has its own job role, not the instance role.
      httpPutResponseHopLimit: 1,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(c.rootVolumeGiB, {
            encrypted: true,
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            deleteOnTermination: true,
            // Above gp3's 125 MiB/s baseline: the image and, without an instance store, the bundles load from here.
            throughput: c.rootVolumeThroughputMiBps,
            iops: c.rootVolumeIops,
          }),
        },
      ],
    });

    this.instanceRole = new iam.Role(this, 'InstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'ECS agent on the CIL GPU instances',
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonEC2ContainerServiceforEC2Role')],
    });

    const fleets: Record<string, GpuFleetResources> = {};
    for (const [name, fleet] of Object.entries(c.gpuFleets)) fleets[name] = this.createFleet(c, name, fleet.instanceTypes, fleet.maxVcpus, fleet.onDemandMaxVcpus);
    this.fleets = fleets;
    const statisticsQueue = fleets[c.statisticsFleet]?.queues.statistics;
    if (!statisticsQueue) throw new Error(`statistics fleet ${c.statisticsFleet} has no statistics queue`);
    this.jobQueue = statisticsQueue;

    this.workerImage = new ecrAssets.DockerImageAsset(this, 'WorkerImage', {
      directory: REPO_ROOT,
      file: WORKER_DOCKERFILE,
      exclude: dockerignorePatterns(WORKER_DOCKERFILE),
      ignoreMode: IgnoreMode.DOCKER,
      platform: ecrAssets.Platform.LINUX_AMD64,
      displayName: 'cil-gpu-worker',
    });

    this.logGroup = new logs.LogGroup(this, 'WorkerLogs', { retention: c.logRetentionDays });
    // The worker prints its metrics as EMF lines (gpu-worker/src/metrics.ts), but the awslogs driver
    // does not ask CloudWatch to extract EMF: metric filters turn the two the alarms need into metrics.
    for (const name of [WORKER_METRICS.executionProviderFallback, WORKER_METRICS.gpuUnavailable]) {
      this.logGroup.addMetricFilter(`${name}Filter`, {
        filterPattern: logs.FilterPattern.numberValue(`$.${name}`, '>=', 1),
        metricNamespace: METRICS_NAMESPACE,
        metricName: name,
        metricValue: `$.${name}`,
      });
    }

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
      [WORKER_ENV.cacheDir]: WORKER_PATHS.cacheRoot,
      [WORKER_ENV.modelCacheMinFreeGiB]: String(c.modelCacheMinFreeGiB),
      // Temporary files (decoded frames, downloads in flight) on the job's scratch volume.
      TMPDIR: WORKER_PATHS.scratch,
      // Containers cannot reach instance metadata (hop limit 1), so the SDK is told its Region.
      AWS_REGION: Stack.of(this).region,
      AWS_DEFAULT_REGION: Stack.of(this).region,
    };
    const volumes = [
      // The cache volume (NVMe instance store where there is one); models/ inside it is CIL_MODEL_CACHE.
      batch.EcsVolume.host({ name: 'cache', hostPath: WORKER_PATHS.hostCacheRoot, containerPath: WORKER_PATHS.cacheRoot }),
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
        // A GPU job that cannot get CUDA exits at once (WORKER_EXIT.gpuUnavailable) instead of
        // running for an hour on the CPU; `auto` (CUDA, else CPU) is for local use only.
        environment: gpu > 0 ? { ...environment, [WORKER_ENV.executionProvider]: 'cuda' } : environment,
        volumes,
        jobRole,
        executionRole: this.executionRole,
        logging: ecs.LogDriver.awsLogs({ streamPrefix: cid.replace(/Container$/, '').toLowerCase(), logGroup: this.logGroup }),
        // An init process forwards SIGTERM to the worker and reaps ffmpeg children.
        linuxParameters: new batch.LinuxParameters(this, `${cid}Linux`, { initProcessEnabled: true }),
      });

    this.generateJob = new batch.EcsJobDefinition(this, 'GenerateJob', {
      container: container('GenerateContainer', WORKER_COMMANDS.generate, c.modelProfiles.dynamicrafter, 1, this.generateRole),
      // A job submitted by hand has no placement; the workflow always passes one.
      parameters: { placement: NO_PLACEMENT },
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

  private createFleet(c: CilConfig, name: string, instanceTypes: readonly string[], maxVcpus: number, onDemandMaxVcpus: number): GpuFleetResources {
    const id = name.charAt(0).toUpperCase() + name.slice(1);
    const environmentProps = {
      vpc: this.vpc,
      vpcSubnets: this.workerSubnets,
      securityGroups: [this.securityGroup],
      instanceTypes: instanceTypes.map((t) => new ec2.InstanceType(t)),
      useOptimalInstanceClasses: false,
      images: [{ imageType: batch.EcsMachineImageType.ECS_AL2023_NVIDIA }],
      launchTemplate: this.launchTemplate,
      instanceRole: this.instanceRole,
      minvCpus: 0,
      updateToLatestImageVersion: true,
    };
    let spotEnvironment: batch.ManagedEc2EcsComputeEnvironment | undefined;
    let onDemandEnvironment: batch.ManagedEc2EcsComputeEnvironment | undefined;
    if (c.spot) {
      spotEnvironment = new batch.ManagedEc2EcsComputeEnvironment(this, `${id}SpotEnvironment`, {
        ...environmentProps,
        spot: true,
        // Fewest interruptions at a low price: the right trade for long GPU jobs.
        allocationStrategy: batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED,
        maxvCpus: maxVcpus,
      });
    }
    if (!c.spot || c.onDemandFallback) {
      onDemandEnvironment = new batch.ManagedEc2EcsComputeEnvironment(this, `${id}OnDemandEnvironment`, {
        ...environmentProps,
        spot: false,
        allocationStrategy: batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
        maxvCpus: c.spot ? onDemandMaxVcpus : maxVcpus,
      });
    }
    // The tier queues share the fleet's first environment (Spot when on): Batch serves the
    // higher-priority queue first. Spot queues hold only the Spot environment, so that "no Spot
    // capacity" is what their time-limit action sees (it needs every environment of the queue short).
    const tierEnvironment = (spotEnvironment ?? onDemandEnvironment)!;
    const tierActions = spotEnvironment && onDemandEnvironment ? spotCapacityActions(c.spotCapacityWaitMinutes) : CANCEL_UNFITTABLE_JOBS;
    const tiers: QueueTier[] = ['interactive', 'production'];
    if (name === c.statisticsFleet) tiers.push('statistics');
    const queues: Partial<Record<QueueTier, batch.JobQueue>> = {};
    for (const tier of tiers) {
      queues[tier] = new batch.JobQueue(this, `${id}${tier.charAt(0).toUpperCase()}${tier.slice(1)}Queue`, {
        computeEnvironments: [{ computeEnvironment: tierEnvironment, order: 1 }],
        priority: QUEUE_PRIORITIES[tier],
        jobStateTimeLimitActions: tierActions,
      });
    }
    if (spotEnvironment && onDemandEnvironment) {
      queues.onDemand = new batch.JobQueue(this, `${id}OnDemandQueue`, {
        computeEnvironments: [{ computeEnvironment: onDemandEnvironment, order: 1 }],
        priority: QUEUE_PRIORITIES.onDemand,
        jobStateTimeLimitActions: CANCEL_UNFITTABLE_JOBS,
      });
    }
    const memory = Math.min(...instanceTypes.map((t) => gpuMemoryGiB(t)));
    return { name, gpuMemoryGiB: memory, instanceTypes, spotEnvironment, onDemandEnvironment, queues };
  }

  private createVpc(c: CilConfig): ec2.Vpc {
    const flowLogs = new logs.LogGroup(this, 'VpcFlowLogs', { retention: c.logRetentionDays });
    const endpoints = c.networking === 'endpoints';
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: endpoints ? 0 : c.natGateways,
      subnetConfiguration: endpoints
        ? [{ name: 'workers', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 20 }]
        : [
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

  /** `networking: endpoints`: interface endpoints in the worker subnets, reachable from the workers only. */
  private addEndpoints(): void {
    const sg = new ec2.SecurityGroup(this, 'EndpointSecurityGroup', {
      vpc: this.vpc,
      description: 'CIL VPC interface endpoints: HTTPS from the GPU workers only',
      allowAllOutbound: false,
    });
    sg.addIngressRule(this.securityGroup, ec2.Port.tcp(443), 'HTTPS from the CIL GPU workers');
    for (const [id, service] of Object.entries(WORKER_INTERFACE_ENDPOINTS)) {
      this.vpc.addInterfaceEndpoint(`${id}Endpoint`, { service, subnets: this.workerSubnets, securityGroups: [sg], privateDnsEnabled: true, open: false });
    }
  }

  private jobRole(id: string, description: string, eventBus: events.IEventBus): iam.Role {
    const role = new iam.Role(this, id, { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'), description });
    // Per-step progress events reach users through the project's event bus.
    eventBus.grantPutEventsTo(role);
    return role;
  }
}
