/**
 * Strict JSON (RFC 8259) into Maps, refusing duplicate keys at every level: safetensors headers
 * must not let a second `"dtype"` silently win, which `JSON.parse` allows. Hand-written because
 * no maintained npm parser reports duplicate keys as errors with a position.
 */
import { HeaderParser } from './headerParser.ts';

export type Json = null | boolean | number | string | Json[] | Map<string, Json>;

const MAX_JSON_DEPTH = 64;
const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

export class StrictJson extends HeaderParser<Json> {
  parse(): Json {
    return this.only((offset) => `header is not valid JSON: unexpected text at offset ${offset}`);
  }

  protected override ws(): void {
    for (;;) {
      const c = this.text.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.pos++;
      else return;
    }
  }

  private bad(what: string): never {
    return this.fail(`header is not valid JSON: ${what} at offset ${this.pos}`);
  }

  protected override value(depth: number): Json {
    if (depth > MAX_JSON_DEPTH) this.bad('nesting too deep');
    this.ws();
    const c = this.text[this.pos];
    switch (c) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case 't':
        return this.literal('true', true);
      case 'f':
        return this.literal('false', false);
      case 'n':
        return this.literal('null', null);
      default: {
        NUMBER_RE.lastIndex = this.pos;
        const m = NUMBER_RE.exec(this.text);
        if (m === null) return this.bad(c === undefined ? 'unexpected end' : `unexpected '${c}'`);
        this.pos += m[0].length;
        return Number(m[0]);
      }
    }
  }

  private literal<T extends Json>(word: string, v: T): T {
    if (this.text.startsWith(word, this.pos)) {
      this.pos += word.length;
      return v;
    }
    return this.bad('unexpected token');
  }

  private string(): string {
    const start = this.pos;
    let i = start + 1;
    for (;;) {
      if (i >= this.text.length) return this.bad('unterminated string');
      const c = this.text.charCodeAt(i);
      if (c === 0x22) break;
      i += c === 0x5c ? 2 : 1;
    }
    this.pos = i + 1;
    try {
      // The token is delimited; JSON.parse validates its escapes and control characters.
      return JSON.parse(this.text.slice(start, i + 1)) as string;
    } catch {
      this.pos = start;
      return this.bad('invalid string');
    }
  }

  /** Steps past an opening bracket; true (and past `close`) when it closes at once: `[]`, `{}`. */
  private opensEmpty(close: ']' | '}'): boolean {
    this.pos++;
    this.ws();
    if (this.text[this.pos] !== close) return false;
    this.pos++;
    return true;
  }

  /** After an item: true past `close`, false past a ','; anything else is refused. */
  private closes(close: ']' | '}'): boolean {
    this.ws();
    const c = this.text[this.pos++];
    if (c === close) return true;
    if (c !== ',') {
      this.pos--;
      this.bad(`expected ',' or '${close}'`);
    }
    return false;
  }

  private array(depth: number): Json[] {
    const out: Json[] = [];
    if (this.opensEmpty(']')) return out;
    do {
      out.push(this.value(depth + 1));
    } while (!this.closes(']'));
    return out;
  }

  private object(depth: number): Map<string, Json> {
    const out = new Map<string, Json>();
    if (this.opensEmpty('}')) return out;
    do {
      this.ws();
      if (this.text[this.pos] !== '"') this.bad('expected a string key');
      const key = this.string();
      if (out.has(key)) this.fail(`duplicate key "${key}" in header`);
      this.ws();
      if (this.text[this.pos] !== ':') this.bad("expected ':'");
      this.pos++;
      out.set(key, this.value(depth + 1));
    } while (!this.closes('}'));
    return out;
  }
}

export function describe(v: Json | undefined): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Map) return 'an object';
  return `${typeof v} ${JSON.stringify(v).slice(0, 40)}`;
}
