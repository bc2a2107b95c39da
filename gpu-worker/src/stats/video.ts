/**
 * Video decoding for the statistics job with Debian's ffmpeg/ffprobe (scripts/setup-system.sh; the
 * container image installs the same packages). One ffmpeg process per clip: its filter graph
 * resamples the video to the model's fps, keeps the seeded clip, resizes to cover the target size,
 * centre-crops and converts to RGB; the clip arrives as raw bytes on stdout.
 *
 * Why a child process and not an npm decoder: no maintained npm package decodes the common codecs
 * (H.264, VP9, AV1) without ffmpeg underneath; the wrappers that exist only build command lines.
 */
import { spawn } from 'node:child_process';
import { clipStartIndex } from '#shared/stats';
import type { SkipKind } from '#shared/stats';
import { FfmpegMissingError } from './errors.ts';

/** A video that cannot give a clip; the job counts it as skipped and carries on. */
export class VideoSkip extends Error {
  override readonly name = 'VideoSkip';
  readonly kind: SkipKind;
  constructor(kind: SkipKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

export const FFMPEG = process.env.CIL_FFMPEG ?? 'ffmpeg';
export const FFPROBE = process.env.CIL_FFPROBE ?? 'ffprobe';
/** A decode that runs longer than this is killed and the video skipped (a hung demuxer must not stall a shard). */
export const DECODE_TIMEOUT_MS = 120_000;

export interface ClipSpec {
  readonly frames: number;
  readonly fps: number;
  readonly height: number;
  readonly width: number;
  readonly seed: number;
}

export interface VideoInfo {
  readonly width: number;
  readonly height: number;
  /** Seconds, or null when neither the stream nor the container records it. */
  readonly durationS: number | null;
}

export interface DecodedClip {
  /** frames × height × width × 3 bytes, RGB, row-major, frame after frame. */
  readonly rgb: Uint8Array;
  /** First frame of the clip on the model-fps grid (frame k of the clip is at (start + k) / fps seconds). */
  readonly start: number;
  /** Frames on the model-fps grid the video was taken to have (null: duration unknown, clip taken from 0). */
  readonly available: number | null;
}

interface RunResult {
  code: number | null;
  stdout: Uint8Array;
  stdoutBytes: number;
  stderr: string;
  timedOut: boolean;
}

/** Runs a tool, collecting stdout into at most `maxBytes` (more is an error), stderr as text. */
function runTool(cmd: string, args: readonly string[], maxBytes: number, signal?: AbortSignal): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal });
    const out = new Uint8Array(maxBytes);
    let got = 0;
    let overflow = false;
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, DECODE_TIMEOUT_MS);
    child.stdout.on('data', (b: Buffer) => {
      const n = Math.min(b.length, maxBytes - got);
      out.set(b.subarray(0, n), got);
      got += n;
      if (n < b.length && !overflow) {
        overflow = true;
        child.kill('SIGKILL');
      }
    });
    child.stderr.on('data', (b: Buffer) => {
      if (stderr.length < 16384) stderr += b.toString('utf8');
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ENOENT') reject(new FfmpegMissingError(`${cmd} not found: install ffmpeg (scripts/setup-system.sh, or apt-get install ffmpeg), or set CIL_FFMPEG/CIL_FFPROBE`));
      else reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (overflow) {
        reject(new Error(`${cmd} wrote more than the ${maxBytes} bytes expected`));
        return;
      }
      resolve({ code, stdout: out, stdoutBytes: got, stderr, timedOut });
    });
  });
}

/** The most telling line of an ffmpeg error log (its last non-empty line), shortened. */
function firstError(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const line = lines.length > 0 ? lines[lines.length - 1] : 'no message';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** Width, height and duration of the first video stream; VideoSkip when there is none or it is unreadable. */
export async function probeVideo(path: string, signal?: AbortSignal): Promise<VideoInfo> {
  const r = await runTool(
    FFPROBE,
    ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height,duration:format=duration', '-of', 'json', path],
    1 << 20,
    signal,
  );
  if (r.timedOut) throw new VideoSkip('no-decode', `ffprobe timed out after ${DECODE_TIMEOUT_MS / 1000} s`);
  if (r.code !== 0) throw new VideoSkip('no-decode', `ffprobe: ${firstError(r.stderr)}`);
  let j: { streams?: { width?: number; height?: number; duration?: string }[]; format?: { duration?: string } };
  try {
    j = JSON.parse(Buffer.from(r.stdout.subarray(0, r.stdoutBytes)).toString('utf8')) as typeof j;
  } catch {
    throw new VideoSkip('no-decode', 'ffprobe printed no readable description');
  }
  const s = j.streams?.[0];
  if (!s) throw new VideoSkip('no-video', 'no video stream');
  const width = s.width ?? 0;
  const height = s.height ?? 0;
  if (!(width > 0 && height > 0)) throw new VideoSkip('zero-size', `frame size ${width}×${height}`);
  const d = Number(s.duration ?? j.format?.duration);
  return { width, height, durationS: Number.isFinite(d) && d > 0 ? d : null };
}

/** Frames on the model-fps grid a video of `durationS` seconds surely has (ffmpeg's fps filter may give one more). */
export function framesAtFps(durationS: number, fps: number): number {
  return Math.floor(durationS * fps + 1e-6);
}

/**
 * The ffmpeg filter graph of a clip: resample to `fps` (round=up: output frame n is the last input
 * frame at or before n/fps, so a 24 fps source sampled at 8 fps gives source frames 0, 3, 6, …),
 * keep frames start … start+frames−1, scale to cover height×width, centre-crop, RGB.
 */
export function clipFilter(spec: ClipSpec, start: number): string {
  const { fps, frames, width: W, height: H } = spec;
  return (
    `fps=${fps}:round=up,trim=start_frame=${start}:end_frame=${start + frames},` +
    `scale=${W}:${H}:force_original_aspect_ratio=increase:flags=bicubic,crop=${W}:${H},format=rgb24`
  );
}

/**
 * Decodes the clip of video `id` (a file at `path`). The clip start is drawn uniformly from
 * (seed, id) among the valid starts, so every shard and rerun takes the same clip. Decoding is
 * strict (-xerror): a corrupt frame skips the video rather than averaging concealment artefacts.
 * Throws VideoSkip for videos that cannot give a clip, FfmpegMissingError when ffmpeg is absent.
 */
export async function decodeClip(path: string, id: string, spec: ClipSpec, signal?: AbortSignal): Promise<DecodedClip> {
  const info = await probeVideo(path, signal);
  const available = info.durationS === null ? null : framesAtFps(info.durationS, spec.fps);
  if (available !== null && available < spec.frames) {
    throw new VideoSkip(
      'too-short',
      `${info.durationS!.toFixed(3)} s gives ${available} frame${available === 1 ? '' : 's'} at ${spec.fps} fps, the clip needs ${spec.frames}`,
    );
  }
  const start = available === null ? 0 : clipStartIndex(spec.seed, id, available, spec.frames);
  const frameBytes = spec.height * spec.width * 3;
  const need = frameBytes * spec.frames;
  const r = await runTool(
    FFMPEG,
    ['-nostdin', '-v', 'error', '-xerror', '-i', path, '-an', '-sn', '-dn', '-vf', clipFilter(spec, start), '-frames:v', String(spec.frames), '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'],
    need,
    signal,
  );
  if (r.timedOut) throw new VideoSkip('no-decode', `ffmpeg timed out after ${DECODE_TIMEOUT_MS / 1000} s`);
  if (r.stdoutBytes < need) {
    if (r.code !== 0) throw new VideoSkip('no-decode', `ffmpeg: ${firstError(r.stderr)}`);
    throw new VideoSkip('few-frames', `decoded ${Math.floor(r.stdoutBytes / frameBytes)} of ${spec.frames} frames (clip start ${start})`);
  }
  return { rgb: r.stdout, start, available };
}
