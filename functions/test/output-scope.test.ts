/**
 * A job result may only name the job's own outputs (issue 19, defect 6). Notify presigns the keys
 * a JobResult lists: a forged result must not get URLs for another job's outputs, failure
 * records, uploads or another bucket, by any spelling of the key; and Post-process must not take
 * an earlier `result.json` listing keys outside the job's prefix as the job's finished result
 * (it would hand those keys to Notify).
 */
import { PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { PublishCommand } from '@aws-sdk/client-sns';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobSpec } from '#shared/schemas';
import { jobIdFor } from '#shared/schemas';
import { ConfigurationError, PipelineError } from '../src/errors.ts';
import { logger } from '../src/logger.ts';
import { createNotifyHandler } from '../src/notify/handler.ts';
import type { NotifyDeps } from '../src/notify/handler.ts';
import type { JobResult } from '../src/postprocess/core.ts';
import { postprocess, priorResult, resultBytes, resultKeyOf } from '../src/postprocess/core.ts';
import { createPostprocessHandler } from '../src/postprocess/handler.ts';
import { captureLogs } from './helpers/captureLogs.ts';
import { tinyJobResult, tinyJobSpec } from './helpers/fixtures.ts';
import { mockNotifyClients, notifyTestDeps } from './helpers/notifyMocks.ts';
import type { LocalS3 } from './helpers/s3server.ts';
import { startLocalS3 } from './helpers/s3server.ts';

const CREDS = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' };
const NOW = new Date('2025-01-15T13:00:00.000Z');
const BUCKET = 'cil-data';

const spec = (): JobSpec => tinyJobSpec('a prompt');
const JOB = spec().jobId;
const OTHER = jobIdFor(BUCKET, 'inputs/dog.png', 'e2');

function result(): JobResult {
  return tinyJobResult(spec(), [['mp4', 'video.mp4'], ['poster', 'poster.png'], ['png-frame', 'frames/0000.png'], ['metadata', 'metadata.json']]);
}

/** The result with output `i`'s key replaced. */
function withKey(i: number, key: string): JobResult {
  const r = result();
  return { ...r, outputs: r.outputs.map((o, j) => (j === i ? { ...o, key } : o)) };
}

/** Each way out of `outputs/<jobId>/` an attacker tried, and the forged text that must not be echoed. */
const FORGED: readonly (readonly [string, JobResult, string])[] = [
  ['another job’s output', withKey(0, `outputs/${OTHER}/video.mp4`), `outputs/${OTHER}/video.mp4`],
  ['another job whose id starts with this one', withKey(0, `outputs/${JOB}-x/video.mp4`), `outputs/${JOB}-x/video.mp4`],
  ['a failure record', withKey(3, `failures/${OTHER}.json`), `failures/${OTHER}.json`],
  ['another user’s upload', withKey(0, 'inputs/someone-else/private.png'), 'inputs/someone-else/private.png'],
  ['the scratch area', withKey(0, `jobs/${OTHER}/input.png`), `jobs/${OTHER}/input.png`],
  ['a model file', withKey(3, 'models/demo/manifest.json'), 'models/demo/manifest.json'],
  ['another bucket', { ...result(), bucket: 'someone-elses-bucket' }, 'someone-elses-bucket'],
  ['`..` segments', withKey(0, `outputs/${JOB}/../${OTHER}/video.mp4`), `../${OTHER}/video.mp4`],
  ['`..` after a valid name', withKey(0, `outputs/${JOB}/video.mp4/../../../failures/x.json`), '../../../failures/x.json'],
  ['percent-encoded `..`', withKey(0, `outputs/${JOB}/%2e%2e/${OTHER}/video.mp4`), `%2e%2e/${OTHER}/video.mp4`],
  ['percent-encoded slash', withKey(0, `outputs/${JOB}/..%2F${OTHER}%2Fvideo.mp4`), `..%2F${OTHER}%2Fvideo.mp4`],
  ['backslashes', withKey(0, `outputs/${JOB}\\..\\${OTHER}\\video.mp4`), `\\..\\${OTHER}\\video.mp4`],
  ['a doubled slash', withKey(0, `outputs/${JOB}//video.mp4`), `outputs/${JOB}//video.mp4`],
  ['a NUL byte', withKey(0, `outputs/${JOB}/video.mp4\u0000/../../x`), '\u0000/../../x'],
  ['a name Post-process never writes', withKey(0, `outputs/${JOB}/secret.bin`), 'secret.bin'],
  ['a frame name for a video', withKey(0, `outputs/${JOB}/frames/0001.png`), 'frames/0001.png'],
  ['a forged output prefix and result key', { ...result(), outputPrefix: `outputs/${OTHER}/`, resultKey: `outputs/${OTHER}/result.json` }, `outputs/${OTHER}/`],
];


describe('Notify presigns only the job’s own outputs in the data bucket', () => {
  const { sns: snsMock, events: eventsMock } = mockNotifyClients();
  beforeAll(() => logger.setLogLevel('SILENT'));

  function deps(over: Partial<NotifyDeps> = {}): NotifyDeps {
    snsMock.on(PublishCommand).resolves({ MessageId: 'm' });
    eventsMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
    return notifyTestDeps(CREDS, BUCKET, NOW, over);
  }

  it('the job’s own result: every presigned URL is for the data bucket under outputs/<jobId>/', async () => {
    await createNotifyHandler(deps())(result());
    const msg = JSON.parse(snsMock.commandCalls(PublishCommand)[0].args[0].input.Message!) as { outputs: { url?: string }[] };
    // Virtual-hosted style: the bucket is the host name's first label.
    const urls = msg.outputs.flatMap((o) => (o.url ? [new URL(o.url)] : []));
    expect(urls.map((u) => `${u.hostname}${u.pathname}`)).toEqual(
      ['video.mp4', 'poster.png', 'metadata.json'].map((n) => `${BUCKET}.s3.us-east-1.amazonaws.com/outputs/${JOB}/${n}`),
    );
  });

  it.each(FORGED)('a forged result naming %s is refused with InvalidEvent: nothing signed, nothing published, the forged text not echoed', async (_name, forged, text) => {
    const notify = createNotifyHandler(deps());
    for (const input of [forged, { status: 'SUCCEEDED', executionArn: 'arn:x', job: { result: forged } }]) {
      let e: unknown = null;
      const logs = await captureLogs('INFO', async () => {
        e = await notify(input).then(
          (v: unknown) => v,
          (x: unknown) => x,
        );
      });
      expect(e).toBeInstanceOf(PipelineError);
      const err = e as PipelineError;
      expect(err.name).toBe('InvalidEvent');
      expect(err.reason).toMatch(/Notify presigns and announces only/);
      expect(err.reason).not.toContain(text);
      expect(logs).toContain('notify refused');
      expect(logs).not.toContain(JSON.stringify(text).slice(1, -1));
      expect(snsMock.commandCalls(PublishCommand)).toHaveLength(0);
      expect(eventsMock.commandCalls(PutEventsCommand)).toHaveLength(0);
    }
  });

  it('refused with presigning off too: a forged result is not announced as the job’s outputs', async () => {
    const e = await createNotifyHandler(deps({ presign: { enabled: false, expirySeconds: 3600 } }))(withKey(0, 'inputs/someone-else/private.png')).catch((x: unknown) => x);
    expect((e as PipelineError).name).toBe('InvalidEvent');
    expect(snsMock.commandCalls(PublishCommand)).toHaveLength(0);
  });

  it('presigning without a configured data bucket is a ConfigurationError at start, before anything is signed', () => {
    expect(() => createNotifyHandler(deps({ dataBucket: null }))).toThrow(ConfigurationError);
    expect(() => createNotifyHandler(deps({ dataBucket: null, presign: { enabled: false, expirySeconds: 3600 } }))).not.toThrow();
  });
});

describe('Post-process takes an earlier result.json only if it names the job’s own outputs', () => {
  it.each(FORGED.filter(([name]) => name !== 'another bucket'))('priorResult refuses a result.json naming %s (OutputConflict), without echoing it', (_name, forged, text) => {
    let e: unknown = null;
    try {
      priorResult(resultBytes(forged), spec());
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(PipelineError);
    expect((e as PipelineError).name).toBe('OutputConflict');
    expect((e as PipelineError).reason).not.toContain(text);
  });

  it('the keys Post-process itself writes, every output kind, pass the same check', async () => {
    const s = spec();
    // The real Post-process (ffmpeg included) with every output kind asked for: the check must
    // accept exactly what it writes.
    const frame = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
    const all: JobSpec = { ...s, request: { ...s.request, outputs: ['mp4', 'gif', 'webp', 'png-frames', 'latent-npy'] } };
    const { result: r } = await postprocess(
      { spec: all, frames: Array.from({ length: s.request.frames }, () => frame), metadata: Buffer.from('{}'), latent: Buffer.alloc(16) },
      { ffmpegPath: process.env.FFMPEG_PATH ?? '/usr/bin/ffmpeg' },
    );
    expect(new Set(r.outputs.map((o) => o.kind))).toEqual(new Set(['mp4', 'gif', 'webp', 'poster', 'png-frame', 'latent-npy', 'metadata']));
    expect(priorResult(resultBytes(r), all)).toEqual(r);
  });

  describe('handler (s3rver)', () => {
    let s3: LocalS3;
    beforeAll(async () => {
      logger.setLogLevel('SILENT');
      s3 = await startLocalS3(BUCKET);
    });
    afterAll(async () => {
      await s3?.stop();
    });

    it('a planted result.json listing another user’s upload (present, right size) is OutputConflict, not the job’s finished result', async () => {
      const forged = withKey(0, 'inputs/someone-else/private.png');
      for (const o of forged.outputs) await s3.put(o.key, Buffer.alloc(o.bytes));
      await s3.put(resultKeyOf(JOB), resultBytes(forged));
      const run = createPostprocessHandler({ s3: s3.s3, dataBucket: BUCKET, ffmpegPath: process.env.FFMPEG_PATH ?? '/usr/bin/ffmpeg' });
      const e = await run(spec()).then(
        (v: unknown) => v,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(PipelineError);
      expect((e as PipelineError).name).toBe('OutputConflict');
      // Nothing written over it.
      expect((await s3.get(resultKeyOf(JOB)))!.equals(resultBytes(forged))).toBe(true);
    });
  });
});
