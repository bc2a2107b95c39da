/**
 * Frame → video encoders for Post-process: the system's ffmpeg (Debian's package; FFMPEG_PATH),
 * spawned with an argument list (no shell), in a private temp directory that is always removed.
 * MP4: H.264 (libx264), yuv420p, BT.709 tags, +faststart, even dimensions — plays in every
 * browser. GIF: palettegen/paletteuse. Animated WebP: ffmpeg's libwebp_anim, or sharp when this
 * ffmpeg lacks it. Output bytes are reproducible for the same frames (bitexact, no timestamps,
 * fixed thread count), so re-running a job overwrites its outputs with identical content.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { EncodeFailed } from '../errors.ts';

export type VideoFormat = 'mp4' | 'gif' | 'webp';

export interface EncodeOptions {
  readonly ffmpegPath: string;
  /** Per ffmpeg run. */
  readonly timeoutMs?: number;
  /** Parent of the temp directory (default: the OS temp dir, /tmp on Lambda). */
  readonly tmpRoot?: string;
}

/** H.264 quality: CRF 18 is visually lossless for these short clips at a few MB. */
export const MP4_CRF = 18;
/** Fixed so x264's output does not depend on the machine's core count. */
const X264_THREADS = 4;
const DEFAULT_TIMEOUT_MS = 120_000;

interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program with arguments; EncodeFailed (with the tail of stderr) on failure or timeout. */
export function runTool(path: string, args: readonly string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr = (stderr + s).slice(-4000);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new EncodeFailed(`cannot run ${path}: ${e.message} (set FFMPEG_PATH to the ffmpeg binary)`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else {
        const why = signal ? `killed by ${signal}${signal === 'SIGKILL' ? ` (timeout ${timeoutMs} ms?)` : ''}` : `exit code ${code}`;
        reject(new EncodeFailed(`${path} ${args.slice(-1)[0] ?? ''}: ${why}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`));
      }
    });
  });
}

const capsCache = new Map<string, Promise<ReadonlySet<string>>>();

/** The encoders this ffmpeg has (from `ffmpeg -encoders`), cached per path. */
export function ffmpegEncoders(ffmpegPath: string): Promise<ReadonlySet<string>> {
  let p = capsCache.get(ffmpegPath);
  if (p === undefined) {
    p = runTool(ffmpegPath, ['-hide_banner', '-nostdin', '-encoders'], 30_000).then((r) => {
      const names = new Set<string>();
      for (const line of r.stdout.split('\n')) {
        const m = /^\s*[VAS][A-Z.]{5}\s+(\S+)/.exec(line);
        if (m) names.add(m[1]);
      }
      return names;
    });
    p.catch(() => capsCache.delete(ffmpegPath));
    capsCache.set(ffmpegPath, p);
  }
  return p;
}

const INPUT = (dir: string, fps: number): string[] => ['-hide_banner', '-loglevel', 'error', '-nostdin', '-y', '-framerate', String(fps), '-start_number', '0', '-i', join(dir, '%04d.png')];
const BITEXACT = ['-map_metadata', '-1', '-fflags', '+bitexact', '-flags', '+bitexact'];

export function mp4Args(dir: string, fps: number, out: string): string[] {
  return [
    ...INPUT(dir, fps),
    // libx264 with yuv420p needs even sides: crop the odd row/column rather than resample.
    '-vf', 'crop=trunc(iw/2)*2:trunc(ih/2)*2,scale=out_color_matrix=bt709:out_range=tv,format=yuv420p',
    '-c:v', 'libx264', '-preset', 'medium', '-crf', String(MP4_CRF), '-pix_fmt', 'yuv420p', '-threads', String(X264_THREADS),
    '-colorspace', 'bt709', '-color_primaries', 'bt709', '-color_trc', 'bt709', '-color_range', 'tv',
    '-movflags', '+faststart', '-r', String(fps), '-an', ...BITEXACT, out,
  ];
}

export function gifArgs(dir: string, fps: number, out: string): string[] {
  return [
    ...INPUT(dir, fps),
    // The palette's statistics come from a copy a quarter the size per side (area-averaged): the
    // same colours for the palette to cover at 1/16 of palettegen's work, which was most of the
    // GIF's time (0.6 → 0.3 s of CPU on the demo's 16 frames; PSNR against the frames 32.12 →
    // 32.19 dB). Every frame is still mapped at full size.
    '-vf', `split[a][b];[a]scale=w='max(1,trunc(iw/4))':h='max(1,trunc(ih/4))':flags=area,palettegen=max_colors=256:stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a`,
    '-loop', '0', '-an', ...BITEXACT, '-f', 'gif', out,
  ];
}

export function webpArgs(dir: string, fps: number, out: string): string[] {
  return [...INPUT(dir, fps), '-c:v', 'libwebp_anim', '-lossless', '0', '-quality', '80', '-loop', '0', '-an', ...BITEXACT, '-f', 'webp', out];
}

/** Animated WebP with sharp (libwebp), for an ffmpeg without libwebp_anim. */
export async function webpWithSharp(frames: readonly Buffer[], fps: number): Promise<Buffer> {
  const delay = Math.round(1000 / fps);
  try {
    return await sharp([...frames], { join: { animated: true } })
      .webp({ quality: 80, loop: 0, delay: frames.map(() => delay) })
      .toBuffer();
  } catch (e) {
    throw new EncodeFailed(`animated WebP (sharp): ${(e as Error).message}`);
  }
}

/**
 * Encodes PNG frames (same size, in order) to each requested format at `fps`. The frames are
 * written to a temp directory as 0000.png … for ffmpeg's image2 demuxer.
 */
export async function encodeVideos(
  frames: readonly Buffer[],
  fps: number,
  formats: readonly VideoFormat[],
  opts: EncodeOptions,
): Promise<Map<VideoFormat, Buffer>> {
  const out = new Map<VideoFormat, Buffer>();
  if (formats.length === 0) return out;
  if (frames.length === 0) throw new EncodeFailed('no frames to encode');
  if (frames.length > 9999) throw new EncodeFailed(`${frames.length} frames; at most 9999`);
  const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const encoders = await ffmpegEncoders(opts.ffmpegPath);
  const dir = await mkdtemp(join(opts.tmpRoot ?? tmpdir(), 'cil-encode-'));
  try {
    await Promise.all(frames.map((f, i) => writeFile(join(dir, `${String(i).padStart(4, '0')}.png`), f)));
    // The formats are independent encodes of the same frames: run them at once (a Lambda with
    // more than one vCPU, or the local pipeline, finishes in the time of the slowest one). Each
    // has a fixed thread count, so the bytes do not depend on what else runs.
    // allSettled: when one fails, the others still finish before the folder is removed.
    const settled = await Promise.allSettled(
      formats.map(async (format): Promise<Buffer> => {
        if (format === 'webp' && !encoders.has('libwebp_anim')) return webpWithSharp(frames, fps);
        if (format === 'mp4' && !encoders.has('libx264')) throw new EncodeFailed(`${opts.ffmpegPath} has no libx264 encoder (install Debian's ffmpeg)`);
        const file = join(dir, `out.${format}`);
        const args = format === 'mp4' ? mp4Args(dir, fps, file) : format === 'gif' ? gifArgs(dir, fps, file) : webpArgs(dir, fps, file);
        await runTool(opts.ffmpegPath, args, timeout);
        return readFile(file);
      }),
    );
    for (const [i, r] of settled.entries()) {
      if (r.status === 'rejected') throw r.reason;
      out.set(formats[i], r.value);
    }
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
