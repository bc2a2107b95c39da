/**
 * The synthesized state-machine definitions as plain Amazon States Language: found in a
 * CloudFormation template by their `cil:workflow` metadata, with the CloudFormation functions in
 * `DefinitionString` (Fn::Join, Ref, Fn::GetAtt, Fn::Select, Fn::Split) evaluated and every
 * resource reference replaced by an ARN of the right shape. The tests run these definitions, and
 * local mode runs the same ones with its own ARNs (docs/design.md §2.3: never a second copy).
 */
import type { WorkflowName } from './names.ts';
import { WORKFLOW_METADATA_KEY } from './names.ts';

export interface TemplateResource {
  readonly Type: string;
  readonly Properties?: Record<string, unknown>;
  readonly Metadata?: Record<string, unknown>;
}

export interface Template {
  readonly Resources: Record<string, TemplateResource>;
}

export interface ResolveOptions {
  readonly partition?: string;
  readonly region?: string;
  readonly account?: string;
  /** Value of `{"Ref": logicalId}`; return undefined for the default. */
  readonly ref?: (logicalId: string, resource: TemplateResource) => string | undefined;
  /** Value of `{"Fn::GetAtt": [logicalId, attribute]}`; return undefined for the default. */
  readonly getAtt?: (logicalId: string, attribute: string, resource: TemplateResource) => string | undefined;
}

export class DefinitionError extends Error {
  override readonly name = 'DefinitionError';
}

/** The logical id of each workflow's state machine in the template. */
export function findStateMachines(template: Template): Partial<Record<WorkflowName, string>> {
  const out: Partial<Record<WorkflowName, string>> = {};
  for (const [id, r] of Object.entries(template.Resources)) {
    if (r.Type !== 'AWS::StepFunctions::StateMachine') continue;
    const name = r.Metadata?.[WORKFLOW_METADATA_KEY];
    if (name === 'generation' || name === 'batch' || name === 'statistics') out[name] = id;
  }
  return out;
}

interface Context {
  readonly template: Template;
  readonly partition: string;
  readonly region: string;
  readonly account: string;
  readonly opts: ResolveOptions;
}

function resourceOf(ctx: Context, logicalId: string): TemplateResource {
  const r = ctx.template.Resources[logicalId];
  if (!r) throw new DefinitionError(`the definition refers to '${logicalId}', which is not a resource of the template`);
  return r;
}

/** The ARN a resource of the template would have, named after its logical id. */
function arnOf(ctx: Context, id: string, r: TemplateResource): string {
  const arn = (service: string, resource: string): string => `arn:${ctx.partition}:${service}:${ctx.region}:${ctx.account}:${resource}`;
  switch (r.Type) {
    case 'AWS::Lambda::Function':
      return arn('lambda', `function:${id}`);
    case 'AWS::StepFunctions::StateMachine':
      return arn('states', `stateMachine:${id}`);
    case 'AWS::Batch::JobQueue':
      return arn('batch', `job-queue/${id}`);
    case 'AWS::Batch::JobDefinition':
      return arn('batch', `job-definition/${id}:1`);
    case 'AWS::SNS::Topic':
      return arn('sns', id);
    case 'AWS::SQS::Queue':
      return arn('sqs', id);
    case 'AWS::Events::EventBus':
      return arn('events', `event-bus/${id}`);
    case 'AWS::S3::Bucket':
      return `arn:${ctx.partition}:s3:::${id.toLowerCase()}`;
    case 'AWS::KMS::Key':
      return arn('kms', `key/${id}`);
    default:
      throw new DefinitionError(`no default ARN for ${id} (${r.Type}); pass ResolveOptions.ref/getAtt`);
  }
}

/** `Ref`: an ARN for the types whose Ref is their ARN, else a name derived from the logical id. */
function defaultRef(ctx: Context, id: string, r: TemplateResource): string {
  switch (r.Type) {
    case 'AWS::StepFunctions::StateMachine':
    case 'AWS::Batch::JobQueue':
    case 'AWS::Batch::JobDefinition':
    case 'AWS::SNS::Topic':
      return arnOf(ctx, id, r);
    case 'AWS::S3::Bucket':
      return id.toLowerCase();
    default:
      return id;
  }
}

function defaultGetAtt(ctx: Context, id: string, attr: string, r: TemplateResource): string {
  if (attr.endsWith('Arn')) return arnOf(ctx, id, r);
  if (attr === 'Name' || attr.endsWith('Name')) return id;
  throw new DefinitionError(`no default for Fn::GetAtt ${id}.${attr} (${r.Type}); pass ResolveOptions.getAtt`);
}

function evaluate(ctx: Context, v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => evaluate(ctx, x));
  if (typeof v !== 'object' || v === null) return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1) {
    const [k] = keys;
    const arg = o[k];
    switch (k) {
      case 'Ref': {
        const id = String(arg);
        if (id === 'AWS::Partition') return ctx.partition;
        if (id === 'AWS::Region') return ctx.region;
        if (id === 'AWS::AccountId') return ctx.account;
        if (id === 'AWS::URLSuffix') return 'amazonaws.com';
        if (id === 'AWS::StackName') return 'local';
        const r = resourceOf(ctx, id);
        return ctx.opts.ref?.(id, r) ?? defaultRef(ctx, id, r);
      }
      case 'Fn::GetAtt': {
        const [id, attr] = (Array.isArray(arg) ? arg : String(arg).split('.')) as [string, string];
        const r = resourceOf(ctx, id);
        return ctx.opts.getAtt?.(id, attr, r) ?? defaultGetAtt(ctx, id, attr, r);
      }
      case 'Fn::Join': {
        const [sep, parts] = arg as [string, unknown[]];
        return parts.map((p) => String(evaluate(ctx, p))).join(sep);
      }
      case 'Fn::Select': {
        const [index, list] = arg as [number | string, unknown];
        const items = evaluate(ctx, list) as unknown[];
        return items[Number(index)];
      }
      case 'Fn::Split': {
        const [sep, s] = arg as [string, unknown];
        return String(evaluate(ctx, s)).split(sep);
      }
      default:
        if (k?.startsWith('Fn::')) throw new DefinitionError(`unsupported CloudFormation function ${k} in a definition`);
    }
  }
  return Object.fromEntries(keys.map((key) => [key, evaluate(ctx, o[key])]));
}

/** The Amazon States Language definition of one state machine, parsed, with its references resolved. */
export function resolveDefinition(template: Template, logicalId: string, opts: ResolveOptions = {}): Record<string, unknown> {
  const ctx: Context = {
    template,
    partition: opts.partition ?? 'aws',
    region: opts.region ?? 'us-east-1',
    account: opts.account ?? '123456789012',
    opts,
  };
  const r = resourceOf(ctx, logicalId);
  if (r.Type !== 'AWS::StepFunctions::StateMachine') throw new DefinitionError(`'${logicalId}' is a ${r.Type}, not a state machine`);
  const raw = r.Properties?.DefinitionString;
  if (raw === undefined) throw new DefinitionError(`state machine '${logicalId}' has no DefinitionString`);
  const text = evaluate(ctx, raw);
  if (typeof text !== 'string') throw new DefinitionError(`state machine '${logicalId}': DefinitionString did not evaluate to a string`);
  return JSON.parse(text) as Record<string, unknown>;
}

/**
 * For interpreters without Distributed Map ItemReader support (aws-local-stepfunctions): a copy
 * of the definition whose map state takes its items from `itemsPath` of its input instead of
 * reading them from S3 (the caller reads the manifest and puts its lines there). ResultWriter,
 * which also needs S3, is dropped; everything else is the synthesized definition as it is.
 */
export function withInlineItems(definition: Record<string, unknown>, mapState: string, itemsPath: string): Record<string, unknown> {
  const copy = JSON.parse(JSON.stringify(definition)) as { States: Record<string, Record<string, unknown>> };
  const state = copy.States[mapState];
  if (!state || state.Type !== 'Map') throw new DefinitionError(`'${mapState}' is not a Map state of this definition`);
  delete state.ItemReader;
  delete state.ResultWriter;
  state.ItemsPath = itemsPath;
  return copy;
}
