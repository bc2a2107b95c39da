/**
 * The workflows local mode runs, taken from the CDK app itself: the app is synthesized in-process
 * (no Docker, no Lambda bundling: neither changes a state-machine definition), the generation and
 * batch-production definitions are resolved from the template with local ARNs
 * (infra/lib/definitions.ts), and the Batch job definitions the Generate task names are kept for
 * their command, environment, retry strategy and timeout. Never a hand-written copy.
 *
 * Synthesis takes several seconds, so the result is cached in a JSON file keyed by a hash of
 * everything that can change it: the infra/ and shared/ sources, cdk.json's context and the
 * aws-cdk-lib version.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { findStateMachines, resolveDefinition } from '../../infra/lib/definitions.ts';
import type { Template, TemplateResource } from '../../infra/lib/definitions.ts';
import { BATCH_STATES, GENERATION_STATES, OUTPUTS } from '../../infra/lib/names.ts';
import { REPO_ROOT } from './paths.ts';

/** The local "account": ARNs look like AWS's, with this account and Region. */
export const LOCAL_PARTITION = 'aws';
export const LOCAL_REGION = 'us-east-1';
export const LOCAL_ACCOUNT = '000000000000';

/** Bump when the cached document's shape changes. */
const CACHE_FORMAT = 'cil-local-definitions/2';

export type Asl = Record<string, unknown> & { StartAt: string; States: Record<string, Record<string, unknown>> };

/** What local mode keeps of a Batch job definition (the template's properties, unresolved tokens dropped). */
export interface LocalJobDefinition {
  readonly logicalId: string;
  /** The container command (after the image's `node bin/cil.js` entrypoint); `Ref::name` is a job parameter. */
  readonly command: readonly string[];
  /** Default values of the command's `Ref::name` parameters (SubmitJob's Parameters override them). */
  readonly parameters?: Readonly<Record<string, string>>;
  /** Environment entries whose value is a plain string in the template. */
  readonly environment: Readonly<Record<string, string>>;
  /** Names of environment entries whose value is only known in AWS (a token). */
  readonly tokenEnvironment: readonly string[];
  readonly retryStrategy: { readonly attempts: number; readonly evaluateOnExit: readonly EvaluateOnExit[] };
  readonly attemptDurationSeconds: number | null;
}

export interface EvaluateOnExit {
  readonly action: 'RETRY' | 'EXIT';
  readonly onExitCode?: string;
  readonly onReason?: string;
  readonly onStatusReason?: string;
}

export interface LocalDefinitions {
  readonly format: typeof CACHE_FORMAT;
  readonly key: string;
  readonly generation: Asl;
  readonly batch: Asl;
  readonly stateMachineArns: { readonly generation: string; readonly batch: string };
  /** By the ARN the workflows pass to SubmitJob. */
  readonly jobDefinitions: Readonly<Record<string, LocalJobDefinition>>;
  readonly notificationTopicArn: string;
  readonly stackName: string;
}

export class LocalDefinitionsError extends Error {
  override readonly name = 'LocalDefinitionsError';
}

function filesUnder(dir: string, out: string[]): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) filesUnder(p, out);
    else if (e.name.endsWith('.ts')) out.push(p);
  }
}

/** Hash of every input of the synthesized definitions (sources, cdk.json, aws-cdk-lib version). */
export function definitionsKey(root = REPO_ROOT): string {
  const h = createHash('sha256').update(CACHE_FORMAT);
  const files: string[] = [];
  for (const d of ['infra/lib', 'shared/src']) filesUnder(join(root, d), files);
  files.sort();
  for (const f of files) h.update(relative(root, f)).update('\0').update(readFileSync(f)).update('\0');
  h.update(readFileSync(join(root, 'cdk.json')));
  const cdkLib = JSON.parse(readFileSync(join(root, 'node_modules', 'aws-cdk-lib', 'package.json'), 'utf8')) as { version: string };
  h.update(cdkLib.version);
  return h.digest('hex').slice(0, 32);
}

/** cdk.json's context, as `cdk synth` passes it to the app. */
function cdkJsonContext(root: string): Record<string, unknown> {
  const j = JSON.parse(readFileSync(join(root, 'cdk.json'), 'utf8')) as { context?: Record<string, unknown> };
  return j.context ?? {};
}

/** Synthesizes the app in-process and returns its template (as `cdk synth` writes it). */
export async function synthesizeTemplate(root = REPO_ROOT): Promise<{ template: Template & { Outputs?: Record<string, { Value: unknown }> }; stackName: string }> {
  // Imported here: aws-cdk-lib takes a second or two to load, and a cache hit does not need it.
  const { buildApp } = await import('../../infra/lib/app.ts');
  const outdir = mkdtempSync(join(tmpdir(), 'cil-local-synth-'));
  try {
    // Skipping Lambda bundling (what `cdk synth --exclusively`/`-e` style runs do) changes asset
    // hashes only, never a logical id or a definition.
    const { app, stack } = buildApp({ nag: false, appProps: { outdir, context: { ...cdkJsonContext(root), 'aws:cdk:bundling-stacks': [] } } });
    const assembly = app.synth();
    const artifact = assembly.getStackByName(stack.stackName);
    const template = JSON.parse(readFileSync(join(outdir, artifact.templateFile), 'utf8')) as Template & { Outputs?: Record<string, { Value: unknown }> };
    return { template, stackName: stack.stackName };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

function localArn(service: string, resource: string): string {
  return `arn:${LOCAL_PARTITION}:${service}:${LOCAL_REGION}:${LOCAL_ACCOUNT}:${resource}`;
}

function refOf(v: unknown): string | null {
  return typeof v === 'object' && v !== null && typeof (v as { Ref?: unknown }).Ref === 'string' ? (v as { Ref: string }).Ref : null;
}

function jobDefinitionOf(id: string, r: TemplateResource): LocalJobDefinition {
  const c = ((r.Properties ?? {}).ContainerProperties ?? {}) as JobContainer;
  return jobDefinitionFrom(id, r, c, (m) => new LocalDefinitionsError(m));
}

/** The parts of a job definition's container the local Batch reads. */
export interface JobContainer {
  readonly Command?: unknown[];
  readonly Environment?: { Name: string; Value: unknown }[];
}

/**
 * What the local Batch keeps of a job definition: the command (each argument through `mapArg`),
 * literal environment values (names CDK left as tokens listed apart), the retry strategy and the
 * attempt timeout. `fail` makes the caller's error for a definition it cannot run.
 */
export function jobDefinitionFrom(id: string, r: TemplateResource, c: JobContainer, fail: (message: string) => Error, mapArg: (arg: string) => string = (a) => a): LocalJobDefinition {
  const p = r.Properties ?? {};
  const environment: Record<string, string> = {};
  const tokenEnvironment: string[] = [];
  for (const e of c.Environment ?? []) {
    if (typeof e.Value === 'string') environment[e.Name] = e.Value;
    else tokenEnvironment.push(e.Name);
  }
  const rs = (p.RetryStrategy ?? {}) as { Attempts?: number; EvaluateOnExit?: { Action: string; OnExitCode?: string; OnReason?: string; OnStatusReason?: string }[] };
  const evaluateOnExit: EvaluateOnExit[] = (rs.EvaluateOnExit ?? []).map((e) => {
    const action = e.Action.toUpperCase();
    if (action !== 'RETRY' && action !== 'EXIT') throw fail(`job definition ${id}: EvaluateOnExit action '${e.Action}' is neither RETRY nor EXIT`);
    return { action, onExitCode: e.OnExitCode, onReason: e.OnReason, onStatusReason: e.OnStatusReason };
  });
  const timeout = (p.Timeout ?? {}) as { AttemptDurationSeconds?: number };
  return {
    logicalId: id,
    command: (c.Command ?? []).map((x) => {
      if (typeof x !== 'string') throw fail(`job definition ${id}: a command argument is not a plain string`);
      return mapArg(x);
    }),
    parameters: Object.fromEntries(Object.entries((p.Parameters ?? {}) as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string')),
    environment,
    tokenEnvironment,
    retryStrategy: { attempts: rs.Attempts ?? 1, evaluateOnExit },
    attemptDurationSeconds: timeout.AttemptDurationSeconds ?? null,
  };
}

/** The local definitions from a synthesized template (pure; exported for the tests). */
export function localDefinitionsFrom(template: Template & { Outputs?: Record<string, { Value: unknown }> }, stackName: string, key: string): LocalDefinitions {
  const ids = findStateMachines(template);
  if (!ids.generation || !ids.batch) throw new LocalDefinitionsError('the template has no generation or batch-production state machine (cil:workflow metadata)');
  const opts = { partition: LOCAL_PARTITION, region: LOCAL_REGION, account: LOCAL_ACCOUNT };
  const generation = resolveDefinition(template, ids.generation, opts) as Asl;
  const batch = resolveDefinition(template, ids.batch, opts) as Asl;
  // The ARN the batch workflow starts for each line is the generation workflow's local ARN.
  const runJob = ((batch.States[BATCH_STATES.runManifest]?.ItemProcessor as Asl | undefined)?.States[BATCH_STATES.runJob]?.Parameters ?? {}) as { StateMachineArn?: string };
  const generationArn = runJob.StateMachineArn;
  if (!generationArn?.endsWith(`:stateMachine:${ids.generation}`)) throw new LocalDefinitionsError(`RunJob starts '${String(generationArn)}', not the generation state machine ${ids.generation}`);
  const jobDefinitions: Record<string, LocalJobDefinition> = {};
  for (const [id, r] of Object.entries(template.Resources)) {
    if (r.Type === 'AWS::Batch::JobDefinition') jobDefinitions[localArn('batch', `job-definition/${id}:1`)] = jobDefinitionOf(id, r);
  }
  const submit = generation.States[GENERATION_STATES.generate]?.Parameters as { JobDefinition?: string } | undefined;
  if (!submit?.JobDefinition || !jobDefinitions[submit.JobDefinition]) throw new LocalDefinitionsError(`Generate submits to '${String(submit?.JobDefinition)}', which is not a job definition of the template`);
  const topicId = refOf(template.Outputs?.[OUTPUTS.notificationTopic]?.Value);
  return {
    format: CACHE_FORMAT,
    key,
    generation,
    batch,
    stateMachineArns: { generation: generationArn, batch: localArn('states', `stateMachine:${ids.batch}`) },
    jobDefinitions,
    notificationTopicArn: localArn('sns', topicId ?? 'NotificationTopic'),
    stackName,
  };
}

export interface LoadOptions {
  /** Folder of the cache file; null: no cache. */
  readonly cacheDir: string | null;
  readonly onSynth?: () => void;
}

/** The definitions: from the cache when its key matches, else synthesized (and cached). */
export async function loadLocalDefinitions(o: LoadOptions): Promise<LocalDefinitions> {
  const key = definitionsKey();
  const file = o.cacheDir === null ? null : join(o.cacheDir, `definitions-${key}.json`);
  if (file !== null && existsSync(file)) {
    try {
      const cached = JSON.parse(readFileSync(file, 'utf8')) as LocalDefinitions;
      if (cached.format === CACHE_FORMAT && cached.key === key) return cached;
    } catch {
      // A torn or foreign file: synthesize again.
    }
  }
  // Processes that start together (test files, a demo beside `local up`) synthesize once: the
  // first takes a lock, the others wait for its cache file.
  let unlock: (() => void) | null = null;
  if (file !== null && o.cacheDir !== null) {
    mkdirSync(o.cacheDir, { recursive: true });
    const lock = `${file}.lock`;
    for (;;) {
      try {
        writeFileSync(lock, `${process.pid}\n`, { flag: 'wx' });
        unlock = () => rmSync(lock, { force: true });
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const cached = await waitForFile(file, lock);
      if (cached) {
        const d = JSON.parse(readFileSync(file, 'utf8')) as LocalDefinitions;
        if (d.format === CACHE_FORMAT && d.key === key) return d;
      }
    }
  }
  try {
    o.onSynth?.();
    const { template, stackName } = await synthesizeTemplate();
    const defs = localDefinitionsFrom(template, stackName, key);
    if (file !== null) {
      // Written whole and renamed, so concurrent runs never read half a file.
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(defs));
      renameSync(tmp, file);
    }
    return defs;
  } finally {
    unlock?.();
  }
}

/**
 * Waits while another process holds `lock`: true when `file` appeared, false when the lock went
 * away without it or its holder died (the caller then tries to take the lock itself).
 */
async function waitForFile(file: string, lock: string): Promise<boolean> {
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (existsSync(file)) return true;
    let pid: number;
    try {
      pid = Number(readFileSync(lock, 'utf8').trim());
    } catch {
      return existsSync(file);
    }
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) {
      rmSync(lock, { force: true });
      return false;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new LocalDefinitionsError(`waited 180 s for another process (lock ${lock}) to synthesize the definitions; remove the lock if that process is gone`);
}
