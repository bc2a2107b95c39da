/**
 * The fine-tuning workflow (infra/lib/workflows/finetune.ts, docs/finetuning.md), synthesized with
 * `finetune` on: its compute (on-demand, placement group, one subnet, nodes open to each other only),
 * the multi-node, export and publish job definitions, the image asset, prefix-scoped IAM, the state
 * machine as ASL (validated, then executed with mocked tasks), cdk-nag with exact acknowledgements,
 * and the names it shares with tools/finetune/batch.py.
 */
import { mkdtempSync, readFileSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Validations } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { StateMachine } from 'aws-local-stepfunctions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFIX } from '#shared/schemas';
import { buildApp } from '../lib/app.ts';
import { ConfigError, DEFAULT_CONFIG, resolveConfig } from '../lib/config.ts';
import { resolveDefinition } from '../lib/definitions.ts';
import { FINETUNE_ENV, FINETUNE_OUTPUT, FINETUNE_PREFIXES as P, FINETUNE_STATES as F, WORKFLOW_METADATA_KEY } from '../lib/names.ts';
import { REPO_ROOT } from '../lib/paths.ts';
import { BATCH_TRANSIENT_ERRORS, SFN_TRANSIENT_ERRORS, SNS_TRANSIENT_ERRORS } from '../lib/workflows/asl.ts';
import { FINETUNE_DOCKERFILE, RENDEZVOUS_PORT } from '../lib/workflows/finetune.ts';
import type { Asl, AslRun, Statement, Synthesized, TaskMock } from './helpers.ts';
import { FIXTURE_HANDLER, allStatements, expectPath, logicalIdOf, objectPrefix, ok, refOf, runAsl, s3Grants, statementsOfRole, synth, typedError } from './helpers.ts';

type Json = Record<string, unknown>;

let s: Synthesized;
let bucketId: string;
let def: Asl;

beforeAll(() => {
  s = synth({ finetune: true }, { nag: true });
  bucketId = logicalIdOf(s, s.stack.storage.bucket);
  const id = Object.entries(s.json.Resources).find(([, r]) => r.Type === 'AWS::StepFunctions::StateMachine' && r.Metadata?.[WORKFLOW_METADATA_KEY] === 'finetune')?.[0];
  def = resolveDefinition(s.json, id!) as unknown as Asl;
}, 120_000);
afterAll(() => s.cleanup());

function props(construct: { node: { defaultChild?: unknown } }): Json {
  return s.json.Resources[logicalIdOf(s, construct)].Properties as Json;
}

function grantsOf(role: { node: { defaultChild?: unknown } }): Record<string, string[]> {
  const m = s3Grants(s, logicalIdOf(s, role), bucketId);
  return Object.fromEntries([...m.entries()].map(([a, p]) => [a, [...p].sort()]));
}

describe('configuration', () => {
  it('is off by default and adds nothing then', () => {
    expect(DEFAULT_CONFIG.finetune).toBe(false);
    const off = synth();
    try {
      expect(off.stack.finetune).toBeUndefined();
      const types = Object.values(off.json.Resources).map((r) => r.Type);
      expect(types.filter((t) => t === 'AWS::StepFunctions::StateMachine')).toHaveLength(3);
      expect(types.filter((t) => t === 'AWS::EC2::PlacementGroup')).toHaveLength(0);
      expect(off.json.Outputs?.[FINETUNE_OUTPUT]).toBeUndefined();
    } finally {
      off.cleanup();
    }
  });

  it('reads -c strings and refuses a default job the fleet could never run', () => {
    const ctx = (v: Record<string, unknown>) => (k: string) => v[k];
    const c = resolveConfig(ctx({ 'cil:finetune': 'true', 'cil:finetuneInstanceTypes': 'p4d.24xlarge, p5.48xlarge', 'cil:finetuneNodes': '1' }));
    expect([c.finetune, c.finetuneInstanceTypes, c.finetuneNodes]).toEqual([true, ['p4d.24xlarge', 'p5.48xlarge'], 1]);
    expect(() => resolveConfig(ctx({ 'cil:finetune': 'true', 'cil:finetuneNodes': '3' }))).toThrow(/finetuneNodes \(3\) × finetuneNode.vcpus \(92\) exceeds cil:finetuneMaxVcpus \(192\)/);
    expect(() => resolveConfig(ctx({ 'cil:finetuneInstanceTypes': 'm5.24xlarge' }))).toThrow(ConfigError);
  });
});

describe('compute', () => {
  it('runs on-demand GPU instances in one subnet with a cluster placement group', () => {
    const ft = s.stack.finetune!;
    const ce = props(ft.computeEnvironment).ComputeResources as Json;
    expect(ce).toMatchObject({ Type: 'EC2', MinvCpus: 0, MaxvCpus: 192, InstanceTypes: ['p4d.24xlarge'], Ec2Configuration: [{ ImageType: 'ECS_AL2023_NVIDIA' }] });
    expect(refOf(ce.PlacementGroup) ?? JSON.stringify(ce.PlacementGroup)).toContain(logicalIdOf(s, ft.placementGroup));
    expect(props(ft.placementGroup).Strategy).toBe('cluster');
    expect(ce.Subnets).toHaveLength(1);
    // The pipeline's instance role (the ECS agent's AWS-managed policy, acknowledged once), in its own profile.
    const profile = s.json.Resources[refOf(ce.InstanceRole)!].Properties as { Roles: unknown[] };
    expect(profile.Roles.map(refOf)).toEqual([logicalIdOf(s, s.stack.gpu.instanceRole)]);
    const queue = props(ft.jobQueue).ComputeEnvironmentOrder as { ComputeEnvironment: unknown }[];
    expect(queue.map((o) => refOf(o.ComputeEnvironment))).toEqual([logicalIdOf(s, ft.computeEnvironment)]);
  });

  it('opens the nodes to each other only, blocks instance metadata from tasks and encrypts the volume', () => {
    const ft = s.stack.finetune!;
    const sgId = logicalIdOf(s, ft.securityGroup);
    const ingress = Object.values(s.json.Resources).filter((r) => r.Type === 'AWS::EC2::SecurityGroupIngress' && refOf((r.Properties as Json).GroupId) === sgId);
    expect(ingress).toHaveLength(1);
    expect(ingress[0].Properties).toMatchObject({ IpProtocol: 'tcp', FromPort: 0, ToPort: 65535 });
    expect(refOf((ingress[0].Properties as Json).SourceSecurityGroupId)).toBe(sgId);
    expect(JSON.stringify(props(ft.securityGroup).SecurityGroupIngress ?? [])).not.toContain('0.0.0.0/0');
    const data = (props(ft.launchTemplate).LaunchTemplateData as Json) as { MetadataOptions: Json; BlockDeviceMappings: Json[]; UserData: unknown };
    expect(data.MetadataOptions).toMatchObject({ HttpTokens: 'required', HttpPutResponseHopLimit: 1 });
    expect(data.BlockDeviceMappings[0]).toMatchObject({ Ebs: { Encrypted: true, VolumeSize: 2000, VolumeType: 'gp3' } });
    const userData = JSON.stringify(data.UserData);
    expect(userData).toContain('ECS_AWSVPC_BLOCK_IMDS=true');
    expect(userData).toContain('ECS_CONTAINER_STOP_TIMEOUT=600s');
  });

  it('defines the training job as a multi-node parallel job over all GPUs of each node, with an open node range', () => {
    const ft = s.stack.finetune!;
    const job = props(ft.trainJob) as { Type: string; NodeProperties: { MainNode: number; NumNodes: number; NodeRangeProperties: { TargetNodes: string; Container: Json }[] }; RetryStrategy: Json; Timeout: Json };
    expect(job.Type).toBe('multinode');
    expect(job.NodeProperties).toMatchObject({ MainNode: 0, NumNodes: 2 });
    expect(job.NodeProperties.NodeRangeProperties).toHaveLength(1);
    const [range] = job.NodeProperties.NodeRangeProperties;
    expect(range.TargetNodes).toBe('0:');
    const c = range.Container;
    expect(c.Command).toEqual(['train']);
    expect(c.ResourceRequirements).toEqual(expect.arrayContaining([{ Type: 'GPU', Value: '8' }, { Type: 'VCPU', Value: '92' }, { Type: 'MEMORY', Value: '1100000' }]));
    expect(c.LinuxParameters).toMatchObject({ InitProcessEnabled: true, SharedMemorySize: 65536 });
    expect(c.Ulimits).toEqual([{ Name: 'memlock', SoftLimit: -1, HardLimit: -1 }]);
    expect(refOf(c.JobRoleArn)).toBe(logicalIdOf(s, ft.trainRole));
    expect(job.Timeout).toEqual({ AttemptDurationSeconds: 72 * 3600 });
    expect(job.RetryStrategy.Attempts).toBe(3);
    expect(job.RetryStrategy.EvaluateOnExit).toEqual(expect.arrayContaining([{ Action: 'RETRY', OnExitCode: '143' }, { Action: 'EXIT', OnExitCode: '3' }]));
    expect(JSON.stringify(c.Image)).toContain('cdk-hnb659fds-container-assets');
  });

  it('exports on one GPU of the fine-tuning queue and publishes on CPU', () => {
    const ft = s.stack.finetune!;
    const exp = (props(ft.exportJob).ContainerProperties as Json) as { Command: string[]; ResourceRequirements: Json[] };
    expect(exp.Command).toEqual(['export']);
    expect(exp.ResourceRequirements).toEqual(expect.arrayContaining([{ Type: 'GPU', Value: '1' }]));
    const pub = (props(ft.publishJob).ContainerProperties as Json) as { Command: string[]; ResourceRequirements: { Type: string }[] };
    s.template.resourceCountIs('AWS::EC2::PlacementGroup', 1);
    s.template.hasResourceProperties('AWS::Batch::JobDefinition', { Type: 'multinode', NodeProperties: Match.objectLike({ MainNode: 0, NumNodes: DEFAULT_CONFIG.finetuneNodes }) });
    expect(pub.Command).toEqual(['publish']);
    expect(pub.ResourceRequirements.map((r) => r.Type).sort()).toEqual(['MEMORY', 'VCPU']);
  });

  it('records the Python image (tools/finetune/Dockerfile) as an asset whose context holds tools/ without tests', () => {
    const assets = JSON.parse(readFileSync(join(s.outdir, `${s.stack.stackName}.assets.json`), 'utf8')) as { dockerImages: Record<string, { source: { directory: string; dockerFile: string; platform: string } }> };
    const image = Object.values(assets.dockerImages).find((a) => a.source.dockerFile === FINETUNE_DOCKERFILE);
    expect(image).toBeDefined();
    expect(image!.source.platform).toBe('linux/amd64');
    const staged = join(s.outdir, image!.source.directory);
    expect(existsSync(join(staged, FINETUNE_DOCKERFILE))).toBe(true);
    expect(existsSync(join(staged, 'tools', 'finetune', 'batch.py'))).toBe(true);
    expect(existsSync(join(staged, 'tools', 'export', 'cli.py'))).toBe(true);
    expect(existsSync(join(staged, 'tools', 'finetune', 'tests'))).toBe(false);
    expect(readdirSync(staged).sort()).toEqual(['tools']);
    expect(s.stack.finetune!.image.imageTag).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('IAM', () => {
  it('scopes each job role to its prefixes', () => {
    const ft = s.stack.finetune!;
    expect(grantsOf(ft.trainRole)).toEqual({
      's3:GetObject': [P.inputs, P.runs].sort(),
      's3:PutObject': [P.runs],
      's3:AbortMultipartUpload': [P.runs],
      's3:DeleteObject': [P.runs],
    });
    expect(grantsOf(ft.exportRole)).toEqual({
      's3:GetObject': [P.inputs, P.runs].sort(),
      's3:PutObject': [P.runs, P.stagingModels].sort(),
      's3:AbortMultipartUpload': [P.runs, P.stagingModels].sort(),
      's3:DeleteObject': [P.stagingModels],
    });
    expect(grantsOf(ft.publishRole)).toEqual({
      's3:GetObject': [PREFIX.models, P.stagingStatistics].sort(),
      's3:PutObject': [P.runs, PREFIX.models, PREFIX.statistics].sort(),
      's3:AbortMultipartUpload': [P.runs, PREFIX.models, PREFIX.statistics].sort(),
      's3:DeleteObject': [P.stagingModels, P.stagingStatistics].sort(),
    });
    const list = statementsOfRole(s, logicalIdOf(s, ft.trainRole)).filter((x) => x.Action === 's3:ListBucket');
    expect(list[0]?.Condition).toEqual({ StringLike: { 's3:prefix': [P.inputs, `${P.inputs}*`, P.runs, `${P.runs}*`] } });
  });

  it('grants no wildcard actions, no bucket-wide object access, and Resource "*" only where AWS requires it', () => {
    const allowedOnStar = new Set(['batch:DescribeJobs', 'batch:ListJobs', 'ecr:GetAuthorizationToken', 'xray:PutTraceSegments', 'xray:PutTelemetryRecords', 'xray:GetSamplingRules', 'xray:GetSamplingTargets',
      'logs:CreateLogDelivery', 'logs:GetLogDelivery', 'logs:UpdateLogDelivery', 'logs:DeleteLogDelivery', 'logs:ListLogDeliveries', 'logs:PutResourcePolicy', 'logs:DescribeResourcePolicies', 'logs:DescribeLogGroups']);
    for (const st of allStatements(s).filter((x: Statement) => x.Effect === 'Allow')) {
      const actions = Array.isArray(st.Action) ? st.Action : [st.Action];
      for (const a of actions) {
        expect(a).not.toMatch(/^[a-z0-9-]+:\*$|^\*$/);
        if (st.Resource === '*') expect(allowedOnStar, a).toContain(a);
      }
      for (const r of Array.isArray(st.Resource) ? st.Resource : [st.Resource]) expect(objectPrefix(r, bucketId)).not.toBe('');
    }
  });

  it('lets the workflow submit to its own queues and job definitions, start the statistics workflow, and nothing in the bucket', () => {
    const ft = s.stack.finetune!;
    const st = statementsOfRole(s, logicalIdOf(s, ft.stateMachine.role));
    const submit = st.find((x) => x.Action === 'batch:SubmitJob')!;
    expect((submit.Resource as unknown[]).map(refOf).sort()).toEqual(
      [ft.jobQueue, s.stack.gpu.jobQueue, ft.trainJob, ft.exportJob, ft.publishJob].map((c) => logicalIdOf(s, c as never)).sort(),
    );
    const start = st.find((x) => x.Action === 'states:StartExecution')!;
    expect(refOf(start.Resource)).toBe(logicalIdOf(s, s.stack.statistics.stateMachine));
    expect(grantsOf(ft.stateMachine.role)).toEqual({});
  });
});

describe('the state machine', () => {
  const TRANSIENT = new Set<string>([...BATCH_TRANSIENT_ERRORS, ...SFN_TRANSIENT_ERRORS, ...SNS_TRANSIENT_ERRORS]);

  it('is valid ASL: fine-tune → export → statistics (optional) → publish, every task timed out, retried only on transient errors, caught', () => {
    expect(() => new StateMachine(def as never)).not.toThrow();
    const st = def.States;
    expect(def.StartAt).toBe(F.applyDefaults);
    expectPath(def, F.applyDefaults, F.mergeDefaults, F.checkInput);
    // Intrinsic functions with no string literals (which would need \\{ escapes in Step Functions).
    expect(JSON.stringify(def)).not.toMatch(/States\.StringToJson/);
    expectPath(def, F.prepare, F.buildSpec, F.train, F.export, F.hasStatistics);
    expectPath(def, F.statistics, F.publish, F.notifySucceeded);
    for (const [name, state] of Object.entries(st)) {
      const targets = [state.Next, state.Default, ...(state.Choices ?? []).map((c) => c.Next), ...(state.Catch ?? []).map((c) => c.Next)].filter((x): x is string => !!x);
      for (const t of targets) expect(st[t], `${name} → ${t}`).toBeDefined();
      if (state.Type !== 'Task') continue;
      expect(state.TimeoutSeconds, name).toBeGreaterThan(0);
      for (const r of state.Retry ?? []) {
        for (const e of r.ErrorEquals) expect(TRANSIENT.has(e), `${name} retries ${e}`).toBe(true);
        expect(r.JitterStrategy).toBe('FULL');
      }
      if (name !== F.notifyFailed && name !== F.notifySucceeded) expect(state.Catch, name).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: F.notifyFailed }]);
    }
    expect(st[F.train].Resource).toBe('arn:aws:states:::batch:submitJob.sync');
    expect(st[F.statistics].Resource).toBe('arn:aws:states:::states:startExecution.sync:2');
    expect(st[F.failed]).toMatchObject({ Type: 'Fail', ErrorPath: '$.error.Error', CausePath: '$.error.Cause' });
  });
});

// ---------------------------------------------------------------- local executions

const CONTEXT = { Execution: { Id: 'arn:aws:states:us-east-1:123456789012:execution:Finetune:ft-7', Name: 'ft-7', StartTime: '2025-01-01T00:00:00Z' } };
const INPUT = {
  modelId: 'dynamicrafter-320x512-cil-webvid',
  family: 'dynamicrafter',
  code: 'finetune/inputs/code/DynamiCrafter.tar.gz',
  checkpoint: 'finetune/inputs/ckpt/dc512.ckpt',
  trainConfig: 'finetune/inputs/configs/train.yaml',
  inferenceConfig: 'finetune/inputs/configs/inference.yaml',
  tokenizer: 'finetune/inputs/tokenizer.json',
  train: { steps: 20000, batchSize: 2 },
  statistics: { videosPrefix: 'statistics/datasets/webvid/', shards: 16 },
};
const BATCH_OK = { JobId: 'b-1', Status: 'SUCCEEDED' };

/** Runs the finetune workflow locally with mocked tasks. */
function run(input: Json, handlers: Record<string, TaskMock>): Promise<AslRun> {
  return runAsl(def, input, handlers, CONTEXT);
}

function specOf(call: Json, multiNode: boolean): Json {
  const env = multiNode
    ? ((call.NodeOverrides as Json).NodePropertyOverrides as { ContainerOverrides: { Environment: { Name: string; Value: string }[] } }[])[0].ContainerOverrides.Environment
    : (call.ContainerOverrides as { Environment: { Name: string; Value: string }[] }).Environment;
  expect(env.map((e) => e.Name)).toEqual([FINETUNE_ENV.spec]);
  return JSON.parse(env[0].Value) as Json;
}

describe('the state machine, executed', () => {
  it('runs the four steps; every job gets the spec with the bucket and the run id; statistics run on the staged bundle', async () => {
    const r = await run(INPUT, {
      [F.train]: ok(BATCH_OK),
      [F.export]: ok(BATCH_OK),
      [F.statistics]: ok({ ExecutionArn: 'arn:stats', Status: 'SUCCEEDED' }),
      [F.publish]: ok(BATCH_OK),
      [F.notifySucceeded]: ok({}),
    });
    expect(r.error).toBeUndefined();
    expect(r.entered).toEqual([F.applyDefaults, F.mergeDefaults, F.checkInput, `${F.checkInput}Values`, F.prepare, F.buildSpec, F.train, F.export, F.hasStatistics, F.statistics, F.publish, F.notifySucceeded, F.succeeded]);
    const train = r.calls[F.train][0];
    expect(train.JobName).toBe('cil-finetune-train');
    expect((train.NodeOverrides as Json).NumNodes).toBe(DEFAULT_CONFIG.finetuneNodes);
    const spec = specOf(train, true);
    const bucket = (s.stack.resolve(s.stack.storage.bucket.bucketName) as { Ref: string }).Ref.toLowerCase();
    expect(spec).toMatchObject({ ...INPUT, bucket, runId: 'ft-7', nodes: DEFAULT_CONFIG.finetuneNodes });
    expect(specOf(r.calls[F.export][0], false)).toEqual(spec);
    expect(specOf(r.calls[F.publish][0], false)).toEqual(spec);
    expect(String(r.calls[F.publish][0].JobQueue)).toContain(logicalIdOf(s, s.stack.gpu.jobQueue));
    expect(r.calls[F.statistics][0]).toMatchObject({
      Input: { model: '_staging/ft-7', output: '_staging/ft-7', videosPrefix: 'statistics/datasets/webvid/', shards: 16, AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID: CONTEXT.Execution.Id },
    });
    expect(r.calls[F.notifySucceeded][0]).toMatchObject({ Message: { status: 'SUCCEEDED', modelId: INPUT.modelId, run: 'ft-7' } });
  });

  it('skips the statistics when the input reuses existing ones, and takes the node count from the input', async () => {
    const { statistics: _, ...rest } = INPUT;
    const r = await run({ ...rest, statisticsId: 'dynamicrafter-320x512', nodes: 1 }, {
      [F.train]: ok(BATCH_OK),
      [F.export]: ok(BATCH_OK),
      [F.publish]: ok(BATCH_OK),
      [F.notifySucceeded]: ok({}),
    });
    expect(r.error).toBeUndefined();
    expect(r.entered).not.toContain(F.statistics);
    expect((r.calls[F.train][0].NodeOverrides as Json).NumNodes).toBe(1);
  });

  it('refuses a malformed input before submitting anything', async () => {
    for (const bad of [{ ...INPUT, family: 'sora' }, { ...INPUT, nodes: 3 }, { ...INPUT, nodes: 0 }, { ...INPUT, train: {} }, { ...INPUT, modelId: 7 }, { family: 'svd' }]) {
      const r = await run(bad, {});
      expect(r.error?.name, JSON.stringify(bad)).toBe('CIL.InvalidFinetuneInput');
      expect(r.calls).toEqual({});
    }
  });

  it('retries a transient Batch error, and notifies then fails on a failed job without running the later steps', async () => {
    const r = await run(INPUT, {
      [F.train]: (_i, call) => {
        if (call === 1) throw typedError('Batch.TooManyRequestsException', 'slow down');
        throw typedError('States.TaskFailed', '{"Status":"FAILED","StatusReason":"Essential container in task exited"}');
      },
      [F.notifyFailed]: ok({}),
    });
    expect(r.calls[F.train]).toHaveLength(2);
    expect(r.calls[F.export]).toBeUndefined();
    expect(r.calls[F.notifyFailed][0]).toMatchObject({ Message: { status: 'FAILED', modelId: INPUT.modelId } });
    expect(r.entered.at(-1)).toBe(F.failed);
    expect(r.error?.name).toBe('States.TaskFailed');
  });

  it('a failed publication (e.g. the id is taken: exit 3) fails the execution after the statistics ran', async () => {
    const r = await run(INPUT, {
      [F.train]: ok(BATCH_OK),
      [F.export]: ok(BATCH_OK),
      [F.statistics]: ok({ ExecutionArn: 'arn:stats', Status: 'SUCCEEDED' }),
      [F.publish]: () => {
        throw typedError('States.TaskFailed', '{"Attempts":[{"Container":{"ExitCode":3}}]}');
      },
      [F.notifyFailed]: ok({}),
    });
    expect(r.entered.slice(-3)).toEqual([F.publish, F.notifyFailed, F.failed]);
  });
});

describe('the rest of the stack', () => {
  it('outputs the state machine, alarms on its failures, and expires old checkpoint versions', () => {
    expect(refOf((s.json.Outputs?.[FINETUNE_OUTPUT] as Json).Value)).toBe(logicalIdOf(s, s.stack.finetune!.stateMachine));
    const alarm = props(s.stack.finetune!.failedAlarm);
    expect((alarm.AlarmActions as unknown[]).map(refOf)).toEqual([logicalIdOf(s, s.stack.alarmTopic)]);
    const rules = ((s.json.Resources[bucketId].Properties as Json).LifecycleConfiguration as { Rules: Json[] }).Rules;
    expect(rules.find((r) => r.Id === 'finetune-runs-noncurrent')).toMatchObject({ Prefix: P.runs, NoncurrentVersionExpiration: { NoncurrentDays: 1 } });
  });

  it('shares its names with tools/finetune/ (spec.py, nodes.py)', () => {
    const py = ['spec.py', 'nodes.py'].map((f) => readFileSync(join(REPO_ROOT, 'tools', 'finetune', f), 'utf8')).join('\n');
    const constant = (name: string): string => new RegExp(`^${name} = "?([^"\\n]+)"?$`, 'm').exec(py)?.[1] ?? `(no ${name})`;
    expect(constant('SPEC_ENV')).toBe(FINETUNE_ENV.spec);
    expect(constant('INPUTS_PREFIX')).toBe(P.inputs);
    expect(constant('RUNS_PREFIX')).toBe(P.runs);
    expect(constant('STAGING_MODELS')).toBe(P.stagingModels);
    expect(constant('STAGING_STATISTICS')).toBe(P.stagingStatistics);
    expect(constant('MASTER_PORT')).toBe(String(RENDEZVOUS_PORT));
    expect(readFileSync(join(REPO_ROOT, FINETUNE_DOCKERFILE), 'utf8')).toMatch(/^ENTRYPOINT \["python3", "-m", "tools\.finetune\.batch"\]$/m);
  });
});

describe('cdk-nag', () => {
  it('finds nothing unacknowledged with the workflow on, and the acknowledgements are exactly its findings', () => {
    const report = JSON.parse(readFileSync(join(s.outdir, 'validation-report.json'), 'utf8')) as { pluginReports: { violations: unknown[] }[] };
    for (const p of report.pluginReports) expect(p.violations).toEqual([]);
    const outdir = mkdtempSync(join(tmpdir(), 'cil-nag-ft-'));
    try {
      const { stack: bare } = buildApp({
        nag: false,
        appProps: { outdir, context: { 'aws:cdk:disable-stack-trace': true } },
        stackProps: { config: { finetune: true }, nagAcknowledgements: false, handlers: { notify: FIXTURE_HANDLER, recordFailure: FIXTURE_HANDLER } },
      });
      const findings = new Set(new AwsSolutionsChecks().validateScope(bare).violations.map((v) => v.ruleName.replace(/^[A-Za-z-]+::/, '')));
      const acked = new Map<string, string[]>();
      const visit = (c: IConstruct): void => {
        for (const m of c.node.metadata) {
          if (m.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
          for (const [id, reason] of Object.entries(m.data as Record<string, string>)) {
            const key = id.replace(/^[A-Za-z-]+::/, '');
            if (key.startsWith('AwsSolutions-')) acked.set(key, [...(acked.get(key) ?? []), reason]);
          }
        }
        for (const ch of c.node.children) visit(ch);
      };
      visit(s.stack);
      expect([...acked.keys()].sort()).toEqual([...findings].sort());
      for (const [id, reasons] of acked) for (const r of reasons) expect(r.length, id).toBeGreaterThan(40);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });
});
