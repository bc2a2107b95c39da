import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JSON_ERROR_KINDS, JsonSyntaxError, parseJsonText } from '../src/formats/jsonText.ts';


describe('parseJsonText', () => {
  it('returns what JSON.parse returns for valid JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = JSON.stringify(v);
        expect(parseJsonText(text)).toEqual(JSON.parse(text));
      }),
    );
  });

  it('for any text JSON.parse refuses, throws JsonSyntaxError whose message is a fixed kind and a position (no source text)', () => {
    // Mutated JSON (a character inserted, deleted or replaced) and arbitrary strings.
    const mutated = fc
      .tuple(fc.jsonValue().map((v) => JSON.stringify({ prompt: 'qqqq', v })), fc.nat(), fc.constantFrom(...`"'{}[],:\\\u0001xZ \n-0e.`), fc.constantFrom('ins', 'del', 'rep'))
      .map(([t, at, ch, op]) => {
        const i = at % (t.length + 1);
        return op === 'ins' ? t.slice(0, i) + ch + t.slice(i) : op === 'del' ? t.slice(0, i) + t.slice(i + 1) : t.slice(0, i) + ch + t.slice(i + 1);
      });
    fc.assert(
      fc.property(fc.oneof(mutated, fc.string()), (text) => {
        let ok = true;
        try {
          JSON.parse(text);
        } catch {
          ok = false;
        }
        if (ok) return;
        let e: unknown = null;
        try {
          parseJsonText(text);
        } catch (x) {
          e = x;
        }
        expect(e).toBeInstanceOf(JsonSyntaxError);
        const j = e as JsonSyntaxError;
        // The whole message: one of the fixed kinds and a position; nothing taken from the text.
        expect(JSON_ERROR_KINDS).toContain(j.kind);
        expect(j.message).toBe(`${j.kind} at line ${j.line}, column ${j.column}`);
        expect(j.offset).toBeGreaterThanOrEqual(0);
        expect(j.offset).toBeLessThanOrEqual(text.length);
      }),
      { numRuns: 2000 },
    );
  });

  it('counts lines and columns from 1', () => {
    expect(() => parseJsonText('{\n  "a": 1,\n  "b": }')).toThrow('expected a value at line 3, column 8');
    expect(() => parseJsonText('')).toThrow('unexpected end of input at line 1, column 1');
  });
});
