/** The SNS and EventBridge stand-ins (local/src/notifications.ts): a JSON Lines log the real handlers publish to. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { ListTopicsCommand, PublishCommand } from '@aws-sdk/client-sns';
import { afterAll, describe, expect, it } from 'vitest';
import { NotificationLog, notificationJobId, readNotifications } from '../src/notifications.ts';

const dir = mkdtempSync(join(tmpdir(), 'cil-local-notifications-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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

describe('reading the log', () => {
  it('no file is no notifications; a notification without a job or batch id has none', () => {
    expect(readNotifications(join(dir, 'none.jsonl'))).toEqual([]);
    const log = new NotificationLog(join(dir, 'plain.jsonl'));
    const n = log.append({ channel: 'sns', target: 'arn:t', message: 'not json' });
    expect(log.read()).toEqual([n]);
    expect(notificationJobId(n)).toBeNull();
  });
});
