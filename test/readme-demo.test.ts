/**
 * The README says plainly what the demo model is and what a real video needs (issue 18, item 5).
 * The facts it states are checked against the demo model's own definition, so a change to the
 * demo (size, frames) fails here until the README's description is brought up to date.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEMO_DEFAULTS } from '../demo/src/bundle.ts';

const REPO = resolve(import.meta.dirname, '..');
const readme = readFileSync(join(REPO, 'README.md'), 'utf8');

/** The text from a heading line to the next heading of the same or a higher level. */
function section(md: string, heading: string): string {
  const start = md.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README.md has no '${heading}'`);
  const level = /^#+/.exec(heading)![0].length;
  const rest = md.slice(start + heading.length + 2);
  const next = new RegExp(`\\n#{1,${level}} `).exec(rest);
  return next ? rest.slice(0, next.index) : rest;
}

describe('README: the demo model and what a real model needs', () => {
  const more = section(readme, '### More to try');

  it('says that the demo\'s video comes from a toy test model, with its real size and length', () => {
    // Anywhere in the README (the quickstart above it is rewritten by others): the statement, its
    // link, and the demo's real size and length.
    const p = /\*\*The demo's video comes from a toy model, not a video model\.\*\*[^]*?\n\n/.exec(readme);
    expect(p, 'the README no longer says what the demo model is').not.toBeNull();
    expect(p![0]).toContain('](docs/demo-model.md)');
    expect(p![0]).toContain(`${DEMO_DEFAULTS.width}×${DEMO_DEFAULTS.height}`);
    expect(p![0]).toContain(`${DEMO_DEFAULTS.frames} frames`);
  });

  it('says under "More to try" that your own image gives no real video with it, and how to get a real model', () => {
    expect(more).toMatch(/not a\s+real video/);
    expect(more).toContain(`${DEMO_DEFAULTS.width}×${DEMO_DEFAULTS.height}`);
    for (const link of ['docs/models.md', 'docs/reference.md', 'docs/statistics.md', 'docs/infra.md#deploy']) expect(more).toContain(`](${link})`);
    expect(more).toMatch(/DynamiCrafter, VideoCrafter1 or Stable Video Diffusion/);
    expect(more).toContain('tools/export');
  });
});
