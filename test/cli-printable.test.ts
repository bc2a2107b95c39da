/**
 * Terminal injection (issue 19, defect 7): everything the CLI prints from user data goes through
 * cli/printable.ts. A key carrying "\x1b[2J" (clear the screen) and "\r…SUCCEEDED" (overwrite the
 * line with a fake result) must come out as visible escapes from every printer that shows keys,
 * reasons or errors: `local up`'s event lines, notifications, `local run`'s result, remote
 * `status`, and the top-level error line. (The same through real processes: local/test/s3Keys.test.ts.)
 */
import { describe, expect, it, vi } from 'vitest';
import { PassThrough } from 'node:stream';
import { describeEvent, formatNotification, printRunResult } from '../cli/local.ts';
import { run as cilMain } from '../cli/main.ts';
import { printable, printableJson } from '../cli/printable.ts';
import { printStatus } from '../cli/remote/commands.ts';
import type { JobStatus } from '../cli/remote/ops.ts';
import type { ExecutionRecord } from '../local/src/executions.ts';
import type { LocalNotification } from '../local/src/notifications.ts';
import type { RunImageResult } from '../local/src/run.ts';

const EVIL = 'inputs/\x1b[2J\x1b]0;owned\x07\rjob j-000000000000000000000000 SUCCEEDED\x9b2K\x7f\u202e.png';
const SHOWN = 'inputs/\\x1b[2J\\x1b]0;owned\\x07\\x0djob j-000000000000000000000000 SUCCEEDED\\x9b2K\\x7f\\u{202e}.png';
/** What a terminal acts on: C0 but LF, DEL, C1, the bidi controls, the line separators. */
const CONTROL = /(?!\n)\p{Cc}|[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/u;

function collect(): { out: NodeJS.WritableStream; text: () => string } {
  const s = new PassThrough();
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return { out: s, text: () => Buffer.concat(chunks).toString('utf8') };
}

describe('printable', () => {
  it('escapes C0, DEL, C1, ESC sequences, bidi controls and line separators; keeps printable Unicode', () => {
    expect(printable(EVIL)).toBe(SHOWN);
    expect(printable('\x00\x1f\x7f\x80\x9f\u2028\u2029\u200e\u2066\t\n')).toBe('\\x00\\x1f\\x7f\\x80\\x9f\\u{2028}\\u{2029}\\u{200e}\\u{2066}\\x09\\x0a');
    const unicode = 'inputs/café-日本語-🎬 «ß» \\ x.png';
    expect(printable(unicode)).toBe(unicode);
    // Idempotent: escaped text has nothing left to escape.
    expect(printable(printable(EVIL))).toBe(SHOWN);
    expect(printable(EVIL)).not.toMatch(CONTROL);
  });

  it('multiline keeps line feeds and tabs, escapes CR, and indents continuation lines (no forged line in column 0)', () => {
    expect(printable('invalid request:\n  - steps:\t5000\r\njob j-1 SUCCEEDED', { multiline: true })).toBe('invalid request:\n    - steps:\t5000\\x0d\n  job j-1 SUCCEEDED');
  });

  it('printableJson: the same JSON value, with no raw control character', () => {
    const v = { key: EVIL, n: 1, nested: [{ reason: 'a\u2028b\x85' }] };
    for (const space of [undefined, 2]) {
      const s = printableJson(v, space);
      expect(s).not.toMatch(CONTROL);
      expect(JSON.parse(s)).toEqual(v);
    }
  });
});

describe('the CLI prints keys and reasons escaped', () => {
  it('`local up` event lines: started, ignored, finished with an error', () => {
    const lines = [
      describeEvent({ type: 'execution-started', workflow: 'generation', name: 'j-1', key: EVIL }),
      describeEvent({ type: 'ignored', key: EVIL, reason: `bad key ${EVIL}` }),
      describeEvent({ type: 'duplicate', workflow: 'generation', name: 'j-1', key: EVIL }),
      describeEvent({ type: 'error', message: EVIL }),
    ];
    for (const l of lines) {
      expect(l).toContain(SHOWN);
      expect(l).not.toMatch(CONTROL);
    }
  });

  it('notifications and `local run`\'s result (error, failure reason, subject)', () => {
    const n: LocalNotification = { time: '2026-01-01T00:00:00Z', channel: 'sns', target: 't', subject: `CIL job ${EVIL}`, message: { jobId: 'j-1', reason: `key ${EVIL} refused` }, id: '1' };
    expect(formatNotification(n)).toContain(SHOWN);
    expect(formatNotification(n)).not.toMatch(CONTROL);
    const record = { status: 'FAILED', startDate: '2026-01-01T00:00:00Z', stopDate: '2026-01-01T00:00:01Z', error: EVIL, cause: EVIL } as unknown as ExecutionRecord;
    const r: RunImageResult = { jobId: 'j-1', key: EVIL, reused: false, record, outDir: '/tmp/x', files: [`/tmp/${EVIL}`], failure: { failedStep: 'Validate', reason: `key ${EVIL}\nrefused` }, notifications: [n] };
    const c = collect();
    expect(printRunResult(r, c.out)).toBe(1);
    expect(c.text()).toContain(SHOWN);
    expect(c.text()).not.toMatch(CONTROL);
    expect(c.text()).not.toMatch(/^job j-0+ SUCCEEDED/m);
  });

  it('remote `status`, as text and as JSON', () => {
    const s: JobStatus = {
      jobId: 'j-1',
      executionArn: 'arn',
      execution: { status: 'FAILED', startDate: null, stopDate: null, error: EVIL, cause: EVIL },
      step: 'Validate',
      steps: ['Validate'],
      batchJob: null,
      outputs: [{ key: `outputs/j-1/${EVIL}`, bytes: 1 }],
      failure: { failedStep: 'Validate', reason: EVIL },
    };
    for (const json of [false, true]) {
      const c = collect();
      printStatus(s, json, c.out);
      expect(c.text()).not.toMatch(CONTROL);
      if (!json) expect(c.text()).toContain(SHOWN);
      else expect((JSON.parse(c.text()) as JobStatus).execution?.error).toBe(EVIL);
    }
  });

  it('the top-level error line (an error message quoting a key)', async () => {
    let err = '';
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
      err += String(s);
      return true;
    });
    try {
      // `local run` refuses the key before reading anything else: a usage error quoting it.
      expect(await cilMain(['local', 'run', '/nonexistent/card.png', '--key', EVIL, '--data', '/nonexistent'])).toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(err).toMatch(/^cil: --key "inputs\/\\u001b\[2J/);
    expect(err).toContain('\\x9b2K\\x7f\\u{202e}.png"');
    expect(err).not.toMatch(CONTROL);
  });
});
