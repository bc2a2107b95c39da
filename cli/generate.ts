/**
 * `cil generate`: one image-to-video generation on this machine (CUDA when present, else CPU):
 * PNG frames, metadata.json and video.mp4 (unless --no-video) in a folder or under an s3:// prefix.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { EncodeFailed, InputNotFound } from '../functions/src/errors.ts';
import { encodeVideos, ffmpegEncoders } from '../functions/src/postprocess/encode.ts';
import { parseJobRequest } from '#shared/schemas';
import { chooseSeed, resolveRequest } from '#shared/schemas';
import { runJob } from '../gpu-worker/src/job.ts';
import type { GenerateParams, GenerationMetadata, ProgressEvent } from '../gpu-worker/src/generate.ts';
import { openSink } from '../gpu-worker/src/sink.ts';
import { choiceArg, intArg, numberArg } from './args.ts';
import { requestFields } from './jobFlags.ts';
import type { RequestFlags } from './jobFlags.ts';
import { errorName, FfmpegMissing, UsageError } from './errors.ts';
import { abortOnSignals } from './signals.ts';
import { printable, printableJson } from './printable.ts';

/** The options of `cil generate`: the job-request flags (jobFlags.ts) and its own. */
interface GenerateOpts extends Omit<RequestFlags, 'request' | 'model'> {
  image: string;
  /** The model bundle (a folder or s3:// prefix), not a model id. */
  model: string;
  out: string;
  stats?: string;
  analyticInit: boolean;
  initNoise?: string;
  saveLatent?: boolean;
  provider: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  checkpointEvery?: number;
  cacheDir?: string;
  progress: 'auto' | 'bar' | 'json' | 'none';
  json?: boolean;
  video: boolean;
}

/** How `cil generate` shows progress and its result (docs/cli.md, "cil generate"). */
export interface OutputMode {
  /** bar: a cli-progress bar and phase lines on stderr; json: one JSON line per event on stdout. */
  readonly progress: 'bar' | 'json' | 'none';
  /** The closing result (and every other report) as JSON lines rather than sentences. */
  readonly json: boolean;
}

/**
 * `auto` is a bar when both stdout and stderr are terminals (someone is watching), and JSON lines
 * otherwise (a pipe, a file, CloudWatch Logs: a bar there would be a smear of carriage returns).
 * `--json` asks for JSON lines whatever the terminal; the result goes out as JSON whenever
 * stdout is not a terminal, so a script reading stdout always gets JSON.
 */
export function outputMode(o: { progress: GenerateOpts['progress']; json?: boolean }, tty: { stdout: boolean; stderr: boolean }): OutputMode {
  if (o.json && o.progress === 'bar') throw new UsageError('--json and --progress bar ask for different output: pass one of them');
  const wantsJson = o.json === true || o.progress === 'json';
  const progress = o.progress === 'none' ? 'none' : o.progress === 'bar' ? 'bar' : wantsJson || !(tty.stdout && tty.stderr) ? 'json' : 'bar';
  return { progress, json: wantsJson || !tty.stdout || (o.progress === 'auto' && progress === 'json') };
}

interface Reporter {
  onProgress: (e: ProgressEvent | { phase: 'video'; elapsedS: number }) => void;
  stop: () => void;
}

function progressReporter(mode: OutputMode['progress'], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Reporter {
  if (mode === 'none') return { onProgress: () => undefined, stop: () => undefined };
  if (mode === 'json') {
    // One JSON line per event: readable in CloudWatch Logs and by scripts.
    return { onProgress: (e) => out.write(`${JSON.stringify({ event: 'progress', ...e })}\n`), stop: () => undefined };
  }
  const bar = new cliProgress.SingleBar({ format: 'denoise [{bar}] {value}/{total} steps | {elapsedS}s elapsed | ETA {eta}s', stream: err }, cliProgress.Presets.shades_classic);
  let started = false;
  let stopped = false;
  return {
    onProgress: (e) => {
      if (e.phase === 'denoise' && 'total' in e && e.total) {
        if (!started) {
          bar.start(e.total, 0, { elapsedS: e.elapsedS.toFixed(1) });
          started = true;
        }
        bar.update(e.step ?? 0, { elapsedS: e.elapsedS.toFixed(1) });
      } else if (e.phase !== 'denoise') {
        if (started && !stopped) {
          bar.stop();
          stopped = true;
        }
        err.write(`${e.phase}… (${e.elapsedS.toFixed(1)} s)\n`);
      }
    },
    stop: () => {
      if (started && !stopped) bar.stop();
      stopped = true;
    },
  };
}

/** An s3:// location must name a bucket and key before anything runs (commander reports it, exit 2). */
function checkS3Uri(flag: string, v: string, needsKey: boolean): void {
  if (!v.startsWith('s3://')) return;
  const ok = needsKey ? /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\/.+$/.test(v) : /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(v);
  if (!ok) throw new UsageError(`${flag}: '${v}' is not an s3://bucket/${needsKey ? 'key' : 'prefix/'} URI`);
}

/**
 * Local inputs are checked before the model is loaded: a typo in a path fails at once, with the
 * path named, and without an error.json left in the output folder.
 */
async function checkLocalInput(what: string, path: string | undefined): Promise<void> {
  if (path === undefined || path.startsWith('s3://')) return;
  let isFile: boolean;
  try {
    isFile = (await stat(path)).isFile();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputNotFound(`${what} ${path}: ${code === 'ENOENT' || code === 'ENOTDIR' ? 'no such file' : (e as Error).message}`);
  }
  if (!isFile) throw new InputNotFound(`${what} ${path}: not a file`);
}

/** The ffmpeg that will encode video.mp4 (the one PostProcess and the demo use), or FfmpegMissing. */
async function requireFfmpeg(): Promise<string> {
  const { findFfmpeg } = await import('../local/src/pipeline.ts');
  const path = findFfmpeg();
  const remedy = 'Install it (Debian/Ubuntu: sudo apt-get install -y ffmpeg, or sudo bash scripts/setup-system.sh), or pass --no-video to write the PNG frames only';
  if (path === null) {
    if (process.env.FFMPEG_PATH) throw new FfmpegMissing(`FFMPEG_PATH is '${process.env.FFMPEG_PATH}', which does not exist; unset it or point it at an ffmpeg binary, or pass --no-video`);
    throw new FfmpegMissing(`ffmpeg is missing: cil generate encodes video.mp4 with it. ${remedy}`);
  }
  let encoders: ReadonlySet<string>;
  try {
    encoders = await ffmpegEncoders(path);
  } catch (e) {
    throw new FfmpegMissing(`${path} does not run (${(e as Error).message}). ${remedy}`);
  }
  if (!encoders.has('libx264')) throw new FfmpegMissing(`${path} has no libx264 encoder (H.264). ${remedy}`);
  return path;
}

/**
 * video.mp4 next to the frames, encoded exactly as Post-process encodes it (encode.ts: H.264,
 * yuv420p, BT.709, +faststart), read back through the same sink the frames were written to, so a
 * folder and an s3:// prefix work alike. Returns where it went.
 */
async function writeVideo(out: string, meta: GenerationMetadata, ffmpegPath: string): Promise<string> {
  const sink = openSink(out);
  const frames = await Promise.all(
    meta.frames.keys.map(async (k) => {
      const b = await sink.get(k);
      if (b === null) throw new EncodeFailed(`${sink.location}: frame ${k} is missing`);
      return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    }),
  );
  const mp4 = (await encodeVideos(frames, meta.frames.fps, ['mp4'], { ffmpegPath })).get('mp4');
  if (mp4 === undefined) throw new EncodeFailed('ffmpeg produced no MP4');
  await sink.put(VIDEO_KEY, mp4, 'video/mp4');
  return out.startsWith('s3://') ? `${sink.location}${VIDEO_KEY}` : join(out, VIDEO_KEY);
}

const VIDEO_KEY = 'video.mp4';

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate a video from an image with a model bundle: PNG frames, video.mp4, metadata.json, optional latent')
    .requiredOption('--image <path>', 'input image (PNG, JPEG, WebP): a path or s3://bucket/key')
    .requiredOption('--model <bundle>', 'model bundle: a folder or s3://bucket/prefix/')
    .requiredOption('--out <dir>', 'output location: a folder or s3://bucket/prefix/')
    .option('--prompt <text>', 'text prompt (DynamiCrafter, VideoCrafter1)')
    .option('--steps <n>', 'sampling steps', intArg('--steps', 1, 1000))
    .option('--start <M>', 'start time M (DDIM families) or σ_max (svd)', numberArg('--start', 0, 1000, true))
    .option('--stats <file>', 'dataset statistics (.safetensors, path or s3:// URI) for Analytic-Init')
    .option('--no-analytic-init', 'start from plain noise at M ("start at M only")')
    .option('--guidance <s>', 'classifier-free guidance scale (text scale for DynamiCrafter)', numberArg('--guidance', 0, 50))
    .option('--image-guidance <s>', "DynamiCrafter's image guidance scale (two-scale guidance)", numberArg('--image-guidance', 0, 50))
    .option('--guidance-rescale <phi>', 'guidance rescale φ', numberArg('--guidance-rescale', 0, 1))
    .option('--eta <eta>', 'DDIM η', numberArg('--eta', 0, 1))
    .option('--seed <n>', 'seed (default: chosen and recorded in metadata.json)', intArg('--seed', 0))
    .option('--frames <n>', 'frames', intArg('--frames', 1, 64))
    .option('--fps <n>', 'frames per second (VideoCrafter1 and SVD condition on it)', intArg('--fps', 1, 60))
    .option('--frame-stride <n>', "DynamiCrafter's frame stride", intArg('--frame-stride', 1, 64))
    .option('--motion-bucket <n>', "SVD's motion bucket id", intArg('--motion-bucket', 0, 255))
    .option('--noise-aug <x>', "SVD's noise augmentation strength", numberArg('--noise-aug', 0, 1))
    .option('--min-guidance <s>', "SVD's first-frame guidance", numberArg('--min-guidance', 0, 50))
    .option('--max-guidance <s>', "SVD's last-frame guidance", numberArg('--max-guidance', 0, 50))
    .option('--compat <mode>', "'paper' or 'reference'", choiceArg('--compat', ['paper', 'reference'] as const))
    .option('--init-noise <file.npy>', 'explicit unit-Gaussian initial noise of the latent shape')
    .option('--save-latent', 'also write the final latent as latent.npy')
    .option('--provider <ep>', 'execution provider: auto, cuda, cpu', choiceArg('--provider', ['auto', 'cuda', 'cpu'] as const), 'auto')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: all cores)', intArg('--threads', 1, 256))
    .option('--checkpoint-every <n>', 'also checkpoint every N steps (SIGTERM always checkpoints)', intArg('--checkpoint-every', 1, 1000))
    .option('--cache-dir <dir>', 'local cache for bundles downloaded from S3')
    .option('--no-video', 'write the PNG frames only (default: also video.mp4, H.264, which needs ffmpeg)')
    .option('--progress <mode>', 'auto (a bar in a terminal, JSON lines on stdout otherwise), bar, json, none', choiceArg('--progress', ['auto', 'bar', 'json', 'none'] as const), 'auto')
    .option('--json', 'JSON lines on stdout (progress events, then the result) even in a terminal')
    .action(async (o: GenerateOpts) => {
      const mode = outputMode(o, { stdout: process.stdout.isTTY === true, stderr: process.stderr.isTTY === true });
      checkS3Uri('--image', o.image, true);
      checkS3Uri('--model', o.model, false);
      checkS3Uri('--out', o.out, false);
      if (o.stats !== undefined) checkS3Uri('--stats', o.stats, true);
      if (o.initNoise !== undefined) checkS3Uri('--init-noise', o.initNoise, true);
      const ac = abortOnSignals();
      const rep = progressReporter(mode.progress);
      const t0 = Date.now();
      try {
        await checkLocalInput('image', o.image);
        await checkLocalInput('statistics', o.stats);
        await checkLocalInput('initial noise', o.initNoise);
        // Before the model loads: a missing ffmpeg should not cost a whole generation.
        const ffmpegPath = o.video ? await requireFfmpeg() : null;
        const meta = await runJob(
          { image: o.image, model: o.model, out: o.out, statistics: o.stats ?? null, initNoise: o.initNoise ?? null },
          {
            provider: o.provider,
            threads: o.threads,
            cacheDir: o.cacheDir,
            signal: ac.signal,
            checkpointEvery: o.checkpointEvery,
            onProgress: rep.onProgress,
            onSessions: (infos) => {
              const unet = infos.find((i) => i.component === 'unet');
              if (mode.json) {
                const msg = { event: 'sessions', executionProvider: unet?.provider, fallbackReason: unet?.fallbackReason };
                process.stderr.write(`${JSON.stringify(msg)}\n`);
              } else {
                process.stderr.write(`execution provider: ${unet?.provider ?? '?'}${unet?.fallbackReason ? ` (${printable(unet.fallbackReason)})` : ''}\n`);
              }
            },
            params: (bundle): GenerateParams => {
              // --model is the bundle here; the request names the bundle's model id.
              const flags = { ...requestFields({ ...o, model: bundle.manifest.id }), outputs: o.saveLatent ? ['png-frames', 'latent-npy'] : ['png-frames'] };
              const req = parseJobRequest(flags, 'command line');
              const r = resolveRequest({ request: req, explicit: new Set(Object.keys(flags)) }, bundle.manifest, chooseSeed, 'command line');
              return { ...r, saveLatent: Boolean(o.saveLatent) };
            },
          },
        );
        let video: string | null = null;
        if (ffmpegPath !== null) {
          rep.onProgress({ phase: 'video', elapsedS: (Date.now() - t0) / 1000 });
          video = await writeVideo(o.out, meta, ffmpegPath);
        }
        rep.stop();
        if (mode.json) {
          process.stdout.write(`${printableJson({ event: 'done', out: o.out, frames: meta.frames.count, executionProvider: meta.executionProvider, timings: meta.timings, video })}\n`);
        } else {
          const f = meta.frames;
          const what = `${f.count} frames (${f.width}×${f.height}, ${f.fps} fps)${video === null ? '' : ' and video.mp4'}`;
          process.stdout.write(`${printable(`wrote ${what} to ${o.out} (seed ${meta.params.seed}, ${((Date.now() - t0) / 1000).toFixed(1)} s on ${meta.executionProvider})`)}\n`);
          if (video !== null) process.stdout.write(`${printable(`video: ${video}`)}\n`);
        }
      } catch (e) {
        rep.stop();
        if ((e as Error).name === 'GenerationInterrupted') {
          process.stderr.write(`cil: ${(e as Error).message}\n`);
          process.exitCode = 143;
          return;
        }
        if (e instanceof UsageError) throw e;
        process.stderr.write(`${printableJson({ error: errorName(e), reason: e instanceof Error ? e.message : String(e) })}\n`);
        process.exitCode = 1;
      } finally {
        ac.dispose();
      }
    });
}
