/** The reconciler in the template: its schedule, its function and what it may do. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAMBDA_ENV } from '../lib/names.ts';
import { RECONCILER_SCHEDULE } from '../lib/reconciler.ts';
import type { Synthesized } from './helpers.ts';
import { logicalIdOf, refOf, statementsOfRole, synth } from './helpers.ts';

let s: Synthesized;
beforeAll(() => {
  s = synth();
}, 120_000);
afterAll(() => s?.cleanup());

describe('reconciler', () => {
  it('an EventBridge schedule invokes the reconciler Lambda every 15 minutes', () => {
    const fnId = logicalIdOf(s, s.stack.reconciler.fn);
    const rules = Object.values(s.json.Resources).filter((r) => r.Type === 'AWS::Events::Rule' && r.Properties?.ScheduleExpression === `rate(${RECONCILER_SCHEDULE.everyMinutes} minutes)`);
    const targeting = rules.filter((r) => (r.Properties!.Targets as { Arn: unknown }[]).some((t) => refOf(t.Arn) === fnId));
    expect(targeting).toHaveLength(1);
    expect(targeting[0].Properties!.State).toBe('ENABLED');
    const env = (s.json.Resources[fnId].Properties!.Environment as { Variables: Record<string, unknown> }).Variables;
    expect(refOf(env[LAMBDA_ENV.generationStateMachineArn])).toBe(logicalIdOf(s, s.stack.generation.stateMachine));
    expect(refOf(env[LAMBDA_ENV.bucket])).toBe(logicalIdOf(s, s.stack.storage.bucket));
  });

  it('may list the bucket, read job records and start the generation workflow; nothing else', () => {
    const fnId = logicalIdOf(s, s.stack.reconciler.fn);
    const role = refOf((s.json.Resources[fnId].Properties as { Role: unknown }).Role)!;
    const actions = statementsOfRole(s, role).flatMap((st) => (Array.isArray(st.Action) ? st.Action : [st.Action]));
    // Plus writing its X-Ray traces (every function traces; X-Ray has no resource-level permissions).
    const xray = ['xray:PutTraceSegments', 'xray:PutTelemetryRecords', 'xray:GetSamplingRules', 'xray:GetSamplingTargets', 'xray:GetSamplingStatisticSummaries'];
    expect(new Set(actions)).toEqual(new Set(['logs:CreateLogStream', 'logs:PutLogEvents', 'states:StartExecution', 's3:ListBucket', 's3:ListBucketVersions', 's3:GetObject', ...xray.filter((a) => actions.includes(a))]));
    expect(actions).toEqual(expect.arrayContaining(['xray:PutTraceSegments', 'xray:PutTelemetryRecords']));
    const versions = statementsOfRole(s, role).find((st) => st.Action === 's3:ListBucketVersions')!;
    expect(versions.Condition).toEqual({ StringLike: { 's3:prefix': ['inputs/', 'inputs/*'] } });
    const get = statementsOfRole(s, role).find((st) => st.Action === 's3:GetObject' || (Array.isArray(st.Action) && st.Action.includes('s3:GetObject')))!;
    expect(JSON.stringify(get.Resource)).toMatch(/jobs\/\*.*failures\/\*.*outputs\/\*/);
    expect(JSON.stringify(get.Resource)).not.toMatch(/inputs\//);
  });
});
