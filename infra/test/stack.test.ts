/**
 * The synthesized stack, resource by resource: what matters for safety, cost and the contracts
 * with the worker and the functions (no whole-template snapshot).
 */
import { Match } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFIX } from '#shared/schemas';
import { LAMBDA_ENV, METRIC_NAMES, OUTPUTS, STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX, WORKER_ENV, WORKER_EXIT } from '../lib/names.ts';
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
  it('runs GPU instances on Spot first, on-demand after, with the configured types', () => {
    const ces = resourcesOf('AWS::Batch::ComputeEnvironment').map(([id, p]) => [id, (p.ComputeResources as Record<string, unknown>)] as const);
    expect(ces).toHaveLength(2);
    const spot = ces.find(([, r]) => r.Type === 'SPOT')!;
    const ec2 = ces.find(([, r]) => r.Type === 'EC2')!;
    expect(spot[1]).toMatchObject({ AllocationStrategy: 'SPOT_PRICE_CAPACITY_OPTIMIZED', MaxvCpus: 32, MinvCpus: 0, InstanceTypes: ['g5.xlarge', 'g5.2xlarge', 'g6.xlarge', 'g6.2xlarge'] });
    expect(ec2[1]).toMatchObject({ MaxvCpus: 16, MinvCpus: 0 });
    for (const [, r] of ces) expect(r.Ec2Configuration).toEqual([{ ImageType: 'ECS_AL2023_NVIDIA' }]);
    const [[, queue]] = resourcesOf('AWS::Batch::JobQueue') as [[string, { ComputeEnvironmentOrder: { ComputeEnvironment: unknown; Order: number }[] }]];
    expect(queue.ComputeEnvironmentOrder.map((o) => [refOf(o.ComputeEnvironment), o.Order])).toEqual([
      [spot[0], 1],
      [ec2[0], 2],
    ]);
  });

  it('drains Spot instances, blocks instance metadata from containers, and encrypts the root volume', () => {
    const [[, lt]] = resourcesOf('AWS::EC2::LaunchTemplate') as [[string, { LaunchTemplateData: Record<string, unknown> }]];
    const data = lt.LaunchTemplateData;
    expect(data.MetadataOptions).toMatchObject({ HttpTokens: 'required', HttpPutResponseHopLimit: 1 });
    expect(data.BlockDeviceMappings).toEqual([{ DeviceName: '/dev/xvda', Ebs: { DeleteOnTermination: true, Encrypted: true, VolumeSize: 200, VolumeType: 'gp3' } }]);
    const userData = JSON.stringify(data.UserData);
    expect(userData).toContain('ECS_ENABLE_SPOT_INSTANCE_DRAINING=true');
    expect(userData).toContain('multipart/mixed');
    expect(userData).toContain('chown 10001:10001 /var/lib/cil/models');
  });

  it('defines the generation job: one GPU, the default profile, a host model cache, local scratch, Batch retries', () => {
    const gen = s.json.Resources[logicalIdOf(s, s.stack.gpu.generateJob)].Properties as { ContainerProperties: Record<string, unknown>; RetryStrategy: unknown; Timeout: unknown };
    const c = gen.ContainerProperties;
    expect(c.Command).toEqual(['worker']);
    expect(c.ResourceRequirements).toEqual(expect.arrayContaining([{ Type: 'GPU', Value: '1' }, { Type: 'VCPU', Value: '4' }, { Type: 'MEMORY', Value: '14800' }]));
    expect(c.Volumes).toEqual([{ Host: { SourcePath: '/var/lib/cil/models' }, Name: 'model-cache' }, { Host: {}, Name: 'scratch' }]);
    expect(c.MountPoints).toEqual([{ ContainerPath: '/var/cache/cil/models', SourceVolume: 'model-cache' }, { ContainerPath: '/scratch', SourceVolume: 'scratch' }]);
    const env = Object.fromEntries((c.Environment as { Name: string; Value: unknown }[]).map((e) => [e.Name, e.Value]));
    expect(refOf(env[WORKER_ENV.progressBus])).toBe(logicalIdOf(s, s.stack.eventBus));
    expect(env[WORKER_ENV.modelCache]).toBe('/var/cache/cil/models');
    expect(c.LinuxParameters).toEqual({ InitProcessEnabled: true });
    expect(c.LogConfiguration).toMatchObject({ LogDriver: 'awslogs' });
    expect(gen.Timeout).toEqual({ AttemptDurationSeconds: 3600 });
    expect(gen.RetryStrategy).toEqual({
      Attempts: 3,
      EvaluateOnExit: [
        { Action: 'RETRY', OnStatusReason: 'Host EC2*' },
        { Action: 'RETRY', OnExitCode: String(WORKER_EXIT.interrupted) },
        { Action: 'EXIT', OnExitCode: String(WORKER_EXIT.refused) },
        { Action: 'RETRY', OnReason: 'CannotPullContainerError:*' },
      ],
    });
  });

  it('defines the statistics shard (GPU, array-index sharded) and merge (CPU) jobs', () => {
    const shard = (s.json.Resources[logicalIdOf(s, s.stack.gpu.statisticsShardJob)].Properties as { ContainerProperties: Record<string, unknown> }).ContainerProperties;
    expect(shard.Command).toEqual(expect.arrayContaining(['stats', 'compute', '--shards', 'Ref::shards', '--out', 'Ref::partials']));
    expect(shard.ResourceRequirements).toEqual(expect.arrayContaining([{ Type: 'GPU', Value: '1' }]));
    const merge = (s.json.Resources[logicalIdOf(s, s.stack.gpu.statisticsMergeJob)].Properties as { ContainerProperties: Record<string, unknown> }).ContainerProperties;
    expect(merge.Command).toEqual(['stats', 'merge', 'Ref::partials', '--out', 'Ref::out']);
    expect((merge.ResourceRequirements as { Type: string }[]).map((r) => r.Type).sort()).toEqual(['MEMORY', 'VCPU']);
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

  it('lets the generation workflow submit to its queue and job definition only, and stop its jobs', () => {
    const st = statementsOfRole(s, logicalIdOf(s, s.stack.generation.stateMachine.role));
    const submit = st.find((x) => x.Action === 'batch:SubmitJob')!;
    expect((submit.Resource as unknown[]).map(refOf).sort()).toEqual([logicalIdOf(s, s.stack.gpu.jobQueue), logicalIdOf(s, s.stack.gpu.generateJob)].sort());
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

describe('observability', () => {
  it('alarms on failed executions of each workflow, stuck RUNNABLE jobs and undelivered uploads, to the alarm topic', () => {
    const alarms = resourcesOf('AWS::CloudWatch::Alarm');
    expect(alarms).toHaveLength(5);
    const alarmTopic = logicalIdOf(s, s.stack.alarmTopic);
    for (const [, a] of alarms) expect((a.AlarmActions as unknown[]).map(refOf)).toEqual([alarmTopic]);
    const failed = alarms.filter(([, a]) => JSON.stringify(a.Metrics ?? '').includes('ExecutionsFailed'));
    expect(failed).toHaveLength(3);
    for (const [, a] of failed) expect(a).toMatchObject({ Threshold: 1, ComparisonOperator: 'GreaterThanOrEqualToThreshold' });
    const runnable = alarms.find(([, a]) => a.MetricName === METRIC_NAMES.oldestRunnableSeconds);
    expect(runnable?.[1]).toMatchObject({ Namespace: 'CIL/Pipeline', Statistic: 'Maximum', Threshold: 1800, TreatMissingData: 'breaching' });
  });

  it('measures RUNNABLE age on a schedule and GPU-minutes from Batch job events of its queue', () => {
    const queueId = logicalIdOf(s, s.stack.gpu.jobQueue);
    s.template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(5 minutes)' });
    s.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: { source: ['aws.batch'], 'detail-type': ['Batch Job State Change'], detail: { jobQueue: [{ 'Fn::GetAtt': [queueId, 'JobQueueArn'] }], status: ['SUCCEEDED', 'FAILED'] } },
    });
  });

  it('has a dashboard of throughput, failures and GPU-minutes', () => {
    const [[, dash]] = resourcesOf('AWS::CloudWatch::Dashboard') as [[string, { DashboardBody: unknown }]];
    const body = JSON.stringify(dash.DashboardBody);
    for (const m of ['ExecutionsStarted', 'ExecutionsSucceeded', 'ExecutionsFailed', METRIC_NAMES.gpuMinutes, METRIC_NAMES.oldestRunnableSeconds]) expect(body).toContain(m);
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
    onDemand = synth({ spot: false, instanceTypes: ['g6.xlarge', 'g6.2xlarge'], maxVcpus: 8, logRetentionDays: 7, batchMaxConcurrency: 25 });
  });
  afterAll(() => onDemand.cleanup());

  it('without Spot: one on-demand environment of the given types', () => {
    const ces = Object.values(onDemand.json.Resources).filter((r) => r.Type === 'AWS::Batch::ComputeEnvironment');
    expect(ces).toHaveLength(1);
    expect(ces[0]?.Properties?.ComputeResources).toMatchObject({ Type: 'EC2', MaxvCpus: 8, InstanceTypes: ['g6.xlarge', 'g6.2xlarge'] });
  });

  it('applies the log retention and the map concurrency', () => {
    for (const r of Object.values(onDemand.json.Resources).filter((x) => x.Type === 'AWS::Logs::LogGroup')) expect(r.Properties?.RetentionInDays).toBe(7);
    const sm = onDemand.json.Resources[logicalIdOf(onDemand, onDemand.stack.batchProduction.stateMachine)];
    expect(JSON.stringify(sm.Properties?.DefinitionString)).toContain('\\"MaxConcurrency\\":25');
  });
});
