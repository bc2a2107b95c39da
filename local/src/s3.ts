/**
 * The local S3: s3rver (a real S3-protocol server) on 127.0.0.1, objects kept as files under the
 * data folder, one bucket with the pipeline's layout. Every object-created request is reported
 * as the `detail` of the S3 "Object Created" event EventBridge delivers in AWS, which is what the
 * starter takes.
 */
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { S3Client } from '@aws-sdk/client-s3';
import type { ObjectCreatedDetail } from '../../functions/src/starter/core.ts';
import { makeS3Client } from '../../functions/src/s3.ts';
import { LOCAL_REGION } from './definitions.ts';
import { guardS3rver } from './s3Keys.ts';
import type { GuardableS3rver } from './s3Keys.ts';

/** s3rver accepts any credentials; these keep the SDK from looking for real ones (copied per client: the SDK writes into the object). */
export const LOCAL_CREDENTIALS: { readonly accessKeyId: string; readonly secretAccessKey: string } = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

/** The S3 notification record s3rver emits (the fields used here). */
interface S3rverRecord {
  readonly eventName: string;
  readonly eventTime: string;
  readonly s3: { readonly bucket: { readonly name: string }; readonly object: { readonly key: string; readonly size?: number; readonly eTag?: string; readonly sequencer?: string } };
}

// s3rver ships no type declarations; this is the part of its API used here.
interface S3rverInstance extends GuardableS3rver {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
  readonly httpServer?: { closeAllConnections(): void };
  on(event: 'event', listener: (e: { Records: S3rverRecord[] }) => void): void;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;

export interface ObjectCreated {
  readonly detail: ObjectCreatedDetail;
  readonly time: string;
}

export interface LocalS3Server {
  readonly endpoint: string;
  readonly port: number;
  readonly bucket: string;
  readonly s3: S3Client;
  /**
   * Stops the server as a crash would (open connections dropped, requests in flight lost), keeps
   * it down for `downMs`, and starts it again on the same port over the same folder: what was
   * stored stays stored.
   */
  restart(downMs?: number): Promise<void>;
  close(): Promise<void>;
}

export class LocalS3Error extends Error {
  override readonly name = 'LocalS3Error';
}

/** An S3 client for the local server (path-style, fixed credentials, checksums only when required). */
export function localS3Client(endpoint: string): S3Client {
  return makeS3Client({ S3_ENDPOINT: endpoint, AWS_REGION: LOCAL_REGION }, { credentials: { ...LOCAL_CREDENTIALS } });
}

/** The environment that points an AWS SDK v3 client in another process at the local server. */
export function localS3Env(endpoint: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL_S3: endpoint,
    AWS_REGION: LOCAL_REGION,
    AWS_DEFAULT_REGION: LOCAL_REGION,
    AWS_ACCESS_KEY_ID: LOCAL_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: LOCAL_CREDENTIALS.secretAccessKey,
    // s3rver does not speak the SDK's default aws-chunked CRC32 trailers.
    AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
    AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
  };
}

/** Starts s3rver on 127.0.0.1 (`port` 0: any free port) with `bucket` under `directory`. */
export async function startS3Server(o: { directory: string; port: number; bucket: string; onObjectCreated: (e: ObjectCreated) => void }): Promise<LocalS3Server> {
  mkdirSync(o.directory, { recursive: true });
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;
  const launch = async (port: number): Promise<{ server: S3rverInstance; port: number }> => {
    const server = new S3rver({ address: '127.0.0.1', port, silent: true, directory: o.directory, configureBuckets: [{ name: o.bucket, configs: [] }] });
    // Keys that s3rver's file store would turn into other paths (`..`), or could not name (too
    // long, NUL), are answered with an S3 error before they reach it (s3Keys.ts).
    guardS3rver(server, o.directory);
    server.on('event', (e) => {
      for (const r of e.Records) {
        if (!r.eventName.startsWith('ObjectCreated:')) continue;
        const obj = r.s3.object;
        o.onObjectCreated({
          time: r.eventTime,
          detail: { bucket: { name: r.s3.bucket.name }, object: { key: obj.key, size: obj.size, etag: obj.eTag, sequencer: obj.sequencer } },
        });
      }
    });
    try {
      return { server, port: (await server.run()).port };
    } catch (e) {
      throw new LocalS3Error(`could not start the local S3 server on 127.0.0.1:${port}: ${(e as Error).message}`);
    }
  };
  let current: S3rverInstance | null;
  let closed = false;
  const first = await launch(o.port);
  current = first.server;
  const port = first.port;
  const endpoint = `http://127.0.0.1:${port}`;
  const s3 = localS3Client(endpoint);
  const stop = async (): Promise<void> => {
    const srv = current;
    current = null;
    if (srv === null) return;
    const closed = srv.close();
    srv.httpServer?.closeAllConnections();
    await closed;
  };
  return {
    endpoint,
    port,
    bucket: o.bucket,
    s3,
    async restart(downMs = 0) {
      if (closed) throw new LocalS3Error('the local S3 server is closed; it cannot be restarted');
      await stop();
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      // Closed while it was down: stay down (nothing would close a server started now).
      if (closed) return;
      current = (await launch(port)).server;
    },
    async close() {
      closed = true;
      s3.destroy();
      await stop();
    },
  };
}
