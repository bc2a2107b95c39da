/** The statistics job's S3 video source: concurrent downloads share one scratch folder, and close() removes it. */
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { openVideoSource } from '../src/stats/io.ts';

const scratch = (): Set<string> => new Set(readdirSync(tmpdir()).filter((n) => n.startsWith('cil-stats-')));

describe('openVideoSource over S3', () => {
  it('gives concurrent materialize calls one scratch folder and leaves none behind after close()', async () => {
    const keys = ['videos/a.mp4', 'videos/b.MP4', 'videos/c.webm'];
    const fake = {
      send: (cmd: { constructor: { name: string }; input: { Key?: string; Prefix?: string } }) => {
        if (cmd.constructor.name === 'ListObjectsV2Command') return Promise.resolve({ Contents: keys.map((Key) => ({ Key })), IsTruncated: false });
        return Promise.resolve({ Body: Readable.from([Buffer.from(`bytes of ${cmd.input.Key}`)]) });
      },
    } as unknown as S3Client;
    const before = scratch();
    const source = await openVideoSource('s3://data/videos/', fake);
    const got = await Promise.all(source.ids.map((id) => source.materialize(id)));
    const made = [...scratch()].filter((n) => !before.has(n));
    expect(made).toHaveLength(1);
    expect(new Set(got.map((g) => g.path.slice(0, g.path.lastIndexOf('/')))).size).toBe(1);
    await source.close();
    expect([...scratch()].filter((n) => !before.has(n))).toEqual([]);
  });
});
