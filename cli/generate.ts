/** `cil generate`: one image-to-video generation on this machine (CUDA when present, else CPU). */
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { parseJobRequest } from '../shared/src/schemas/jobRequest.ts';
import { chooseSeed, resolveRequest } from '../shared/src/schemas/resolve.ts';
import { runJob } from '../gpu-worker/src/job.ts';
import type { GenerateParams, ProgressEvent } from '../gpu-worker/src/generate.ts';
import { choiceArg, intArg, numberArg } from './args.ts';
import { UsageError } from './errors.ts';
import { abortOnSignals } from './signals.ts';
import { printableJson } from './printable.ts';

interface GenerateOpts {
  image: string;
  model: string;
  out: string;
  prompt?: string;
  steps?: number;
  start?: number;
  stats?: string;
  analyticInit: boolean;
  guidance?: number;
  imageGuidance?: number;
  guidanceRescale?: number;
  eta?: number;
  seed?: number;
  frames?: number;
  fps?: number;
  frameStride?: number;
  motionBucket?: number;
  noiseAug?: number;
  minGuidance?: number;
  maxGuidance?: number;
  compat?: 'paper' | 'reference';
  initNoise?: string;
  saveLatent?: boolean;
  provider: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  checkpointEvery?: number;
  cacheDir?: string;
  progress: 'auto' | 'bar' | 'json' | 'none';
}

/** Maps CLI flags onto a job request (only the flags given: the rest come from the model). */
function requestFromFlags(o: GenerateOpts, modelId: string): Record<string, unknown> {
  const r: Record<string, unknown> = { model: modelId };
  const set = (k: string, v: unknown): void => {
    if (v !== undefined) r[k] = v;
  };
  set('prompt', o.prompt);
  set('steps', o.steps);
  set('start', o.start);
  // only an explicit --no-analytic-init overrides the model's default
  if (!o.analyticInit) r.analyticInit = false;
  set('guidanceScale', o.guidance);
  set('imageGuidanceScale', o.imageGuidance);
  set('guidanceRescale', o.guidanceRescale);
  set('eta', o.eta);
  set('seed', o.seed);
  set('frames', o.frames);
  set('fps', o.fps);
  set('frameStride', o.frameStride);
  set('motionBucketId', o.motionBucket);
  set('noiseAugStrength', o.noiseAug);
  set('minGuidanceScale', o.minGuidance);
  set('maxGuidanceScale', o.maxGuidance);
  set('compat', o.compat);
  r.outputs = o.saveLatent ? ['png-frames', 'latent-npy'] : ['png-frames'];
  return r;
}

function progressReporter(mode: GenerateOpts['progress']): { onProgress: (e: ProgressEvent) => void; stop: () => void } {
  const useBar = mode === 'bar' || (mode === 'auto' && process.stderr.isTTY);
  if (mode === 'none') return { onProgress: () => undefined, stop: () => undefined };
  if (!useBar) {
    // One JSON line per event: readable in CloudWatch Logs.
    return { onProgress: (e) => process.stdout.write(`${JSON.stringify({ event: 'progress', ...e })}\n`), stop: () => undefined };
  }
  const bar = new cliProgress.SingleBar({ format: 'denoise [{bar}] {value}/{total} steps | {elapsed}s elapsed | ETA {eta}s', stream: process.stderr }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    onProgress: (e) => {
      if (e.phase === 'denoise' && e.total) {
        if (!started) {
          bar.start(e.total, 0, { elapsed: e.elapsedS.toFixed(1) });
          started = true;
        }
        bar.update(e.step ?? 0, { elapsed: e.elapsedS.toFixed(1) });
      } else if (e.phase !== 'denoise') {
        if (started && e.phase === 'decode') bar.stop();
        process.stderr.write(`${e.phase}… (${e.elapsedS.toFixed(1)} s)\n`);
      }
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate a video from an image with a model bundle (frames, metadata.json, optional latent)')
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
    .option('--progress <mode>', 'auto (bar on a terminal, JSON lines otherwise), bar, json, none', choiceArg('--progress', ['auto', 'bar', 'json', 'none'] as const), 'auto')
    .action(async (o: GenerateOpts) => {
      const ac = abortOnSignals();
      const rep = progressReporter(o.progress);
      try {
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
              const msg = { event: 'sessions', executionProvider: unet?.provider, fallbackReason: unet?.fallbackReason };
              process.stderr.write(`${JSON.stringify(msg)}\n`);
            },
            params: (bundle): GenerateParams => {
              const flags = requestFromFlags(o, bundle.manifest.id);
              const req = parseJobRequest(flags, 'command line');
              const r = resolveRequest({ request: req, explicit: new Set(Object.keys(flags)) }, bundle.manifest, chooseSeed, 'command line');
              return { ...r, saveLatent: Boolean(o.saveLatent) };
            },
          },
        );
        rep.stop();
        process.stdout.write(`${JSON.stringify({ event: 'done', out: o.out, frames: meta.frames.count, executionProvider: meta.executionProvider, timings: meta.timings })}\n`);
      } catch (e) {
        rep.stop();
        if ((e as Error).name === 'GenerationInterrupted') {
          process.stderr.write(`cil: ${(e as Error).message}\n`);
          process.exitCode = 143;
          return;
        }
        if (e instanceof UsageError) throw e;
        process.stderr.write(`${printableJson({ error: (e as Error).name, reason: (e as Error).message })}\n`);
        process.exitCode = 1;
      } finally {
        ac.dispose();
      }
    });
}
