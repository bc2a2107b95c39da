/**
 * Text from user data made safe for a terminal. S3 keys, prompts, failure reasons and the error
 * messages that quote them are chosen by whoever uploads, and a terminal acts on control
 * characters: an ESC sequence in a key can clear the operator's screen, move the cursor or
 * recolour text, a carriage return can overwrite a line with a fake "SUCCEEDED", and bidi
 * overrides can reorder what is shown. Everything the CLI prints from such data goes through
 * `printable` (text) or `printableJson` (JSON lines); the rest of the output is the CLI's own.
 *
 * Escaped: every C0 control (U+0000–U+001F, so ESC and CR), DEL (U+007F), every C1 control
 * (U+0080–U+009F, CSI U+009B included), the line and paragraph separators (U+2028, U+2029) and
 * the bidi controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069). Printable Unicode
 * (accents, CJK, emoji) stays as it is. A control character C ≤ U+00FF is shown as `\xHH`, any
 * other as `\u{H…}`, as JavaScript would write it. A backslash already in the text is left
 * alone (it cannot make a terminal do anything). Hand-written: the packages that exist strip
 * ANSI sequences (strip-ansi) rather than show them, and leave bare CR or C1 controls in.
 */

const UNSAFE = /[\p{Cc}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/gu;
/** What JSON.stringify leaves raw: it escapes C0 inside strings, and outside them writes only spaces and line feeds. */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;
const UNSAFE_KEEPING_NEWLINES = /(?![\n\t])[\p{Cc}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/gu;

function escapeChar(c: string): string {
  const n = c.codePointAt(0) ?? 0;
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16)}}`;
}

/**
 * `s` with every control character escaped. `multiline: true` (a multi-line error message) keeps
 * tabs and line feeds, and indents each line after the first by two spaces, so that no line of
 * user data can pass for one of the CLI's own (which start in column 0); CR is escaped either way.
 */
export function printable(s: string, o: { readonly multiline?: boolean } = {}): string {
  if (!o.multiline) return s.replace(UNSAFE, escapeChar);
  return s.replace(UNSAFE_KEEPING_NEWLINES, escapeChar).replace(/\n/g, '\n  ');
}

/**
 * JSON.stringify whose output is also safe to print: JSON escapes C0 itself, and the characters
 * it leaves raw (DEL, C1, the separators, bidi controls) become `\uXXXX` escapes — the same JSON
 * value, read back identically by any parser.
 */
export function printableJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(UNSAFE_IN_JSON, (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`);
}
