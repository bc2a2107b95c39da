/**
 * What the two hand-written header parsers share (strictJson.ts: a safetensors header's JSON;
 * npy.ts: the Python literal of an .npy header): the text, a position in it, the caller's `fail`
 * (it throws the caller's typed error), and "exactly one value, then only whitespace".
 */
export abstract class HeaderParser<V> {
  protected pos = 0;
  protected readonly text: string;
  protected readonly fail: (msg: string) => never;

  constructor(text: string, fail: (msg: string) => never) {
    this.text = text;
    this.fail = fail;
  }

  /** The one value the text holds; text after it is refused with the message `trailing(offset)`. */
  protected only(trailing: (offset: number) => string): V {
    const v = this.value(0);
    this.ws();
    if (this.pos < this.text.length) this.fail(trailing(this.pos));
    return v;
  }

  protected abstract value(depth: number): V;
  protected abstract ws(): void;
}
