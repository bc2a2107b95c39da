/**
 * Building the CDK app: the feature flags this app is written for (cdk.json's context is merged
 * over them), the stack, and the cdk-nag AWS Solutions checks.
 */
import { App, Validations } from 'aws-cdk-lib';
import type { AppProps } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ConfigError } from './config.ts';
import { DEFAULT_STACK_NAME } from './names.ts';
import type { HandlerEntries } from './functions.ts';
import type { CilStackProps } from './stack.ts';
import { CilStack } from './stack.ts';

/** Feature flags the constructs rely on (set here so tests and `cdk synth` behave the same). */
export const FEATURE_FLAGS: Readonly<Record<string, boolean>> = Object.freeze({
  // Server access logs delivered with a bucket policy, not the legacy log-delivery ACL (which
  // would need ACLs enabled on the log bucket).
  '@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy': true,
});

export { DEFAULT_STACK_NAME };

export interface BuildOptions {
  readonly appProps?: AppProps;
  readonly stackName?: string;
  readonly stackProps?: CilStackProps;
  /** Run the cdk-nag AWS Solutions checks (errors fail `cdk synth`). Default: context `cil:nag`, else true. */
  readonly nag?: boolean;
}

/** `-c cil:handlers='{"notify": "path/to/handler.ts"}'`: other handler files for the functions/ Lambdas. */
export function handlersFromContext(raw: unknown): Partial<HandlerEntries> | undefined {
  if (raw === undefined) return undefined;
  let value: unknown = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch {
      throw new ConfigError(`cil:handlers is not JSON: ${raw}`);
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`cil:handlers must be a JSON object such as {"notify": "functions/src/notify/handler.ts"}, got ${JSON.stringify(raw)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k !== 'notify' && k !== 'recordFailure') throw new ConfigError(`cil:handlers: unknown key '${k}' (allowed: notify, recordFailure)`);
    if (typeof v !== 'string' || v.length === 0) throw new ConfigError(`cil:handlers.${k} must be a file path relative to the repository root`);
    out[k] = v;
  }
  return out;
}

export function buildApp(opts: BuildOptions = {}): { app: App; stack: CilStack } {
  const app = new App({ ...opts.appProps, context: { ...FEATURE_FLAGS, ...opts.appProps?.context } });
  const stackName = opts.stackName ?? (app.node.tryGetContext('cil:stackName') as string | undefined) ?? DEFAULT_STACK_NAME;
  const stack = new CilStack(app, stackName, {
    description: 'CIL image-to-video pipeline: S3 uploads to videos on AWS Batch GPUs, orchestrated by Step Functions',
    handlers: handlersFromContext(app.node.tryGetContext('cil:handlers')),
    ...opts.stackProps,
  });
  const nagContext = app.node.tryGetContext('cil:nag') as unknown;
  const nag = opts.nag ?? !(nagContext === false || nagContext === 'false');
  if (nag) Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return { app, stack };
}
