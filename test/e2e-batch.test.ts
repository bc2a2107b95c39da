/**
 * End to end, batch production on the local pipeline: a manifest (batches/<name>.jsonl) of three
 * images starts the synthesized batch-production workflow; its Distributed Map runs PrepareItem and
 * a generation execution per line (named by the line's job id); every line gets its video, and the
 * summary lands under reports/<name>/. A manifest with a refused line is summarized as FAILED.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobIdFor, jobKeys } from '#shared/schemas';
import { testCardPng } from '../local/src/testCard.ts';
import type { TestPipeline } from './helpers/local.ts';
import { startTestPipeline } from './helpers/local.ts';

let t: TestPipeline;
beforeAll(async () => {
  t = await startTestPipeline();
}, 90_000);
afterAll(async () => t?.close());

describe('a manifest through the Distributed Map', () => {
  it('runs one generation per line and writes reports/<name>/summary.json', async () => {
    const b = t.pipeline.bucket;
    // Images under batches/ start nothing on their own.
    await t.pipeline.upload('batches/spring/a.png', await testCardPng());
    await t.pipeline.upload('batches/spring/b.png', await testCardPng(288, 192));
    const lines = [
      { image: 'batches/spring/a.png', request: { prompt: 'pan left', seed: 1 } },
      { image: 'batches/spring/b.png', request: { seed: 2 } },
      { image: 'batches/spring/a.png', request: { prompt: 'zoom in', seed: 3 } },
    ];
    const m = await t.pipeline.upload('batches/spring.jsonl', `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);
    const rec = await t.pipeline.waitForBatch(m.id, 120_000);
    expect(rec.status, `${rec.error}: ${rec.cause}`).toBe('SUCCEEDED');
    expect(rec.mapRun).toEqual({ total: 3, succeeded: 3, failed: 0, running: 0 });

    // Each line's job id: jobIdFor(bucket, "<manifest key>#<index>", manifest version) (docs/infra.md); unversioned here.
    const jobIds = lines.map((_, i) => jobIdFor(b, `batches/spring.jsonl#${i}`, ''));
    for (const [i, id] of jobIds.entries()) {
      const child = t.pipeline.execution('generation', id);
      expect(child?.status, `line ${i + 1}`).toBe('SUCCEEDED');
      expect((child?.input as { batch: unknown }).batch).toEqual({ name: 'spring', manifestKey: 'batches/spring.jsonl', line: i + 1 });
      expect(await t.exists(`${jobKeys(id).output}video.mp4`), `line ${i + 1} video`).toBe(true);
      const spec = JSON.parse((await t.get(jobKeys(id).request))!.toString('utf8')) as { request: { seed: number; prompt: string } };
      expect(spec.request.seed).toBe(lines[i].request.seed);
      expect(spec.request.prompt).toBe(lines[i].request.prompt ?? '');
    }
    // Only the three lines ran (the images under batches/ started nothing).
    expect(t.pipeline.executions('generation').map((e) => e.name).sort()).toEqual([...jobIds].sort());

    const summary = JSON.parse((await t.get('reports/spring/summary.json'))!.toString('utf8')) as Record<string, unknown>;
    expect(summary).toMatchObject({
      format: 'cil-batch-summary/1',
      batchId: m.id,
      batchName: 'spring',
      manifest: { bucket: b, key: 'batches/spring.jsonl' },
      status: 'SUCCEEDED',
      items: { total: 3, succeeded: 3, failed: 0 },
    });
    expect(t.pipeline.notifications().some((n) => n.channel === 'sns' && n.subject === 'CIL batch spring: SUCCEEDED (3/3 succeeded, 0 failed)')).toBe(true);
  }, 120_000);

  it('a refused line fails the map, and the summary says so', async () => {
    const m = await t.pipeline.upload('batches/bad.jsonl', `${JSON.stringify({ image: 'outputs/../secret.png' })}\n`);
    const rec = await t.pipeline.waitForBatch(m.id, 60_000);
    expect(rec.status).toBe('FAILED');
    const summary = JSON.parse((await t.get('reports/bad/summary.json'))!.toString('utf8')) as { status: string; error: { error: string; cause: string } };
    expect(summary.status).toBe('FAILED');
    expect(summary.error.error).toBe('InvalidManifestLine');
    expect(summary.error.cause).toContain('batches/bad.jsonl line 1');
  }, 60_000);

  it('a manifest that is not JSON Lines fails as the ItemReader would', async () => {
    const m = await t.pipeline.upload('batches/garbage.jsonl', '{"image": "batches/spring/a.png"}\nthis is not json\n');
    const rec = await t.pipeline.waitForBatch(m.id, 30_000);
    expect(rec.status).toBe('FAILED');
    expect(rec.error).toBe('States.ItemReaderFailed');
    expect(rec.cause).toContain('line 2');
  }, 30_000);
});
