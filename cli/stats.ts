/**
 * `cil stats compute|merge|import|inspect`: dataset statistics for Analytic-Init
 * (docs/statistics.md). Bad arguments print one line and exit 2; an interrupted compute saves its
 * progress and exits 143 (rerun the same command to resume).
 */
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import { basename } from 'node:path';
import cliProgress from 'cli-progress';
import { FAMILY_NAMES } from '#shared/sampler';
import type { FamilyName } from '#shared/sampler';
import { computeStatistics, parseShard } from '../gpu-worker/src/stats/compute.ts';
import { StatsInterrupted } from '../gpu-worker/src/stats/errors.ts';
import type { Shard, StatsEvent } from '../gpu-worker/src/stats/compute.ts';
import { importTorchStatistics } from '../gpu-worker/src/stats/importPt.ts';
import { formatInspect, inspectStatistics } from '../gpu-worker/src/stats/inspect.ts';
import { readRequired, writeLocation } from '../gpu-worker/src/stats/io.ts';
import { mergeStatistics } from '../gpu-worker/src/stats/merge.ts';
import { choiceArg, intArg } from './args.ts';
import { UsageError } from './errors.ts';
import { abortOnSignals } from './signals.ts';

type ProgressMode = 'auto' | 'bar' | 'json' | 'none';

interface ComputeOpts {
  videos: string;
  model: string;
  out: string;
  frames?: number;
  size?: { height: number; width: number };
  fps?: number;
  seed: number;
  shard?: Shard;
  shards?: number;
  partial?: string;
  checkpointEvery: number;
  restart?: boolean;
  decoders: number;
  encodeBatch?: number;
  provider: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  cacheDir?: string;
  progress: ProgressMode;
}

function sizeArg(v: string): { height: number; width: number } {
  const m = /^(\d+)x(\d+)$/.exec(v.trim());
  const height = m ? Number(m[1]) : NaN;
  const width = m ? Number(m[2]) : NaN;
  if (!m || height < 8 || width < 8 || height > 8192 || width > 8192) {
    throw new InvalidArgumentError(`--size must be HEIGHTxWIDTH in pixels (e.g. 320x512), each 8–8192, got '${v}'`);
  }
  return { height, width };
}

function shardArg(v: string): Shard {
  const s = parseShard(v);
  if (!s) throw new InvalidArgumentError(`--shard must be i/n with 0 ≤ i < n (e.g. 3/16), got '${v}'`);
  return s;
}

/** The shard of this process: --shard i/n, or --shards n with i from AWS Batch's array index. */
export function resolveShard(o: { shard?: Shard; shards?: number }, env: NodeJS.ProcessEnv = process.env): Shard | undefined {
  if (o.shard && o.shards !== undefined) throw new UsageError('give --shard i/n or --shards n, not both');
  if (o.shards === undefined) return o.shard;
  const raw = env.AWS_BATCH_JOB_ARRAY_INDEX;
  if (raw === undefined) throw new UsageError('--shards takes the shard index from AWS_BATCH_JOB_ARRAY_INDEX (set in AWS Batch array jobs), which is unset; use --shard i/n elsewhere');
  const index = Number(raw);
  if (!/^\d+$/.test(raw) || index >= o.shards) throw new UsageError(`AWS_BATCH_JOB_ARRAY_INDEX is '${raw}', not an index below --shards ${o.shards}`);
  return { index, count: o.shards };
}

function fmtEta(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return '?';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** A bar (videos done, rate, ETA, skips) on a terminal; JSON lines otherwise (CloudWatch-friendly). */
function progressReporter(mode: ProgressMode): { onEvent: (e: StatsEvent) => void; stop: () => void } {
  if (mode === 'none') return { onEvent: () => undefined, stop: () => undefined };
  const useBar = mode === 'bar' || (mode === 'auto' && process.stderr.isTTY);
  const line = (o: object): void => {
    process.stdout.write(`${JSON.stringify(o)}\n`);
  };
  if (!useBar) {
    let last = 0;
    return {
      onEvent: (e) => {
        if (e.type === 'video') {
          // At most one line per 10 s (plus the last), so a 100k-video shard does not flood the log.
          const t = performance.now();
          if (t - last < 10_000 && e.done < e.total) return;
          last = t;
          line({ event: 'progress', done: e.done, total: e.total, used: e.used, skipped: e.skipped, videosPerS: Number(e.videosPerS.toFixed(3)), etaS: e.etaS === null ? null : Math.round(e.etaS) });
        } else {
          const { type, ...rest } = e;
          line({ event: type, ...rest });
        }
      },
      stop: () => undefined,
    };
  }
  const multi = new cliProgress.MultiBar(
    { format: 'stats [{bar}] {value}/{total} videos | {rate} videos/s | ETA {etaText} | {skipped} skipped', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let bar: cliProgress.SingleBar | null = null;
  return {
    onEvent: (e) => {
      if (e.type === 'start') {
        bar = multi.create(e.total, e.done, { rate: '-', etaText: '?', skipped: 0 });
        if (e.resumed) multi.log(`resuming from ${e.partial}: ${e.done} of ${e.total} videos already done\n`);
      } else if (e.type === 'video') {
        bar?.update(e.done, { rate: e.videosPerS.toFixed(2), etaText: fmtEta(e.etaS), skipped: e.skipped });
      } else if (e.type === 'skip') {
        multi.log(`warning: skipped ${e.id}: ${e.reason}\n`);
      }
    },
    stop: () => multi.stop(),
  };
}

export function registerStats(program: Command): void {
  const stats = program.command('stats').description('dataset statistics for Analytic-Init: compute, merge, import, inspect (docs/statistics.md)');

  stats
    .command('compute')
    .description("E[X0] and tr(Cov[X0])/d of a video dataset under a model's VAE (resumable; shardable)")
    .requiredOption('--videos <dir|s3://prefix>', 'videos: a folder or an s3:// prefix (searched recursively)')
    .requiredOption('--model <bundle>', 'model bundle: a folder or s3://bucket/prefix/')
    .requiredOption('--out <file|dir|s3://…>', 'the statistics file; with --shard/--shards, a folder/prefix for the partial (or the partial file itself)')
    .option('--frames <n>', "frames per clip (default: the model's)", intArg('--frames', 1, 64))
    .option('--size <HxW>', "clip size in pixels (default and only allowed value: the model's resolution)", sizeArg)
    .option('--fps <n>', "frame rate clips are sampled at (default: the model's defaults.fps)", intArg('--fps', 1, 240))
    .option('--seed <n>', 'seed of the clip placement (per video id, so shards agree)', intArg('--seed', 0), 0)
    .option('--shard <i/n>', 'process shard i of n (0-based) and write a partial file', shardArg)
    .option('--shards <n>', 'like --shard, with i from $AWS_BATCH_JOB_ARRAY_INDEX (Batch array jobs)', intArg('--shards', 1, 100000))
    .option('--partial <file>', 'unsharded runs: the progress file (default: beside --out, .partial.safetensors)')
    .option('--checkpoint-every <n>', 'save progress every N videos', intArg('--checkpoint-every', 1, 1_000_000), 25)
    .option('--restart', 'discard saved progress instead of resuming it')
    .option('--decoders <n>', 'clips decoded ahead in parallel (ffmpeg processes)', intArg('--decoders', 1, 64), 4)
    .option('--encode-batch <n>', 'frames per VAE call (when the graph allows; default min(frames, 8))', intArg('--encode-batch', 1, 64))
    .option('--provider <ep>', 'execution provider: auto, cuda, cpu', choiceArg('--provider', ['auto', 'cuda', 'cpu'] as const), 'auto')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: all cores)', intArg('--threads', 1, 256))
    .option('--cache-dir <dir>', 'local cache for bundles downloaded from S3')
    .option('--progress <mode>', 'auto (bar on a terminal, JSON lines otherwise), bar, json, none', choiceArg('--progress', ['auto', 'bar', 'json', 'none'] as const), 'auto')
    .action(async (o: ComputeOpts) => {
      const shard = resolveShard(o);
      const ac = abortOnSignals();
      const rep = progressReporter(o.progress);
      try {
        const r = await computeStatistics({
          videos: o.videos,
          model: o.model,
          out: o.out,
          partial: o.partial,
          frames: o.frames,
          height: o.size?.height,
          width: o.size?.width,
          fps: o.fps,
          seed: o.seed,
          shard,
          checkpointEvery: o.checkpointEvery,
          restart: o.restart,
          decoders: o.decoders,
          encoder: { provider: o.provider, threads: o.threads, batch: o.encodeBatch },
          cacheDir: o.cacheDir,
          signal: ac.signal,
          onEvent: rep.onEvent,
        });
        rep.stop();
        process.stderr.write(`${r.summary}\n`);
        process.stdout.write(
          `${JSON.stringify({
            event: 'done',
            out: r.out,
            partial: r.partial,
            shard: `${r.shard.index}/${r.shard.count}`,
            used: r.used,
            skipped: r.skipped.length,
            summary: r.summary,
            trCovD: r.trCovD,
            processed: r.processed,
            elapsedS: Number(r.elapsedS.toFixed(3)),
          })}\n`,
        );
      } catch (e) {
        rep.stop();
        if (e instanceof StatsInterrupted) {
          process.stderr.write(`cil: ${e.message}\n`);
          process.exitCode = 143;
          return;
        }
        throw e;
      } finally {
        ac.dispose();
      }
    });

  stats
    .command('merge')
    .description('combine the partial files of a sharded run into the statistics file')
    .argument('<partials...>', 'partial files, or folders / s3:// prefixes holding them')
    .requiredOption('--out <file|s3://…>', 'the statistics file to write')
    .option('--allow-incomplete', 'merge even with missing or unfinished shards (recorded in the metadata)')
    .action(async (partials: string[], o: { out: string; allowIncomplete?: boolean }) => {
      const r = await mergeStatistics(partials, o.out, { allowIncomplete: o.allowIncomplete });
      process.stderr.write(`${r.summary}\n`);
      process.stdout.write(
        `${JSON.stringify({ event: 'done', out: o.out, partials: r.inputs.length, shards: r.shards.length, shardCount: r.run.shardCount, used: r.acc.n, skipped: r.skipped.length, summary: r.summary, trCovD: r.trCovD })}\n`,
      );
    });

  stats
    .command('import')
    .description("convert the authors' PyTorch statistics file (.pt) into our format (nothing in it is executed)")
    .argument('<file.pt>', 'the .pt file: a path or s3:// URI')
    .requiredOption('--family <family>', `model family: ${FAMILY_NAMES.join(', ')} (decides the key names)`, choiceArg('--family', FAMILY_NAMES))
    .requiredOption('--height <px>', 'pixel height the statistics were computed at', intArg('--height', 8, 8192))
    .requiredOption('--width <px>', 'pixel width the statistics were computed at', intArg('--width', 8, 8192))
    .option('--frames <n>', "frames (checked against the file; default: the file's)", intArg('--frames', 1, 1024))
    .option('--model-id <id>', 'the model these statistics belong to (recorded)')
    .option('--vae-id <id>', 'the VAE that encoded the latents (recorded)')
    .option('--sample-count <n>', 'videos the authors averaged, if known', intArg('--sample-count', 1))
    .requiredOption('--out <file|s3://…>', 'the statistics file to write')
    .action(async (file: string, o: { family: FamilyName; height: number; width: number; frames?: number; modelId?: string; vaeId?: string; sampleCount?: number; out: string }) => {
      const bytes = await readRequired(file);
      const r = importTorchStatistics(bytes, file, {
        family: o.family,
        height: o.height,
        width: o.width,
        frames: o.frames,
        modelId: o.modelId,
        vaeId: o.vaeId,
        sampleCount: o.sampleCount,
        sourceName: basename(file),
      });
      await writeLocation(o.out, r.bytes);
      process.stdout.write(`${JSON.stringify({ event: 'done', out: o.out, family: r.meta.family, latentShape: r.meta.latentShape, trCovD: r.trCovD, sourceDtypes: r.sourceDtypes })}\n`);
    });

  stats
    .command('inspect')
    .description('show what a statistics file (final, partial, or an unimported .pt) holds')
    .argument('<file>', 'a path or s3:// URI')
    .option('--json', 'print one JSON object')
    .action(async (file: string, o: { json?: boolean }) => {
      const r = inspectStatistics(await readRequired(file), file);
      process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatInspect(r)}\n`);
    });
}
