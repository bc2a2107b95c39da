/**
 * How every Lambda of the stack is built: Node.js 24, its own log group with retention, its own
 * role that may write only to that log group (plus what its caller grants), X-Ray tracing active
 * (every handler runs under Powertools Tracer, functions/src/powertools.ts), and, for the
 * TypeScript handlers, esbuild bundling on this machine (no Docker).
 */
import type { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import type { CilConfig } from './config.ts';
import { REPO_ROOT, repoPath } from './paths.ts';

export const NODE_RUNTIME = lambda.Runtime.NODEJS_24_X;

/**
 * Every function traces to X-Ray (Powertools Tracer in each handler). Lambda adds xray:Put* and
 * xray:GetSampling* on "*" to the role (X-Ray has no resource-level permissions); nag.ts
 * acknowledges that on every function role.
 */
export const TRACING = lambda.Tracing.ACTIVE;

export interface FunctionBase {
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
}

/** A log group and a role that can write to it and nothing else. */
export function functionBase(scope: Construct, id: string, config: CilConfig, description: string): FunctionBase {
  const logGroup = new logs.LogGroup(scope, `${id}Logs`, { retention: config.logRetentionDays });
  const role = new iam.Role(scope, `${id}Role`, { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'), description });
  role.addToPolicy(new iam.PolicyStatement({ actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [logGroup.logGroupArn] }));
  return { role, logGroup };
}

export interface NodeFunctionProps {
  /** Handler file, relative to the repository root. */
  readonly entry: string;
  readonly handler?: string;
  readonly description: string;
  readonly timeout: Duration;
  readonly memorySize?: number;
  readonly environment?: Record<string, string>;
  /** JSON log lines from the runtime; off for functions that print Embedded Metric Format lines themselves. */
  readonly jsonLogs?: boolean;
  /** Where asynchronous invocations go after Lambda's own retries have failed. */
  readonly deadLetterQueue?: sqs.IQueue;
}

export interface NodeFunction extends FunctionBase {
  readonly fn: nodejs.NodejsFunction;
}

/**
 * A TypeScript handler bundled by the locally installed esbuild into one ES module. The AWS SDK
 * v3 is left out of the bundle: the Node.js 24 runtime provides it.
 */
export function nodeFunction(scope: Construct, id: string, config: CilConfig, props: NodeFunctionProps): NodeFunction {
  const base = functionBase(scope, id, config, props.description);
  const fn = new nodejs.NodejsFunction(scope, id, {
    entry: repoPath(props.entry),
    handler: props.handler ?? 'handler',
    runtime: NODE_RUNTIME,
    architecture: lambda.Architecture.ARM_64,
    description: props.description,
    timeout: props.timeout,
    memorySize: props.memorySize ?? 256,
    role: base.role,
    logGroup: base.logGroup,
    loggingFormat: props.jsonLogs === false ? lambda.LoggingFormat.TEXT : lambda.LoggingFormat.JSON,
    environment: props.environment,
    deadLetterQueue: props.deadLetterQueue,
    tracing: TRACING,
    projectRoot: REPO_ROOT,
    depsLockFilePath: repoPath('package-lock.json'),
    bundling: {
      forceDockerBundling: false,
      format: nodejs.OutputFormat.ESM,
      target: 'node24',
      minify: true,
      sourceMap: true,
      mainFields: ['module', 'main'],
      // Some bundled CommonJS dependencies call require(); give the ES module one.
      banner: "import { createRequire as __cilCreateRequire } from 'node:module'; const require = __cilCreateRequire(import.meta.url);",
    },
  });
  return { ...base, fn };
}
