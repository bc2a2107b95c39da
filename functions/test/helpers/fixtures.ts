/** Test inputs for the functions: a tiny valid manifest, images, crafted files, events. */
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import type { ManifestInput } from '#shared/schemas';
import { parseManifest } from '#shared/schemas';
import type { JobSpec } from '#shared/schemas';
import type { JobResult, OutputKind } from '../../src/postprocess/core.ts';
import { buildJobSpec, parseRequest, parseUploadEvent, resolveRequest } from '../../src/validate/core.ts';
import { pngChunk } from '../../../test/fuzz/images.ts';

/** A minimal valid DynamiCrafter manifest at 96×64 (w×h), 4 frames, written by hand for the tests. */
export function tinyManifest(over: Partial<ManifestInput> = {}): ManifestInput {
  return {
    format: 'cil-bundle/1',
    id: 'tiny',
    family: 'dynamicrafter',
    cil: false,
    resolution: { height: 64, width: 96 },
    frames: 4,
    latent: { channels: 4, downsample: 8, scaleFactor: 0.18215 },
    schedule: {
      kind: 'vp-ddim',
      betaSchedule: 'linear',
      linearStart: 0.00085,
      linearEnd: 0.012,
      timesteps: 1000,
      rescaleZeroSnr: true,
      parameterization: 'v',
      spacing: 'uniform_trailing',
    },
    tokenizer: { file: 'tokenizer.json' },
    defaults: { steps: 10, start: 940, analyticInit: true, statistics: 'tiny-stats', guidanceScale: 7.5, eta: 1, frameStride: 10, fps: 10 },
    components: {
      unet: {
        file: 'unet.onnx',
        inputs: [{ name: 'x', dtype: 'float32', dims: ['batch', 8, 'frames', 8, 12] }],
        outputs: [{ name: 'out', dtype: 'float32', dims: ['batch', 4, 'frames', 8, 12] }],
      },
    },
    ...over,
  };
}

/** A minimal valid SVD manifest at 96×64. */
export function tinySvdManifest(): ManifestInput {
  return {
    ...tinyManifest(),
    id: 'tiny-svd',
    family: 'svd',
    tokenizer: undefined,
    frames: 6,
    schedule: { kind: 'edm-euler', sigmaMin: 0.002, sigmaMax: 700, rho: 7, parameterization: 'v' },
    defaults: { steps: 25, start: 700, analyticInit: false, minGuidanceScale: 1, maxGuidanceScale: 3, fps: 7, motionBucketId: 127, noiseAugStrength: 0.02 },
  };
}

/** Deterministic pseudo-random bytes (xorshift32), so "random" fixtures are the same every run. */
export function pseudoRandomBytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** A noisy RGB image (incompressible, so truncating its file cuts into pixel data). */
export function noiseImage(width: number, height: number, seed = 7): Sharp {
  return sharp(pseudoRandomBytes(width * height * 3, seed), { raw: { width, height, channels: 3 } });
}


/** A PNG written by hand: signature, IHDR declaring width × height (8-bit RGB, valid CRC), a small IDAT, IEND. */
export function handmadePng(width: number, height: number, extraChunks: Buffer[] = []): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    ...extraChunks,
    pngChunk('IDAT', deflateSync(Buffer.alloc(1024))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** An acTL chunk (APNG animation control: 2 frames, loop forever). */
export function actlChunk(): Buffer {
  const d = Buffer.alloc(8);
  d.writeUInt32BE(2, 0);
  return pngChunk('acTL', d);
}

/** An S3 "Object Created" event as EventBridge delivers it (Step Functions passes it whole). */
export function uploadEvent(bucket: string, key: string, o: { size?: number; etag?: string; versionId?: string; time?: string } = {}): Record<string, unknown> {
  return {
    version: '0',
    id: '17793124-05d4-b198-2fde-7ededc63b103',
    'detail-type': 'Object Created',
    source: 'aws.s3',
    account: '123456789012',
    time: o.time ?? '2025-01-15T12:00:00Z',
    region: 'us-east-1',
    resources: [`arn:aws:s3:::${bucket}`],
    detail: {
      version: '0',
      bucket: { name: bucket },
      object: { key, size: o.size ?? 1, etag: o.etag ?? 'd41d8cd98f00b204e9800998ecf8427e', ...(o.versionId ? { 'version-id': o.versionId } : {}), sequencer: '00617F08299329D189' },
      'request-id': 'N4N7GDK58NMKJ12R',
      requester: '123456789012',
      reason: 'PutObject',
    },
  };
}

/** Mean RGB of a region of an 8-bit RGB raw buffer. */
export function meanRgb(raw: Buffer, width: number, x0: number, y0: number, x1: number, y1: number): [number, number, number] {
  const s = [0, 0, 0];
  let n = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const p = (y * width + x) * 3;
      s[0] += raw[p];
      s[1] += raw[p + 1];
      s[2] += raw[p + 2];
      n++;
    }
  }
  return [s[0] / n, s[1] / n, s[2] / n];
}

/** The job spec Validate builds for `inputs/cat.png` on the tiny model with this prompt (seed 1). */
export function tinyJobSpec(prompt: string): JobSpec {
  const r = resolveRequest(parseRequest({ model: 'tiny', prompt }, 'x'), parseManifest(tinyManifest(), 'tiny'), () => 1, 'x');
  return buildJobSpec(parseUploadEvent(uploadEvent('cil-data', 'inputs/cat.png', { etag: 'e' })), 10, r, '2025-01-15T12:00:00.000Z');
}

/** A job result for `s` listing these outputs (kind, key under the output prefix), with placeholder sizes and hashes. */
export function tinyJobResult(s: JobSpec, outputs: readonly (readonly [OutputKind, string])[]): JobResult {
  const o = s.outputPrefix;
  return {
    format: 'cil-result/1', status: 'succeeded', jobId: s.jobId, bucket: s.bucket, model: 'tiny', input: { key: s.input.key, versionId: null },
    outputPrefix: o, resultKey: `${o}result.json`, video: { frames: 4, fps: 10, width: 96, height: 64 },
    outputs: outputs.map(([kind, key]) => ({ kind, key: o + key, contentType: 'x/y', bytes: 10, sha256: '0'.repeat(64) })),
    timings: { totalS: 2.5 }, createdAt: s.createdAt,
  };
}
