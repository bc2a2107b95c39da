/**
 * Environment configuration of the functions, read once per handler instance. Every variable is
 * documented in docs/functions.md; a present but invalid value is a ConfigurationError (a typo
 * must not silently fall back to a default).
 */
import { ConfigurationError } from './errors.ts';

export type Env = Readonly<Record<string, string | undefined>>;

/** Environment the Lambda functions receive from the stack (infra/lib/names.ts re-exports it). */
export const LAMBDA_ENV = Object.freeze({
  bucket: 'CIL_BUCKET',
  eventBus: 'CIL_EVENT_BUS_NAME',
  topicArn: 'CIL_TOPIC_ARN',
  presignExpirySeconds: 'CIL_PRESIGN_EXPIRY_SECONDS',
  generationStateMachineArn: 'CIL_GENERATION_STATE_MACHINE_ARN',
  batchStateMachineArn: 'CIL_BATCH_STATE_MACHINE_ARN',
  /** JSON list of the Batch queues the metrics function watches: `[{arn, fleet, tier, hourlyUsd}]`. */
  jobQueues: 'CIL_JOB_QUEUES',
  metricsNamespace: 'CIL_METRICS_NAMESPACE',
});

function nonEmpty(env: Env, name: string): string | null {
  const v = env[name];
  return v === undefined || v.trim() === '' ? null : v.trim();
}

export function intVar(env: Env, name: string, dflt: number, min: number, max: number): number {
  const v = nonEmpty(env, name);
  if (v === null) return dflt;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new ConfigurationError(`${name} must be an integer in [${min}, ${max}], got '${v}'`);
  return n;
}

export function boolVar(env: Env, name: string, dflt: boolean): boolean {
  const v = nonEmpty(env, name);
  if (v === null) return dflt;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new ConfigurationError(`${name} must be true or false, got '${v}'`);
}

export function stringVar(env: Env, name: string): string | null {
  return nonEmpty(env, name);
}

/** A variable the stack always sets on the function; its absence is the `error` class the function names. */
export function requiredVar(env: Env, name: string, error: new (message: string) => Error): string {
  const v = env[name];
  if (!v) throw new error(`environment variable ${name} is not set (the stack sets it on the function)`);
  return v;
}

export interface S3Config {
  readonly region: string;
  /** Custom endpoint (local S3 server); null for AWS. */
  readonly endpoint: string | null;
  readonly forcePathStyle: boolean;
}

/**
 * S3_ENDPOINT overrides AWS_ENDPOINT_URL_S3, which overrides AWS_ENDPOINT_URL. A custom endpoint
 * turns on path-style addressing (S3_FORCE_PATH_STYLE can say otherwise).
 */
export function s3Config(env: Env): S3Config {
  const endpoint = stringVar(env, 'S3_ENDPOINT') ?? stringVar(env, 'AWS_ENDPOINT_URL_S3') ?? stringVar(env, 'AWS_ENDPOINT_URL');
  if (endpoint !== null && !/^https?:\/\/[^/\s]+\/?$/.test(endpoint)) {
    throw new ConfigurationError(`S3 endpoint must be http(s)://host[:port], got '${endpoint}'`);
  }
  return {
    region: stringVar(env, 'AWS_REGION') ?? stringVar(env, 'AWS_DEFAULT_REGION') ?? 'us-east-1',
    endpoint,
    forcePathStyle: boolVar(env, 'S3_FORCE_PATH_STYLE', endpoint !== null),
  };
}

/**
 * The first of `names` that is set, with its name. Variables have a `CIL_`-prefixed name (what the
 * CDK stack sets, LAMBDA_ENV) and a plain one; the prefixed one wins.
 */
export function firstVar(env: Env, ...names: string[]): { name: string; value: string } | null {
  for (const name of names) {
    const value = stringVar(env, name);
    if (value !== null) return { name, value };
  }
  return null;
}

/** CIL_BUCKET / DATA_BUCKET: when set, events and specs naming another bucket are refused. */
export function dataBucket(env: Env): string | null {
  return firstVar(env, LAMBDA_ENV.bucket, 'DATA_BUCKET')?.value ?? null;
}

/** CIL_TOPIC_ARN / TOPIC_ARN: the SNS topic of notifications (unset: none sent). */
export function topicArn(env: Env): string | null {
  return firstVar(env, LAMBDA_ENV.topicArn, 'TOPIC_ARN')?.value ?? null;
}

/** CIL_EVENT_BUS_NAME / EVENT_BUS_NAME: the EventBridge bus of notifications (unset: none sent). */
export function eventBusName(env: Env): string | null {
  return firstVar(env, LAMBDA_ENV.eventBus, 'EVENT_BUS_NAME')?.value ?? null;
}

export const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

export interface PresignConfig {
  readonly enabled: boolean;
  readonly expirySeconds: number;
}

/**
 * CIL_PRESIGN_EXPIRY_SECONDS / PRESIGN_EXPIRY_SECONDS: 0 … 604800 (7 days, SigV4's limit); 0 sends
 * keys only. PRESIGN_URLS (true/false) defaults to "an expiry above 0 is set"; on without an
 * expiry, URLs last 3600 s.
 */
export function presignConfig(env: Env): PresignConfig {
  const expiry = firstVar(env, LAMBDA_ENV.presignExpirySeconds, 'PRESIGN_EXPIRY_SECONDS');
  const seconds = expiry === null ? null : intVar(env, expiry.name, 0, 0, MAX_PRESIGN_SECONDS);
  const enabled = boolVar(env, 'PRESIGN_URLS', seconds !== null && seconds > 0);
  if (enabled && seconds === 0) throw new ConfigurationError(`PRESIGN_URLS is on but ${expiry?.name} is 0`);
  return { enabled, expirySeconds: seconds === null || seconds === 0 ? 3600 : seconds };
}

/** FFMPEG_PATH (default /usr/bin/ffmpeg, Debian's; the Lambda image installs the same package). */
export function ffmpegPath(env: Env): string {
  return stringVar(env, 'FFMPEG_PATH') ?? '/usr/bin/ffmpeg';
}
