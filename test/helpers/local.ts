/**
 * Helpers of the local-pipeline tests: a pipeline in a fresh temporary data folder (127.0.0.1, any
 * free port), the synthesized definitions cached once for all test files, reading objects back,
 * decoding an MP4 with ffmpeg, and PSNR.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { getObjectOrNull } from '../../functions/test/helpers/s3server.ts';
import type { LocalPipeline, LocalPipelineOptions, PipelineEvent } from '../../local/src/pipeline.ts';
import { startLocalPipeline } from '../../local/src/pipeline.ts';

/** Shared by the test files (the cache key covers every input of the definitions). */
export const DEFINITIONS_CACHE = join(tmpdir(), 'cil-local-definitions-cache');

export interface TestPipeline {
  readonly pipeline: LocalPipeline;
  readonly dataDir: string;
  readonly events: PipelineEvent[];
  get(key: string): Promise<Buffer | null>;
  exists(key: string): Promise<boolean>;
  close(): Promise<void>;
}

export async function startTestPipeline(o: Partial<LocalPipelineOptions> = {}): Promise<TestPipeline> {
  const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'cil-local-test-'));
  const events: PipelineEvent[] = [];
  const pipeline = await startLocalPipeline({
    definitionsCacheDir: DEFINITIONS_CACHE,
    workerConcurrency: 2,
    workerKillGraceMs: 5000,
    ...o,
    dataDir,
    onEvent: (e) => {
      events.push(e);
      o.onEvent?.(e);
    },
  });
  // Past the fault proxy when there is one: checking what is stored must not trip the faults.
  const s3 = pipeline.faults?.direct ?? pipeline.s3;
  const { bucket } = pipeline;
  return {
    pipeline,
    dataDir,
    events,
    get: (key) => getObjectOrNull(s3, bucket, key),
    async exists(key) {
      try {
        await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      await pipeline.stop();
      if (o.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Every frame of a video as packed RGB24, decoded by ffmpeg. */
export function decodeFrames(file: string, width: number, height: number): Uint8Array[] {
  const r = spawnSync('ffmpeg', ['-v', 'error', '-i', file, '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'], { maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`ffmpeg could not decode ${file}: ${r.stderr.toString()}`);
  const n = width * height * 3;
  const out: Uint8Array[] = [];
  for (let o = 0; o + n <= r.stdout.length; o += n) out.push(new Uint8Array(r.stdout.subarray(o, o + n)));
  return out;
}

/** Peak signal-to-noise ratio of two 8-bit images, dB. */
export function psnr(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) throw new Error(`psnr: lengths differ (${a.length} vs ${b.length})`);
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s === 0 ? Infinity : 10 * Math.log10((255 * 255 * a.length) / s);
}

/** Mean absolute difference of two 8-bit images. */
export function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}
