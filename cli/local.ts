/**
 * `cil local up|run|down|notifications|load`: the whole pipeline on this machine (docs/local.md). The
 * pipeline's modules (S3 server, interpreter, CDK synthesis) are loaded only when a verb runs, so
 * every other `cil` command (the worker's included) starts as fast as before.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import type { LocalNotification } from '../local/src/notifications.ts';
import type { PipelineEvent } from '../local/src/pipeline.ts';
import type { RunImageResult, UpInfo } from '../local/src/run.ts';
import { inputKeyProblem } from '#shared/schemas';
import { intArg, numberArg } from './args.ts';
import { UsageError } from './errors.ts';
import type { RequestFlags } from './jobFlags.ts';
import { addRequestOptions, requestFromFlags } from './jobFlags.ts';
import { printable, printableJson } from './printable.ts';
import { JobReporter } from './progress.ts';

const DEFAULT_DATA = '.local';

/** A path as the user would type it: relative to the working folder when inside it. */
export function displayPath(p: string): string {
  const r = relative(process.cwd(), p);
  return r.startsWith('..') ? p : r || '.';
}

/** One line per notification: channel, subject or detail type, job (control characters escaped: the reason quotes user data). */
export function formatNotification(n: LocalNotification): string {
  const m = n.message as { jobId?: string; batchId?: string; reason?: string } | null;
  const what = n.channel === 'sns' ? n.subject ?? '(no subject)' : `${n.source ?? ''} ${n.detailType ?? ''}`.trim();
  const reason = m && typeof m.reason === 'string' ? ` — ${m.reason}` : '';
  return printable(`${n.time} ${n.channel.padEnd(11)} ${what}${reason}`);
}

/** Prints where a job's outputs are (or why it failed); returns the exit code. Text from the job (error, reason, subject) is printed escaped. */
export function printRunResult(r: RunImageResult, out: NodeJS.WritableStream = process.stdout): number {
  const rec = r.record;
  const p = (s: string): string => printable(s);
  if (r.reused) out.write(`this image with this request already ran as job ${r.jobId}: ${rec ? 'its result' : 'nothing new was started'} (change the prompt, or pass --key, for a new job)\n`);
  if (!rec) {
    if (!r.reused) out.write(`job ${r.jobId} started; its progress shows in the \`cil local up\` output, its notification in \`npx cil local notifications --job ${r.jobId}\`\n`);
    return 0;
  }
  const seconds = rec.stopDate ? ((Date.parse(rec.stopDate) - Date.parse(rec.startDate)) / 1000).toFixed(1) : '?';
  if (rec.status === 'SUCCEEDED') {
    out.write(`job ${r.jobId} SUCCEEDED in ${seconds} s\n`);
    const pick = (name: string): string | undefined => r.files.find((f) => basename(f) === name);
    for (const [label, name] of [['MP4', 'video.mp4'], ['GIF', 'video.gif'], ['WebP', 'video.webp'], ['poster', 'poster.png'], ['metadata', 'metadata.json'], ['result', 'result.json']] as const) {
      const f = pick(name);
      if (f) out.write(`  ${label.padEnd(9)} ${p(displayPath(f))}\n`);
    }
  } else {
    out.write(`job ${r.jobId} ${rec.status}: ${p(rec.error ?? '')}\n`);
    const f = r.failure as { failedStep?: string; reason?: string } | null;
    if (f) out.write(`  failed step ${p(String(f.failedStep ?? '?'))}: ${printable(String(f.reason ?? ''), { multiline: true })}\n  record    ${p(displayPath(r.files[0] ?? ''))}\n`);
    else if (rec.cause) out.write(`  ${printable(rec.cause.slice(0, 500), { multiline: true })}\n`);
  }
  for (const n of r.notifications.filter((x) => x.channel === 'sns')) out.write(`  notified  ${p(n.subject ?? '')}\n`);
  return rec.status === 'SUCCEEDED' ? 0 : 1;
}

/** One line of `local up` for a pipeline event (keys and errors in it escaped), or null for none. */
export function describeEvent(e: PipelineEvent): string | null {
  const s = describeEventRaw(e);
  return s === null ? null : printable(s);
}

function describeEventRaw(e: PipelineEvent): string | null {
  switch (e.type) {
    case 'execution-started':
      return `${e.workflow} ${e.name} started (${e.key})`;
    case 'duplicate':
      return `${e.workflow} ${e.name}: duplicate event for ${e.key}, nothing started`;
    case 'ignored':
      return `ignored ${e.key}: ${e.reason}`;
    case 'state':
      return e.state.index === undefined ? `${e.workflow} ${e.name} ▸ ${e.state.name}` : null;
    case 'batch-job':
      return ['RUNNING', 'SUCCEEDED', 'FAILED'].includes(e.job.Status)
        ? `batch job ${e.job.JobId} (${e.job.JobName}) ${e.job.Status}${e.job.Container.ExitCode !== undefined && e.job.Status !== 'RUNNING' ? `, exit code ${e.job.Container.ExitCode}` : ''}`
        : null;
    case 'progress':
      return e.progress.phase === 'denoise' && e.progress.step !== e.progress.total ? null : `${e.jobId} ${e.progress.phase}${e.progress.step !== undefined ? ` ${e.progress.step}/${e.progress.total}` : ''}`;
    case 'execution-finished':
      return `${e.workflow} ${e.record.name} ${e.record.status}${e.record.error ? `: ${e.record.error}` : ''}`;
    case 'notification':
      return `notification: ${formatNotification(e.notification)}`;
    case 'error':
      return `error: ${e.message}`;
  }
}

interface UpOpts {
  port: number;
  data: string;
  workers?: number;
  json?: boolean;
}

interface RunOpts extends RequestFlags {
  data: string;
  key?: string;
  out?: string;
  wait: boolean;
  timeout: number;
}

async function up(o: UpOpts): Promise<void> {
  const dataDir = resolve(o.data);
  const { runningUp, UP_FILE } = await import('../local/src/run.ts');
  const existing = runningUp(dataDir);
  if (existing) throw new UsageError(`a local pipeline already runs for ${displayPath(dataDir)} (pid ${existing.pid}, ${existing.endpoint}); stop it with \`npx cil local down\``);
  const { startLocalPipeline, findFfmpeg } = await import('../local/src/pipeline.ts');
  if (!findFfmpeg()) process.stderr.write('warning: ffmpeg not found; PostProcess will fail. Install it: sudo bash scripts/setup-system.sh\n');
  const log = (s: string): void => {
    process.stdout.write(`${new Date().toISOString().slice(11, 23)} ${s}\n`);
  };
  const pipeline = await startLocalPipeline({
    dataDir,
    port: o.port,
    workerConcurrency: o.workers,
    onSynth: () => process.stderr.write('synthesizing the CDK app for its workflow definitions (cached after the first run)…\n'),
    onEvent: (e) => {
      if (o.json) {
        process.stdout.write(`${printableJson(e)}\n`);
        return;
      }
      const s = describeEvent(e);
      if (s !== null) log(s);
    },
  });
  const info: UpInfo = { pid: process.pid, endpoint: pipeline.endpoint, bucket: pipeline.bucket, dataDir, startedAt: new Date().toISOString() };
  const upFile = join(dataDir, UP_FILE);
  writeFileSync(upFile, `${JSON.stringify(info, null, 2)}\n`);
  process.stderr.write(
    `local pipeline up: S3 ${pipeline.endpoint}, bucket ${pipeline.bucket}, data in ${printable(displayPath(dataDir))}\n` +
      `  run an image:   npx cil local run my.png --prompt "pan left"\n` +
      `  or upload to s3://${pipeline.bucket}/inputs/ with any S3 client (endpoint ${pipeline.endpoint}, path-style, any credentials)\n` +
      `  stop:           npx cil local down   (or Ctrl-C)\n`,
  );
  await new Promise<void>((res) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      res();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  process.stderr.write('stopping the local pipeline…\n');
  try {
    await pipeline.stop();
  } finally {
    rmSync(upFile, { force: true });
  }
}

async function down(o: { data: string; timeout: number }): Promise<void> {
  const dataDir = resolve(o.data);
  const { runningUp } = await import('../local/src/run.ts');
  const info = runningUp(dataDir);
  if (!info) {
    process.stdout.write(`no local pipeline is running for ${displayPath(dataDir)}\n`);
    return;
  }
  // Only a process that is a `cil` command line (a pid can be reused after a crash).
  const cmdline = `/proc/${info.pid}/cmdline`;
  if (existsSync(cmdline) && !readFileSync(cmdline, 'utf8').includes('cil')) {
    rmSync(join(dataDir, 'up.json'), { force: true });
    throw new UsageError(`pid ${info.pid} in ${displayPath(join(dataDir, 'up.json'))} is not a cil process any more; removed the stale file`);
  }
  process.kill(info.pid, 'SIGTERM');
  const deadline = Date.now() + o.timeout * 1000;
  while (Date.now() < deadline) {
    if (runningUp(dataDir) === null) {
      process.stdout.write(`stopped the local pipeline (pid ${info.pid})\n`);
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new UsageError(`the local pipeline (pid ${info.pid}) did not stop within ${o.timeout} s`);
}

async function run(image: string, o: RunOpts): Promise<number> {
  const request = requestFromFlags(o);
  if (o.key !== undefined) {
    // Refused here, before any upload: a key Validate would refuse anyway, or one that is not an
    // image under inputs/ (its sidecar, <key>.json, could overwrite any object: a model's manifest).
    const problem = inputKeyProblem(o.key);
    if (problem !== null) throw new UsageError(`--key ${JSON.stringify(o.key)}: ${problem}`);
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(image);
  } catch (e) {
    throw new UsageError(`${image}: cannot read the image (${(e as Error).message})`);
  }
  const dataDir = resolve(o.data);
  const { runImage, runningUp } = await import('../local/src/run.ts');
  const reporter = new JobReporter();
  const common = {
    dataDir,
    image: bytes,
    fileName: basename(image),
    request,
    key: o.key,
    outDir: o.out ? resolve(o.out) : undefined,
    timeoutMs: o.timeout * 1000,
    observer: reporter,
    onUploaded: (u: { jobId: string; key: string; bucket: string }) => process.stderr.write(`uploaded s3://${u.bucket}/${printable(u.key)} → job ${u.jobId}\n`),
  };
  const attached = async (): Promise<number> => {
    return printRunResult(await runImage({ ...common, wait: o.wait }));
  };
  if (runningUp(dataDir)) return attached();
  // No `cil local up`: run one in this process for this job.
  const { startLocalPipeline } = await import('../local/src/pipeline.ts');
  let pipeline;
  try {
    pipeline = await startLocalPipeline({ dataDir, onSynth: () => process.stderr.write('synthesizing the CDK app for its workflow definitions (cached after the first run)…\n') });
  } catch (e) {
    if ((e as Error).name !== 'DataDirInUse') throw e;
    // A `cil local up` that is still starting (synthesizing): wait for it to be ready.
    process.stderr.write(`${(e as Error).message}; waiting for it to be ready…\n`);
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      if (runningUp(dataDir)) return attached();
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new UsageError(`${(e as Error).message}, and it is not a \`cil local up\` (no ${displayPath(join(dataDir, 'up.json'))} after 120 s); use another --data folder`);
  }
  process.stderr.write(`no \`cil local up\` running for ${displayPath(dataDir)}: the pipeline runs in this process for this job\n`);
  try {
    return printRunResult(await runImage({ ...common, pipeline, wait: true }));
  } finally {
    await pipeline.stop();
  }
}

async function notifications(o: { data: string; job?: string; json?: boolean }): Promise<void> {
  const { readNotifications, notificationJobId } = await import('../local/src/notifications.ts');
  const all = readNotifications(join(resolve(o.data), 'notifications.jsonl')).filter((n) => o.job === undefined || notificationJobId(n) === o.job);
  for (const n of all) process.stdout.write(o.json ? `${printableJson(n)}\n` : `${formatNotification(n)}\n`);
  if (all.length === 0 && !o.json) process.stderr.write('no notifications\n');
}

interface LoadOpts {
  jobs: number;
  workers?: number;
  invalid: number;
  steps?: number;
  timeout?: number;
  data?: string;
  json?: boolean;
  chaosS3?: number;
  chaosKill?: number;
  chaosSeed?: number;
}

/** `local load`: N uploads at once on a pipeline in this process; exit 0 when every job is accounted for as expected. */
async function load(o: LoadOpts): Promise<number> {
  const { runLoad, formatLoadReport } = await import('../bench/load/run.ts');
  const total = o.jobs;
  let done = 0;
  let report;
  try {
    report = await runLoad({
      jobs: o.jobs,
      workers: o.workers,
      invalid: o.invalid,
      steps: o.steps,
      timeoutS: o.timeout,
      chaos: o.chaosS3 !== undefined || o.chaosKill !== undefined ? { s3ErrorRate: o.chaosS3, killFraction: o.chaosKill, seed: o.chaosSeed } : undefined,
      onSynth: () => process.stderr.write('synthesizing the CDK app for its workflow definitions (cached after the first run)…\n'),
      // Without --data: a temporary data folder, and the definitions cache of `local up`'s default one (no synthesis after the first run).
      ...(o.data !== undefined ? { dataDir: resolve(o.data) } : { definitionsCacheDir: resolve(DEFAULT_DATA, 'cache') }),
      onJob: (j) => {
        done++;
        if (o.json) return;
        const t = j.latencyS === null ? '' : ` ${j.latencyS.toFixed(1)} s`;
        process.stderr.write(`[${done}/${total}] ${printable(`${j.jobId ?? '(no job)'} ${j.status}`)}${t}${j.invalid ? ' (invalid upload)' : ''}\n`);
      },
    });
  } catch (e) {
    if ((e as Error).name === 'LoadOptionsError' || (e as Error).name === 'DataDirInUse') throw new UsageError((e as Error).message);
    throw e;
  }
  // The report's lines quote keys and failure reasons: each line is escaped on its own.
  process.stdout.write(o.json ? `${printableJson(report)}\n` : formatLoadReport(report).split('\n').map((l) => printable(l)).join('\n'));
  return report.ok ? 0 : 1;
}

export function registerLocal(program: Command): void {
  const local = program.command('local').description('the whole pipeline on this machine, no AWS account: S3 server, the synthesized workflows, the worker, notifications');
  local
    .command('up')
    .description('start the local pipeline and keep it running (uploads under inputs/ start jobs)')
    .option('--port <n>', 'S3 server port on 127.0.0.1 (0: any free port)', intArg('--port', 0, 65535), 0)
    .option('--data <dir>', 'data folder (objects, executions, logs, notifications)', DEFAULT_DATA)
    .option('--workers <n>', 'worker processes at once (default: cores / 4, 1 to 4)', intArg('--workers', 1, 64))
    .option('--json', 'print pipeline events as JSON lines')
    .action(async (o: UpOpts) => up(o));
  addRequestOptions(
    local
      .command('run <image>')
      .description('upload an image to the local pipeline and follow its job (starts the pipeline for the job when `local up` is not running)')
      .option('--data <dir>', 'data folder', DEFAULT_DATA)
      .option('--key <key>', 'upload key under inputs/ (default: inputs/<name>-<hash of image and request>.<ext>)')
      .option('--out <dir>', 'copy the outputs here (default: <data>/outputs/<job>)')
      .option('--no-wait', 'with `local up` running: print the job id and return')
      .option('--timeout <s>', 'stop following after this many seconds', intArg('--timeout', 1), 1800),
  ).action(async (image: string, o: RunOpts) => {
    process.exitCode = await run(image, o);
  });
  local
    .command('down')
    .description('stop the `cil local up` of the data folder')
    .option('--data <dir>', 'data folder', DEFAULT_DATA)
    .option('--timeout <s>', 'seconds to wait for it to stop', intArg('--timeout', 1), 60)
    .action(async (o: { data: string; timeout: number }) => down(o));
  local
    .command('notifications')
    .description('print the notifications the pipeline sent (SNS and EventBridge stand-ins)')
    .option('--data <dir>', 'data folder', DEFAULT_DATA)
    .option('--job <id>', 'only this job (or batch)')
    .option('--json', 'one JSON object per line')
    .action(async (o: { data: string; job?: string; json?: boolean }) => notifications(o));
  local
    .command('load')
    .description('load test: N distinct uploads at once on a pipeline in this process; reports every job, latency percentiles, throughput and the peak of workers at once')
    .option('--jobs <n>', 'uploads, all started at once', intArg('--jobs', 1, 1000), 20)
    .option('--workers <n>', 'worker processes at once (default: cores / 4, 1 to 4)', intArg('--workers', 1, 64))
    .option('--invalid <k>', 'how many of the uploads are deliberately invalid images (they must fail at Validate)', intArg('--invalid', 0, 1000), 0)
    .option('--steps <n>', 'sampling steps of each request (default: the model\'s)', intArg('--steps', 1, 1000))
    .option('--timeout <s>', 'overall deadline in seconds (default 120 + 15 per job)', intArg('--timeout', 1, 86_400))
    .option('--data <dir>', 'data folder, kept afterwards (default: a temporary one, removed)')
    .option('--chaos-s3 <rate>', 'chaos: every S3 request fails with 503 SlowDown with this probability (0 to 0.5)', numberArg('--chaos-s3', 0, 0.5))
    .option('--chaos-kill <fraction>', 'chaos: SIGKILL the first worker attempt of this share of the valid jobs mid-denoise (0 to 1)', numberArg('--chaos-kill', 0, 1))
    .option('--chaos-seed <n>', 'chaos: seed of the S3 error draws (default 1)', intArg('--chaos-seed', 0, 2 ** 32 - 1))
    .option('--json', 'print the report as one JSON object')
    .action(async (o: LoadOpts) => {
      process.exitCode = await load(o);
    });
  for (const c of local.commands) c.exitOverride();
}
