/**
 * Statistics-job throughput (issue 4): `cil stats compute` over a handful of generated short H.264
 * videos with the demo model's VAE (its default 256×160, 16 frames at 8 fps), end to end — ffmpeg
 * decode, resample, resize/crop, encode, accumulate. Reported as videos per second of the loop
 * (bundle opening and the first session start excluded: they are paid once per shard).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeDemoBundle } from '../demo/src/bundle.ts';
import { computeStatistics } from '../gpu-worker/src/stats/compute.ts';

const VIDEOS = 12;

export async function benchStats(): Promise<{ statsVideosPerS: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'cil-bench-stats-'));
  try {
    const model = join(dir, 'demo');
    await writeDemoBundle(model);
    mkdirSync(join(dir, 'videos'));
    for (let i = 0; i < VIDEOS; i++) {
      // 4 s of a moving test pattern at 24 fps, 320×240 (another aspect: exercises resize + crop)
      const r = spawnSync('ffmpeg', [
        '-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=size=320x240:rate=24:duration=4,hue=h=${i * 30}`,
        '-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p', join(dir, 'videos', `v${String(i).padStart(2, '0')}.mp4`),
      ]);
      if (r.status !== 0) throw new Error(`ffmpeg could not make a benchmark video: ${r.stderr.toString()}`);
    }
    let rate = 0;
    await computeStatistics({
      videos: join(dir, 'videos'),
      model,
      out: join(dir, 'stats.safetensors'),
      onEvent: (e) => {
        if (e.type === 'video') rate = e.videosPerS;
      },
    });
    return { statsVideosPerS: rate };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
