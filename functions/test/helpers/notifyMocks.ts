/**
 * SNS and EventBridge mocked for the tests of Notify: every client of either class answers from the
 * mock. The mocks forget their calls and answers after each test and are restored after the file
 * (or the describe block) that sets them up. And Notify's dependencies built on those clients.
 */
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { S3Client } from '@aws-sdk/client-s3';
import { SNSClient } from '@aws-sdk/client-sns';
import type { AwsClientStub } from 'aws-sdk-client-mock';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, afterEach } from 'vitest';
import type { NotifyDeps } from '../../src/notify/handler.ts';

export interface NotifyMocks {
  readonly sns: AwsClientStub<SNSClient>;
  readonly events: AwsClientStub<EventBridgeClient>;
}

export function mockNotifyClients(): NotifyMocks {
  const sns = mockClient(SNSClient);
  const events = mockClient(EventBridgeClient);
  afterEach(() => {
    sns.reset();
    events.reset();
  });
  afterAll(() => {
    sns.restore();
    events.restore();
  });
  return { sns, events };
}

/** Notify's dependencies in a test: clients signed with `credentials`, a topic and a bus, URLs presigned for an hour. */
export function notifyTestDeps(credentials: { readonly accessKeyId: string; readonly secretAccessKey: string }, dataBucket: string, now: Date, over: Partial<NotifyDeps> = {}): NotifyDeps {
  return {
    s3: new S3Client({ region: 'us-east-1', credentials }),
    sns: new SNSClient({ region: 'us-east-1', credentials }),
    events: new EventBridgeClient({ region: 'us-east-1', credentials }),
    topicArn: 'arn:aws:sns:us-east-1:123456789012:cil',
    eventBusName: 'cil-bus',
    dataBucket,
    presign: { enabled: true, expirySeconds: 3600 },
    now: () => now,
    ...over,
  };
}
