/**
 * The job reporter of `npm run demo`, `cil local run` and `cil submit` (cli/progress.ts): a bar
 * over the denoising steps on a terminal; elsewhere plain lines, a denoise line every 5 steps and
 * never JSON (docs/cli.md, "Progress").
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { JobReporter } from '../progress.ts';

function stream(tty: boolean): { out: PassThrough & { isTTY?: boolean; columns?: number }; text: () => string } {
  const out: PassThrough & { isTTY?: boolean; columns?: number } = new PassThrough();
  out.isTTY = tty;
  out.columns = 100;
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  return { out, text: () => Buffer.concat(chunks).toString('utf8') };
}

function drive(r: JobReporter): void {
  r.state('Validate', 0);
  r.state('Generate', 100);
  r.progress({ phase: 'encode' });
  for (let s = 1; s <= 12; s++) r.progress({ phase: 'denoise', step: s, total: 12 });
  r.progress({ phase: 'decode' });
  r.end(2600);
}

describe('JobReporter', () => {
  it('not a terminal: plain lines, a denoise line every 5 steps and the last, no JSON, no escape sequences', () => {
    const s = stream(false);
    drive(new JobReporter(s.out));
    expect(s.text()).toBe(['  ▸ Validate', '    Validate took 0.1 s', '  ▸ Generate', '    encode', '    denoise 5/12', '    denoise 10/12', '    denoise 12/12', '    decode', '    Generate took 2.5 s', ''].join('\n'));
  });

  it('a terminal: a cli-progress bar over the steps, and the same step lines', () => {
    const s = stream(true);
    drive(new JobReporter(s.out));
    const t = s.text();
    expect(t).toContain('    denoise [');
    expect(t).toContain('12/12 steps');
    expect(t).not.toMatch(/denoise 5\/12\n/);
    expect(t).toContain('    Generate took 2.5 s\n');
  });
});
