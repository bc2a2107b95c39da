/**
 * `cil generate` as a user meets it (issue 18): video.mp4 next to the frames (the Post-process
 * encoding) unless --no-video, to a folder or an s3:// prefix; a named error when ffmpeg is
 * missing or an input path is wrong; a progress bar in a terminal and JSON lines otherwise.
 * Run in-process through cli/main.ts with stdout/stderr captured and their isTTY set.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCli as cil } from './helpers/runCli.ts';
import { outputMode } from '../generate.ts';
import { DEMO_DEFAULTS, writeDemoBundle } from '../../demo/src/bundle.ts';
import { testCardPng } from '../../local/src/testCard.ts';
import { localS3Env } from '../../local/src/s3.ts';
import { startLocalS3 } from '../../functions/test/helpers/s3server.ts';

const FFMPEG = process.env.FFMPEG_PATH ?? '/usr/bin/ffmpeg';
const FFPROBE = FFMPEG.replace(/ffmpeg$/, 'ffprobe');

/** The demo bundle's frames per video (docs/demo-model.md). */
const F = DEMO_DEFAULTS.frames;

let dir: string;
let bundle: string;
let image: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cil-generate-cli-'));
  bundle = join(dir, 'bundle');
  await writeDemoBundle(bundle);
  image = join(dir, 'card.png');
  writeFileSync(image, await testCardPng());
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function jsonLines(s: string): Record<string, unknown>[] {
  return s.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Top-level MP4 box types in file order. */
function mp4Boxes(b: Buffer): string[] {
  const types: string[] = [];
  let p = 0;
  while (p + 8 <= b.length) {
    let size = b.readUInt32BE(p);
    if (size === 1) size = Number(b.readBigUInt64BE(p + 8));
    if (size === 0) size = b.length - p;
    types.push(b.toString('latin1', p + 4, p + 8));
    p += size;
  }
  return types;
}

function probe(file: string): Record<string, string> {
  const r = spawnSync(FFPROBE, ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=codec_name,pix_fmt,width,height,nb_read_frames', '-of', 'json', file], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { streams: Record<string, string>[] }).streams[0];
}

function framesOf(out: string): Map<string, Buffer> {
  const d = join(out, 'frames');
  return new Map(readdirSync(d).sort().map((f) => [f, readFileSync(join(d, f))]));
}

describe('cil generate: video.mp4', () => {
  it('writes a browser-playable video.mp4 next to the frames (H.264, yuv420p, moov before mdat, one frame per PNG); --no-video writes none and the same frames', async () => {
    const out = join(dir, 'with-video');
    const r = await cil(['generate', '--image', image, '--model', bundle, '--out', out, '--seed', '7', '--prompt', 'pan left']);
    expect(r.code, r.stderr).toBe(0);
    const done = jsonLines(r.stdout).at(-1)!;
    expect(done).toMatchObject({ event: 'done', frames: F, video: join(out, 'video.mp4') });
    const frames = framesOf(out);
    expect(frames.size).toBe(F);
    const mp4 = join(out, 'video.mp4');
    const s = probe(mp4);
    expect([s.codec_name, s.pix_fmt, Number(s.nb_read_frames)]).toEqual(['h264', 'yuv420p', frames.size]);
    const boxes = mp4Boxes(readFileSync(mp4));
    expect(boxes.indexOf('moov')).toBeGreaterThan(-1);
    expect(boxes.indexOf('moov')).toBeLessThan(boxes.indexOf('mdat'));

    const bare = join(dir, 'no-video');
    const n = await cil(['generate', '--image', image, '--model', bundle, '--out', bare, '--seed', '7', '--prompt', 'pan left', '--no-video']);
    expect(n.code, n.stderr).toBe(0);
    expect(jsonLines(n.stdout).at(-1)).toMatchObject({ event: 'done', frames: F, video: null });
    expect(existsSync(join(bare, 'video.mp4'))).toBe(false);
    // The video is added after generation: the frames are byte-identical either way.
    expect(framesOf(bare)).toEqual(frames);
  });

  it('to an s3:// --out: the frames and video.mp4 under the same prefix', async () => {
    const s3 = await startLocalS3();
    try {
      for (const [k, v] of Object.entries(localS3Env(s3.endpoint))) vi.stubEnv(k, v);
      const r = await cil(['generate', '--image', image, '--model', bundle, '--out', `s3://${s3.bucket}/runs/a/`, '--steps', '3']);
      expect(r.code, r.stderr).toBe(0);
      expect(jsonLines(r.stdout).at(-1)).toMatchObject({ event: 'done', video: `s3://${s3.bucket}/runs/a/video.mp4` });
      const keys = await s3.list('runs/a/');
      const frameKeys = Array.from({ length: F }, (_, i) => `frames/${String(i).padStart(4, '0')}.png`);
      expect(keys).toEqual([...frameKeys, 'metadata.json', 'video.mp4'].map((k) => `runs/a/${k}`));
      const file = join(dir, 's3-video.mp4');
      writeFileSync(file, (await s3.get('runs/a/video.mp4'))!);
      expect(probe(file)).toMatchObject({ codec_name: 'h264', pix_fmt: 'yuv420p', nb_read_frames: String(F) });
    } finally {
      vi.unstubAllEnvs();
      await s3.stop();
    }
  });

  it('without ffmpeg: FfmpegMissing with the install command and --no-video, before any output is written; --no-video still works', async () => {
    vi.stubEnv('FFMPEG_PATH', join(dir, 'no-such-ffmpeg'));
    try {
      const out = join(dir, 'no-ffmpeg');
      const r = await cil(['generate', '--image', image, '--model', bundle, '--out', out]);
      expect(r.code).toBe(1);
      const err = jsonLines(r.stderr).at(-1)!;
      expect(err.error).toBe('FfmpegMissing');
      expect(err.reason).toMatch(/FFMPEG_PATH .*no-such-ffmpeg.*--no-video/);
      expect(existsSync(out)).toBe(false);
      // A program that is not ffmpeg (no libx264 listed): the same error, with the install command.
      vi.stubEnv('FFMPEG_PATH', '/bin/true');
      const m = await cil(['generate', '--image', image, '--model', bundle, '--out', out]);
      expect(m.code).toBe(1);
      const e2 = jsonLines(m.stderr).at(-1)!;
      expect(e2.error).toBe('FfmpegMissing');
      expect(e2.reason).toMatch(/^\/bin\/true has no libx264 encoder .*apt-get install -y ffmpeg.*--no-video/);
      expect(existsSync(out)).toBe(false);
      vi.stubEnv('FFMPEG_PATH', join(dir, 'no-such-ffmpeg'));
      const ok = await cil(['generate', '--image', image, '--model', bundle, '--out', out, '--no-video', '--steps', '2']);
      expect(ok.code, ok.stderr).toBe(0);
      expect(readdirSync(join(out, 'frames'))).toHaveLength(F);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe('cil generate: named errors', () => {
  it('a missing image is InputNotFound naming the path, before the model loads, with no output written', async () => {
    const out = join(dir, 'missing-image');
    const r = await cil(['generate', '--image', join(dir, 'nope.png'), '--model', bundle, '--out', out]);
    expect(r.code).toBe(1);
    expect(jsonLines(r.stderr)).toEqual([{ error: 'InputNotFound', reason: `image ${join(dir, 'nope.png')}: no such file` }]);
    expect(existsSync(out)).toBe(false);
  });

  it('missing --stats and --init-noise files are InputNotFound; a folder given as the image too', async () => {
    const cases: [string[], RegExp][] = [
      [['--stats', join(dir, 'nope.safetensors')], /^statistics .*nope\.safetensors: no such file$/],
      [['--init-noise', join(dir, 'nope.npy')], /^initial noise .*nope\.npy: no such file$/],
    ];
    for (const [extra, reason] of cases) {
      const r = await cil(['generate', '--image', image, '--model', bundle, '--out', join(dir, 'x'), ...extra]);
      expect(r.code).toBe(1);
      const e = jsonLines(r.stderr).at(-1)!;
      expect(e.error).toBe('InputNotFound');
      expect(e.reason).toMatch(reason);
    }
    const d = await cil(['generate', '--image', dir, '--model', bundle, '--out', join(dir, 'x')]);
    expect(jsonLines(d.stderr).at(-1)).toMatchObject({ error: 'InputNotFound', reason: `image ${dir}: not a file` });
  });

  it('a malformed s3:// location is a usage error naming the flag (exit 2)', async () => {
    const r = await cil(['generate', '--image', 's3://bucket-only', '--model', bundle, '--out', join(dir, 'x')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("cil: --image: 's3://bucket-only' is not an s3://bucket/key URI\n");
  });

  it('a bare Node error reaching the top-level printer gets a stable name (demo-model --out under a file: FileSystemError)', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const r = await cil(['demo-model', '--out', join(file, 'sub')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cil: FileSystemError: ENOTDIR/);
  });
});

describe('cil generate: progress', () => {
  it.each([
    // [flags, stdout TTY, stderr TTY] → [progress, JSON result]
    [{ progress: 'auto' }, true, true, 'bar', false],
    [{ progress: 'auto' }, false, true, 'json', true],
    [{ progress: 'auto' }, true, false, 'json', true],
    [{ progress: 'auto' }, false, false, 'json', true],
    [{ progress: 'auto', json: true }, true, true, 'json', true],
    [{ progress: 'json' }, true, true, 'json', true],
    [{ progress: 'bar' }, false, false, 'bar', true],
    [{ progress: 'none' }, true, true, 'none', false],
    [{ progress: 'none' }, false, true, 'none', true],
  ] as const)('%o with stdout TTY %s, stderr TTY %s → progress %s, JSON result %s', (flags, stdout, stderr, progress, json) => {
    expect(outputMode(flags, { stdout, stderr })).toEqual({ progress, json });
  });

  it('--json with --progress bar is a usage error', async () => {
    const r = await cil(['generate', '--image', image, '--model', bundle, '--out', join(dir, 'x'), '--json', '--progress', 'bar']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^cil: --json and --progress bar/);
  });

  it('in a terminal: a bar and sentences, no JSON; not in a terminal, or with --json: JSON lines only', async () => {
    const args = ['generate', '--image', image, '--model', bundle, '--steps', '4', '--no-video'];
    const t = await cil([...args, '--out', join(dir, 'tty')], { stdout: true, stderr: true });
    expect(t.code, t.stderr).toBe(0);
    expect(t.stderr).toContain('denoise [');
    expect(t.stderr).toContain('4/4 steps');
    expect(t.stderr).toMatch(/^execution provider: cpu/m);
    expect(t.stderr).not.toContain('{"event"');
    expect(t.stdout).toMatch(new RegExp(`^wrote ${F} frames \\(${DEMO_DEFAULTS.width}×${DEMO_DEFAULTS.height}, \\d+ fps\\) to .*tty \\(seed \\d+, [\\d.]+ s on cpu\\)\n$`));

    for (const [tty, extra] of [[{ stdout: false, stderr: false }, []], [{ stdout: true, stderr: true }, ['--json']]] as const) {
      const j = await cil([...args, '--out', join(dir, 'json'), ...extra], tty);
      expect(j.code, j.stderr).toBe(0);
      const events = jsonLines(j.stdout);
      expect(events.map((e) => e.event)).toEqual([...Array<string>(events.length - 1).fill('progress'), 'done']);
      expect(events.filter((e) => e.phase === 'denoise').map((e) => e.step)).toEqual([1, 2, 3, 4]);
      expect(j.stderr).not.toContain('denoise [');
      expect(jsonLines(j.stderr)).toMatchObject([{ event: 'sessions', executionProvider: 'cpu' }]);
    }
  });
});

describe('cil generate --help', () => {
  it('documents --no-video, --json and what auto progress means', async () => {
    const r = await cil(['generate', '--help']);
    // commander wraps help text to the terminal's width
    const help = r.stdout.replace(/\s+/g, ' ');
    expect(help).toContain('--no-video write the PNG frames only (default: also video.mp4, H.264, which needs ffmpeg)');
    expect(help).toContain('--json JSON lines on stdout (progress events, then the result) even in a terminal');
    expect(help).toContain('--progress <mode> auto (a bar in a terminal, JSON lines on stdout otherwise), bar, json, none');
    expect(help).toContain('video.mp4');
  });
});
