/**
 * The fault-injection tools of the local pipeline on their own: the S3 proxy (rules by method and
 * key, counts, S3's error format, dropped connections, the request log), the S3 server's restart
 * (objects kept, same port), and task faults.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { FaultInjectionError, keyOfPath, startS3FaultProxy, TaskFaults } from '../src/faults.ts';
import type { S3FaultProxy } from '../src/faults.ts';
import { LOCAL_CREDENTIALS, startS3Server } from '../src/s3.ts';
import type { LocalS3Server } from '../src/s3.ts';
import { makeS3Client } from '../../functions/src/s3.ts';

const dir = mkdtempSync(join(tmpdir(), 'cil-local-faults-'));
let server: LocalS3Server;
let proxy: S3FaultProxy;
let s3: S3Client;
const created: string[] = [];

beforeAll(async () => {
  server = await startS3Server({ directory: dir, port: 0, bucket: 'b', onObjectCreated: (e) => created.push(e.detail.object.key) });
  proxy = await startS3FaultProxy(server.endpoint);
  // One attempt per request: each injected fault is seen as is, not retried away.
  s3 = makeS3Client({ S3_ENDPOINT: proxy.endpoint, AWS_REGION: 'us-east-1' }, { maxAttempts: 1, credentials: { ...LOCAL_CREDENTIALS } });
});
afterAll(async () => {
  s3?.destroy();
  await proxy?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const get = async (key: string): Promise<string> => (await (await s3.send(new GetObjectCommand({ Bucket: 'b', Key: key }))).Body!.transformToString());
const errorOf = async (p: Promise<unknown>): Promise<Error> => (await p.then(() => new Error('no error'), (e: unknown) => e)) as Error;

describe('the S3 fault proxy', () => {
  it('passes requests through (events and all) and logs them', async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'a/one.txt', Body: 'one' }));
    expect(await get('a/one.txt')).toBe('one');
    expect(created).toContain('a/one.txt');
    expect(proxy.requests().filter((r) => r.key === 'a/one.txt').map((r) => `${r.method} ${r.status} ${r.injected}`)).toEqual(['PUT 200 false', 'GET 200 false']);
  });

  it('fails matching requests with S3’s own errors, as many times as asked, then lets them through', async () => {
    const id = proxy.add({ method: 'GET', key: 'a/', fault: { status: 503, code: 'SlowDown' }, times: 2 });
    const e1 = await errorOf(get('a/one.txt'));
    expect([e1.name, (e1 as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode]).toEqual(['SlowDown', 503]);
    expect((await errorOf(get('a/one.txt'))).name).toBe('SlowDown');
    expect(await get('a/one.txt')).toBe('one');
    expect(proxy.injected(id)).toBe(2);
    // Other methods and keys are not touched by that rule.
    proxy.add({ method: 'HEAD', key: /one\.txt$/, fault: { status: 500 }, times: 1 });
    const headError = await errorOf(s3.send(new HeadObjectCommand({ Bucket: 'b', Key: 'a/one.txt' })));
    // A HEAD answer has no body: the handlers' client names the 500 by its status, so Retry matches it.
    expect(headError.name).toBe('InternalError');
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'a/two.txt', Body: 'two' }));
    proxy.clear();
  });

  it('a PUT refused with 500 stores nothing; a dropped connection is a network error the handlers name S3Unreachable', async () => {
    proxy.add({ method: 'PUT', key: 'p/', fault: { status: 500 } });
    expect((await errorOf(s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'p/x.txt', Body: 'x' })))).name).toBe('InternalError');
    proxy.clear();
    expect((await errorOf(get('p/x.txt'))).name).toBe('NoSuchKey');
    proxy.add({ key: 'r/', fault: { status: 'reset' } });
    const handlerClient = makeS3Client({ S3_ENDPOINT: proxy.endpoint, AWS_REGION: 'us-east-1' }, { maxAttempts: 2, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    expect((await errorOf(handlerClient.send(new GetObjectCommand({ Bucket: 'b', Key: 'r/y.txt' })))).name).toBe('S3Unreachable');
    handlerClient.destroy();
    proxy.clear();
  });

  it('decodes keys of path-style requests; refuses bad rules and non-local upstreams', async () => {
    expect(keyOfPath('/bucket/inputs/a%20b/c.png?x-id=GetObject')).toBe('inputs/a b/c.png');
    expect(keyOfPath('/bucket?list-type=2')).toBe('');
    expect(keyOfPath('/bucket/bad%zz')).toBe('bad%zz');
    expect(() => proxy.add({ fault: { status: 500 }, times: 0 })).toThrow(FaultInjectionError);
    expect(() => proxy.add({ fault: { status: 500 }, probability: 0 })).toThrow(FaultInjectionError);
    expect(() => proxy.add({ fault: { status: 500 }, probability: 1.5 })).toThrow(FaultInjectionError);
    await expect(startS3FaultProxy('http://example.com:80')).rejects.toBeInstanceOf(FaultInjectionError);
  });

  it('a rule with a probability fails about that share of matching requests (seeded draws)', async () => {
    const id = proxy.add({ method: 'GET', key: 'a/', fault: { status: 503 }, probability: 0.25 });
    const outcomes: boolean[] = [];
    for (let i = 0; i < 200; i++) outcomes.push(await get('a/one.txt').then(() => true, () => false));
    proxy.remove(id);
    const failed = outcomes.filter((ok) => !ok).length;
    expect(failed).toBe(proxy.injected(id));
    // 200 draws at p = 0.25: mean 50, sd ≈ 6.1; ±5 sd.
    expect(failed).toBeGreaterThan(19);
    expect(failed).toBeLessThan(81);
  });
});

describe('the S3 server restart', () => {
  it('drops connections, is down for the time asked, and comes back on the same port with every object', async () => {
    const restart = server.restart(300);
    await new Promise((r) => setTimeout(r, 100));
    const down = await errorOf(get('a/one.txt'));
    expect(down.message).toMatch(/socket hang up|ECONNRESET|ECONNREFUSED/);
    await restart;
    expect(await get('a/one.txt')).toBe('one');
    expect(await get('a/two.txt')).toBe('two');
    expect(proxy.requests().some((r) => r.status === 'reset' && !r.injected)).toBe(true);
  });

  it('survives a download cut by a restart and an upload the client aborts', async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'big/blob.bin', Body: Buffer.alloc(32 * 1024 * 1024, 7) }));
    // A GET in flight when the server goes: the client's stream breaks, the proxy carries on.
    const r = await s3.send(new GetObjectCommand({ Bucket: 'b', Key: 'big/blob.bin' }));
    const body = r.Body as NodeJS.ReadableStream;
    // Not read yet (backpressure holds the rest upstream) when the server drops its connections.
    const restarting = server.restart(100);
    const cut = new Promise<string>((resolve) => {
      body.on('error', (e: Error) => resolve(e.message));
      body.on('end', () => resolve('ended'));
      body.resume();
    });
    expect(await cut).not.toBe('ended');
    await restarting;
    // An upload aborted half-way by the client.
    const ac = new AbortController();
    const put = s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'big/aborted.bin', Body: Buffer.alloc(32 * 1024 * 1024, 1) }), { abortSignal: ac.signal });
    setTimeout(() => ac.abort(), 5);
    await put.catch(() => undefined);
    // Still serving.
    expect(await get('a/one.txt')).toBe('one');
  });

  it('a server closed while it is down for a restart stays closed', async () => {
    const d = mkdtempSync(join(tmpdir(), 'cil-local-faults-restart-'));
    try {
      const other = await startS3Server({ directory: d, port: 0, bucket: 'b', onObjectCreated: () => undefined });
      const restart = other.restart(200);
      await new Promise((r) => setTimeout(r, 50));
      await other.close();
      await restart;
      const probe = makeS3Client({ S3_ENDPOINT: other.endpoint, AWS_REGION: 'us-east-1' }, { maxAttempts: 1, credentials: { ...LOCAL_CREDENTIALS } });
      expect((await errorOf(probe.send(new HeadObjectCommand({ Bucket: 'b', Key: 'x' })))).name).toBe('S3Unreachable');
      probe.destroy();
      await expect(other.restart()).rejects.toThrow(/closed/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('task faults', () => {
  it('fail a state the number of times asked, with the error name Retry and Catch match', () => {
    const f = new TaskFaults();
    f.add('PostProcess', { error: 'Lambda.ServiceException', times: 2 });
    const names: string[] = [];
    for (let i = 0; i < 3; i++) {
      try {
        f.check('PostProcess');
        names.push('ok');
      } catch (e) {
        names.push((e as Error).name);
      }
    }
    expect(names).toEqual(['Lambda.ServiceException', 'Lambda.ServiceException', 'ok']);
    expect(f.injected('PostProcess')).toBe(2);
    expect(() => f.check('Validate')).not.toThrow();
    expect(() => f.add('Validate', { error: 'x', times: 0 })).toThrow(FaultInjectionError);
  });
});
