import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ImageDecodeError, imageToTensor } from '../src/image.ts';

async function png(): Promise<Buffer> {
  return sharp({ create: { width: 100, height: 80, channels: 3, background: '#336699' } }).png().toBuffer();
}

async function refusal(bytes: Uint8Array): Promise<ImageDecodeError> {
  const e = await imageToTensor(bytes, 64, 64, 'jobs/j-1/input.png').then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(ImageDecodeError);
  return e as ImageDecodeError;
}

// Issue 19, defect 9: a flipped IHDR CRC reached the worker's log as "Unknown error".
describe('imageToTensor: why an image does not decode', () => {
  it('a PNG whose IHDR CRC is flipped: "corrupt PNG: IHDR chunk CRC mismatch", naming the file', async () => {
    const bad = await png();
    bad[8 + 8 + 13] ^= 0xff;
    expect((await refusal(bad)).message).toMatch(/^jobs\/j-1\/input\.png: cannot decode the image: corrupt PNG: IHDR chunk CRC mismatch at byte 8 \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$/);
  });

  it('a truncated PNG names the chunk the file ends in', async () => {
    const b = await png();
    expect((await refusal(b.subarray(0, b.length - 20))).message).toMatch(/^jobs\/j-1\/input\.png: cannot decode the image: truncated PNG: the IDAT chunk at byte \d+ declares \d+ bytes, but the file ends \d+ bytes into it$/);
    expect((await refusal(b.subarray(0, 30))).message).toBe('jobs/j-1/input.png: cannot decode the image: truncated PNG: the IHDR chunk at byte 8 declares 13 bytes, but the file ends 14 bytes into it');
  });

  it('other formats keep the decoder’s own reason', async () => {
    const j = await sharp({ create: { width: 100, height: 80, channels: 3, background: '#336699' } }).jpeg().toBuffer();
    expect((await refusal(j.subarray(0, Math.floor(j.length * 0.6)))).message).toMatch(/^jobs\/j-1\/input\.png: cannot decode the image: corrupt or truncated data \(.+\)$/);
  });

  it('a sound PNG still decodes to the same tensor', async () => {
    const t = await imageToTensor(await png(), 64, 64, 'x');
    expect(t.dims).toEqual([1, 3, 64, 64]);
    expect(t.data[0]).toBeCloseTo(0x33 / 127.5 - 1, 6);
  });
});
