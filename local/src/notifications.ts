/**
 * SNS and EventBridge, stood in by a log: what the functions publish (Notify, the batch summary)
 * is appended as one JSON line per message to `notifications.jsonl` in the data folder, and the
 * CLI prints it. The stand-ins are handed to the real handlers in place of their SDK clients;
 * they answer the two commands the handlers send (Publish, PutEvents) the way AWS does.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { PublishCommand } from '@aws-sdk/client-sns';
import type { SNSClient } from '@aws-sdk/client-sns';

export interface LocalNotification {
  readonly time: string;
  readonly channel: 'sns' | 'eventbridge';
  /** Topic ARN (SNS) or event bus name (EventBridge). */
  readonly target: string;
  readonly subject?: string;
  readonly source?: string;
  readonly detailType?: string;
  readonly attributes?: Readonly<Record<string, string>>;
  /** The message body (parsed when it is JSON). */
  readonly message: unknown;
  readonly id: string;
}

export class LocalServiceError extends Error {
  override readonly name = 'LocalServiceError';
}

function parseBody(s: string | undefined): unknown {
  if (s === undefined) return null;
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return s;
  }
}

export function readNotifications(file: string): LocalNotification[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as LocalNotification);
}

/** The job id a notification is about (job notifications carry `jobId`; batch summaries `batchId`). */
export function notificationJobId(n: LocalNotification): string | null {
  const m = n.message as { jobId?: unknown; batchId?: unknown } | null;
  if (typeof m !== 'object' || m === null) return null;
  return typeof m.jobId === 'string' ? m.jobId : typeof m.batchId === 'string' ? m.batchId : null;
}

export class NotificationLog {
  readonly file: string;
  readonly #onNotify: (n: LocalNotification) => void;

  constructor(file: string, onNotify: (n: LocalNotification) => void = () => undefined) {
    this.file = file;
    this.#onNotify = onNotify;
  }

  append(n: Omit<LocalNotification, 'time' | 'id'>): LocalNotification {
    const full: LocalNotification = { time: new Date().toISOString(), id: randomUUID(), ...n };
    appendFileSync(this.file, `${JSON.stringify(full)}\n`);
    this.#onNotify(full);
    return full;
  }

  read(): LocalNotification[] {
    return readNotifications(this.file);
  }

  /** Stands in for an SNSClient: Publish appends to the log. */
  snsClient(): SNSClient {
    const send = (cmd: unknown): Promise<unknown> => {
      if (!(cmd instanceof PublishCommand)) return Promise.reject(new LocalServiceError(`local SNS supports Publish only, got ${(cmd as object).constructor.name}`));
      const i = cmd.input;
      const attributes = Object.fromEntries(Object.entries(i.MessageAttributes ?? {}).map(([k, v]) => [k, v.StringValue ?? '']));
      const n = this.append({ channel: 'sns', target: i.TopicArn ?? i.TargetArn ?? '', subject: i.Subject, attributes, message: parseBody(i.Message) });
      return Promise.resolve({ MessageId: n.id, $metadata: {} });
    };
    return { send } as unknown as SNSClient;
  }

  /** Stands in for an EventBridgeClient: PutEvents appends one line per entry. */
  eventsClient(): EventBridgeClient {
    const send = (cmd: unknown): Promise<unknown> => {
      if (!(cmd instanceof PutEventsCommand)) return Promise.reject(new LocalServiceError(`local EventBridge supports PutEvents only, got ${(cmd as object).constructor.name}`));
      const entries = (cmd.input.Entries ?? []).map((e) => {
        const n = this.append({ channel: 'eventbridge', target: e.EventBusName ?? 'default', source: e.Source, detailType: e.DetailType, message: parseBody(e.Detail) });
        return { EventId: n.id };
      });
      return Promise.resolve({ FailedEntryCount: 0, Entries: entries, $metadata: {} });
    };
    return { send } as unknown as EventBridgeClient;
  }
}
