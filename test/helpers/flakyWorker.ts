/**
 * A worker image whose container crashes on chosen attempts (a driver fault, a bad host): run as
 * the local Batch entrypoint `node test/helpers/flakyWorker.ts <plan.json> --`, followed by the
 * job definition's command. The plan maps an upload key (the input.key of the job spec at
 * $CIL_JOB_SPEC_URI, read from the local S3 as the worker reads it) to the
 * attempts that exit non-zero before doing anything (`"all"`: every attempt) and the exit code;
 * every other job runs the real worker (`bin/cil.js`) in this process.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { S3Client } from '@aws-sdk/client-s3';
import { readLocation } from '../../storage/src/location.ts';

export interface FlakyPlan {
  readonly [inputKey: string]: { readonly attempts: readonly number[] | 'all'; readonly exitCode: number };
}

const args = process.argv.slice(2);
const sep = args.indexOf('--');
if (sep !== 1) {
  process.stderr.write('usage: flakyWorker.ts <plan.json> -- <worker command…>\n');
  process.exit(2);
}
const plan = JSON.parse(readFileSync(args[0], 'utf8')) as FlakyPlan;
const specUri = process.env.CIL_JOB_SPEC_URI;
const spec = (specUri ? JSON.parse(Buffer.from(await readLocation(specUri, new S3Client({}))).toString('utf8')) : {}) as { input?: { key?: string } };
const attempt = Number(process.env.AWS_BATCH_JOB_ATTEMPT ?? '1');
const entry = plan[spec.input?.key ?? ''];
if (entry && (entry.attempts === 'all' || entry.attempts.includes(attempt))) {
  process.stderr.write(`flaky worker: simulated crash on attempt ${attempt} (exit ${entry.exitCode})\n`);
  process.exit(entry.exitCode);
}
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'cil.js');
process.argv = [process.argv[0], cli, ...args.slice(sep + 1)];
await import(pathToFileURL(cli).href);
