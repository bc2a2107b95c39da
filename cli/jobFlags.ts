/**
 * The job-request flags shared by `cil local run` and `cil submit`: a few common fields as flags,
 * anything else from a JSON file (the sidecar contract, docs/contracts.md). The request is checked
 * here with the same schema Validate uses, so a typo fails before anything is uploaded.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseJsonText } from '#shared/formats';
import { parseJobRequest } from '#shared/schemas';
import { intArg } from './args.ts';
import { UsageError } from './errors.ts';

export interface RequestFlags {
  readonly prompt?: string;
  readonly model?: string;
  readonly steps?: number;
  readonly seed?: number;
  readonly request?: string;
}

export function addRequestOptions(cmd: Command): Command {
  return cmd
    .option('--prompt <text>', 'text prompt')
    .option('--model <id>', 'model id (models/<id>/ in the bucket; default: demo)')
    .option('--steps <n>', 'sampling steps', intArg('--steps', 1, 1000))
    .option('--seed <n>', 'seed (default: derived from the job id)', intArg('--seed', 0))
    .option('--request <file.json>', 'a job request (sidecar JSON); the flags above override its fields');
}

/** The request the flags ask for: only the fields given (the rest are the model's defaults). */
export function requestFromFlags(o: RequestFlags): Record<string, unknown> {
  let r: Record<string, unknown> = {};
  if (o.request !== undefined) {
    let j: unknown;
    try {
      j = parseJsonText(readFileSync(o.request, 'utf8'));
    } catch (e) {
      throw new UsageError(`--request ${o.request}: not a readable JSON file (${(e as Error).message})`);
    }
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new UsageError(`--request ${o.request}: must hold a JSON object`);
    r = { ...(j as Record<string, unknown>) };
  }
  if (o.prompt !== undefined) r.prompt = o.prompt;
  if (o.model !== undefined) r.model = o.model;
  if (o.steps !== undefined) r.steps = o.steps;
  if (o.seed !== undefined) r.seed = o.seed;
  try {
    parseJobRequest(r, 'request');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return r;
}
