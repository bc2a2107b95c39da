/**
 * Keys the local S3 cannot store as files (issue 19, defects 2, 3 and 7; local/src/s3Keys.ts).
 *
 * s3rver maps a key to a file path: `..` climbed out of its folder (`inputs/../models/demo/
 * manifest.json` overwrote the demo model, `inputs/../../../x` wrote outside the data folder), and
 * a 250-character segment failed the write with an ENAMETOOLONG that s3rver leaves unhandled,
 * which took `cil local up` down with its jobs. Every such request must now get S3's XML error
 * (400, or 404 NoSuchUpload) and change nothing on disk, and the server must keep running.
 *
 * Part 1 sends raw HTTP to the local S3 server (any client can: no SDK encoding in the way);
 * part 2 does what the adversarial pass did, against `cil local up` in its own process: a
 * traversal PUT through 127.0.0.1, `cil local run --key` with a traversal key, an over-long key
 * while a job is running, and a key carrying terminal escape sequences (defect 7).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobIdFor } from '#shared/schemas';
import { loadLocalDefinitions } from '../src/definitions.ts';
import { readExecutionFile } from '../src/executions.ts';
import { CLI_ENTRY } from '../src/paths.ts';
import { localS3Client, startS3Server } from '../src/s3.ts';
import type { LocalS3Server } from '../src/s3.ts';
import { MAX_LAST_SEGMENT_BYTES, NAME_MAX_BYTES } from '../src/s3Keys.ts';
import { testCardPng } from '../src/testCard.ts';
import { DEFINITIONS_CACHE } from '../../test/helpers/local.ts';

const BUCKET = 'cil-data';

/** Every file under `dir`: relative path → SHA-256 of its bytes. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(relative(dir, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  walk(dir);
  return out;
}

/** What changed between two snapshots: added, removed or rewritten files. */
function changes(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [p, h] of after) if (before.get(p) !== h) out.push(before.has(p) ? `changed ${p}` : `added ${p}`);
  for (const p of before.keys()) if (!after.has(p)) out.push(`removed ${p}`);
  return out.sort();
}

interface RawResponse {
  readonly status: number;
  readonly body: string;
  readonly contentType: string;
}

/** One HTTP request exactly as given (the path is sent as is: no normalisation, no encoding). */
function raw(endpoint: string, method: string, path: string, o: { headers?: Record<string, string>; body?: string } = {}): Promise<RawResponse> {
  const u = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, method, path, headers: { 'content-length': String(Buffer.byteLength(o.body ?? '')), ...o.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), contentType: String(res.headers['content-type'] ?? '') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body ?? '');
  });
}

async function getText(s3: S3Client, key: string): Promise<string> {
  const r = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return r.Body!.transformToString();
}

/** The S3 error an SDK call failed with: its code and HTTP status (null when it succeeded). */
async function s3Error(p: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string } | null> {
  try {
    await p;
    return null;
  } catch (e) {
    return { name: (e as Error).name, status: (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, message: (e as Error).message };
  }
}

const SEEDED: Record<string, string> = {
  'models/demo/manifest.json': '{"the":"real manifest"}',
  'statistics/demo.safetensors': 'real statistics',
  'outputs/j-000000000000000000000001/video.mp4': 'another job\'s video',
  'inputs/a.png': 'an upload',
};

describe('the local S3 server refuses keys it cannot store as files', () => {
  let root: string;
  let server: LocalS3Server;
  const created: string[] = [];

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'cil-local-s3-keys-'));
    // <root>/outside.txt and <root>/data/keep.json sit outside the store (<root>/data/s3).
    writeFileSync(join(root, 'outside.txt'), 'outside the data folder');
    mkdirSync(join(root, 'data'));
    writeFileSync(join(root, 'data', 'keep.json'), 'in the data folder, outside the store');
    server = await startS3Server({ directory: join(root, 'data', 's3'), port: 0, bucket: BUCKET, onObjectCreated: (e) => created.push(e.detail.object.key) });
    for (const [k, v] of Object.entries(SEEDED)) await server.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: k, Body: v }));
  });
  afterAll(async () => {
    await server.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('traversal by ./.. segments (plain or percent-encoded), empty segments, absolute keys, NUL, the bucket, copy source, upload ids, part numbers and multi-object delete: S3 XML errors, nothing on disk changed', async () => {
    const uploadId = '0123456789abcdef0123456789abcdef';
    const cases: [method: string, path: string, code: string, extra?: { headers?: Record<string, string>; body?: string }][] = [
      ['PUT', '/cil-data/inputs/../models/demo/manifest.json', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs/%2e%2e/models/demo/manifest.json', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs/%2E%2E%2Fstatistics%2Fdemo.safetensors', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs/../outputs/j-000000000000000000000001/video.mp4', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs/../../../outside.txt', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs/../../keep.json', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs/./a.png', 'InvalidArgument'],
      ['PUT', '/cil-data//models/demo/manifest.json', 'InvalidArgument'],
      ['PUT', '/cil-data/%2Fmodels%2Fdemo%2Fmanifest.json', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs//a.png', 'InvalidArgument'],
      ['PUT', '/cil-data/inputs/a%00.png', 'InvalidArgument'],
      ['PUT', '/%2e%2e/outside.txt', 'InvalidBucketName'],
      ['PUT', '/%2e%2e%2F%2e%2e/outside.txt', 'InvalidBucketName'],
      ['PUT', '/cil-data/models/demo/manifest.json', 'InvalidArgument', { headers: { 'x-amz-copy-source': '/cil-data/inputs/../inputs/a.png' } }],
      ['PUT', '/cil-data/inputs/copy.png', 'InvalidArgument', { headers: { 'x-amz-copy-source': '/cil-data/inputs/%2e%2e/models/demo/manifest.json' } }],
      ['PUT', '/cil-data/inputs/a.png?partNumber=1&uploadId=..%2F..%2F..%2Foutside', 'NoSuchUpload'],
      ['PUT', `/cil-data/inputs/a.png?partNumber=..%2F..%2Fx&uploadId=${uploadId}`, 'InvalidArgument'],
      ['POST', '/cil-data/inputs/../models/demo/manifest.json?uploads', 'InvalidArgument'],
      ['DELETE', '/cil-data/inputs/../models/demo/manifest.json', 'InvalidArgument'],
      ['GET', '/cil-data/inputs/../models/demo/manifest.json', 'InvalidArgument'],
      // A key in the body, which the request guard cannot see: the store's own check refuses it.
      ['POST', '/cil-data?delete', 'InvalidArgument', { body: '<Delete><Object><Key>inputs/../models/demo/manifest.json</Key></Object></Delete>', headers: { 'content-type': 'application/xml' } }],
    ];
    const before = snapshot(root);
    for (const [method, path, code, extra] of cases) {
      const r = await raw(server.endpoint, method, path, { body: 'OVERWRITTEN', ...extra });
      const what = `${method} ${path}: ${r.status} ${r.body}`;
      expect(r.status, what).toBe(code === 'NoSuchUpload' ? 404 : 400);
      expect(r.contentType, what).toContain('application/xml');
      expect(r.body, what).toMatch(new RegExp(`^<\\?xml[^>]*\\?>\\s*<Error><Code>${code}</Code><Message>[^<]+</Message>`));
    }
    expect(changes(before, snapshot(root))).toEqual([]);
    for (const [k, v] of Object.entries(SEEDED)) expect(await getText(server.s3, k)).toBe(v);
    expect(created).toEqual(Object.keys(SEEDED));
    // The message says what and why.
    const r = await raw(server.endpoint, 'PUT', '/cil-data/inputs/../models/demo/manifest.json', { body: 'x' });
    expect(r.body).toContain('key &quot;inputs/../models/demo/manifest.json&quot;: segment 2 of 5 is &apos;..&apos;');
  });

  it('backslashes, percent signs and dots inside a segment are stored literally, as S3 stores them', async () => {
    const keys = ['inputs/..\\..\\..\\outside.png', 'inputs/%2e%2e/y.png', 'inputs/%2E%2E%2Fz.png', 'inputs/.../w.png', 'inputs/..a/..png'];
    const before = snapshot(root);
    for (const k of keys) await server.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: k, Body: `literal ${k}` }));
    for (const k of keys) expect(await getText(server.s3, k)).toBe(`literal ${k}`);
    const listed = await server.s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'inputs/' }));
    expect((listed.Contents ?? []).map((o) => o.Key).sort()).toEqual(['inputs/a.png', ...keys].sort());
    // Only new files, all inside the bucket's folder; nothing else touched.
    const diff = changes(before, snapshot(root));
    expect(diff.length).toBeGreaterThan(0);
    for (const d of diff) expect(d).toMatch(/^added data\/s3\/cil-data\/inputs\//);
    for (const [k, v] of Object.entries(SEEDED)) expect(await getText(server.s3, k)).toBe(v);
  });

  it('an over-long key or segment gets an S3 error and the server keeps running (it used to crash with ENAMETOOLONG)', async () => {
    const s3 = server.s3;
    const put = (key: string): Promise<unknown> => s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: 'x' }));
    // The adversarial pass's key: 261 characters, one segment of 254.
    const long = `inputs/${'a'.repeat(250)}.png`;
    expect(long.length).toBe(261);
    const e1 = await s3Error(put(long));
    expect(e1).toMatchObject({ name: 'InvalidArgument', status: 400 });
    expect(e1!.message).toContain(`segment 2 of 2 is 254 bytes`);
    expect(e1!.message).toContain(`at most ${MAX_LAST_SEGMENT_BYTES} bytes`);
    // Over S3's own limit: S3's own error.
    const segments = Array.from({ length: 5 }, () => 'b'.repeat(200)).join('/');
    const over = `inputs/${segments}/${'b'.repeat(9)}.png`;
    expect(Buffer.byteLength(over)).toBe(1025);
    expect(await s3Error(put(over))).toMatchObject({ name: 'KeyTooLongError', status: 400 });
    // Exactly S3's limit, in short segments: stored.
    const max = `inputs/${segments}/${'c'.repeat(8)}.png`;
    expect(Buffer.byteLength(max)).toBe(1024);
    expect(await s3Error(put(max))).toBeNull();
    // The segment limits, in bytes (not characters): the last segment carries s3rver's suffix.
    expect(await s3Error(put(`inputs/${'d'.repeat(MAX_LAST_SEGMENT_BYTES)}`))).toBeNull();
    expect(await s3Error(put(`inputs/${'d'.repeat(MAX_LAST_SEGMENT_BYTES + 1)}`))).toMatchObject({ name: 'InvalidArgument' });
    expect(await s3Error(put(`inputs/${'é'.repeat(116)}`))).toBeNull();
    expect(await s3Error(put(`inputs/${'é'.repeat(117)}`))).toMatchObject({ name: 'InvalidArgument' });
    expect(await s3Error(put(`inputs/${'f'.repeat(NAME_MAX_BYTES)}/x.png`))).toBeNull();
    expect(await s3Error(put(`inputs/${'f'.repeat(NAME_MAX_BYTES + 1)}/x.png`))).toMatchObject({ name: 'InvalidArgument' });
    // Still serving.
    await put('inputs/after.png');
    expect(await getText(s3, 'inputs/after.png')).toBe('x');
  });
});

describe('against `cil local up` (its own process)', () => {
  let dir: string;
  let data: string;
  let up: ChildProcess | null = null;
  let upOut = '';
  let upExited = false;
  let endpoint: string;
  let s3: S3Client;
  let card: Buffer;

  function cil(args: string[], timeout = 60_000): { code: number; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [CLI_ENTRY, ...args], { encoding: 'utf8', timeout });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  async function waitFor<T>(what: string, f: () => T | null | undefined, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = f();
      if (v !== null && v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; local up said:\n${upOut}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cil-local-up-keys-'));
    data = join(dir, 'data');
    mkdirSync(join(data, 'cache'), { recursive: true });
    const defs = await loadLocalDefinitions({ cacheDir: DEFINITIONS_CACHE });
    copyFileSync(join(DEFINITIONS_CACHE, `definitions-${defs.key}.json`), join(data, 'cache', `definitions-${defs.key}.json`));
    card = await testCardPng(192, 128);
    writeFileSync(join(dir, 'card.png'), card);
    up = spawn(process.execPath, [CLI_ENTRY, 'local', 'up', '--data', data, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    up.stdout!.on('data', (d: Buffer) => (upOut += d.toString()));
    up.stderr!.on('data', (d: Buffer) => (upOut += d.toString()));
    up.once('exit', () => (upExited = true));
    const info = await waitFor('up.json', () => (existsSync(join(data, 'up.json')) ? (JSON.parse(readFileSync(join(data, 'up.json'), 'utf8')) as { endpoint: string }) : null));
    endpoint = info.endpoint;
    s3 = localS3Client(endpoint);
    await waitFor('the demo model', () => (existsSync(join(data, 's3', BUCKET, 'models', 'demo', 'manifest.json._S3rver_object')) ? true : null));
  }, 120_000);
  afterAll(async () => {
    s3?.destroy();
    if (up && up.exitCode === null) {
      up.kill('SIGTERM');
      await new Promise((r) => up!.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('a traversal PUT through 127.0.0.1 and `cil local run --key inputs/../models/demo/manifest.json` change no model, statistics or file outside the data folder', async () => {
    const manifest = await getText(s3, 'models/demo/manifest.json');
    const before = snapshot(dir);
    const r = await raw(endpoint, 'PUT', '/cil-data/inputs/../models/demo/manifest.json', { body: '{"model":"hijacked"}' });
    expect(r.status).toBe(400);
    expect(r.body).toContain('<Code>InvalidArgument</Code>');
    const r2 = await raw(endpoint, 'PUT', '/cil-data/inputs/../../../../x.png', { body: 'x' });
    expect(r2.status).toBe(400);
    // --key is checked before anything is uploaded (its sidecar, <key>.json, would be the manifest itself).
    const run = cil(['local', 'run', join(dir, 'card.png'), '--data', data, '--prompt', 'hijack', '--key', 'inputs/../models/demo/manifest.json']);
    expect(run.code, run.stderr + run.stdout).toBe(2);
    expect(run.stderr).toContain('--key "inputs/../models/demo/manifest.json"');
    const run2 = cil(['local', 'run', join(dir, 'card.png'), '--data', data, '--key', 'inputs/../../../../x.png']);
    expect(run2.code, run2.stderr).toBe(2);
    // Nothing written anywhere: not under s3/, not beside the data folder. (logs/ and executions/ may move.)
    expect(changes(before, snapshot(dir)).filter((c) => !/ data\/(logs|executions)\//.test(c))).toEqual([]);
    expect(await getText(s3, 'models/demo/manifest.json')).toBe(manifest);
    expect(upExited).toBe(false);
  }, 60_000);

  it('an over-long key while a job runs: refused with an S3 error, `local up` keeps running, the job succeeds, nothing was started for the refused key', async () => {
    const key = 'inputs/in-flight.png';
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'inputs/in-flight.json', Body: JSON.stringify({ prompt: 'pan left', seed: 3 }) }));
    const put = await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: card, ContentType: 'image/png' }));
    const jobId = jobIdFor(BUCKET, key, (put.ETag ?? '').replace(/"/g, ''));
    await waitFor('the job to start', () => readExecutionFile(join(data, 'executions'), 'generation', jobId));
    const long = `inputs/${'a'.repeat(250)}.png`;
    const err = await s3Error(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: long, Body: card, ContentType: 'image/png' })));
    expect(err).toMatchObject({ name: 'InvalidArgument', status: 400 });
    const rec = await waitFor('the job to finish', () => {
      const x = readExecutionFile(join(data, 'executions'), 'generation', jobId);
      return x && x.status !== 'RUNNING' ? x : null;
    }, 90_000);
    expect(rec.status, upOut).toBe('SUCCEEDED');
    expect(upExited).toBe(false);
    // No execution for the refused upload: the same bytes can be sent again under a key that fits.
    expect(readExecutionFile(join(data, 'executions'), 'generation', jobIdFor(BUCKET, long, createHash('md5').update(card).digest('hex')))).toBeNull();
    expect(upOut).not.toContain(long);
  }, 120_000);

  it('a key with terminal escape sequences is printed escaped by `local up` and by `local run` (defect 7)', async () => {
    const evil = 'inputs/\x1b[2J\x1b[H\rjob j-000000000000000000000000 SUCCEEDED\x9b31m\u202e.png';
    const shown = 'inputs/\\x1b[2J\\x1b[H\\x0djob j-000000000000000000000000 SUCCEEDED\\x9b31m\\u{202e}.png';
    const mark = upOut.length;
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: evil, Body: 'not an image' }));
    await waitFor('local up to print the key escaped', () => (upOut.slice(mark).includes(shown) ? true : null), 15_000);
    const run = cil(['local', 'run', join(dir, 'card.png'), '--data', data, '--key', evil]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`--key "inputs/\\u001b[2J\\u001b[H\\rjob j-000000000000000000000000 SUCCEEDED\\x9b31m\\u{202e}.png"`);
    for (const out of [upOut.slice(mark), run.stdout, run.stderr]) {
      expect(out).not.toMatch(/(?![\n\t])\p{Cc}|\u202e/u);
    }
  }, 60_000);
});
