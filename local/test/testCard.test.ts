/** The test card (local/src/testCard.ts): the picture the demo, the load and the end-to-end tests upload. */
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { testCardPng, testCardRgb, TestCardError } from '../src/testCard.ts';

describe('the test card', () => {
  it('is the same bytes every time, the size asked for, a PNG', async () => {
    const a = await testCardPng();
    const b = await testCardPng();
    expect(a.equals(b)).toBe(true);
    const m = await sharp(a).metadata();
    expect([m.format, m.width, m.height, m.channels]).toEqual(['png', 512, 320, 3]);
    expect(() => testCardRgb(10, 10)).toThrow(TestCardError);
  });

  it('is colourful: many hues, from dark to light', () => {
    const px = testCardRgb(192, 128);
    const hues = new Set<number>();
    let min = 255;
    let max = 0;
    for (let i = 0; i < px.length; i += 3) {
      const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
      const hi = Math.max(r, g, b);
      const lo = Math.min(r, g, b);
      min = Math.min(min, hi);
      max = Math.max(max, hi);
      if (hi - lo < 60) continue;
      // Hue sector (of 12), computed the textbook way.
      const d = hi - lo;
      const h = hi === r ? ((g - b) / d + 6) % 6 : hi === g ? (b - r) / d + 2 : (r - g) / d + 4;
      hues.add(Math.floor(h * 2));
    }
    expect(hues.size).toBeGreaterThanOrEqual(10);
    expect(min).toBeLessThan(60);
    expect(max).toBeGreaterThan(220);
  });
});
