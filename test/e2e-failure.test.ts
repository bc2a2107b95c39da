/**
 * End to end, failing uploads on the local pipeline: an invalid image ends in a failure record,
 * a failure notification in the local log and a failed execution, with the upload untouched; and
 * an input the worker refuses (exit code 3) fails the Batch job after one attempt, as the job
 * definition's retry strategy says, and is recorded against Generate.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { jobKeys } from '#shared/schemas';
import { testCardPng } from '../local/src/testCard.ts';
import type { TestPipeline } from './helpers/local.ts';
import { startTestPipeline } from './helpers/local.ts';

let t: TestPipeline;
beforeAll(async () => {
  t = await startTestPipeline();
}, 90_000);
afterAll(async () => t?.close());

async function keysUnder(prefix: string): Promise<string[]> {
  const r = await t.pipeline.s3.send(new ListObjectsV2Command({ Bucket: t.pipeline.bucket, Prefix: prefix }));
  return (r.Contents ?? []).map((c) => c.Key!);
}

describe('a failing upload', () => {
  it('an invalid image: failures/<job>.json, a failure notification, a failed execution, the input untouched', async () => {
    // A PNG signature followed by garbage: refused by content, not by name.
    const bytes = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('definitely not the rest of a PNG file')]);
    const up = await t.pipeline.upload('inputs/broken/cat.png', bytes);
    const rec = await t.pipeline.waitForJob(up.id, 60_000);
    expect(rec.status).toBe('FAILED');
    expect(rec.error).toBe('InvalidImage');
    expect(rec.states.map((s) => s.name)).toEqual(['Validate', 'ValidateFailed', 'RecordFailure', 'NotifyFailure', 'JobFailed']);

    const failure = JSON.parse((await t.get(jobKeys(up.id).failure))!.toString('utf8')) as Record<string, unknown>;
    expect(failure).toMatchObject({ format: 'cil-failure/1', status: 'failed', jobId: up.id, failedStep: 'Validate', error: 'InvalidImage', input: { key: 'inputs/broken/cat.png' } });
    expect(String(failure.reason)).toContain('inputs/broken/cat.png');

    const notes = t.pipeline.notifications().filter((n) => (n.message as { jobId?: string }).jobId === up.id);
    const sns = notes.find((n) => n.channel === 'sns');
    expect(sns?.subject).toBe(`CIL job ${up.id} failed in Validate`);
    expect(sns?.attributes).toMatchObject({ status: 'failed', failedStep: 'Validate', error: 'InvalidImage' });
    expect(sns?.message).toMatchObject({ status: 'failed', failureKey: jobKeys(up.id).failure });
    expect(notes.find((n) => n.channel === 'eventbridge')?.detailType).toBe('Job Failed');

    // The upload is byte for byte what was sent, and nothing was written for the job but its record.
    const after = await t.get('inputs/broken/cat.png');
    expect(after).not.toBeNull();
    expect(createHash('sha256').update(after!).digest('hex')).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(await keysUnder(jobKeys(up.id).work)).toEqual([]);
    expect(await keysUnder(jobKeys(up.id).output)).toEqual([]);
  }, 60_000);

  it('a statistics file the worker refuses: exit code 3, one Batch attempt (no retry), recorded against Generate', async () => {
    // Validate only checks that the statistics file exists; the worker reads it and refuses it.
    await t.pipeline.upload('statistics/garbage.safetensors', Buffer.from('not a safetensors file at all'));
    const up = await t.pipeline.upload('inputs/card-bad-stats.png', await testCardPng(192, 128), { request: { statistics: 'garbage' } });
    const rec = await t.pipeline.waitForJob(up.id, 60_000);
    expect(rec.status).toBe('FAILED');
    expect(rec.error).toBe('States.TaskFailed');
    expect(rec.batchJobs).toHaveLength(1);
    expect(rec.batchJobs[0]).toMatchObject({ status: 'FAILED', attempts: 1, exitCode: 3 });
    const failure = JSON.parse((await t.get(jobKeys(up.id).failure))!.toString('utf8')) as { failedStep: string; reason: string };
    expect(failure.failedStep).toBe('Generate');
    expect(failure.reason).toContain('exit code 3');
    // The log stream the reason names is the worker's log file in the data folder.
    const stream = /log stream (\S+)/.exec(failure.reason)?.[1];
    expect(stream).toMatch(/^logs\/batch\//);
    const cause = JSON.parse(rec.cause!) as { Status: string; Attempts: unknown[]; RetryStrategy: { Attempts: number } };
    expect(cause.Status).toBe('FAILED');
    expect(cause.RetryStrategy.Attempts).toBeGreaterThan(1); // retries were allowed, and exit code 3 declined them
    expect(t.pipeline.notifications().some((n) => n.channel === 'sns' && n.subject === `CIL job ${up.id} failed in Generate`)).toBe(true);
  }, 60_000);
});
