/**
 * `cil submit | status | fetch | smoke`: the pipeline's verbs against a deployed stack (docs/local.md,
 * "Remote mode"). The AWS clients are loaded when a verb runs.
 */
import { readFileSync } from 'node:fs';
import { basename, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import type { JobStatus, RemoteClients, StackInfo } from './ops.ts';
import { intArg } from '../args.ts';
import { UsageError } from '../errors.ts';
import type { RequestFlags } from '../jobFlags.ts';
import { addRequestOptions, requestFromFlags } from '../jobFlags.ts';
import { printable, printableJson } from '../printable.ts';
import { JobReporter } from '../progress.ts';

interface StackFlags {
  stack?: string;
  region?: string;
  outputsFile?: string;
}

function addStackOptions(cmd: Command): Command {
  return cmd
    .option('--stack <name>', 'CloudFormation stack (default: $CIL_STACK, else CilVideo)')
    .option('--region <region>', 'AWS Region (default: the SDK\'s: $AWS_REGION, the profile)')
    .option('--outputs-file <file>', 'read the stack outputs from `cdk deploy --outputs-file <file>` instead of DescribeStacks');
}

async function connect(o: StackFlags): Promise<{ clients: RemoteClients; stack: StackInfo; close: () => void }> {
  const ops = await import('./ops.ts');
  const { S3Client } = await import('@aws-sdk/client-s3');
  const { SFNClient } = await import('@aws-sdk/client-sfn');
  const { BatchClient } = await import('@aws-sdk/client-batch');
  const stackName = o.stack ?? process.env.CIL_STACK ?? ops.DEFAULT_STACK;
  const source = o.outputsFile ? ops.outputsFileSource(o.outputsFile) : ops.cloudFormationSource(o.region);
  const stack = await ops.discoverStack(source, stackName);
  const config = o.region ? { region: o.region } : {};
  const clients: RemoteClients = { s3: new S3Client(config), sfn: new SFNClient(config), batch: new BatchClient(config) };
  return {
    clients,
    stack,
    close: () => {
      clients.s3.destroy();
      clients.sfn.destroy();
      clients.batch.destroy();
    },
  };
}

/** Human-readable status (or JSON); returns the exit code: 0 succeeded or running, 1 failed. Text from the job and the bucket is printed escaped (printable.ts). */
export function printStatus(s: JobStatus, json: boolean, out: NodeJS.WritableStream = process.stdout): number {
  const p = (t: string): string => printable(t);
  if (json) {
    out.write(`${printableJson(s, 2)}\n`);
  } else {
    const e = s.execution;
    out.write(`job ${p(s.jobId)}: ${e ? e.status : 'no execution (yet)'}${e?.startDate ? `, started ${e.startDate}` : ''}${e?.stopDate ? `, ended ${e.stopDate}` : ''}\n`);
    if (s.step) out.write(`  step      ${s.step}${s.steps.length > 1 ? ` (after ${s.steps.slice(0, -1).join(' → ')})` : ''}\n`);
    if (s.batchJob) {
      const b = s.batchJob;
      out.write(`  batch     ${b.jobId} ${b.status}${b.statusReason ? ` (${p(b.statusReason)})` : ''}, attempts ${b.attempts}${b.exitCode !== null ? `, exit code ${b.exitCode}` : ''}${b.logStreamName ? `, log stream ${b.logStreamName}` : ''}\n`);
    }
    if (e?.error) out.write(`  error     ${p(e.error)}${e.cause ? `: ${printable(e.cause.slice(0, 300), { multiline: true })}` : ''}\n`);
    const f = s.failure as { failedStep?: string; reason?: string } | null;
    if (f) out.write(`  failed    in ${p(String(f.failedStep ?? '?'))}: ${printable(String(f.reason ?? ''), { multiline: true })}\n`);
    for (const o of s.outputs) out.write(`  output    ${p(o.key)} (${o.bytes} bytes)\n`);
  }
  return s.execution && ['FAILED', 'TIMED_OUT', 'ABORTED'].includes(s.execution.status) ? 1 : 0;
}

interface SubmitOpts extends StackFlags, RequestFlags {
  key?: string;
  wait?: boolean;
  json?: boolean;
  poll: number;
}

export function registerRemote(program: Command): void {
  addStackOptions(
    addRequestOptions(
      program
        .command('submit <image>')
        .description('upload an image to the deployed stack (outputs discovered from CloudFormation); with --wait, follow the job')
        .option('--key <key>', 'upload key under inputs/ (default: inputs/<name>-<hash of image and request>.<ext>)')
        .option('--wait', 'follow the execution until it ends, then print its status')
        .option('--poll <s>', 'seconds between polls with --wait', intArg('--poll', 1, 600), 5)
        .option('--json', 'print JSON'),
    ),
  ).action(async (image: string, o: SubmitOpts) => {
    const request = requestFromFlags(o);
    let bytes: Buffer;
    try {
      bytes = readFileSync(image);
    } catch (e) {
      throw new UsageError(`${image}: cannot read the image (${(e as Error).message})`);
    }
    const ops = await import('./ops.ts');
    const { clients, stack, close } = await connect(o);
    try {
      const s = await ops.submitImage(clients, stack, bytes, basename(image), request, o.key);
      process.stderr.write(`uploaded s3://${stack.bucket}/${printable(s.key)}${s.versionId ? ` (version ${s.versionId})` : ''} → job ${s.jobId}\n`);
      if (!o.wait) {
        process.stdout.write(o.json ? `${printableJson(s)}\n` : `${s.jobId}\n`);
        return;
      }
      const st = await ops.followRemote(clients, stack, s.jobId, { observer: new JobReporter(), pollMs: o.poll * 1000 });
      process.exitCode = printStatus(st, o.json === true);
    } finally {
      close();
    }
  });

  addStackOptions(
    program
      .command('status <job>')
      .description('show a job: its workflow step, its Batch job, its outputs (or why it failed)')
      .option('--json', 'print JSON'),
  ).action(async (job: string, o: StackFlags & { json?: boolean }) => {
    const ops = await import('./ops.ts');
    const { clients, stack, close } = await connect(o);
    try {
      process.exitCode = printStatus(await ops.jobStatus(clients, stack, job), o.json === true);
    } finally {
      close();
    }
  });

  addStackOptions(
    program
      .command('smoke')
      .description('after a deploy: a built-in image through each deployed model; reports provider, timings, cost estimate; fails unless CUDA was used')
      .option('--model <id...>', 'only these models (default: every bundle under models/)')
      .option('--steps <n>', 'denoising steps per smoke job (default: the model\'s)', intArg('--steps', 1, 1000))
      .option('--instance-type <type>', 'instance type for the cost estimate (default g6.xlarge)')
      .option('--hourly-usd <usd>', 'price per GPU-hour for the cost estimate instead', (v: string) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--hourly-usd must be a positive number, got '${v}'`);
        return n;
      })
      .option('--timeout <s>', 'give up waiting after this many seconds', intArg('--timeout', 1, 86400), 1800)
      .option('--poll <s>', 'seconds between polls', intArg('--poll', 1, 600), 10)
      .option('--allow-cpu', 'accept jobs that ran on the CPU (testing against the local pipeline only)')
      .option('--json', 'print JSON'),
  ).action(async (o: StackFlags & { model?: string[]; steps?: number; instanceType?: string; hourlyUsd?: number; timeout: number; poll: number; allowCpu?: boolean; json?: boolean }) => {
    const smoke = await import('./smoke.ts');
    const { clients, stack, close } = await connect(o);
    try {
      const r = await smoke.runSmoke(clients.s3, stack, {
        models: o.model, steps: o.steps, instanceType: o.instanceType, hourlyUsd: o.hourlyUsd, timeoutMs: o.timeout * 1000, pollMs: o.poll * 1000, allowCpu: o.allowCpu === true,
        onProgress: (l) => process.stderr.write(`${printable(l)}\n`),
      });
      process.stdout.write(o.json ? `${printableJson(r, 2)}\n` : smoke.formatSmoke(r));
      process.exitCode = r.ok ? 0 : 1;
    } finally {
      close();
    }
  });

  addStackOptions(
    program
      .command('fetch <job>')
      .description('download a job\'s outputs (video.mp4, video.gif, poster, metadata, result) into <out>/<job>/')
      .option('--out <dir>', 'folder to download into', '.'),
  ).action(async (job: string, o: StackFlags & { out: string }) => {
    const ops = await import('./ops.ts');
    const { clients, stack, close } = await connect(o);
    try {
      const files = await ops.fetchOutputs(clients, stack, job, resolve(o.out));
      for (const f of files) process.stdout.write(`${printable(relative(process.cwd(), f) || f)}\n`);
    } finally {
      close();
    }
  });
}
