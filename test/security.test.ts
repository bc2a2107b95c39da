/**
 * Security properties of the functions, end to end through their handlers (docs/security.md):
 *
 * - presigned output URLs: bounded expiry (default 3600 s, at most SigV4's 7 days, refused past
 *   it — from the environment and from hand-built deps alike), and what the notification says;
 * - no secrets in logs: neither a prompt nor a presigned URL's signature or credential appears in
 *   Validate's, Notify's or RecordFailure's log output at info or above (captured from the
 *   Powertools logger), nor in the typed error a refusal throws (the Lambda runtime logs it and
 *   the failure record and notification carry it). At debug the URLs are logged (documented),
 *   which also shows the capture sees what the logger writes.
 *
 * IAM, encryption and TLS of the stack: infra/test/security.test.ts. The audit: scripts/audit.ts.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { S3Client } from '@aws-sdk/client-s3';
import { PublishCommand } from '@aws-sdk/client-sns';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { JobSpec } from '#shared/schemas';
import { MAX_PRESIGN_SECONDS } from '../functions/src/env.ts';
import { ConfigurationError, InvalidRequest, PipelineError } from '../functions/src/errors.ts';
import { logger } from '../functions/src/logger.ts';
import { buildFailureRecord, buildNotification, parseFailureInput } from '../functions/src/notify/core.ts';
import { createNotifyHandler, createRecordFailureHandler, notifyDepsFromEnv } from '../functions/src/notify/handler.ts';
import type { NotifyDeps } from '../functions/src/notify/handler.ts';
import type { JobResult } from '../functions/src/postprocess/core.ts';
import { parseRequest, withoutPromptValue } from '../functions/src/validate/core.ts';
import { createValidateHandler } from '../functions/src/validate/handler.ts';
import { captureLogs } from '../functions/test/helpers/captureLogs.ts';
import { mockNotifyClients, notifyTestDeps } from '../functions/test/helpers/notifyMocks.ts';
import { noiseImage, tinyJobResult, tinyJobSpec, tinyManifest, uploadEvent } from '../functions/test/helpers/fixtures.ts';
import type { LocalS3 } from '../functions/test/helpers/s3server.ts';
import { startLocalS3 } from '../functions/test/helpers/s3server.ts';
import { ALLOWLIST_FILE, AuditSetupError, evaluate, main as auditMain, parseAllowlist, parseAuditOutput, passes, summarize, unavailableBanner } from '../scripts/audit.ts';
import type { AllowEntry } from '../scripts/audit.ts';
import { thrown } from './helpers/thrown.ts';

const SECRET = 'zq-secret-prompt-about-a-tabby-cat-7f3a';
const NOW = new Date('2025-01-15T13:00:00.000Z');
const CREDS = { accessKeyId: 'AKIAFUZZEXAMPLE00000', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };

function spec(prompt = SECRET): JobSpec {
  return tinyJobSpec(prompt);
}

function result(s: JobSpec): JobResult {
  return tinyJobResult(s, [['mp4', 'video.mp4'], ['gif', 'video.gif'], ['poster', 'poster.png'], ['metadata', 'metadata.json']]);
}


/** Every secret a presigned URL carries: its signature, its credential (access key id). */
function urlSecrets(url: string): string[] {
  const q = new URL(url).searchParams;
  return [q.get('X-Amz-Signature')!, q.get('X-Amz-Credential')!, CREDS.accessKeyId];
}

const { sns, events } = mockNotifyClients();
beforeAll(() => logger.setLogLevel('SILENT'));

function notifyDeps(over: Partial<NotifyDeps> = {}): NotifyDeps {
  return notifyTestDeps(CREDS, 'cil-data', NOW, over);
}

function publishedMessage(): { outputs: { kind: string; url?: string }[]; urlsExpireAt?: string } {
  return JSON.parse(sns.commandCalls(PublishCommand)[0].args[0].input.Message!) as { outputs: { kind: string; url?: string }[]; urlsExpireAt?: string };
}

describe('presigned output URLs: bounded expiry', () => {
  it.each([
    ['PRESIGN_URLS on, no expiry: the documented default', { PRESIGN_URLS: 'true' }, 3600],
    ['an expiry in seconds', { CIL_PRESIGN_EXPIRY_SECONDS: '900' }, 900],
    ['exactly 7 days', { PRESIGN_EXPIRY_SECONDS: String(7 * 24 * 3600) }, 604800],
  ])('%s → X-Amz-Expires %s, and urlsExpireAt = now + expiry', async (_name, env, seconds) => {
    sns.on(PublishCommand).resolves({ MessageId: 'm' });
    events.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
    const fromEnv = notifyDepsFromEnv({ AWS_REGION: 'us-east-1', ...env });
    expect(fromEnv.presign).toEqual({ enabled: true, expirySeconds: seconds });
    await createNotifyHandler(notifyDeps({ presign: fromEnv.presign }))(result(spec()));
    const msg = publishedMessage();
    const urls = msg.outputs.flatMap((o) => (o.url ? [new URL(o.url)] : []));
    expect(urls).toHaveLength(4);
    for (const u of urls) {
      expect(u.searchParams.get('X-Amz-Expires')).toBe(String(seconds));
      expect(u.searchParams.get('X-Amz-Algorithm')).toBe('AWS4-HMAC-SHA256');
      expect(u.protocol).toBe('https:');
    }
    expect(msg.urlsExpireAt).toBe(new Date(NOW.getTime() + seconds * 1000).toISOString());
  });

  it('sends keys only (no URL, no expiry) when presigning is off, the stack default', async () => {
    sns.on(PublishCommand).resolves({ MessageId: 'm' });
    events.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
    const fromEnv = notifyDepsFromEnv({ AWS_REGION: 'us-east-1', CIL_PRESIGN_EXPIRY_SECONDS: '0' });
    await createNotifyHandler(notifyDeps({ presign: fromEnv.presign }))(result(spec()));
    const msg = publishedMessage();
    expect(msg.outputs.every((o) => o.url === undefined)).toBe(true);
    expect(msg.urlsExpireAt).toBeUndefined();
  });

  it('refuses an expiry past 7 days (or not a positive integer) before signing anything, from the environment and from hand-built deps', () => {
    expect(MAX_PRESIGN_SECONDS).toBe(604800);
    for (const v of ['604801', '31536000', '-1', '1.5', '1e6']) {
      expect(() => notifyDepsFromEnv({ AWS_REGION: 'us-east-1', PRESIGN_EXPIRY_SECONDS: v }), v).toThrow(ConfigurationError);
    }
    for (const v of [604801, 0, -60, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => createNotifyHandler(notifyDeps({ presign: { enabled: true, expirySeconds: v } })), String(v)).toThrow(ConfigurationError);
    }
    // Off, the expiry is never used.
    expect(() => createNotifyHandler(notifyDeps({ presign: { enabled: false, expirySeconds: 0 } }))).not.toThrow();
  });
});

describe('no secrets in logs', () => {
  it('Notify logs neither presigned URLs (signature, credential) nor the prompt at info, warn or error', async () => {
    sns.on(PublishCommand).resolves({ MessageId: 'm' });
    events.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
    const notify = createNotifyHandler(notifyDeps());
    const info = await captureLogs('INFO', async () => {
      await notify(result(spec()));
      // The warn path too: EventBridge refuses, PublishFailed is logged and thrown.
      events.on(PutEventsCommand).resolves({ FailedEntryCount: 1, Entries: [{ ErrorCode: 'ThrottlingException', ErrorMessage: 'slow down' }] });
      await notify(result(spec())).catch(() => undefined);
    });
    const urls = sns
      .commandCalls(PublishCommand)
      .flatMap((c) => (JSON.parse(c.args[0].input.Message!) as { outputs: { url?: string }[] }).outputs)
      .flatMap((o) => (o.url ? [o.url] : []));
    expect(urls.length).toBe(8);
    expect(info).toContain('"notified"');
    expect(info).toContain('notify refused');
    for (const url of urls) for (const secret of urlSecrets(url)) expect(info).not.toContain(secret);
    expect(info).not.toContain('X-Amz-Signature');
    expect(info).not.toContain(SECRET);
    // At debug they are logged (docs/functions.md): the capture does see what the logger writes.
    sns.on(PublishCommand).resolves({ MessageId: 'm' });
    events.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
    const debug = await captureLogs('DEBUG', () => notify(result(spec())));
    expect(debug).toContain('X-Amz-Signature');
  });

  it('RecordFailure logs the step and error name, not the reason (which may quote the request)', async () => {
    const s3 = mockClient(S3Client);
    s3.onAnyCommand().resolves({});
    try {
      const record = createRecordFailureHandler({ s3: new S3Client({ region: 'us-east-1', credentials: CREDS }), dataBucket: 'cil-data', now: () => NOW });
      const cause = JSON.stringify({ errorType: 'InvalidRequest', errorMessage: `inputs/cat.json: invalid job request:\n  - steps: 5000 (${SECRET})` });
      const out = await captureLogs('INFO', () => record({ failedStep: 'Validate', error: { Error: 'InvalidRequest', Cause: cause }, spec: spec() }));
      expect(out).toContain('failure recorded');
      expect(out).not.toContain(SECRET);
    } finally {
      s3.restore();
    }
  });

  it('a prompt Validate refuses is not quoted in the typed error: not in the runtime’s error log, the failure record or the notification', () => {
    const long = `${SECRET} ${'x'.repeat(2100)}`;
    const err = thrown(() => parseRequest({ model: 'tiny', prompt: long, steps: 'fifty' }, 'inputs/cat.json'), InvalidRequest);
    // What was wrong stays; the value goes. Other fields keep their quoted values.
    expect(err.reason).toContain('- prompt: Too big: expected string to have <=2000 characters (value not shown)');
    expect(err.reason).toContain('- steps: Invalid input: expected number, received string (got "fifty")');
    // The Lambda runtime logs {errorType, errorMessage, stack}; the Catch hands the same as Cause.
    const runtimeLog = JSON.stringify({ errorType: err.name, errorMessage: err.message, stack: err.stack });
    expect(runtimeLog).not.toContain(SECRET.slice(0, 12));
    const rec = buildFailureRecord(parseFailureInput({ failedStep: 'Validate', error: { Error: err.name, Cause: runtimeLog }, event: uploadEvent('cil-data', 'inputs/cat.png') }), NOW);
    expect(rec.reason).toContain('(value not shown)');
    expect(JSON.stringify(buildNotification({ status: 'failed', failure: rec }))).not.toContain(SECRET.slice(0, 12));
    // The redaction touches only the prompt's line.
    expect(withoutPromptValue('a:\n  - prompt: Too big (got "abc"… (3000 characters))\n  - model: bad (got "x")')).toBe('a:\n  - prompt: Too big (value not shown)\n  - model: bad (got "x")');
  });

  describe('Validate, end to end (s3rver)', () => {
    let s3: LocalS3;
    beforeAll(async () => {
      s3 = await startLocalS3();
      await s3.put('models/tiny/manifest.json', JSON.stringify(tinyManifest()));
      await s3.put('statistics/tiny-stats.safetensors', Buffer.alloc(64));
    });
    afterAll(async () => {
      await s3?.stop();
    });

    async function upload(key: string, sidecar: string): Promise<Record<string, unknown>> {
      const body = await noiseImage(100, 100).png().toBuffer();
      // Sidecar first, as documented: one written after the image is refused (RequestChanged).
      await s3.put(key.replace(/\.png$/, '.json'), sidecar);
      await s3.put(key, body);
      return uploadEvent(s3.bucket, key, { size: body.length, etag: createHash('md5').update(body).digest('hex') });
    }

    it('neither an accepted nor a refused prompt reaches the log at info, nor the thrown error', async () => {
      const validate = createValidateHandler({ s3: s3.s3, dataBucket: s3.bucket });
      const ok = await upload('inputs/sec/ok.png', JSON.stringify({ model: 'tiny', prompt: SECRET }));
      const bad = await upload('inputs/sec/bad.png', JSON.stringify({ model: 'tiny', prompt: `${SECRET}${'x'.repeat(3000)}` }));
      let thrown: unknown = null;
      const out = await captureLogs('INFO', async () => {
        const spec = await validate(ok);
        expect(spec.request.prompt).toBe(SECRET);
        thrown = await validate(bad).then(() => null, (x: unknown) => x);
      });
      expect(out).toContain('upload valid');
      expect(out).toContain('upload refused');
      expect(out).toContain('promptChars');
      expect(out).not.toContain(SECRET.slice(0, 12));
      expect(thrown).toBeInstanceOf(PipelineError);
      expect(JSON.stringify({ errorType: (thrown as PipelineError).name, errorMessage: (thrown as PipelineError).message })).not.toContain(SECRET.slice(0, 12));
    });

    // Issue 19, defect 4: V8's JSON SyntaxError quotes ~10 characters around the fault. A
    // single-quoted prompt put them in the reason, which went to the WARN log, the failure record
    // and both notifications.
    it('a sidecar or x-amz-meta-request with a JSON syntax error inside the prompt: no part of it in the log, the failure record or the notifications', async () => {
      const secret = 'Zq9xK7wV3mTbB2nQ';
      const fragments = Array.from({ length: secret.length - 3 }, (_, i) => secret.slice(i, i + 4));
      const text = `{"model": "tiny", "prompt": '${secret} on a mat', "steps": 4}`;
      const validate = createValidateHandler({ s3: s3.s3, dataBucket: s3.bucket });
      const recordFailure = createRecordFailureHandler({ s3: s3.s3, dataBucket: s3.bucket, now: () => NOW });
      sns.on(PublishCommand).resolves({ MessageId: 'm' });
      events.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
      const notify = createNotifyHandler(notifyDeps());
      const sidecarEvent = await upload('inputs/sec/quoted.png', text);
      const body = await noiseImage(100, 100).png().toBuffer();
      await s3.put('inputs/sec/meta.png', body, { request: text });
      const metaEvent = uploadEvent(s3.bucket, 'inputs/sec/meta.png', { size: body.length, etag: createHash('md5').update(body).digest('hex') });
      const seen: string[] = [];
      const out = await captureLogs('INFO', async () => {
        for (const event of [sidecarEvent, metaEvent]) {
          const err = (await validate(event).then(() => null, (x: unknown) => x)) as PipelineError;
          expect(err).toBeInstanceOf(InvalidRequest);
          expect(err.reason).toMatch(/: not valid JSON \(unexpected character at line 1, column 29\)$/);
          // What the Lambda runtime logs and the Catch hands on as Cause.
          const cause = JSON.stringify({ errorType: err.name, errorMessage: err.message, stack: err.stack });
          seen.push(cause);
          const rec = await recordFailure({ failedStep: 'Validate', error: { Error: err.name, Cause: cause }, event });
          seen.push((await s3.get(rec.failureKey))!.toString('utf8'));
          await notify({ failure: rec });
        }
      });
      expect(out).toContain('upload refused');
      seen.push(out);
      seen.push(...sns.commandCalls(PublishCommand).map((c) => JSON.stringify(c.args[0].input)));
      seen.push(...events.commandCalls(PutEventsCommand).map((c) => JSON.stringify(c.args[0].input)));
      expect(sns.commandCalls(PublishCommand)).toHaveLength(2);
      expect(events.commandCalls(PutEventsCommand)).toHaveLength(2);
      expect(seen.join('\n')).toContain('not valid JSON (unexpected character at line 1, column 29)');
      for (const s of seen) for (const f of fragments) expect(s).not.toContain(f);
    });
  });
});

describe('dependency audit (scripts/audit.ts)', () => {
  /** A report in `npm audit --json` (v2) form, written by hand: one advisory reached through two packages, one moderate. */
  const report = JSON.stringify({
    auditReportVersion: 2,
    vulnerabilities: {
      'fast-xml-parser': {
        name: 'fast-xml-parser',
        severity: 'high',
        isDirect: false,
        via: [{ source: 1101234, name: 'fast-xml-parser', dependency: 'fast-xml-parser', title: 'ReDoS in entity parsing', url: 'https://github.com/advisories/GHSA-x3cc-x39p-42qx', severity: 'high', range: '<4.4.1' }],
        effects: ['@aws-sdk/core'],
        range: '<4.4.1',
        nodes: ['node_modules/fast-xml-parser'],
        fixAvailable: true,
      },
      '@aws-sdk/core': { name: '@aws-sdk/core', severity: 'high', isDirect: false, via: ['fast-xml-parser'], effects: [], range: '*', nodes: ['node_modules/@aws-sdk/core'], fixAvailable: true },
      esbuild: {
        name: 'esbuild',
        severity: 'moderate',
        isDirect: true,
        via: [{ source: 1102341, name: 'esbuild', title: 'dev server answers any origin', url: 'https://github.com/advisories/GHSA-67mh-4wv8-2f99', severity: 'moderate', range: '<=0.24.2' }],
        effects: [],
        range: '<=0.24.2',
        nodes: ['node_modules/esbuild'],
        fixAvailable: true,
      },
    },
    metadata: { vulnerabilities: { info: 0, low: 0, moderate: 1, high: 2, critical: 0, total: 3 }, dependencies: { prod: 100, dev: 300, optional: 5, peer: 0, peerOptional: 0, total: 405 } },
  });
  const entry = (over: Partial<AllowEntry> = {}): AllowEntry => ({
    id: 'GHSA-x3cc-x39p-42qx',
    package: 'fast-xml-parser',
    reason: 'only parses XML from AWS service responses, never user input',
    reviewBy: '2025-06-30',
    ...over,
  });

  it('reads a report: advisories deduplicated, with id, package and severity', () => {
    const out = parseAuditOutput(report);
    expect(out.kind).toBe('report');
    if (out.kind !== 'report') return;
    expect(out.dependencies).toBe(405);
    expect(out.advisories.map((a) => [a.severity, a.package, a.id, a.source])).toEqual([
      ['high', 'fast-xml-parser', 'GHSA-x3cc-x39p-42qx', 1101234],
      ['moderate', 'esbuild', 'GHSA-67mh-4wv8-2f99', 1102341],
    ]);
  });

  it('fails on an unlisted high advisory; passes it when listed (by GHSA id, URL or npm id) and in date; fails once overdue', () => {
    const out = parseAuditOutput(report);
    if (out.kind !== 'report') throw new Error('expected a report');
    const none = evaluate(out.advisories, [], '2025-01-15');
    expect(passes(none)).toBe(false);
    expect(none.blocking.map((a) => a.package)).toEqual(['fast-xml-parser']);
    expect(none.reported.map((a) => a.package)).toEqual(['esbuild']);
    expect(summarize(none, 405)).toMatch(/FAIL: 1 high\/critical advisories not in audit-allowlist.json:\n {2}high {5}fast-xml-parser/);
    for (const id of ['GHSA-x3cc-x39p-42qx', 'https://github.com/advisories/GHSA-x3cc-x39p-42qx', '1101234']) {
      const ok = evaluate(out.advisories, [entry({ id })], '2025-01-15');
      expect(passes(ok), id).toBe(true);
      expect(ok.allowed).toHaveLength(1);
    }
    // The review-by day itself is still good; the day after is not.
    expect(passes(evaluate(out.advisories, [entry()], '2025-06-30'))).toBe(true);
    const late = evaluate(out.advisories, [entry()], '2025-07-01');
    expect(passes(late)).toBe(false);
    expect(summarize(late, 405)).toContain('past their review-by date');
    // An entry for another package does not excuse it; an entry matching nothing is stale.
    const other = evaluate(out.advisories, [entry({ package: 'xml2js' })], '2025-01-15');
    expect(passes(other)).toBe(false);
    expect(other.stale.map((e) => e.package)).toEqual(['xml2js']);
  });

  it('treats an unreachable or refusing advisory endpoint as unavailable (warn), a broken setup as an error (fail)', () => {
    const http405 = JSON.stringify({ message: '405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk', method: 'POST', uri: 'https://registry.npmjs.org/-/npm/v1/security/advisories/bulk', statusCode: 405, body: '', error: { summary: '', detail: '' } });
    expect(parseAuditOutput(http405)).toEqual({ kind: 'unavailable', detail: 'HTTP 405: 405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk' });
    const refused = JSON.stringify({ message: 'request to http://127.0.0.1:9/-/npm/v1/security/advisories/bulk failed, reason: connect ECONNREFUSED 127.0.0.1:9', error: { summary: '', detail: '' } });
    expect(parseAuditOutput(refused).kind).toBe('unavailable');
    expect(parseAuditOutput('', 'npm error audit endpoint returned an error').kind).toBe('unavailable');
    const noLock = JSON.stringify({ error: { code: 'ENOLOCK', summary: 'This command requires an existing lockfile.', detail: '' } });
    expect(() => parseAuditOutput(noLock)).toThrow(AuditSetupError);
    expect(() => parseAuditOutput('not json', 'segfault')).toThrow(AuditSetupError);
    expect(unavailableBanner('HTTP 405', false)).toMatch(/DEPENDENCY AUDIT NOT RUN[\s\S]*Not failing CI/);
    expect(unavailableBanner('HTTP 405', true)).toContain('CIL_AUDIT_STRICT=1: failing.');
  });

  it('main --report: a saved report with an unlisted high advisory exits 1; with none, 0', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cil-audit-'));
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      writeFileSync(join(dir, 'bad.json'), report);
      writeFileSync(join(dir, 'clean.json'), JSON.stringify({ auditReportVersion: 2, vulnerabilities: {}, metadata: { dependencies: { total: 405 } } }));
      expect(auditMain(['--report', join(dir, 'bad.json')])).toBe(1);
      expect(auditMain(['--report', join(dir, 'clean.json')])).toBe(0);
      expect(auditMain(['--report'])).toBe(1);
      expect(log.mock.calls.flat().join('\n')).toMatch(/audit: FAILED[\s\S]*audit: OK/);
    } finally {
      log.mockRestore();
      err.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a malformed allow-list; the committed one is well formed and has no overdue entry', () => {
    expect(() => parseAllowlist('{"entries": [{"id": "GHSA-x3cc-x39p-42qx", "package": "p", "reason": "because", "reviewBy": "soon"}]}')).toThrow(/reason: .*reviewBy: /);
    expect(() => parseAllowlist('[]')).toThrow(AuditSetupError);
    const committed = parseAllowlist(readFileSync(ALLOWLIST_FILE, 'utf8'));
    const today = new Date().toISOString().slice(0, 10);
    for (const e of committed) expect(e.reviewBy >= today, `${e.package} ${e.id} is past its review-by date`).toBe(true);
  });
});
