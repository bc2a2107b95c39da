/**
 * End to end, idempotency on the local pipeline: the same upload event delivered twice, and the
 * same bytes uploaded twice under the same key (the local bucket is unversioned, so the ETag is
 * the version), start one run — one execution, one Batch job, one notification — because the
 * starter names the execution by the job id and a second start is ExecutionAlreadyExists. The
 * names outlive a restart of the pipeline, as AWS keeps execution names.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { testCardPng } from '../local/src/testCard.ts';
import { DataDirInUse } from '../local/src/pipeline.ts';
import { startTestPipeline } from './helpers/local.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'cil-local-dup-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('two identical upload events', () => {
  it('start one run: one execution, one Batch job, one notification — also after a restart', async () => {
    const card = await testCardPng(192, 128);
    const etag = createHash('md5').update(card).digest('hex');
    const detail = { bucket: { name: 'cil-data' }, object: { key: 'inputs/dup/card.png', size: card.length, etag } };
    let id: string;
    const t = await startTestPipeline({ dataDir });
    try {
      const up = await t.pipeline.upload('inputs/dup/card.png', card);
      id = up.id;
      // The same event again (EventBridge delivers at least once), and the same bytes again.
      const again = await Promise.all([t.pipeline.deliver(detail), t.pipeline.deliver(detail)]);
      expect(again).toEqual(['duplicate', 'duplicate']);
      const reupload = await t.pipeline.upload('inputs/dup/card.png', card);
      expect(reupload.id).toBe(id);
      const rec = await t.pipeline.waitForJob(id, 60_000);
      expect(rec.status, `${rec.error}: ${rec.cause}`).toBe('SUCCEEDED');
      // The re-upload's event is handled asynchronously: wait for its outcome before counting.
      for (let i = 0; i < 100 && t.events.filter((e) => e.type === 'duplicate').length < 3; i++) await new Promise((r) => setTimeout(r, 50));
      expect(t.pipeline.executions('generation').map((e) => e.name)).toEqual([id]);
      const started = t.events.filter((e) => e.type === 'execution-started');
      const duplicates = t.events.filter((e) => e.type === 'duplicate');
      expect(started).toHaveLength(1);
      expect(duplicates.length).toBe(3);
      const jobs = new Set(t.events.flatMap((e) => (e.type === 'batch-job' && e.job.JobName === id ? [e.job.JobId] : [])));
      expect(jobs.size).toBe(1);
      expect(t.pipeline.notifications().filter((n) => n.channel === 'sns' && (n.message as { jobId?: string }).jobId === id)).toHaveLength(1);
      // A second pipeline cannot use the same data folder while this one runs.
      await expect(startTestPipeline({ dataDir })).rejects.toBeInstanceOf(DataDirInUse);
    } finally {
      await t.close();
    }

    const t2 = await startTestPipeline({ dataDir });
    try {
      expect(t2.pipeline.execution('generation', id)?.status).toBe('SUCCEEDED');
      expect(await t2.pipeline.deliver(detail)).toBe('duplicate');
      expect(t2.pipeline.executions('generation')).toHaveLength(1);
    } finally {
      await t2.close();
    }
  }, 90_000);
});
