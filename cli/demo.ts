/**
 * `npm run demo` (`cil demo`): the product's main job on a fresh clone, with no AWS account. It
 * checks ffmpeg (installing Debian's package when it runs as root), starts the local pipeline in
 * this process, draws a test card, uploads it with a prompt, shows the job's progress, copies the
 * MP4 and GIF to `.local/demo-output/`, prints where they are, and stops.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from './errors.ts';
import { displayPath, formatNotification, printRunResult } from './local.ts';
import { JobReporter } from './progress.ts';

export class DemoError extends Error {
  override readonly name = 'DemoError';
}

/** ffmpeg for PostProcess: found, installed (as root, Debian's package), or a message with the exact command. */
async function ensureFfmpeg(root: string): Promise<string> {
  const { findFfmpeg } = await import('../local/src/pipeline.ts');
  const found = findFfmpeg();
  if (found) return found;
  if (process.env.FFMPEG_PATH) throw new DemoError(`FFMPEG_PATH is '${process.env.FFMPEG_PATH}', which does not exist; unset it or point it at an ffmpeg binary`);
  const script = join(root, 'scripts', 'setup-system.sh');
  if (process.getuid?.() === 0) {
    process.stderr.write('ffmpeg is missing: installing Debian\'s package (scripts/setup-system.sh)…\n');
    const r = spawnSync('bash', [script], { stdio: 'inherit' });
    const again = findFfmpeg();
    if (r.status === 0 && again) return again;
    throw new DemoError(`ffmpeg is still missing after bash ${relative(process.cwd(), script)} (exit code ${r.status}); install it with: apt-get install -y ffmpeg`);
  }
  throw new DemoError(`ffmpeg is missing (PostProcess encodes the MP4 and GIF with it). Install it, then run \`npm run demo\` again:\n  sudo bash ${relative(process.cwd(), script) || script}\n(or: sudo apt-get install -y ffmpeg)`);
}

export interface DemoOptions {
  readonly data?: string;
  readonly prompt: string;
}

export async function runDemo(o: DemoOptions): Promise<number> {
  const { REPO_ROOT } = await import('../local/src/paths.ts');
  const base = o.data ?? join(REPO_ROOT, '.local');
  const err = process.stderr;
  const t0 = Date.now();
  err.write('CIL demo: an image to a video through the whole pipeline, on this machine\n');
  const ffmpeg = await ensureFfmpeg(REPO_ROOT);
  err.write(`  ffmpeg        ${ffmpeg}\n`);
  // Its own data folder, fresh each time, beside whatever `cil local up` keeps in .local/.
  const dataDir = join(base, 'demo');
  const outDir = join(base, 'demo-output');
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const { startLocalPipeline } = await import('../local/src/pipeline.ts');
  const { runImage } = await import('../local/src/run.ts');
  const { testCardPng, TEST_CARD_SIZE } = await import('../local/src/testCard.ts');
  const pipeline = await startLocalPipeline({
    dataDir,
    // The synthesized definitions are cached beside the demo's data, so a second demo starts at once.
    definitionsCacheDir: join(base, 'cache'),
    modelCacheDir: join(base, 'cache', 'models'),
    onSynth: () => err.write('  synthesizing the CDK app for its workflow definitions (first run only, about 10 s)…\n'),
  });
  try {
    err.write(`  local S3      ${pipeline.endpoint} (bucket ${pipeline.bucket}; demo model uploaded to models/demo/)\n`);
    const image = await testCardPng();
    const inputFile = join(outDir, 'input.png');
    writeFileSync(inputFile, image);
    err.write(`  input         ${displayPath(inputFile)} (a ${TEST_CARD_SIZE.width}×${TEST_CARD_SIZE.height} test card drawn by the demo)\n`);
    err.write(`  prompt        "${o.prompt}"\n`);
    const reporter = new JobReporter();
    const result = await runImage({
      dataDir,
      pipeline,
      image,
      fileName: 'test-card.png',
      request: { prompt: o.prompt },
      outDir,
      observer: reporter,
      timeoutMs: 10 * 60_000,
      onUploaded: (u) => err.write(`  uploaded      s3://${u.bucket}/${u.key} → job ${u.jobId}\n`),
    });
    const code = printRunResult(result);
    for (const n of result.notifications.filter((x) => x.channel === 'eventbridge')) err.write(`  event         ${formatNotification(n)}\n`);
    const meta = result.files.find((f) => f.endsWith('metadata.json'));
    if (code === 0 && meta) {
      const { readFileSync } = await import('node:fs');
      const timings = (JSON.parse(readFileSync(meta, 'utf8')) as { timings?: { totalS?: number } }).timings;
      err.write(`  worker        ${timings?.totalS?.toFixed(2) ?? '?'} s of generation (CPU, tiny demo model); whole demo ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      process.stdout.write(`\nOpen the video: ${displayPath(join(outDir, 'video.mp4'))} (GIF: ${displayPath(join(outDir, 'video.gif'))})\n`);
    }
    return code;
  } finally {
    await pipeline.stop();
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the bundled example through the whole local pipeline (what `npm run demo` does)')
    .option('--data <dir>', 'parent of the demo\'s data (default: .local in the repository)')
    .option('--prompt <text>', 'prompt for the demo model (it understands directions: left, right, up, down, in, out)', 'the test card pans left')
    .action(async (o: { data?: string; prompt: string }) => {
      if (o.prompt.length > 2000) throw new UsageError('--prompt: at most 2000 characters');
      process.exitCode = await runDemo(o);
    });
}
