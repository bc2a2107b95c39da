/** The Spot notice watch against a fake instance metadata service (IMDSv2) on 127.0.0.1. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseNotice, spotNoticeFile, spotWatchEnabled, watchSpotInterruption } from '../src/spot.ts';
import type { SpotNotice } from '../src/spot.ts';

interface FakeImds {
  readonly endpoint: string;
  /** Requests seen: method, path, the token header. */
  readonly seen: { method: string; path: string; token?: string }[];
  notice: string | null;
  close(): Promise<void>;
}

let servers: Server[] = [];

async function fakeImds(): Promise<FakeImds> {
  const seen: FakeImds['seen'] = [];
  const state = { notice: null as string | null };
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', path: req.url ?? '', token: req.headers['x-aws-ec2-metadata-token'] as string | undefined });
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      if (!req.headers['x-aws-ec2-metadata-token-ttl-seconds']) return void res.writeHead(400).end();
      return void res.writeHead(200).end('TOKEN-1');
    }
    if (req.headers['x-aws-ec2-metadata-token'] !== 'TOKEN-1') return void res.writeHead(401).end();
    if (req.url === '/latest/meta-data/spot/instance-action') {
      if (state.notice === null) return void res.writeHead(404).end();
      return void res.writeHead(200, { 'content-type': 'text/plain' }).end(state.notice);
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  const fake = {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    get notice() {
      return state.notice;
    },
    set notice(v: string | null) {
      state.notice = v;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
  return fake;
}

afterEach(async () => {
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  servers = [];
});

describe('Spot interruption notice', () => {
  it('off outside EC2 (by the environment) without any call', () => {
    expect(spotWatchEnabled({})).toBe(false);
    expect(spotWatchEnabled({ AWS_BATCH_JOB_ID: 'x' })).toBe(true);
    expect(spotWatchEnabled({ ECS_CONTAINER_METADATA_URI_V4: 'x' })).toBe(true);
    expect(spotWatchEnabled({ AWS_BATCH_JOB_ID: 'x', AWS_EC2_METADATA_DISABLED: 'true' })).toBe(false);
    expect(spotWatchEnabled({ AWS_BATCH_JOB_ID: 'x', CIL_SPOT_WATCH: 'off' })).toBe(false);
  });

  it('reads only EC2\'s notice shapes', () => {
    expect(parseNotice('{"action": "terminate", "time": "2017-09-18T08:22:00Z"}')).toEqual({ action: 'terminate', time: '2017-09-18T08:22:00Z' });
    expect(parseNotice('{"action": "reboot"}')).toBeNull();
    expect(parseNotice('<html>')).toBeNull();
  });

  it('polls with an IMDSv2 token, and on the notice calls back once and stops', async () => {
    const imds = await fakeImds();
    const notices: SpotNotice[] = [];
    const lines: Record<string, unknown>[] = [];
    const w = await watchSpotInterruption({ env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint }, intervalMs: 10, onNotice: (n) => notices.push(n), log: (l) => lines.push(l) });
    expect(w.active).toBe(true);
    // A few polls without a notice (404), then the notice.
    while (imds.seen.filter((s) => s.method === 'GET').length < 3) await new Promise((r) => setTimeout(r, 5));
    expect(notices).toEqual([]);
    imds.notice = JSON.stringify({ action: 'terminate', time: '2030-01-01T00:02:00Z' });
    while (notices.length === 0) await new Promise((r) => setTimeout(r, 5));
    const polls = imds.seen.length;
    await new Promise((r) => setTimeout(r, 60));
    expect(imds.seen.length).toBe(polls);
    expect(notices).toEqual([{ action: 'terminate', time: '2030-01-01T00:02:00Z' }]);
    expect(imds.seen[0]).toMatchObject({ method: 'PUT', path: '/latest/api/token' });
    expect(imds.seen.slice(1).every((s) => s.method === 'GET' && s.path === '/latest/meta-data/spot/instance-action' && s.token === 'TOKEN-1')).toBe(true);
    expect(lines.find((l) => l.event === 'spot-notice')).toMatchObject({ action: 'terminate' });
    w.stop();
  });

  it('inactive when the token call gets no answer (not on EC2)', async () => {
    const imds = await fakeImds();
    await imds.close();
    servers = [];
    const lines: Record<string, unknown>[] = [];
    const w = await watchSpotInterruption({ env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint }, timeoutMs: 200, onNotice: () => undefined, log: (l) => lines.push(l) });
    expect(w.active).toBe(false);
    expect(lines[0]).toMatchObject({ event: 'spot-watch', imds: false });
  });

  it('watches the notice file the host writes in the cache volume (IMDS unreachable from containers at hop limit 1)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cil-spot-'));
    try {
      const notices: SpotNotice[] = [];
      const env = { CIL_CACHE_DIR: dir, AWS_EC2_METADATA_DISABLED: 'true' };
      expect(spotNoticeFile(env)).toBe(join(dir, '.spot-instance-action'));
      const w = await watchSpotInterruption({ env, intervalMs: 10, onNotice: (n) => notices.push(n) });
      expect(w.active).toBe(true);
      await new Promise((r) => setTimeout(r, 50));
      expect(notices).toEqual([]);
      await writeFile(join(dir, '.spot-instance-action'), '{"action":"terminate","time":"2030-01-01T00:02:00Z"}');
      while (notices.length === 0) await new Promise((r) => setTimeout(r, 5));
      expect(notices).toEqual([{ action: 'terminate', time: '2030-01-01T00:02:00Z' }]);
      w.stop();
      const off = await watchSpotInterruption({ env: { ...env, CIL_SPOT_WATCH: 'off' }, onNotice: () => undefined });
      expect(off.active).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
