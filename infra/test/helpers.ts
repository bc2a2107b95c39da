/**
 * Test helpers: synthesizing the stack once per test file (into a temporary cloud assembly),
 * reading what the tests assert on out of the template (IAM statements, S3 grants), and
 * executing a synthesized workflow locally with mocked tasks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import type { RunOptions } from 'aws-local-stepfunctions';
import { StateMachine } from 'aws-local-stepfunctions';
import { expect } from 'vitest';
import type { BuildOptions } from '../lib/app.ts';
import { buildApp } from '../lib/app.ts';
import type { CilConfig } from '../lib/config.ts';
import type { CilStack } from '../lib/stack.ts';

/** The functions/ handlers replaced by a stand-in, so these tests depend on infra/ alone. */
export const FIXTURE_HANDLER = 'infra/test/fixtures/handler.ts';

export interface Synthesized {
  readonly stack: CilStack;
  readonly template: Template;
  readonly json: { Resources: Record<string, { Type: string; Properties?: Record<string, unknown>; Metadata?: Record<string, unknown> }>; Outputs?: Record<string, unknown> };
  readonly outdir: string;
  readonly cleanup: () => void;
}

export function synth(config: Partial<CilConfig> = {}, opts: Pick<BuildOptions, 'nag'> = {}): Synthesized {
  const outdir = mkdtempSync(join(tmpdir(), 'cil-infra-'));
  const { app, stack } = buildApp({
    nag: opts.nag ?? false,
    appProps: { outdir, context: { 'aws:cdk:disable-stack-trace': true } },
    stackProps: { config, handlers: { notify: FIXTURE_HANDLER, recordFailure: FIXTURE_HANDLER } },
  });
  app.synth();
  const template = Template.fromStack(stack);
  return {
    stack,
    template,
    json: template.toJSON() as Synthesized['json'],
    outdir,
    cleanup: () => rmSync(outdir, { recursive: true, force: true }),
  };
}

export interface Statement {
  readonly Effect: string;
  readonly Action: string | string[];
  readonly Resource?: unknown;
  readonly Principal?: unknown;
  readonly Condition?: Record<string, Record<string, unknown>>;
}

function asArray<T>(x: T | T[] | undefined): T[] {
  return x === undefined ? [] : Array.isArray(x) ? x : [x];
}

/** Logical id of the resource a `{Ref}` / `{Fn::GetAtt}` points at, else undefined. */
export function refOf(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.Ref === 'string') return o.Ref;
  const ga = o['Fn::GetAtt'];
  if (Array.isArray(ga) && typeof ga[0] === 'string') return ga[0];
  return undefined;
}

/** Every statement of the identity policies attached to the role (inline policies and AWS::IAM::Policy). */
export function statementsOfRole(s: Synthesized, roleLogicalId: string): Statement[] {
  const out: Statement[] = [];
  for (const r of Object.values(s.json.Resources)) {
    if (r.Type === 'AWS::IAM::Policy') {
      const roles = asArray(r.Properties?.Roles as unknown[]).map(refOf);
      if (!roles.includes(roleLogicalId)) continue;
      out.push(...asArray((r.Properties?.PolicyDocument as { Statement: Statement[] }).Statement));
    }
  }
  const role = s.json.Resources[roleLogicalId];
  for (const p of asArray(role?.Properties?.Policies as { PolicyDocument: { Statement: Statement[] } }[])) out.push(...p.PolicyDocument.Statement);
  return out;
}

export function allStatements(s: Synthesized): Statement[] {
  const out: Statement[] = [];
  for (const r of Object.values(s.json.Resources)) {
    if (r.Type === 'AWS::IAM::Policy') out.push(...asArray((r.Properties?.PolicyDocument as { Statement: Statement[] }).Statement));
    if (r.Type === 'AWS::IAM::Role') for (const p of asArray(r.Properties?.Policies as { PolicyDocument: { Statement: Statement[] } }[])) out.push(...p.PolicyDocument.Statement);
  }
  return out;
}

/**
 * The object prefix of an S3 resource ARN written as `Fn::Join(['', [<bucket>.Arn, '/<prefix>*']])`:
 * '' for the whole bucket ('/*'), null for anything that is not an object ARN of that bucket.
 */
export function objectPrefix(resource: unknown, bucketLogicalId: string): string | null {
  if (typeof resource !== 'object' || resource === null) return null;
  const join = (resource as Record<string, unknown>)['Fn::Join'] as [string, unknown[]] | undefined;
  if (!join || join[0] !== '' || join[1].length !== 2) return null;
  const [head, tail] = join[1];
  if (refOf(head) !== bucketLogicalId || typeof tail !== 'string' || !tail.startsWith('/') || !tail.endsWith('*')) return null;
  return tail.slice(1, -1);
}

/** action → prefixes the role may use it on, for the object-level S3 actions of the data bucket. */
export function s3Grants(s: Synthesized, roleLogicalId: string, bucketLogicalId: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const st of statementsOfRole(s, roleLogicalId)) {
    if (st.Effect !== 'Allow') continue;
    for (const action of asArray(st.Action)) {
      if (!action.startsWith('s3:') || action === 's3:ListBucket') continue;
      for (const r of asArray(st.Resource)) {
        const p = objectPrefix(r, bucketLogicalId);
        if (p === null) continue;
        let set = out.get(action);
        if (!set) out.set(action, (set = new Set()));
        set.add(p);
      }
    }
  }
  return out;
}

export function logicalIdOf(s: Synthesized, construct: { node: { defaultChild?: unknown } }): string {
  return s.stack.getLogicalId(construct.node.defaultChild as never);
}

/** The parts of an Amazon States Language definition the infra tests read. */
type AslJson = Record<string, unknown>;
export interface AslState extends AslJson {
  Type: string;
  Next?: string;
  End?: boolean;
  Default?: string;
  Choices?: { Next: string }[];
  Catch?: { ErrorEquals: string[]; Next: string; ResultPath?: string }[];
  Retry?: { ErrorEquals: string[]; MaxAttempts?: number; BackoffRate?: number; IntervalSeconds?: number; JitterStrategy?: string }[];
  TimeoutSeconds?: number;
  Parameters?: AslJson;
  ItemProcessor?: Asl;
}
export interface Asl {
  StartAt: string;
  States: Record<string, AslState>;
  ProcessorConfig?: AslJson;
}

/** Each state of `path` continues (`Next`) to the one after it. */
export function expectPath(def: Asl, ...path: string[]): void {
  for (let i = 0; i + 1 < path.length; i++) expect(def.States[path[i]].Next, `${path[i]} → next`).toBe(path[i + 1]);
}

/** The Task states of a definition, those inside a Map's item processor included. */
export function tasksOf(def: Asl): [string, AslState][] {
  const out: [string, AslState][] = [];
  for (const [n, st] of Object.entries(def.States)) {
    if (st.Type === 'Task') out.push([n, st]);
    if (st.ItemProcessor) out.push(...tasksOf(st.ItemProcessor));
  }
  return out;
}

type Json = Record<string, unknown>;

/** What a local execution did: its output or error, the states it entered, each task's inputs. */
export interface AslRun {
  readonly output?: Json;
  readonly error?: { name: string; message: string };
  readonly entered: string[];
  readonly calls: Record<string, Json[]>;
}

/** A task's mock: gets the task's (processed) input and the how-manieth call this is (from 1). */
export type TaskMock = (input: Json, call: number) => unknown;

/** A mock that always returns `v`. */
export const ok = (v: unknown) => (): unknown => v;

/** An error as a task throws it: `name` is what the definition's Retry and Catch match. */
export function typedError(name: string, message: string): Error {
  return Object.assign(new Error(message), { name });
}

/** Runs a definition locally; every Task state is a mock that records its (processed) input. */
export async function runAsl(def: Asl, input: Json, handlers: Record<string, TaskMock>, context: Json): Promise<AslRun> {
  const calls: Record<string, Json[]> = {};
  const local: Record<string, (input: unknown) => Promise<never>> = {};
  for (const [name, h] of Object.entries(handlers)) {
    local[name] = async (i) => {
      const list = (calls[name] ??= []);
      list.push(i as Json);
      return (await h(i as Json, list.length)) as never;
    };
  }
  // No real waiting between retries.
  const retryIntervalOverrides = Object.fromEntries(tasksOf(def).map(([n]) => [n, 0]));
  const options: RunOptions = { overrides: { taskResourceLocalHandlers: local, retryIntervalOverrides }, context };
  const exec = new StateMachine(def as never).run(input as never, options);
  const entered: string[] = [];
  const logs = (async () => {
    for await (const e of exec.eventLogs) if (e.type === 'StateEntered' && 'state' in e) entered.push((e.state as { name: string }).name);
  })();
  try {
    const output = (await exec.result) as Json;
    await logs;
    return { output, entered, calls };
  } catch (e) {
    await logs.catch(() => undefined);
    const cause = (e as { cause?: { name: string; message: string } }).cause ?? (e as { name: string; message: string });
    return { error: { name: cause.name, message: cause.message }, entered, calls };
  }
}
