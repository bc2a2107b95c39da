/** The job's output files: one PNG per frame, and the final latent when asked for. */
import { writeNpy } from '#shared/formats';
import type { Tensor } from '#shared/sampler';
import { frameToPng } from '../image.ts';
import type { OutputSink } from '../sink.ts';

/** Writes frames/0000.png … from decoded frames [F, 3, H, W]; returns their keys in order. */
export async function writeFrames(sink: OutputSink, frames: Float32Array, count: number, height: number, width: number): Promise<string[]> {
  const keys: string[] = [];
  for (let f = 0; f < count; f++) {
    const key = `frames/${String(f).padStart(4, '0')}.png`;
    await sink.put(key, await frameToPng(frames, f * 3 * height * width, height, width), 'image/png');
    keys.push(key);
  }
  return keys;
}

export const LATENT_KEY = 'latent.npy';

export async function writeLatent(sink: OutputSink, latent: Tensor): Promise<string> {
  await sink.put(LATENT_KEY, writeNpy(latent), 'application/octet-stream');
  return LATENT_KEY;
}
