/**
 * The small parts of local mode on their own: the test card, the SNS/EventBridge stand-ins,
 * execution names, upload keys, and following an execution record.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { ListTopicsCommand, PublishCommand } from '@aws-sdk/client-sns';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import type { ExecutionRecord } from '../local/src/executions.ts';
import { isValidExecutionName, taskStates } from '../local/src/executions.ts';
import { followExecution } from '../local/src/follow.ts';
import { executionArnOf, uploadKeyFor, UploadKeyError } from '../local/src/keys.ts';
import { NotificationLog, notificationJobId } from '../local/src/notifications.ts';
import { testCardPng, testCardRgb, TestCardError } from '../local/src/testCard.ts';

const dir = mkdtempSync(join(tmpdir(), 'cil-local-units-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the test card', () => {
  it('is the same bytes every time, the size asked for, a PNG', async () => {
    const a = await testCardPng();
    const b = await testCardPng();
    expect(a.equals(b)).toBe(true);
    const m = await sharp(a).metadata();
    expect([m.format, m.width, m.height, m.channels]).toEqual(['png', 512, 320, 3]);
    expect(() => testCardRgb(10, 10)).toThrow(TestCardError);
  });

  it('is colourful: many hues, from dark to light', () => {
    const px = testCardRgb(192, 128);
    const hues = new Set<number>();
    let min = 255;
    let max = 0;
    for (let i = 0; i < px.length; i += 3) {
      const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
      const hi = Math.max(r, g, b);
      const lo = Math.min(r, g, b);
      min = Math.min(min, hi);
      max = Math.max(max, hi);
      if (hi - lo < 60) continue;
      // Hue sector (of 12), computed the textbook way.
      const d = hi - lo;
      const h = hi === r ? ((g - b) / d + 6) % 6 : hi === g ? (b - r) / d + 2 : (r - g) / d + 4;
      hues.add(Math.floor(h * 2));
    }
    expect(hues.size).toBeGreaterThanOrEqual(10);
    expect(min).toBeLessThan(60);
    expect(max).toBeGreaterThan(220);
  });
});

describe('the notification stand-ins', () => {
  it('SNS Publish and EventBridge PutEvents append JSON lines; other commands are refused', async () => {
    const seen: string[] = [];
    const log = new NotificationLog(join(dir, 'n.jsonl'), (n) => seen.push(n.channel));
    const sns = log.snsClient();
    const r = await sns.send(new PublishCommand({ TopicArn: 'arn:t', Subject: 'S', Message: '{"jobId":"j-1"}', MessageAttributes: { status: { DataType: 'String', StringValue: 'ok' } } }));
    expect(typeof r.MessageId).toBe('string');
    const e = await log.eventsClient().send(new PutEventsCommand({ Entries: [{ Source: 'cil.pipeline', DetailType: 'Job Succeeded', Detail: '{"batchId":"b-1"}', EventBusName: 'bus' }] }));
    expect(e.FailedEntryCount).toBe(0);
    await expect(sns.send(new ListTopicsCommand({}) as never)).rejects.toThrow(/Publish only/);
    const all = log.read();
    expect(all.map((n) => [n.channel, n.target, n.subject ?? n.detailType])).toEqual([
      ['sns', 'arn:t', 'S'],
      ['eventbridge', 'bus', 'Job Succeeded'],
    ]);
    expect(all[0].attributes).toEqual({ status: 'ok' });
    expect(all.map(notificationJobId)).toEqual(['j-1', 'b-1']);
    expect(seen).toEqual(['sns', 'eventbridge']);
  });
});

describe('names', () => {
  it('execution names follow AWS: 1–80 characters, no whitespace or special characters', () => {
    expect(isValidExecutionName('j-0123456789abcdef01234567')).toBe(true);
    for (const bad of ['', 'a b', 'a/b', 'a:b', 'x'.repeat(81), 'tab\t', 'q?']) expect(isValidExecutionName(bad), JSON.stringify(bad)).toBe(false);
  });

  it('upload keys: a safe stem, a hash of image and request, the extension', () => {
    const img = Buffer.from('img');
    const k = uploadKeyFor('My Photo (1).JPG', img, { prompt: 'a' });
    expect(k).toMatch(/^inputs\/My-Photo-1-[0-9a-f]{8}\.jpg$/);
    expect(uploadKeyFor('My Photo (1).JPG', img, { prompt: 'a' })).toBe(k);
    expect(uploadKeyFor('My Photo (1).JPG', img, { prompt: 'b' })).not.toBe(k);
    expect(uploadKeyFor('..png', img, {})).toMatch(/^inputs\/image-[0-9a-f]{8}\.png$/);
    expect(() => uploadKeyFor('notes.txt', img, {})).toThrow(UploadKeyError);
    expect(executionArnOf('arn:aws:states:r:1:stateMachine:Gen', 'j-1')).toBe('arn:aws:states:r:1:execution:Gen:j-1');
  });

  it('finds Task states in nested maps', () => {
    const def = { StartAt: 'A', States: { A: { Type: 'Task', Next: 'M' }, M: { Type: 'Map', End: true, ItemProcessor: { StartAt: 'B', States: { B: { Type: 'Task', End: true } } } } } };
    expect(taskStates(def)).toEqual(['A', 'B']);
  });
});

describe('following an execution record', () => {
  it('reports top-level states, the Batch job and progress in order, then the end', async () => {
    const base: ExecutionRecord = {
      format: 'cil-local-execution/1', workflow: 'generation', name: 'j', executionArn: 'e', stateMachineArn: 's', status: 'RUNNING', startDate: '2025-01-01T00:00:00Z',
      stopDate: null, input: null, output: null, error: null, cause: null, states: [], batchJobs: [], progress: null, mapRun: null,
    };
    const frames: ExecutionRecord[] = [
      { ...base, states: [{ name: 'Validate', enteredAt: '2025-01-01T00:00:00Z' }] },
      { ...base, states: [{ name: 'Validate', enteredAt: '2025-01-01T00:00:00Z' }, { name: 'Generate', enteredAt: '2025-01-01T00:00:01Z' }], batchJobs: [{ jobId: 'b', status: 'RUNNING', attempts: 0 }], progress: { phase: 'denoise', step: 3, total: 25 } },
      { ...base, states: [{ name: 'Validate', enteredAt: '2025-01-01T00:00:00Z' }, { name: 'Generate', enteredAt: '2025-01-01T00:00:01Z' }, { name: 'PostProcess', enteredAt: '2025-01-01T00:00:03Z' }, { name: 'X', index: 0, enteredAt: '2025-01-01T00:00:03Z' }], batchJobs: [{ jobId: 'b', status: 'SUCCEEDED', attempts: 1, exitCode: 0 }], progress: { phase: 'write' } },
      { ...base, status: 'SUCCEEDED', stopDate: '2025-01-01T00:00:04Z', states: [] },
    ];
    let i = 0;
    const seen: string[] = [];
    const r = await followExecution('j', () => (i === 0 ? (i++, null) : frames[Math.min(i++ - 1, frames.length - 1)]), {
      intervalMs: 1,
      observer: { state: (n) => seen.push(n), batch: (s) => seen.push(`batch ${s}`), progress: (p) => seen.push(`${p.phase}${p.step ?? ''}`), end: (at) => seen.push(`end ${at}`) },
    });
    expect(r.status).toBe('SUCCEEDED');
    expect(seen).toEqual(['Validate', 'Generate', 'batch RUNNING', 'denoise3', 'batch SUCCEEDED', 'PostProcess', 'write', `end ${Date.parse('2025-01-01T00:00:04Z')}`]);
  });
});
