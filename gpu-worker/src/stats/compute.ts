/**
 * `cil stats compute`: E[X0] and tr(Cov[X0])/d of a video dataset encoded by a model's VAE
 * (docs/design.md §3.6, §5.3; docs/statistics.md). One run, or one shard of a run, writes a partial file
 * (exact float64 moments plus the ids counted and skipped) every K videos and at the end; a rerun
 * resumes from it, skipping what it already counted, and gives the same bits as an uninterrupted
 * run because videos are always taken in the same (sorted) order. Without sharding the final
 * statistics file is written too; with sharding `cil stats merge` combines the partials.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import {
  datasetHash,
  decodePartial,
  describeRun,
  encodeFinalStatistics,
  encodePartial,
  MomentAccumulator,
  PartialMismatchError,
  runDifferences,
  shardIds,
  usageSummary,
} from '#shared/stats';
import type { PartialMetadata, RunIdentity, SkipRecord } from '#shared/stats';
import { openBundle } from '../bundle.ts';
import type { Bundle } from '../bundle.ts';
import { latentShapeFor, openClipEncoder } from './encoder.ts';
import type { ClipEncoder, ClipGeometry, EncoderOptions } from './encoder.ts';
import { joinLocation, openVideoSource, readOptional, VIDEO_EXTENSIONS, writeLocation } from './io.ts';
import type { VideoSource } from './io.ts';
import { StatsInputError, StatsInterrupted } from './errors.ts';
import { decodeClip, VideoSkip } from './video.ts';
import type { ClipSpec } from './video.ts';

export interface Shard {
  readonly index: number;
  readonly count: number;
}

export type StatsEvent =
  | { readonly type: 'start'; readonly total: number; readonly done: number; readonly shard: Shard; readonly partial: string; readonly resumed: boolean; readonly provider: string | null }
  | { readonly type: 'video'; readonly id: string; readonly done: number; readonly total: number; readonly used: number; readonly skipped: number; readonly elapsedS: number; readonly videosPerS: number; readonly etaS: number | null }
  | { readonly type: 'skip'; readonly id: string; readonly kind: SkipRecord['kind']; readonly reason: string }
  | { readonly type: 'checkpoint'; readonly location: string; readonly done: number; readonly total: number };

export interface ComputeOptions {
  /** Folder or s3:// prefix of videos. */
  readonly videos: string;
  /** Bundle folder or s3:// prefix (or an opened bundle). */
  readonly model: string | Bundle;
  /** Final statistics file (unsharded), or the partial's file / folder / prefix (sharded). */
  readonly out: string;
  /** Unsharded runs: where the progress partial lives (default: beside `out`, `.partial.safetensors`). */
  readonly partial?: string;
  readonly frames?: number;
  readonly height?: number;
  readonly width?: number;
  readonly fps?: number;
  readonly seed?: number;
  readonly shard?: Shard;
  /** Write the partial every this many videos (default 25). */
  readonly checkpointEvery?: number;
  /** Discard an existing partial instead of resuming it. */
  readonly restart?: boolean;
  /** Clips decoded ahead of the encoder (ffmpeg processes in flight; default 4). */
  readonly decoders?: number;
  readonly encoder?: EncoderOptions;
  readonly cacheDir?: string;
  readonly s3?: S3Client;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: StatsEvent) => void;
  /** Replaces the ONNX encoder (tests and benchmarks of the pipeline around it). */
  readonly openEncoder?: (bundle: Bundle, g: ClipGeometry) => Promise<ClipEncoder>;
  readonly now?: () => Date;
}

export interface ComputeResult {
  readonly run: RunIdentity;
  readonly shard: Shard;
  readonly partial: string;
  /** The final statistics file, or null for a shard. */
  readonly out: string | null;
  readonly used: number;
  readonly skipped: readonly SkipRecord[];
  readonly summary: string;
  /** Videos processed by this invocation (not counting those resumed from the partial). */
  readonly processed: number;
  readonly elapsedS: number;
  readonly trCovD: number | null;
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0');

/** `shard-00003-of-00016.safetensors`: the partial of one array-job child. */
export function shardFileName(s: Shard): string {
  const w = Math.max(5, String(s.count).length);
  return `shard-${pad(s.index, w)}-of-${pad(s.count, w)}.safetensors`;
}

/** Where a run's partial goes: the shard file under `out` (sharded), or beside the final file. */
export function partialLocation(out: string, shard: Shard | undefined, partial?: string): string {
  if (partial !== undefined) return partial;
  if (shard) return out.endsWith('.safetensors') ? out : joinLocation(out, shardFileName(shard));
  return out.endsWith('.safetensors') ? `${out.slice(0, -'.safetensors'.length)}.partial.safetensors` : `${out}.partial.safetensors`;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

interface Decoded {
  readonly id: string;
  readonly rgb?: Uint8Array;
  readonly skip?: VideoSkip;
}

async function decodeOne(source: VideoSource, id: string, spec: ClipSpec, signal: AbortSignal): Promise<Decoded> {
  const local = await source.materialize(id);
  try {
    const clip = await decodeClip(local.path, id, spec, signal);
    return { id, rgb: clip.rgb };
  } catch (e) {
    if (e instanceof VideoSkip) return { id, skip: e };
    throw e;
  } finally {
    await local.release();
  }
}

/** Runs (or resumes) one shard of a statistics run; see the file comment. */
export async function computeStatistics(o: ComputeOptions): Promise<ComputeResult> {
  const t0 = performance.now();
  const now = o.now ?? (() => new Date());
  const emit = o.onEvent ?? (() => undefined);
  const bundle = typeof o.model === 'string' ? await openBundle(o.model, { cacheDir: o.cacheDir, s3: o.s3 }) : o.model;
  const m = bundle.manifest;
  const height = o.height ?? m.resolution.height;
  const width = o.width ?? m.resolution.width;
  if (height !== m.resolution.height || width !== m.resolution.width) {
    throw new StatsInputError(
      `size ${height}×${width} differs from model '${m.id}' (${m.resolution.height}×${m.resolution.width}); the generate job refuses statistics of another resolution`,
    );
  }
  const frames = o.frames ?? m.frames;
  const fps = o.fps ?? m.defaults.fps;
  if (fps === undefined) throw new StatsInputError(`model '${m.id}' has no defaults.fps; pass --fps (the frame rate clips are sampled at)`);
  const seed = o.seed ?? 0;
  const shard = o.shard ?? { index: 0, count: 1 };
  const sharded = o.shard !== undefined;
  const g: ClipGeometry = { family: m.family, channels: m.latent.channels, downsample: m.latent.downsample, scaleFactor: m.latent.scaleFactor, height, width, frames };
  const latentShape = latentShapeFor(g);

  const source = await openVideoSource(o.videos, o.s3);
  try {
    if (source.ids.length === 0) {
      throw new StatsInputError(`no videos under ${o.videos} (looked for ${VIDEO_EXTENSIONS.join(' ')}); an empty dataset has no statistics`);
    }
    const assigned = shardIds(source.ids, shard.index, shard.count);
    const vaeFile = m.components.vae_encoder.file;
    const vaeSha = m.components.vae_encoder.sha256 ?? (await sha256File(join(bundle.root, vaeFile)));
    const run: RunIdentity = {
      family: m.family,
      modelId: m.id,
      bundleHash: bundle.hash,
      vaeId: `${m.id}/${vaeFile}@sha256:${vaeSha.slice(0, 16)}`,
      scaleFactor: m.latent.scaleFactor,
      height,
      width,
      frames,
      fps,
      seed,
      latentShape,
      shardCount: shard.count,
      datasetHash: datasetHash(source.ids),
      datasetSize: source.ids.length,
    };
    const partialAt = partialLocation(o.out, o.shard, o.partial);

    // --- resume? ---
    let acc = new MomentAccumulator(latentShape);
    let videos: string[] = [];
    let skipped: SkipRecord[] = [];
    let createdAt = now().toISOString();
    let resumed = false;
    if (!o.restart) {
      const bytes = await readOptional(partialAt, o.s3);
      if (bytes !== null) {
        const p = decodePartial(bytes, partialAt);
        const diff = runDifferences(p.meta, run);
        if (p.meta.shardIndex !== shard.index) diff.push(`shardIndex ${p.meta.shardIndex} vs ${shard.index}`);
        if (diff.length > 0) {
          throw new PartialMismatchError(
            `${partialAt} holds another run (${describeRun(p.meta)}) than this one (${describeRun(run)}): ${diff.join('; ')}; ` +
              'pass --restart to discard it, or write elsewhere',
          );
        }
        acc = p.acc;
        videos = [...p.meta.videos];
        skipped = [...p.meta.skipped];
        createdAt = p.meta.createdAt;
        resumed = true;
      }
    }
    const done = new Set<string>([...videos, ...skipped.map((s) => s.id)]);
    const todo = assigned.filter((id) => !done.has(id));
    const partialMeta = (): PartialMetadata => ({
      format: 'cil-stats-partial/1',
      ...run,
      latentShape: [...run.latentShape],
      shardIndex: shard.index,
      shardSize: assigned.length,
      videos,
      skipped,
      complete: videos.length + skipped.length === assigned.length,
      source: o.videos,
      createdAt,
      updatedAt: now().toISOString(),
    });
    const checkpoint = async (): Promise<void> => {
      await writeLocation(partialAt, encodePartial(partialMeta(), acc), o.s3);
      emit({ type: 'checkpoint', location: partialAt, done: videos.length + skipped.length, total: assigned.length });
    };

    // --- the videos ---
    let processed = 0;
    let provider: string | null = null;
    if (todo.length > 0) {
      const encoder = await (o.openEncoder ?? ((b, geo) => openClipEncoder(b, geo, o.encoder)))(bundle, g);
      provider = encoder.provider;
      emit({ type: 'start', total: assigned.length, done: done.size, shard, partial: partialAt, resumed, provider });
      const spec: ClipSpec = { frames, fps, height, width, seed };
      const decodeAbort = new AbortController();
      const ahead = Math.max(1, o.decoders ?? 4);
      const tasks: (Promise<Decoded> | undefined)[] = [];
      let launched = 0;
      const every = Math.max(1, o.checkpointEvery ?? 25);
      let sinceCheckpoint = 0;
      const tLoop = performance.now();
      try {
        for (let k = 0; k < todo.length; k++) {
          // Decode ahead (ffmpeg runs in its own processes), but count strictly in sorted order:
          // the order of Welford updates is what makes a resumed run bit-identical.
          while (launched < todo.length && launched < k + ahead) {
            const t = decodeOne(source, todo[launched], spec, decodeAbort.signal);
            t.catch(() => undefined); // awaited below, in order; avoid an unhandled rejection meanwhile
            tasks[launched++] = t;
          }
          if (o.signal?.aborted) {
            await checkpoint();
            throw new StatsInterrupted(`interrupted after ${videos.length + skipped.length} of ${assigned.length} videos; progress saved in ${partialAt}, rerun to resume`);
          }
          const d = await tasks[k]!;
          tasks[k] = undefined;
          let skip: SkipRecord | null = d.skip ? { id: d.id, kind: d.skip.kind, reason: d.skip.message } : null;
          if (!skip) {
            const x0 = await encoder.encode(d.rgb!);
            let finite = true;
            for (let i = 0; i < x0.length; i++) {
              if (!Number.isFinite(x0[i])) {
                finite = false;
                break;
              }
            }
            if (finite) {
              acc.add(x0);
              videos.push(d.id);
            } else {
              skip = { id: d.id, kind: 'non-finite', reason: 'the VAE encoder returned NaN or infinite values' };
            }
          }
          if (skip) {
            skipped.push(skip);
            emit({ type: 'skip', id: skip.id, kind: skip.kind, reason: skip.reason });
          }
          processed++;
          const elapsedS = (performance.now() - tLoop) / 1000;
          const rate = processed / Math.max(elapsedS, 1e-9);
          const left = todo.length - processed;
          emit({
            type: 'video',
            id: d.id,
            done: videos.length + skipped.length,
            total: assigned.length,
            used: videos.length,
            skipped: skipped.length,
            elapsedS,
            videosPerS: rate,
            etaS: left === 0 ? 0 : left / rate,
          });
          if (++sinceCheckpoint >= every && k < todo.length - 1) {
            await checkpoint();
            sinceCheckpoint = 0;
          }
        }
      } catch (e) {
        // Between videos the state is consistent, so keep what was counted before failing
        // (an interrupt has already saved it).
        if (!(e instanceof StatsInterrupted)) await checkpoint().catch(() => undefined);
        throw e;
      } finally {
        decodeAbort.abort();
        await Promise.allSettled(tasks.filter((t) => t !== undefined));
        await encoder.close();
      }
    }
    await checkpoint();

    // --- the final file ---
    const summary = usageSummary(videos.length, skipped);
    let out: string | null = null;
    let trCovD: number | null = null;
    if (!sharded) {
      if (acc.n === 0) throw new StatsInputError(`no usable videos under ${o.videos}: ${summary}`);
      await writeLocation(o.out, encodeFinalStatistics(acc, { run, createdAt: now().toISOString(), skipped: skipped.length }), o.s3);
      out = o.out;
    }
    if (acc.n > 0) trCovD = acc.trCovD();
    return { run, shard, partial: partialAt, out, used: videos.length, skipped, summary, processed, elapsedS: (performance.now() - t0) / 1000, trCovD };
  } finally {
    await source.close();
    // A bundle opened here: its cached copy may be evicted from now on.
    if (typeof o.model === 'string') await bundle.release?.();
  }
}

/** `i/n` → a shard; null when the text is not of that form. */
export function parseShard(text: string): Shard | null {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  if (!m) return null;
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(count) || count < 1 || index >= count) return null;
  return { index, count };
}
