/**
 * Security review of the synthesized template, as tests (docs/security.md). stack.test.ts checks
 * the grants of the roles it names; this file closes the gaps around it:
 *
 * - every IAM role in the template is in one table (trust principal, object grants per prefix,
 *   ListBucket prefixes), so a new role, or a new grant on an old one, fails until it is reviewed;
 * - derived from the template alone: who may write or delete under each prefix (uploads, models
 *   and manifests are written by no role; each output prefix by exactly one step);
 * - statement-level rules: no NotAction/NotResource, no IAM actions, no S3 action on anything but
 *   a prefix of the data bucket (ListBucket only with an s3:prefix condition; ListBucketVersions only under inputs/, for the reconciler), no access at all to
 *   the access-log bucket, only the reviewed managed policy;
 * - resource policies grant nothing to anonymous principals; TLS (and TLS ≥ 1.2) is enforced on
 *   both buckets, both topics and the dead-letter queue; topics use the rotating CMK; no literal
 *   credentials in the template.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFIX } from '#shared/schemas';
import { STATISTICS_DATASETS_PREFIX as DATASETS, STATISTICS_PARTIALS_PREFIX as PARTIALS } from '../lib/names.ts';
import type { Statement, Synthesized } from './helpers.ts';
import { allStatements, logicalIdOf, objectPrefix, refOf, s3Grants, statementsOfRole, synth } from './helpers.ts';

const P = PREFIX;

/** One row per role: who assumes it, the object actions it has on each data-bucket prefix, what it may list. */
interface RoleRule {
  readonly find: (s: Synthesized) => string;
  readonly service: string;
  readonly objects: Readonly<Record<string, readonly string[]>>;
  readonly list: readonly string[];
}

const R = 's3:GetObject';
const V = 's3:GetObjectVersion';
const W = 's3:PutObject';
const A = 's3:AbortMultipartUpload';
const D = 's3:DeleteObject';
const T = 's3:PutObjectTagging';
const MP = 's3:ListMultipartUploadParts';

const byConstruct =
  (get: (s: Synthesized) => { node: { defaultChild?: unknown } } | undefined) =>
  (s: Synthesized): string => {
    const c = get(s);
    if (!c) throw new Error('role construct missing');
    return logicalIdOf(s, c);
  };

/** The reviewed access of every role (docs/security.md has the same matrix in words). */
const ROLES: Readonly<Record<string, RoleRule>> = {
  Validate: {
    find: byConstruct((s) => s.stack.functions.validate.role),
    service: 'lambda.amazonaws.com',
    objects: { [R]: [P.inputs, P.batches, P.models, P.statistics], [V]: [P.inputs, P.batches], [W]: [P.jobs], [A]: [P.jobs] },
    // Every prefix it reads: each of its reads may find nothing (a sidecar is optional), and
    // without ListBucket S3 answers a missing key 403, not 404 (issue 19).
    list: [P.inputs, P.batches, P.models, P.statistics],
  },
  PostProcess: {
    find: byConstruct((s) => s.stack.functions.postProcess.role),
    service: 'lambda.amazonaws.com',
    objects: { [R]: [P.jobs, P.outputs], [W]: [P.outputs], [A]: [P.outputs] },
    list: [P.jobs, P.outputs],
  },
  Notify: { find: byConstruct((s) => s.stack.functions.notify.role), service: 'lambda.amazonaws.com', objects: { [R]: [P.outputs, P.failures] }, list: [] },
  RecordFailure: { find: byConstruct((s) => s.stack.functions.recordFailure.role), service: 'lambda.amazonaws.com', objects: { [W]: [P.failures], [A]: [P.failures] }, list: [] },
  PrepareItem: { find: byConstruct((s) => s.stack.functions.prepareItem.role), service: 'lambda.amazonaws.com', objects: {}, list: [] },
  BatchSummary: { find: byConstruct((s) => s.stack.functions.batchSummary.role), service: 'lambda.amazonaws.com', objects: { [W]: [P.reports], [A]: [P.reports] }, list: [] },
  Starter: { find: byConstruct((s) => s.stack.triggers.starter.role), service: 'lambda.amazonaws.com', objects: {}, list: [] },
  // HEADs the job records (404 for a missing one: ListBucket); lists the versions under inputs/ (ListBucketVersions, checked below).
  Reconciler: { find: byConstruct((s) => s.stack.reconciler.fn.role), service: 'lambda.amazonaws.com', objects: { [R]: [P.jobs, P.failures, P.outputs] }, list: [P.jobs, P.failures, P.outputs] },
  BatchMetrics: { find: byConstruct((s) => s.stack.observability.metricsFunction.role), service: 'lambda.amazonaws.com', objects: {}, list: [] },
  GenerateJob: {
    find: byConstruct((s) => s.stack.gpu.generateRole),
    service: 'ecs-tasks.amazonaws.com',
    objects: { [R]: [P.models, P.statistics, P.jobs], [W]: [P.jobs], [A]: [P.jobs], [D]: [P.jobs], [T]: [P.jobs] },
    list: [P.models, P.jobs],
  },
  StatisticsShardJob: {
    find: byConstruct((s) => s.stack.gpu.statisticsShardRole),
    service: 'ecs-tasks.amazonaws.com',
    objects: { [R]: [P.models, DATASETS, PARTIALS], [W]: [PARTIALS], [A]: [PARTIALS] },
    list: [P.models, DATASETS, PARTIALS],
  },
  StatisticsMergeJob: {
    find: byConstruct((s) => s.stack.gpu.statisticsMergeRole),
    service: 'ecs-tasks.amazonaws.com',
    objects: { [R]: [PARTIALS], [W]: [P.statistics], [A]: [P.statistics] },
    list: [PARTIALS],
  },
  BatchExecution: { find: byConstruct((s) => s.stack.gpu.executionRole), service: 'ecs-tasks.amazonaws.com', objects: {}, list: [] },
  BatchInstance: { find: byConstruct((s) => s.stack.gpu.instanceRole), service: 'ec2.amazonaws.com', objects: {}, list: [] },
  GenerationWorkflow: { find: byConstruct((s) => s.stack.generation.stateMachine.role), service: 'states.amazonaws.com', objects: {}, list: [] },
  BatchWorkflow: {
    find: byConstruct((s) => s.stack.batchProduction.stateMachine.role),
    service: 'states.amazonaws.com',
    objects: { [R]: [P.batches, P.reports], [W]: [P.reports], [MP]: [P.reports], [A]: [P.reports] },
    list: [],
  },
  StatisticsWorkflow: { find: byConstruct((s) => s.stack.statistics.stateMachine.role), service: 'states.amazonaws.com', objects: {}, list: [] },
  VpcFlowLogs: {
    find: (s) => {
      const ids = Object.entries(s.json.Resources)
        .filter(([, r]) => r.Type === 'AWS::IAM::Role' && JSON.stringify(r.Properties?.AssumeRolePolicyDocument).includes('vpc-flow-logs.amazonaws.com'))
        .map(([id]) => id);
      if (ids.length !== 1) throw new Error(`expected one flow-log role, found ${ids.length}`);
      return ids[0];
    },
    service: 'vpc-flow-logs.amazonaws.com',
    objects: {},
    list: [],
  },
};

/** Write-like object actions: what can replace or remove an object. */
const MUTATING = new Set([W, A, D, T, 's3:PutObjectAcl', 's3:DeleteObjectVersion', 's3:RestoreObject', 's3:PutObjectRetention', 's3:PutObjectLegalHold']);

function asArray<X>(x: X | X[] | undefined): X[] {
  return x === undefined ? [] : Array.isArray(x) ? x : [x];
}

let s: Synthesized;
let bucketId: string;
let logsBucketId: string;
let roleIds: Map<string, string>;

beforeAll(() => {
  s = synth({ notificationEmail: 'team@example.com', presignExpirySeconds: 3600 });
  bucketId = logicalIdOf(s, s.stack.storage.bucket);
  logsBucketId = logicalIdOf(s, s.stack.storage.accessLogsBucket);
  roleIds = new Map(Object.entries(ROLES).map(([name, rule]) => [name, rule.find(s)]));
});
afterAll(() => s.cleanup());

function objectGrants(roleId: string): Record<string, string[]> {
  return Object.fromEntries([...s3Grants(s, roleId, bucketId).entries()].map(([a, p]) => [a, [...p].sort()]));
}

function listPrefixes(roleId: string): string[] {
  const out: string[] = [];
  for (const st of statementsOfRole(s, roleId)) {
    if (st.Effect !== 'Allow' || !asArray(st.Action).includes('s3:ListBucket')) continue;
    const like = asArray(st.Condition?.StringLike?.['s3:prefix'] as string[] | undefined);
    // Each prefix is granted as 'p' and 'p*'; keep the bare ones.
    out.push(...like.filter((p) => !p.endsWith('*')));
  }
  return out.sort();
}

describe('IAM: every role, reviewed', () => {
  it('the table names every role in the template, each once', () => {
    const inTemplate = Object.entries(s.json.Resources)
      .filter(([, r]) => r.Type === 'AWS::IAM::Role')
      .map(([id]) => id)
      .sort();
    expect([...roleIds.values()].sort()).toEqual(inTemplate);
  });

  it.each(Object.keys(ROLES))('%s: assumed only by its service; object actions and listing only on its prefixes', (name) => {
    const rule = ROLES[name];
    const id = roleIds.get(name)!;
    const trust = (s.json.Resources[id].Properties?.AssumeRolePolicyDocument as { Statement: { Effect: string; Action: string; Principal: unknown; Condition?: unknown }[] }).Statement;
    expect(trust.map((t) => [t.Effect, t.Action, t.Principal])).toEqual([['Allow', 'sts:AssumeRole', { Service: rule.service }]]);
    const expected = Object.fromEntries(Object.entries(rule.objects).map(([a, p]) => [a, [...p].sort()]));
    expect(objectGrants(id)).toEqual(expected);
    expect(listPrefixes(id)).toEqual([...rule.list].sort());
  });
});

describe('IAM: who can change what (derived from the template, not from the table)', () => {
  /** prefix → role names that may put/abort/delete/tag objects under it. */
  function writers(): Map<string, string[]> {
    const byId = new Map([...roleIds.entries()].map(([n, id]) => [id, n]));
    const out = new Map<string, string[]>();
    for (const [id, name] of byId) {
      for (const [action, prefixes] of s3Grants(s, id, bucketId)) {
        if (!MUTATING.has(action)) continue;
        for (const p of prefixes) {
          const list = out.get(p) ?? [];
          if (!list.includes(name)) list.push(name);
          out.set(p, list.sort());
        }
      }
    }
    return out;
  }

  it('uploads, manifests and model bundles are never written or deleted by the pipeline', () => {
    const w = writers();
    for (const p of [P.inputs, P.batches, P.models]) {
      for (const [prefix, who] of w) expect(p.startsWith(prefix) || prefix.startsWith(p) ? who : [], `writers of ${prefix} overlap ${p}`).toEqual([]);
    }
  });

  it('each output prefix has exactly the writers the design names', () => {
    expect(Object.fromEntries(writers())).toEqual({
      [P.jobs]: ['GenerateJob', 'Validate'],
      [P.outputs]: ['PostProcess'],
      [P.failures]: ['RecordFailure'],
      [P.reports]: ['BatchSummary', 'BatchWorkflow'],
      [P.statistics]: ['StatisticsMergeJob'],
      [PARTIALS]: ['StatisticsShardJob'],
    });
  });

  it('only the generation job deletes, and only its scratch under jobs/ (outputs and records are never deleted)', () => {
    const deleters = [...roleIds.entries()].filter(([, id]) => s3Grants(s, id, bucketId).has(D));
    expect(deleters.map(([n, id]) => [n, [...s3Grants(s, id, bucketId).get(D)!]])).toEqual([['GenerateJob', [P.jobs]]]);
    // No role may delete object versions: a versioned bucket keeps every overwritten object.
    for (const st of allStatements(s)) expect(asArray(st.Action)).not.toContain('s3:DeleteObjectVersion');
  });
});

describe('IAM: statement rules', () => {
  let statements: Statement[];
  beforeAll(() => {
    statements = allStatements(s);
  });

  it('uses no NotAction, NotResource or NotPrincipal, and grants no IAM or STS actions', () => {
    for (const st of statements) {
      const raw = st as unknown as Record<string, unknown>;
      expect(raw.NotAction, JSON.stringify(st)).toBeUndefined();
      expect(raw.NotResource, JSON.stringify(st)).toBeUndefined();
      expect(raw.NotPrincipal, JSON.stringify(st)).toBeUndefined();
      for (const a of asArray(st.Action)) expect(a, JSON.stringify(st)).not.toMatch(/^(iam|sts|organizations):/);
    }
  });

  it('S3 actions name a prefix of the data bucket; the bucket itself only for ListBucket with an s3:prefix condition', () => {
    let checked = 0;
    for (const st of statements.filter((x) => x.Effect === 'Allow')) {
      const s3Actions = asArray(st.Action).filter((a) => a.startsWith('s3:'));
      if (s3Actions.length === 0) continue;
      for (const r of asArray(st.Resource)) {
        const prefix = objectPrefix(r, bucketId);
        if (prefix !== null) {
          expect(prefix, JSON.stringify(st)).not.toBe('');
          expect(s3Actions, JSON.stringify(st)).not.toContain('s3:ListBucket');
        } else {
          // Not an object ARN of the data bucket: it must be the bucket ARN, for ListBucket alone (or
          // ListBucketVersions alone, under inputs/: the reconciler), with a prefix condition.
          expect(refOf(r), `S3 action on ${JSON.stringify(r)}`).toBe(bucketId);
          if (s3Actions.includes('s3:ListBucketVersions')) {
            expect(s3Actions).toEqual(['s3:ListBucketVersions']);
            expect(st.Condition).toEqual({ StringLike: { 's3:prefix': [P.inputs, `${P.inputs}*`] } });
          } else {
            expect(s3Actions).toEqual(['s3:ListBucket']);
          }
          expect(Object.keys(st.Condition ?? {})).toEqual(['StringLike']);
          const prefixes = asArray(st.Condition!.StringLike['s3:prefix'] as string[]);
          expect(prefixes.length).toBeGreaterThan(0);
          for (const p of prefixes) expect(p, JSON.stringify(st)).toMatch(/^[a-z]+\/([a-z]+\/)?\*?$/);
        }
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(20);
  });

  it('gives no role any access to the access-log bucket', () => {
    for (const st of statements) expect(JSON.stringify(st), 'a statement names the access-log bucket').not.toContain(logsBucketId);
  });

  it('attaches no managed policy but the reviewed ECS instance policy to the Batch instance role', () => {
    const attached = Object.entries(s.json.Resources)
      .filter(([, r]) => r.Type === 'AWS::IAM::Role' && r.Properties?.ManagedPolicyArns !== undefined)
      .map(([id, r]) => [id, JSON.stringify(r.Properties?.ManagedPolicyArns)]);
    expect(attached).toEqual([[roleIds.get('BatchInstance'), expect.stringContaining(':iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role')]]);
    expect(Object.values(s.json.Resources).filter((r) => r.Type === 'AWS::IAM::ManagedPolicy' || r.Type === 'AWS::IAM::User' || r.Type === 'AWS::IAM::AccessKey')).toEqual([]);
  });
});

describe('resource policies, encryption and TLS', () => {
  function policiesOf(type: string): [string, Statement[], Record<string, unknown>][] {
    return Object.entries(s.json.Resources)
      .filter(([, r]) => r.Type === type)
      .map(([id, r]) => [id, (r.Properties?.PolicyDocument as { Statement: Statement[] }).Statement, r.Properties ?? {}]);
  }
  const isTlsDeny = (st: Statement): boolean => st.Effect === 'Deny' && JSON.stringify(st.Condition) === JSON.stringify({ Bool: { 'aws:SecureTransport': 'false' } });

  it('bucket policies deny plain HTTP and TLS < 1.2 on the buckets and their objects, and allow nothing to anyone but log delivery', () => {
    const policies = policiesOf('AWS::S3::BucketPolicy');
    expect(policies.map(([, , p]) => refOf(p.Bucket)).sort()).toEqual([bucketId, logsBucketId].sort());
    for (const [id, st, p] of policies) {
      const bucket = refOf(p.Bucket)!;
      const tls = st.find(isTlsDeny);
      const tlsVersion = st.find((x) => x.Effect === 'Deny' && JSON.stringify(x.Condition) === JSON.stringify({ NumericLessThan: { 's3:TlsVersion': 1.2 } }));
      for (const deny of [tls, tlsVersion]) {
        expect(deny, id).toBeDefined();
        expect(deny!.Action, id).toBe('s3:*');
        expect(JSON.stringify(deny!.Resource), id).toContain('/*');
        expect(asArray(deny!.Resource).some((r) => refOf(r) === bucket), id).toBe(true);
      }
      for (const allow of st.filter((x) => x.Effect === 'Allow')) {
        // Only server access logging writes into the log bucket, from this account's data bucket.
        expect(bucket, JSON.stringify(allow)).toBe(logsBucketId);
        expect((allow as unknown as { Principal: unknown }).Principal).toEqual({ Service: 'logging.s3.amazonaws.com' });
        expect(allow.Action).toBe('s3:PutObject');
        expect(JSON.stringify(allow.Condition)).toContain('aws:SourceAccount');
      }
    }
  });

  it('both buckets: encrypted at rest, ACLs disabled, all public access blocked', () => {
    for (const id of [bucketId, logsBucketId]) {
      const b = s.json.Resources[id].Properties!;
      expect(b.BucketEncryption, id).toEqual({ ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] });
      expect(b.OwnershipControls, id).toEqual({ Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
      expect(b.PublicAccessBlockConfiguration, id).toEqual({ BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true });
    }
  });

  it('topics: encrypted with the rotating customer key, publish over TLS only, no anonymous allow', () => {
    const keyId = logicalIdOf(s, s.stack.topicKey);
    expect(s.json.Resources[keyId].Properties?.EnableKeyRotation).toBe(true);
    const topics = Object.entries(s.json.Resources).filter(([, r]) => r.Type === 'AWS::SNS::Topic');
    expect(topics).toHaveLength(2);
    for (const [, t] of topics) expect(refOf(t.Properties?.KmsMasterKeyId)).toBe(keyId);
    const policies = policiesOf('AWS::SNS::TopicPolicy');
    expect(policies.flatMap(([, , p]) => asArray(p.Topics as unknown[]).map(refOf)).sort()).toEqual(topics.map(([id]) => id).sort());
    const alarmTopic = logicalIdOf(s, s.stack.alarmTopic);
    for (const [id, st, p] of policies) {
      expect(st.some(isTlsDeny), id).toBe(true);
      const allows = st.filter((x) => x.Effect === 'Allow') as (Statement & { Principal: unknown })[];
      // The one allow: AWS Budgets of this account publishing its daily GPU budget alerts to the alarm topic.
      if (asArray(p.Topics as unknown[]).map(refOf).includes(alarmTopic)) {
        expect(allows.map((a) => [a.Principal, a.Action]), id).toEqual([[{ Service: 'budgets.amazonaws.com' }, 'sns:Publish']]);
        expect(JSON.stringify(allows[0].Condition)).toContain('aws:SourceAccount');
      } else {
        expect(allows, id).toEqual([]);
      }
    }
  });

  it('the topic key admits the account, and CloudWatch alarms and AWS Budgets of this account only', () => {
    const key = s.json.Resources[logicalIdOf(s, s.stack.topicKey)].Properties!.KeyPolicy as { Statement: (Statement & { Principal: unknown })[] };
    const services: unknown[] = [];
    for (const st of key.Statement.filter((x) => x.Effect === 'Allow')) {
      const principal = JSON.stringify(st.Principal);
      if (principal.includes(':root')) continue; // the account itself (IAM policies then decide)
      services.push(st.Principal);
      expect(st.Action).toEqual(['kms:Decrypt', 'kms:GenerateDataKey*']);
      expect(JSON.stringify(st.Condition)).toContain('aws:SourceAccount');
    }
    expect(services).toEqual([{ Service: 'cloudwatch.amazonaws.com' }, { Service: 'budgets.amazonaws.com' }]);
  });

  it('the dead-letter queue: SSE, TLS only, and only the upload rules may send to it', () => {
    const dlq = logicalIdOf(s, s.stack.triggers.deadLetterQueue);
    expect(s.json.Resources[dlq].Properties?.SqsManagedSseEnabled).toBe(true);
    const [[, st]] = policiesOf('AWS::SQS::QueuePolicy');
    expect(st.some(isTlsDeny)).toBe(true);
    for (const allow of st.filter((x) => x.Effect === 'Allow')) {
      expect((allow as unknown as { Principal: unknown }).Principal).toEqual({ Service: 'events.amazonaws.com' });
      expect(allow.Action).toBe('sqs:SendMessage');
      expect(Object.keys(allow.Condition ?? {})).toEqual(['ArnEquals']);
    }
  });

  it('the event bus has no resource policy (no other account may put events on it)', () => {
    expect(Object.values(s.json.Resources).filter((r) => r.Type === 'AWS::Events::EventBusPolicy')).toEqual([]);
    expect(s.json.Resources[logicalIdOf(s, s.stack.eventBus)].Properties?.Policy).toBeUndefined();
  });

  it('the template holds no literal credentials, and the presigned-URL expiry it sets is within SigV4’s 7 days', () => {
    const text = JSON.stringify(s.json);
    expect(text).not.toMatch(/\b(AKIA|ASIA)[0-9A-Z]{16}\b/);
    expect(text).not.toMatch(/BEGIN [A-Z ]*PRIVATE KEY|aws_secret_access_key|SecretAccessKey/i);
    const expiries = Object.values(s.json.Resources)
      .filter((r) => r.Type === 'AWS::Lambda::Function')
      .map((r) => (r.Properties?.Environment as { Variables?: Record<string, unknown> } | undefined)?.Variables?.CIL_PRESIGN_EXPIRY_SECONDS)
      .filter((v) => v !== undefined);
    expect(expiries).toEqual(['3600']);
  });
});
