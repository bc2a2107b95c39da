/**
 * The synthesized stack, resource by resource: what matters for safety, cost and the contracts
 * with the worker and the functions (no whole-template snapshot).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFIX } from '#shared/schemas';
import { LAMBDA_ENV, METRIC_NAMES, METRICS_SERVICE, OUTPUTS, STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX, WORKER_ENV, WORKER_EXIT, WORKER_METRICS, WORKER_PATHS } from '../lib/names.ts';
import type { GpuBatch } from '../lib/compute.ts';
import { instanceStoreCommands, spotNoticeCommands } from '../lib/instanceSetup.ts';
import { SPOT_NOTICE_FILE_NAME } from '../../gpu-worker/src/spot.ts';
import { DEFAULT_CONFIG, GPU_MEMORY_RESERVE_GIB, gpuMemoryGiB } from '../lib/config.ts';
import { EC2_COMPUTE_SERVICE } from '../lib/budget.ts';
import type { Statement, Synthesized } from './helpers.ts';
import { allStatements, logicalIdOf, objectPrefix, refOf, s3Grants, statementsOfRole, synth } from './helpers.ts';

let s: Synthesized;
let bucketId: string;

beforeAll(() => {
  s = synth({ notificationEmail: 'team@example.com' });
  bucketId = logicalIdOf(s, s.stack.storage.bucket);
});
afterAll(() => s.cleanup());

function resourcesOf(type: string): [string, Record<string, unknown>][] {
  return Object.entries(s.json.Resources)
    .filter(([, r]) => r.Type === type)
    .map(([id, r]) => [id, r.Properties ?? {}]);
}

function grantsOf(role: { node: { defaultChild?: unknown } }): Record<string, string[]> {
  const m = s3Grants(s, logicalIdOf(s, role), bucketId);
  return Object.fromEntries([...m.entries()].map(([a, p]) => [a, [...p].sort()]));
}

describe('storage', () => {
  it('has one versioned, encrypted, private data bucket that sends events to EventBridge', () => {
    s.template.hasResourceProperties('AWS::S3::Bucket', {
      VersioningConfiguration: { Status: 'Enabled' },
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      NotificationConfiguration: { EventBridgeConfiguration: { EventBridgeEnabled: true } },
      LoggingConfiguration: { DestinationBucketName: Match.anyValue(), LogFilePrefix: 'data/' },
    });
    // No notification custom resource (and so no extra Lambda) is needed for that.
    expect(resourcesOf('Custom::S3BucketNotifications')).toHaveLength(0);
  });

  it('refuses plain-HTTP access to both buckets', () => {
    const policies = resourcesOf('AWS::S3::BucketPolicy');
    expect(policies).toHaveLength(2);
    for (const [, p] of policies) {
      const st = (p.PolicyDocument as { Statement: Statement[] }).Statement;
      expect(st.some((x) => x.Effect === 'Deny' && JSON.stringify(x.Condition) === JSON.stringify({ Bool: { 'aws:SecureTransport': 'false' } }))).toBe(true);
    }
  });

  it('expires scratch, checkpoints, partials and old versions', () => {
    const [, bucket] = resourcesOf('AWS::S3::Bucket').find(([id]) => id === bucketId)!;
    const rules = (bucket.LifecycleConfiguration as { Rules: Record<string, unknown>[] }).Rules;
    const byId: Record<string, Record<string, unknown>> = Object.fromEntries(rules.map((r) => [String(r.Id), r]));
    expect(byId['scratch-jobs']).toMatchObject({ Prefix: PREFIX.jobs, ExpirationInDays: 14, Status: 'Enabled' });
    expect(byId.checkpoints).toMatchObject({ TagFilters: [{ Key: 'cil-kind', Value: 'checkpoint' }], ExpirationInDays: 3 });
    expect(byId['statistics-partials']).toMatchObject({ Prefix: STATISTICS_PARTIALS_PREFIX, ExpirationInDays: 30 });
    expect(byId['noncurrent-versions']).toMatchObject({ NoncurrentVersionExpiration: { NoncurrentDays: 30 }, AbortIncompleteMultipartUpload: { DaysAfterInitiation: 2 } });
    // Nothing expires inputs, outputs, models or statistics themselves.
    const expiring = rules.filter((r) => r.ExpirationInDays !== undefined).map((r) => r.Prefix ?? 'tagged');
    expect(expiring.sort()).toEqual([PREFIX.jobs, STATISTICS_PARTIALS_PREFIX, 'tagged'].sort());
  });
});

describe('upload triggers', () => {
  it('matches images under inputs/ and manifests under batches/ of the data bucket only', () => {
    const rules = resourcesOf('AWS::Events::Rule').filter(([, p]) => (p.EventPattern as { source?: string[] } | undefined)?.source?.[0] === 'aws.s3');
    expect(rules).toHaveLength(2);
    const keys = rules.map(([, p]) => {
      const pattern = p.EventPattern as { 'detail-type': string[]; detail: { bucket: { name: unknown[] }; object: { key: { wildcard: string }[] } } };
      expect(pattern['detail-type']).toEqual(['Object Created']);
      expect(refOf(pattern.detail.bucket.name[0])).toBe(bucketId);
      return pattern.detail.object.key.map((k) => k.wildcard).sort();
    });
    expect(keys).toContainEqual(['inputs/*.JPEG', 'inputs/*.JPG', 'inputs/*.PNG', 'inputs/*.WEBP', 'inputs/*.jpeg', 'inputs/*.jpg', 'inputs/*.png', 'inputs/*.webp']);
    expect(keys).toContainEqual(['batches/*.JSONL', 'batches/*.jsonl']);
  });

  it('sends both to the starter, with retries and a dead-letter queue', () => {
    const starterId = logicalIdOf(s, s.stack.triggers.starter);
    const dlqId = logicalIdOf(s, s.stack.triggers.deadLetterQueue);
    for (const [, p] of resourcesOf('AWS::Events::Rule').filter(([, p]) => (p.EventPattern as { source?: string[] } | undefined)?.source?.[0] === 'aws.s3')) {
      const [target] = p.Targets as { Arn: unknown; DeadLetterConfig: { Arn: unknown }; RetryPolicy: { MaximumRetryAttempts: number } }[];
      expect(refOf(target?.Arn)).toBe(starterId);
      expect(refOf(target?.DeadLetterConfig.Arn)).toBe(dlqId);
      expect(target?.RetryPolicy.MaximumRetryAttempts).toBe(8);
    }
  });

  it('lets the starter start exactly the two workflows and nothing else', () => {
    const st = statementsOfRole(s, logicalIdOf(s, s.stack.triggers.starter.role!));
    const starts = st.filter((x) => x.Action === 'states:StartExecution');
    expect(starts.map((x) => refOf(x.Resource)).sort()).toEqual(
      [logicalIdOf(s, s.stack.generation.stateMachine), logicalIdOf(s, s.stack.batchProduction.stateMachine)].sort(),
    );
    const actions = st.flatMap((x) => (Array.isArray(x.Action) ? x.Action : [x.Action]));
    expect(actions.filter((a) => a.startsWith('s3:'))).toEqual([]);
    s.template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: { [LAMBDA_ENV.generationStateMachineArn]: Match.anyValue(), [LAMBDA_ENV.batchStateMachineArn]: Match.anyValue() } },
    });
  });
});

describe('lambda functions', () => {
  it('traces every function to X-Ray (Powertools Tracer in each handler), with the role to write traces; Validate records no error messages', () => {
    const fns = resourcesOf('AWS::Lambda::Function');
    // Validate, PostProcess, Notify, RecordFailure, PrepareItem, BatchSummary, Starter, BatchMetrics, Reconciler.
    expect(fns).toHaveLength(9);
    for (const [id, p] of fns) {
      expect(p.TracingConfig, id).toEqual({ Mode: 'Active' });
      const actions = statementsOfRole(s, refOf(p.Role)!).flatMap((st) => [st.Action].flat());
      expect(actions, id).toEqual(expect.arrayContaining(['xray:PutTraceSegments', 'xray:PutTelemetryRecords']));
    }
    const validate = s.json.Resources[logicalIdOf(s, s.stack.functions.validate)].Properties as { Environment: { Variables: Record<string, unknown> } };
    expect(validate.Environment.Variables.POWERTOOLS_TRACER_CAPTURE_ERROR).toBe('false');
  });

  it('runs the TypeScript handlers on Node.js 24 and Validate/Post-process as one container image', () => {
    const fns = resourcesOf('AWS::Lambda::Function');
    const zip = fns.filter(([, p]) => p.PackageType !== 'Image');
    const image = fns.filter(([, p]) => p.PackageType === 'Image');
    expect(zip.length).toBeGreaterThanOrEqual(6);
    for (const [, p] of zip) expect(p.Runtime).toBe('nodejs24.x');
    expect(image).toHaveLength(2);
    const commands = image.map(([, p]) => (p.ImageConfig as { Command: string[] }).Command[0]).sort();
    expect(commands).toEqual(['postprocess/handler.handler', 'validate/handler.handler']);
    // Same image (one asset) for both.
    const uris = new Set(image.map(([, p]) => JSON.stringify((p.Code as { ImageUri: unknown }).ImageUri)));
    expect(uris.size).toBe(1);
  });

  it('gives every function its own log group with retention', () => {
    const logGroups = new Map(resourcesOf('AWS::Logs::LogGroup'));
    for (const [id, p] of resourcesOf('AWS::Lambda::Function')) {
      const lg = refOf((p.LoggingConfig as { LogGroup: unknown } | undefined)?.LogGroup);
      expect(lg, id).toBeDefined();
      expect(logGroups.get(lg!)?.RetentionInDays, id).toBe(30);
    }
    for (const [id, p] of resourcesOf('AWS::Logs::LogGroup')) expect(p.RetentionInDays, id).toBe(30);
  });

  it('scopes each function to its prefixes', () => {
    const f = s.stack.functions;
    expect(grantsOf(f.validate.role!)).toEqual({
      's3:GetObject': [PREFIX.batches, PREFIX.inputs, PREFIX.models, PREFIX.statistics].sort(),
      's3:GetObjectVersion': [PREFIX.batches, PREFIX.inputs].sort(),
      's3:PutObject': [PREFIX.jobs],
      's3:AbortMultipartUpload': [PREFIX.jobs],
    });
    expect(grantsOf(f.postProcess.role!)).toEqual({
      's3:GetObject': [PREFIX.jobs, PREFIX.outputs].sort(),
      's3:PutObject': [PREFIX.outputs],
      's3:AbortMultipartUpload': [PREFIX.outputs],
    });
    expect(grantsOf(f.recordFailure.role!)).toEqual({ 's3:PutObject': [PREFIX.failures], 's3:AbortMultipartUpload': [PREFIX.failures] });
    expect(grantsOf(f.notify.role!)).toEqual({ 's3:GetObject': [PREFIX.failures, PREFIX.outputs].sort() });
    expect(grantsOf(f.batchSummary.role!)).toEqual({ 's3:PutObject': [PREFIX.reports], 's3:AbortMultipartUpload': [PREFIX.reports] });
    expect(grantsOf(f.prepareItem.role!)).toEqual({});
  });

  // Issue 19, defect 1. Without s3:ListBucket covering a key, S3 answers a GET or HEAD of a
  // missing key 403 AccessDenied instead of 404, so "no sidecar" (the common case) looked like a
  // failure in AWS; s3rver has no IAM, so only the policy itself can show it.
  it('Validate may list exactly the prefixes whose keys it reads as optional (sidecar, upload, manifest, statistics), so a missing one is 404, not 403', () => {
    const roleId = logicalIdOf(s, s.stack.functions.validate.role!);
    const prefixes = [PREFIX.inputs, PREFIX.batches, PREFIX.models, PREFIX.statistics].flatMap((p) => [p, `${p}*`]);
    s.template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: roleId }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          { Effect: 'Allow', Action: 's3:ListBucket', Resource: { 'Fn::GetAtt': [bucketId, 'Arn'] }, Condition: { StringLike: { 's3:prefix': prefixes } } },
        ]),
      },
    });
    // S3 decides 404 or 403 by evaluating s3:ListBucket with s3:prefix set to the requested key.
    const literal = (x: string): string => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const glob = (p: string): RegExp => new RegExp(`^${p.split('*').map(literal).join('.*')}$`);
    const mayList = (key: string): boolean =>
      statementsOfRole(s, roleId).some((st) => {
        const actions = Array.isArray(st.Action) ? st.Action : [st.Action];
        if (st.Effect !== 'Allow' || !actions.includes('s3:ListBucket') || refOf(st.Resource) !== bucketId) return false;
        const like = st.Condition?.StringLike?.['s3:prefix'];
        return Array.isArray(like) && like.some((p) => glob(String(p)).test(key));
      });
    for (const key of ['inputs/cats/tabby.json', 'inputs/cats/tabby.png', 'batches/b1/cat.json', 'models/demo/manifest.json', 'statistics/demo.safetensors']) {
      expect(mayList(key), key).toBe(true);
    }
    for (const key of ['jobs/j-1/request.json', 'outputs/j-1/result.json', 'failures/j-1.json', 'reports/b/summary.json', 'input/x.json', '']) {
      expect(mayList(key), key).toBe(false);
    }
  });

  it('lists only under the prefixes a function reads', () => {
    const list = statementsOfRole(s, logicalIdOf(s, s.stack.functions.validate.role!)).filter((x) => x.Action === 's3:ListBucket');
    expect(list).toHaveLength(1);
    expect(list[0]?.Condition).toEqual({
      StringLike: { 's3:prefix': [PREFIX.inputs, `${PREFIX.inputs}*`, PREFIX.batches, `${PREFIX.batches}*`, PREFIX.models, `${PREFIX.models}*`, PREFIX.statistics, `${PREFIX.statistics}*`] },
    });
  });
});

describe('least privilege across the stack', () => {
  it('grants no wildcard actions and no bucket-wide object access', () => {
    const statements = allStatements(s).filter((x) => x.Effect === 'Allow');
    expect(statements.length).toBeGreaterThan(30);
    for (const st of statements) {
      for (const a of Array.isArray(st.Action) ? st.Action : [st.Action]) {
        expect(a, JSON.stringify(st)).not.toBe('*');
        expect(a, JSON.stringify(st)).not.toMatch(/^[a-z0-9-]+:\*$/);
        if (a.startsWith('s3:')) expect(a).not.toContain('*');
      }
      for (const r of Array.isArray(st.Resource) ? st.Resource : [st.Resource]) {
        const p = objectPrefix(r, bucketId);
        if (p !== null) expect(p, `bucket-wide object access in ${JSON.stringify(st)}`).not.toBe('');
      }
    }
  });

  it('uses Resource "*" only for actions without resource-level permissions', () => {
    const allowedOnStar = new Set([
      'batch:DescribeJobs',
      'batch:ListJobs',
      'ecr:GetAuthorizationToken',
      'xray:PutTraceSegments',
      'xray:PutTelemetryRecords',
      'xray:GetSamplingRules',
      'xray:GetSamplingTargets',
      'logs:CreateLogDelivery',
      'logs:GetLogDelivery',
      'logs:UpdateLogDelivery',
      'logs:DeleteLogDelivery',
      'logs:ListLogDeliveries',
      'logs:PutResourcePolicy',
      'logs:DescribeResourcePolicies',
      'logs:DescribeLogGroups',
    ]);
    for (const st of allStatements(s)) {
      if (st.Resource !== '*') continue;
      for (const a of Array.isArray(st.Action) ? st.Action : [st.Action]) expect(allowedOnStar, a).toContain(a);
    }
  });
});

describe('batch', () => {
  type Queue = { Priority: number; ComputeEnvironmentOrder: { ComputeEnvironment: unknown; Order: number }[]; JobStateTimeLimitActions?: Record<string, unknown>[] };
  const fleets = (): GpuBatch['fleets'] => s.stack.gpu.fleets;
  const queueProps = (q: { node: { defaultChild?: unknown } }): Queue => s.json.Resources[logicalIdOf(s, q)].Properties as unknown as Queue;
  const ceProps = (ce: { node: { defaultChild?: unknown } }): Record<string, unknown> => (s.json.Resources[logicalIdOf(s, ce)].Properties as { ComputeResources: Record<string, unknown> }).ComputeResources;

  it('one fleet per GPU size, each a Spot and an on-demand environment of one instance size', () => {
    const ces = resourcesOf('AWS::Batch::ComputeEnvironment');
    expect(ces).toHaveLength(4);
    for (const [name, f] of Object.entries(fleets())) {
      const spot = ceProps(f.spotEnvironment!);
      const od = ceProps(f.onDemandEnvironment!);
      expect(spot, name).toMatchObject({ Type: 'SPOT', AllocationStrategy: 'SPOT_PRICE_CAPACITY_OPTIMIZED', MaxvCpus: DEFAULT_CONFIG.gpuFleets[name].maxVcpus, MinvCpus: 0, InstanceTypes: DEFAULT_CONFIG.gpuFleets[name].instanceTypes });
      expect(od, name).toMatchObject({ Type: 'EC2', MaxvCpus: DEFAULT_CONFIG.gpuFleets[name].onDemandMaxVcpus, InstanceTypes: DEFAULT_CONFIG.gpuFleets[name].instanceTypes });
      expect(new Set((spot.InstanceTypes as string[]).map((t) => t.split('.')[1])).size, `${name}: one size`).toBe(1);
    }
    for (const [, p] of ces) expect((p.ComputeResources as Record<string, unknown>).Ec2Configuration).toEqual([{ ImageType: 'ECS_AL2023_NVIDIA' }]);
  });

  it("every model's queue runs on GPUs with at least the GPU memory its manifest (or the estimate) needs", () => {
    const c = DEFAULT_CONFIG;
    for (const [key, fleetName] of Object.entries(c.placement)) {
      const f = fleets()[fleetName];
      for (const tier of ['interactive', 'production', 'onDemand'] as const) {
        const q = queueProps(f.queues[tier]!);
        for (const o of q.ComputeEnvironmentOrder) {
          const ceId = refOf(o.ComputeEnvironment)!;
          const types = (s.json.Resources[ceId].Properties as { ComputeResources: { InstanceTypes: string[] } }).ComputeResources.InstanceTypes;
          for (const t of types) expect(gpuMemoryGiB(t), `${key} → ${fleetName}/${tier} → ${t}`).toBeGreaterThanOrEqual(c.gpuMemoryGiB[key] + GPU_MEMORY_RESERVE_GIB);
        }
      }
    }
  });

  it('queues by tier with distinct priorities: on-demand resubmissions > uploads > manifest production > statistics', () => {
    const all = resourcesOf('AWS::Batch::JobQueue');
    expect(all).toHaveLength(7);
    for (const f of Object.values(fleets())) {
      expect(queueProps(f.queues.onDemand!).Priority).toBe(400);
      expect(queueProps(f.queues.interactive!).Priority).toBe(300);
      expect(queueProps(f.queues.production!).Priority).toBe(200);
      // The tier queues share the Spot environment; the on-demand queue has the on-demand one only.
      for (const t of ['interactive', 'production'] as const) expect(queueProps(f.queues[t]!).ComputeEnvironmentOrder.map((o) => refOf(o.ComputeEnvironment))).toEqual([logicalIdOf(s, f.spotEnvironment!)]);
      expect(queueProps(f.queues.onDemand!).ComputeEnvironmentOrder.map((o) => refOf(o.ComputeEnvironment))).toEqual([logicalIdOf(s, f.onDemandEnvironment!)]);
    }
    expect(queueProps(fleets().gpu48.queues.statistics!).Priority).toBe(100);
    expect(fleets().gpu24.queues.statistics).toBeUndefined();
    expect(s.stack.gpu.jobQueue).toBe(fleets().gpu48.queues.statistics);
  });

  it('each queue cancels jobs that fit nowhere; Spot queues also cancel jobs left RUNNABLE without Spot capacity', () => {
    const unfittable = { Action: 'CANCEL', MaxTimeSeconds: 600, Reason: 'MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT', State: 'RUNNABLE' };
    const capacity = { Action: 'CANCEL', MaxTimeSeconds: DEFAULT_CONFIG.spotCapacityWaitMinutes * 60, Reason: 'CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY', State: 'RUNNABLE' };
    for (const f of Object.values(fleets())) {
      for (const t of ['interactive', 'production', 'statistics'] as const) if (f.queues[t]) expect(queueProps(f.queues[t]).JobStateTimeLimitActions).toEqual([unfittable, capacity]);
      expect(queueProps(f.queues.onDemand!).JobStateTimeLimitActions).toEqual([unfittable]);
    }
    const limited = synth({ spotCapacityWaitMinutes: 45 });
    try {
      const q = limited.json.Resources[logicalIdOf(limited, limited.stack.gpu.fleets.gpu24.queues.interactive!)].Properties as unknown as Queue;
      expect(q.JobStateTimeLimitActions?.[1]).toMatchObject({ MaxTimeSeconds: 2700, Reason: 'CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY' });
    } finally {
      limited.cleanup();
    }
  });

  it('drains Spot instances, blocks instance metadata from containers, and encrypts the root volume', () => {
    const [[, lt]] = resourcesOf('AWS::EC2::LaunchTemplate') as [[string, { LaunchTemplateData: Record<string, unknown> }]];
    const data = lt.LaunchTemplateData;
    expect(data.MetadataOptions).toMatchObject({ HttpTokens: 'required', HttpPutResponseHopLimit: 1 });
    expect(data.BlockDeviceMappings).toEqual([{ DeviceName: '/dev/xvda', Ebs: { DeleteOnTermination: true, Encrypted: true, VolumeSize: 200, VolumeType: 'gp3', Throughput: 500, Iops: 3000 } }]);
    const userData = JSON.stringify(data.UserData);
    expect(userData).toContain('ECS_ENABLE_SPOT_INSTANCE_DRAINING=true');
    expect(userData).toContain('multipart/mixed');
    expect(userData).toContain('chown 10001:10001 /var/lib/cil /var/lib/cil/models');
  });

  it('turns the worker\'s EMF lines for CPU fallback and GpuUnavailable into metrics (the awslogs driver does not extract EMF)', () => {
    for (const name of ['ExecutionProviderFallback', 'GpuUnavailable']) {
      Template.fromJSON(s.json).hasResourceProperties('AWS::Logs::MetricFilter', {
        FilterPattern: `{ $.${name} >= 1 }`,
        MetricTransformations: [{ MetricNamespace: 'CIL/Pipeline', MetricName: name, MetricValue: `$.${name}` }],
      });
    }
  });

  it('runs a host loop that copies the Spot instance-action notice (IMDSv2) to the file the worker watches', () => {
    const cmds = spotNoticeCommands().join('\n');
    expect(cmds).toContain('/latest/api/token');
    expect(cmds).toContain('X-aws-ec2-metadata-token: $token');
    expect(cmds).toContain('/latest/meta-data/spot/instance-action');
    // The host path is the cache volume the worker sees as $CIL_CACHE_DIR, under the worker's file name.
    expect(WORKER_PATHS.spotNotice).toBe(SPOT_NOTICE_FILE_NAME);
    expect(cmds).toContain(`mv /var/lib/cil/${SPOT_NOTICE_FILE_NAME}.tmp /var/lib/cil/${SPOT_NOTICE_FILE_NAME}`);
    expect(cmds).toContain('systemd-run --unit=cil-spot-watch /usr/local/bin/cil-spot-watch');
    const [[, lt]] = resourcesOf('AWS::EC2::LaunchTemplate') as [[string, { LaunchTemplateData: { UserData: unknown } }]];
    const userData = JSON.stringify(lt.LaunchTemplateData.UserData);
    for (const line of spotNoticeCommands()) expect(userData).toContain(JSON.stringify(line).slice(1, -1).slice(0, 40));
  });

  it('formats and mounts the NVMe instance store (RAID 0 over several) at the cache root, else marks it EBS', () => {
    const cmds = instanceStoreCommands().join('\n');
    expect(cmds).toContain('/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_');
    expect(cmds).toContain('mdadm --create /dev/md0 --run --level=0');
    expect(cmds).toContain('mkfs.xfs -f -K "$dev"');
    expect(cmds).toContain('mount -o noatime "$dev" /var/lib/cil');
    expect(cmds).toContain('echo instance-store > /var/lib/cil/.storage');
    expect(cmds).toContain('echo ebs > /var/lib/cil/.storage');
    const [[, lt]] = resourcesOf('AWS::EC2::LaunchTemplate') as [[string, { LaunchTemplateData: { UserData: unknown } }]];
    const userData = JSON.stringify(lt.LaunchTemplateData.UserData);
    for (const line of instanceStoreCommands()) expect(userData).toContain(JSON.stringify(line).slice(1, -1).slice(0, 40));
  });

  it('defines the generation job: one GPU, the default profile, a host model cache, local scratch, Batch retries', () => {
    const gen = s.json.Resources[logicalIdOf(s, s.stack.gpu.generateJob)].Properties as { ContainerProperties: Record<string, unknown>; RetryStrategy: unknown; Timeout: unknown; Parameters: unknown };
    const c = gen.ContainerProperties;
    // The placement comes as a job parameter (default: none), not a container override.
    expect(c.Command).toEqual(['worker', '--placement', 'Ref::placement']);
    expect(gen.Parameters).toEqual({ placement: 'none' });
    expect(c.ResourceRequirements).toEqual(expect.arrayContaining([{ Type: 'GPU', Value: '1' }, { Type: 'VCPU', Value: '8' }, { Type: 'MEMORY', Value: '30000' }]));
    expect(c.Volumes).toEqual([{ Host: { SourcePath: '/var/lib/cil' }, Name: 'cache' }, { Host: {}, Name: 'scratch' }]);
    expect(c.MountPoints).toEqual([{ ContainerPath: '/var/cache/cil', SourceVolume: 'cache' }, { ContainerPath: '/scratch', SourceVolume: 'scratch' }]);
    const env = Object.fromEntries((c.Environment as { Name: string; Value: unknown }[]).map((e) => [e.Name, e.Value]));
    expect(refOf(env[WORKER_ENV.progressBus])).toBe(logicalIdOf(s, s.stack.eventBus));
    expect(env[WORKER_ENV.modelCache]).toBe('/var/cache/cil/models');
    expect(env[WORKER_ENV.cacheDir]).toBe('/var/cache/cil');
    // The cache's free-space floor (least recently used bundles are evicted below it).
    expect(env[WORKER_ENV.modelCacheMinFreeGiB]).toBe(String(DEFAULT_CONFIG.modelCacheMinFreeGiB));
    // GPU or nothing: a job that cannot get CUDA exits at once rather than running on the CPU.
    expect(env.CIL_EXECUTION_PROVIDER).toBe('cuda');
    expect(c.LinuxParameters).toEqual({ InitProcessEnabled: true });
    expect(c.LogConfiguration).toMatchObject({ LogDriver: 'awslogs' });
    expect(gen.Timeout).toEqual({ AttemptDurationSeconds: 3600 });
    expect(gen.RetryStrategy).toEqual({
      Attempts: 3,
      EvaluateOnExit: [
        { Action: 'RETRY', OnStatusReason: 'Host EC2*' },
        { Action: 'RETRY', OnExitCode: String(WORKER_EXIT.interrupted) },
        { Action: 'EXIT', OnExitCode: String(WORKER_EXIT.refused) },
        { Action: 'EXIT', OnExitCode: '78' },
        { Action: 'RETRY', OnReason: 'CannotPullContainerError:*' },
      ],
    });
    expect(WORKER_EXIT.gpuUnavailable).toBe(78);
  });

  it('defines the statistics shard (GPU, array-index sharded) and merge (CPU) jobs', () => {
    const shard = (s.json.Resources[logicalIdOf(s, s.stack.gpu.statisticsShardJob)].Properties as { ContainerProperties: Record<string, unknown> }).ContainerProperties;
    expect(shard.Command).toEqual(expect.arrayContaining(['stats', 'compute', '--shards', 'Ref::shards', '--out', 'Ref::partials']));
    expect(shard.ResourceRequirements).toEqual(expect.arrayContaining([{ Type: 'GPU', Value: '1' }]));
    expect(shard.Environment).toEqual(expect.arrayContaining([{ Name: 'CIL_EXECUTION_PROVIDER', Value: 'cuda' }]));
    const merge = (s.json.Resources[logicalIdOf(s, s.stack.gpu.statisticsMergeJob)].Properties as { ContainerProperties: Record<string, unknown> }).ContainerProperties;
    expect(merge.Command).toEqual(['stats', 'merge', 'Ref::partials', '--out', 'Ref::out']);
    expect((merge.ResourceRequirements as { Type: string }[]).map((r) => r.Type).sort()).toEqual(['MEMORY', 'VCPU']);
    // CPU only: no execution provider demanded.
    expect((merge.Environment as { Name: string }[]).map((e) => e.Name)).not.toContain('CIL_EXECUTION_PROVIDER');
  });

  it('gives each job role its prefixes, and the worker the event bus', () => {
    const g = s.stack.gpu;
    expect(grantsOf(g.generateRole)).toEqual({
      's3:GetObject': [PREFIX.jobs, PREFIX.models, PREFIX.statistics].sort(),
      's3:PutObject': [PREFIX.jobs],
      's3:AbortMultipartUpload': [PREFIX.jobs],
      's3:DeleteObject': [PREFIX.jobs],
      's3:PutObjectTagging': [PREFIX.jobs],
    });
    expect(grantsOf(g.statisticsShardRole)).toEqual({
      's3:GetObject': [PREFIX.models, STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX].sort(),
      's3:PutObject': [STATISTICS_PARTIALS_PREFIX],
      's3:AbortMultipartUpload': [STATISTICS_PARTIALS_PREFIX],
    });
    expect(grantsOf(g.statisticsMergeRole)).toEqual({
      's3:GetObject': [STATISTICS_PARTIALS_PREFIX],
      's3:PutObject': [PREFIX.statistics],
      's3:AbortMultipartUpload': [PREFIX.statistics],
    });
    const busId = logicalIdOf(s, s.stack.eventBus);
    for (const role of [g.generateRole, g.statisticsShardRole]) {
      const put = statementsOfRole(s, logicalIdOf(s, role)).filter((x) => x.Action === 'events:PutEvents');
      expect(put.map((x) => refOf(x.Resource))).toEqual([busId]);
    }
  });

  it('builds the worker image from gpu-worker/Dockerfile as a Docker asset', () => {
    const image = JSON.stringify((s.json.Resources[logicalIdOf(s, s.stack.gpu.generateJob)].Properties as { ContainerProperties: { Image: unknown } }).ContainerProperties.Image);
    expect(image).toContain('cdk-hnb659fds-container-assets');
    expect(s.stack.gpu.workerImage.imageTag).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('workflows', () => {
  it('are Standard state machines with full logging and tracing', () => {
    const sms = resourcesOf('AWS::StepFunctions::StateMachine');
    expect(sms).toHaveLength(3);
    for (const [id, p] of sms) {
      expect(p.StateMachineType, id).toBe('STANDARD');
      expect(p.TracingConfiguration, id).toEqual({ Enabled: true });
      expect((p.LoggingConfiguration as { Level: string; IncludeExecutionData: boolean }).Level, id).toBe('ALL');
      expect((p.LoggingConfiguration as { IncludeExecutionData: boolean }).IncludeExecutionData, id).toBe(false);
    }
  });

  it('lets the generation workflow submit to its queues (not statistics) and job definition only, and stop its jobs', () => {
    const st = statementsOfRole(s, logicalIdOf(s, s.stack.generation.stateMachine.role));
    const submit = st.find((x) => x.Action === 'batch:SubmitJob')!;
    const queues = Object.values(s.stack.gpu.fleets).flatMap((f) => (['interactive', 'production', 'onDemand'] as const).map((t) => logicalIdOf(s, f.queues[t]!)));
    expect((submit.Resource as unknown[]).map(refOf).sort()).toEqual([...queues, logicalIdOf(s, s.stack.gpu.generateJob)].sort());
    expect(st.some((x) => x.Action === 'batch:TerminateJob')).toBe(true);
  });

  it('lets the batch workflow read manifests and write reports, and nothing else in the bucket', () => {
    expect(grantsOf(s.stack.batchProduction.stateMachine.role)).toEqual({
      's3:GetObject': [PREFIX.batches, PREFIX.reports].sort(),
      's3:PutObject': [PREFIX.reports],
      's3:ListMultipartUploadParts': [PREFIX.reports],
      's3:AbortMultipartUpload': [PREFIX.reports],
    });
  });
});

describe('GPU budget (AWS Budgets)', () => {
  const { key, value } = DEFAULT_CONFIG.costAllocationTag;

  it('a daily COST budget over the tagged EC2 compute notifies the alarm topic at 80 % and 100 % of the actual spend', () => {
    const [[, b]] = resourcesOf('AWS::Budgets::Budget') as [[string, { Budget: Record<string, unknown>; NotificationsWithSubscribers: unknown[] }]];
    expect(b.Budget).toMatchObject({
      BudgetType: 'COST',
      TimeUnit: 'DAILY',
      BudgetLimit: { Amount: DEFAULT_CONFIG.dailyGpuBudgetUsd, Unit: 'USD' },
      CostFilters: { TagKeyValue: [`user:${key}$${value}`], Service: [EC2_COMPUTE_SERVICE] },
    });
    const alarmTopic = logicalIdOf(s, s.stack.alarmTopic);
    expect(b.NotificationsWithSubscribers).toEqual(
      [80, 100].map((threshold) => ({
        Notification: { NotificationType: 'ACTUAL', ComparisonOperator: 'GREATER_THAN', Threshold: threshold, ThresholdType: 'PERCENTAGE' },
        Subscribers: [{ SubscriptionType: 'SNS', Address: { Ref: alarmTopic } }],
      })),
    );
  });

  it('the alarm topic admits budgets.amazonaws.com for this account only, and so does the topic key', () => {
    const budgetsStatements = (docs: { Statement: Statement[] }[]): Statement[] =>
      docs.flatMap((d) => d.Statement).filter((st) => JSON.stringify(st.Principal) === JSON.stringify({ Service: 'budgets.amazonaws.com' }));
    const topicPolicies = resourcesOf('AWS::SNS::TopicPolicy').filter(([, p]) => (p.Topics as unknown[]).some((t) => refOf(t) === logicalIdOf(s, s.stack.alarmTopic)));
    const publish = budgetsStatements(topicPolicies.map(([, p]) => p.PolicyDocument as { Statement: Statement[] }));
    expect(publish).toHaveLength(1);
    expect(publish[0]).toMatchObject({ Effect: 'Allow', Action: 'sns:Publish', Resource: { Ref: logicalIdOf(s, s.stack.alarmTopic) } });
    expect(Object.keys(publish[0].Condition as object).sort()).toEqual(['ArnLike', 'StringEquals']);
    expect(JSON.stringify(publish[0].Condition)).toContain('aws:SourceAccount');
    const key = s.json.Resources[logicalIdOf(s, s.stack.topicKey)].Properties as { KeyPolicy: { Statement: Statement[] } };
    const encrypt = budgetsStatements([key.KeyPolicy]);
    expect(encrypt).toHaveLength(1);
    expect(encrypt[0].Action).toEqual(['kms:Decrypt', 'kms:GenerateDataKey*']);
  });

  it('tags the Batch compute environments, the instances they launch, and the launch template\'s instances and volumes', () => {
    const envs = resourcesOf('AWS::Batch::ComputeEnvironment');
    expect(envs.length).toBeGreaterThanOrEqual(4);
    for (const [id, p] of envs) {
      expect(p.Tags, id).toMatchObject({ [key]: value });
      expect((p.ComputeResources as { Tags: unknown }).Tags, id).toEqual({ [key]: value });
    }
    const [[, lt]] = resourcesOf('AWS::EC2::LaunchTemplate') as [[string, { LaunchTemplateData: { TagSpecifications: { ResourceType: string; Tags: unknown[] }[] } }]];
    for (const type of ['instance', 'volume']) {
      expect(lt.LaunchTemplateData.TagSpecifications.find((t) => t.ResourceType === type)?.Tags, type).toContainEqual({ Key: key, Value: value });
    }
  });

  it('takes its limit and tag from the configuration', () => {
    const other = synth({ dailyGpuBudgetUsd: 55, costAllocationTag: { key: 'team', value: 'video lab' } });
    const b = Object.values(other.json.Resources).find((r) => r.Type === 'AWS::Budgets::Budget')!.Properties as { Budget: { BudgetLimit: unknown; CostFilters: { TagKeyValue: string[] } } };
    expect(b.Budget.BudgetLimit).toEqual({ Amount: 55, Unit: 'USD' });
    expect(b.Budget.CostFilters.TagKeyValue).toEqual(['user:team$video lab']);
  });
});

describe('observability', () => {
  it('alarms on system failures (not user ones), time-outs, stuck RUNNABLE jobs, CPU fallback, daily GPU spend and undelivered uploads, to the alarm topic', () => {
    const alarms = resourcesOf('AWS::CloudWatch::Alarm');
    expect(alarms).toHaveLength(8);
    const alarmTopic = logicalIdOf(s, s.stack.alarmTopic);
    for (const [, a] of alarms) expect((a.AlarmActions as unknown[]).map(refOf)).toEqual([alarmTopic]);
    // Nothing alarms on ExecutionsFailed (which counts InvalidImage and other user errors).
    expect(alarms.filter(([, a]) => JSON.stringify(a).includes('ExecutionsFailed'))).toEqual([]);
    const byMetric = (name: string): Record<string, unknown> | undefined => alarms.find(([, a]) => a.MetricName === name)?.[1];
    const service = [{ Name: 'service', Value: METRICS_SERVICE }];
    expect(byMetric(METRIC_NAMES.systemFailures)).toMatchObject({ Namespace: 'CIL/Pipeline', Dimensions: service, Statistic: 'Sum', Threshold: 1, ComparisonOperator: 'GreaterThanOrEqualToThreshold', TreatMissingData: 'notBreaching' });
    expect(byMetric(METRIC_NAMES.userFailures)).toBeUndefined();
    expect(byMetric(WORKER_METRICS.executionProviderFallback)).toMatchObject({ Namespace: 'CIL/Pipeline', Statistic: 'Sum', Threshold: 1, Period: 300 });
    expect(byMetric(WORKER_METRICS.executionProviderFallback)?.Dimensions).toBeUndefined();
    expect(byMetric(METRIC_NAMES.gpuSpendUsd)).toMatchObject({ Dimensions: service, Statistic: 'Sum', Period: 86_400, Threshold: DEFAULT_CONFIG.dailyGpuSpendAlarmUsd, ComparisonOperator: 'GreaterThanThreshold' });
    expect(byMetric(METRIC_NAMES.oldestRunnableSeconds)).toMatchObject({ Namespace: 'CIL/Pipeline', Dimensions: service, Statistic: 'Maximum', Threshold: 1800, TreatMissingData: 'breaching' });
    const timedOut = alarms.filter(([, a]) => JSON.stringify(a.Metrics ?? '').includes('ExecutionsTimedOut'));
    expect(timedOut).toHaveLength(3);
  });

  it('counts failed executions of the three workflows through the metrics function (user or system)', () => {
    const rule = resourcesOf('AWS::Events::Rule').find(([, r]) => JSON.stringify(r.EventPattern ?? '').includes('aws.states'))?.[1] as { EventPattern: { detail: { stateMachineArn: unknown[]; status: string[] } }; Targets: { Arn: unknown }[] };
    expect(rule.EventPattern.detail.status).toEqual(['FAILED', 'TIMED_OUT', 'ABORTED']);
    const sms = [s.stack.generation.stateMachine, s.stack.batchProduction.stateMachine, s.stack.statistics.stateMachine].map((sm) => logicalIdOf(s, sm));
    expect(rule.EventPattern.detail.stateMachineArn.map(refOf).sort()).toEqual(sms.sort());
    expect(refOf(rule.Targets[0].Arn)).toBe(logicalIdOf(s, s.stack.observability.metricsFunction));
  });

  it('measures RUNNABLE age on a schedule and GPU-minutes and spend from Batch job events of every queue', () => {
    s.template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(5 minutes)' });
    const rule = resourcesOf('AWS::Events::Rule').find(([, r]) => JSON.stringify(r.EventPattern ?? '').includes('Batch Job State Change'))?.[1] as { EventPattern: { detail: { jobQueue: unknown[] } } };
    const queues = Object.values(s.stack.gpu.fleets).flatMap((f) => Object.values(f.queues).map((q) => logicalIdOf(s, q)));
    expect(rule.EventPattern.detail.jobQueue.map(refOf).sort()).toEqual(queues.sort());
    const fn = s.json.Resources[logicalIdOf(s, s.stack.observability.metricsFunction)].Properties as { Environment: { Variables: Record<string, unknown> }; TracingConfig: unknown };
    expect(fn.TracingConfig).toEqual({ Mode: 'Active' });
    expect(JSON.stringify(fn.Environment.Variables[LAMBDA_ENV.jobQueues])).toContain('hourlyUsd');
  });

  it('has a dashboard of throughput, user and system failures, GPU-minutes and spend', () => {
    const [[, dash]] = resourcesOf('AWS::CloudWatch::Dashboard') as [[string, { DashboardBody: unknown }]];
    const body = JSON.stringify(dash.DashboardBody);
    for (const m of ['ExecutionsStarted', 'ExecutionsSucceeded', METRIC_NAMES.systemFailures, METRIC_NAMES.userFailures, METRIC_NAMES.gpuMinutes, METRIC_NAMES.gpuSpendUsd, METRIC_NAMES.oldestRunnableSeconds]) expect(body).toContain(m);
  });

  it('subscribes the configured email to notifications and alarms, on KMS-encrypted topics', () => {
    const subs = resourcesOf('AWS::SNS::Subscription');
    expect(subs.map(([, p]) => p.Endpoint)).toEqual(['team@example.com', 'team@example.com']);
    for (const [, t] of resourcesOf('AWS::SNS::Topic')) expect(refOf(t.KmsMasterKeyId)).toBe(logicalIdOf(s, s.stack.topicKey));
  });
});

it('exports the outputs the remote CLI discovers', () => {
  for (const key of Object.values(OUTPUTS)) s.template.hasOutput(key, {});
});

describe('parameters', () => {
  let onDemand: Synthesized;
  beforeAll(() => {
    onDemand = synth({ spot: false, gpuFleets: { gpu24: { instanceTypes: ['g6.2xlarge'], maxVcpus: 8, onDemandMaxVcpus: 8 }, gpu48: { instanceTypes: ['g6e.2xlarge'], maxVcpus: 16, onDemandMaxVcpus: 8 } }, logRetentionDays: 7, batchMaxConcurrency: 25 });
  });
  afterAll(() => onDemand.cleanup());

  it('without Spot: one on-demand environment per fleet, no capacity cancel, no on-demand resubmission', () => {
    const ces = Object.values(onDemand.json.Resources).filter((r) => r.Type === 'AWS::Batch::ComputeEnvironment');
    expect(ces).toHaveLength(2);
    expect(ces.map((c) => c.Properties?.ComputeResources)).toEqual(expect.arrayContaining([expect.objectContaining({ Type: 'EC2', MaxvCpus: 8, InstanceTypes: ['g6.2xlarge'] })]));
    const queues = Object.values(onDemand.json.Resources).filter((r) => r.Type === 'AWS::Batch::JobQueue');
    expect(queues).toHaveLength(5);
    for (const q of queues) expect(JSON.stringify(q.Properties?.JobStateTimeLimitActions)).not.toContain('INSUFFICIENT_INSTANCE_CAPACITY');
    const sm = onDemand.json.Resources[logicalIdOf(onDemand, onDemand.stack.generation.stateMachine)];
    expect(JSON.stringify(sm.Properties?.DefinitionString)).not.toContain('GenerateOnDemand');
  });

  it('applies the log retention and the map concurrency', () => {
    for (const r of Object.values(onDemand.json.Resources).filter((x) => x.Type === 'AWS::Logs::LogGroup')) expect(r.Properties?.RetentionInDays).toBe(7);
    const sm = onDemand.json.Resources[logicalIdOf(onDemand, onDemand.stack.batchProduction.stateMachine)];
    expect(JSON.stringify(sm.Properties?.DefinitionString)).toContain('\\"MaxConcurrency\\":25');
  });
});

describe('networking', () => {
  it('nat (default): a NAT gateway per AZ, workers in private subnets with egress, S3 through the gateway endpoint', () => {
    expect(resourcesOf('AWS::EC2::NatGateway')).toHaveLength(2);
    expect(resourcesOf('AWS::EC2::VPCEndpoint').map(([, p]) => p.VpcEndpointType ?? 'Gateway')).toEqual(['Gateway']);
    expect(s.stack.gpu.workerSubnets).toEqual({ subnetType: 'Private' });
  });

  describe('endpoints: no NAT, interface endpoints for what the workers use', () => {
    let e: Synthesized;
    beforeAll(() => {
      e = synth({ networking: 'endpoints' }, { nag: true });
    });
    afterAll(() => e.cleanup());

    it('has no NAT gateway or internet gateway, and isolated worker subnets', () => {
      const types = Object.values(e.json.Resources).map((r) => r.Type);
      expect(types).not.toContain('AWS::EC2::NatGateway');
      expect(types).not.toContain('AWS::EC2::InternetGateway');
      expect(e.stack.gpu.workerSubnets).toEqual({ subnetType: 'Isolated' });
      for (const [, r] of Object.entries(e.json.Resources).filter(([, x]) => x.Type === 'AWS::Batch::ComputeEnvironment')) {
        const subnets = ((r.Properties?.ComputeResources as { Subnets: unknown[] }).Subnets).map(refOf);
        for (const id of subnets) expect(id).toMatch(/workersSubnet/);
      }
    });

    it('ECR (api, dkr), CloudWatch Logs, EventBridge, STS and ECS interface endpoints, S3 as a gateway; HTTPS from the workers only', () => {
      const eps = Object.values(e.json.Resources).filter((r) => r.Type === 'AWS::EC2::VPCEndpoint');
      const names = eps.map((r) => JSON.stringify(r.Properties?.ServiceName)).join(' ');
      for (const svc of ['ecr.api', 'ecr.dkr', '.logs', '.events', '.sts', '.ecs"', '.ecs-agent', '.ecs-telemetry', '.s3']) expect(names, svc).toContain(svc);
      const iface = eps.filter((r) => r.Properties?.VpcEndpointType === 'Interface');
      expect(iface).toHaveLength(8);
      for (const r of iface) expect(r.Properties?.PrivateDnsEnabled).toBe(true);
      const sgId = logicalIdOf(e, e.stack.gpu.securityGroup);
      const ingress = Object.values(e.json.Resources).filter((r) => r.Type === 'AWS::EC2::SecurityGroupIngress');
      expect(ingress.map((r) => [r.Properties?.FromPort, r.Properties?.ToPort, refOf(r.Properties?.SourceSecurityGroupId)])).toEqual([[443, 443, sgId]]);
    });

    it('stays cdk-nag clean', () => {
      const report = JSON.parse(readFileSync(join(e.outdir, 'validation-report.json'), 'utf8')) as { pluginReports: { violations: unknown[] }[] };
      for (const p of report.pluginReports) expect(p.violations).toEqual([]);
    });
  });
});
