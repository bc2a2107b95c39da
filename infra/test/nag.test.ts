/**
 * cdk-nag's AWS Solutions pack over the whole stack: nothing unacknowledged, and the
 * acknowledgements (infra/lib/nag.ts) are exactly the findings there are, each about one precise
 * resource or action and with a written reason.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../lib/app.ts';
import type { Synthesized } from './helpers.ts';
import { FIXTURE_HANDLER, synth } from './helpers.ts';

let s: Synthesized;

beforeAll(() => {
  s = synth({}, { nag: true });
});
afterAll(() => s.cleanup());

function allConstructs(root: IConstruct): IConstruct[] {
  return [root, ...root.node.children.flatMap((c) => allConstructs(c))];
}

/** The cdk-nag rule ids acknowledged on one construct, with reasons (CDK stores them as `<namespace>::<id>`). */
function ownAcknowledgements(c: IConstruct): [string, string][] {
  const out: [string, string][] = [];
  for (const m of c.node.metadata) {
    if (m.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
    for (const [id, reason] of Object.entries(m.data as Record<string, string>)) {
      const key = id.replace(/^[A-Za-z-]+::/, '');
      if (key.startsWith('AwsSolutions-')) out.push([key, reason]); // not CDK's own acknowledgements of other validators
    }
  }
  return out;
}

/** cdk-nag rule id → reasons, over every construct under `root`. */
function acknowledgements(root: IConstruct): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const c of allConstructs(root)) for (const [id, reason] of ownAcknowledgements(c)) out.set(id, [...(out.get(id) ?? []), reason]);
  return out;
}

describe('cdk-nag AwsSolutionsChecks', () => {
  it('finds nothing unacknowledged when synth runs it as a validation plugin', () => {
    const report = JSON.parse(readFileSync(join(s.outdir, 'validation-report.json'), 'utf8')) as { pluginReports: { violations: unknown[] }[] };
    for (const p of report.pluginReports) expect(p.violations).toEqual([]);
    expect(new AwsSolutionsChecks().validateScope(s.stack).violations).toEqual([]);
  });

  it('acknowledges exactly the findings there are, each precisely and with a reason', () => {
    const outdir = mkdtempSync(join(tmpdir(), 'cil-nag-'));
    try {
      const { stack: bare } = buildApp({
        nag: false,
        appProps: { outdir, context: { 'aws:cdk:disable-stack-trace': true } },
        stackProps: { nagAcknowledgements: false, handlers: { notify: FIXTURE_HANDLER, recordFailure: FIXTURE_HANDLER } },
      });
      const findings = new Set(new AwsSolutionsChecks().validateScope(bare).violations.map((v) => v.ruleName.replace(/^[A-Za-z-]+::/, '')));
      // Only IAM findings, each about one resource or action (the id carries it in brackets).
      for (const f of findings) expect(f).toMatch(/^AwsSolutions-IAM[45]\[(Resource|Action|Policy)::.+\]$/);
      const acked = acknowledgements(s.stack);
      // None stale (each still matches a finding), none missing.
      expect([...acked.keys()].sort()).toEqual([...findings].sort());
      for (const [id, reasons] of acked) for (const r of reasons) expect(r.length, id).toBeGreaterThan(40);
      // On the roles and policies concerned, never on the stack as a whole.
      expect(ownAcknowledgements(s.stack)).toEqual([]);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });

  it('fails synth on a new wildcard (the check is live)', () => {
    const app = new App({ context: { 'aws:cdk:disable-stack-trace': true }, outdir: join(s.outdir, 'negative') });
    const stack = new Stack(app, 'Wildcard');
    const role = new iam.Role(stack, 'Role', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
    role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:*'], resources: ['*'] }));
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    expect(() => app.synth()).toThrow(/AwsSolutions-IAM5\[Action::s3:\*\]/);
  });
});
