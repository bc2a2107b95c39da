/**
 * JSON.parse for untrusted text whose error names the fault by kind and position only.
 *
 * Why: V8's SyntaxError quotes the text around the fault (`Unexpected token 'x', "…prompt…" is
 * not valid JSON`). For a sidecar or `x-amz-meta-request` that text is often the prompt, and the
 * message travels on into the failure record, the notifications and the logs
 * (docs/security.md). So the parse itself is still `JSON.parse` (what it accepts and returns is
 * unchanged), but its message is dropped; the kind and offset come from jsonc-parser (Microsoft's
 * JSON scanner, run strict: no comments, no trailing commas), whose error codes carry no text.
 */
import { parse as jsoncParse, printParseErrorCode } from 'jsonc-parser';
import type { ParseError } from 'jsonc-parser';

/**
 * What was wrong, in words that quote nothing from the text; keyed by printParseErrorCode's names
 * (ParseErrorCode is a const enum, which this project's module settings cannot read).
 */
const KINDS: Readonly<Record<string, string>> = {
  InvalidSymbol: 'unexpected character',
  InvalidNumberFormat: 'malformed number',
  PropertyNameExpected: 'expected a double-quoted property name',
  ValueExpected: 'expected a value',
  ColonExpected: "expected ':' after a property name",
  CommaExpected: "expected ',' or a closing bracket",
  CloseBraceExpected: "expected ',' or '}'",
  CloseBracketExpected: "expected ',' or ']'",
  EndOfFileExpected: 'unexpected text after the JSON value',
  InvalidCommentToken: 'comments are not allowed in JSON',
  UnexpectedEndOfComment: 'unterminated comment',
  UnexpectedEndOfString: 'unterminated string',
  UnexpectedEndOfNumber: 'malformed number',
  InvalidUnicode: 'invalid \\u escape',
  InvalidEscapeCharacter: 'invalid escape sequence',
  InvalidCharacter: 'control character in a string (escape it)',
};

const END_OF_INPUT = 'unexpected end of input';
const UNKNOWN = 'not valid JSON';
/** Every kind a JsonSyntaxError may name. */
export const JSON_ERROR_KINDS: ReadonlySet<string> = new Set([...Object.values(KINDS), END_OF_INPUT, UNKNOWN]);

/** A JSON syntax error: `kind` and where (0-based `offset` in UTF-16 units; 1-based line/column). No source text. */
export class JsonSyntaxError extends Error {
  override readonly name = 'JsonSyntaxError';
  readonly kind: string;
  readonly offset: number;
  readonly line: number;
  readonly column: number;
  constructor(kind: string, offset: number, line: number, column: number) {
    super(`${kind} at line ${line}, column ${column}`);
    this.kind = kind;
    this.offset = offset;
    this.line = line;
    this.column = column;
  }
}

/** 1-based line and column of `offset` (lines split at '\n'). */
function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  return { line, column: offset - start + 1 };
}

/** Kind and offset of the first syntax error in `text` (which JSON.parse refused), quoting nothing. */
export function describeJsonError(text: string, v8Error: unknown): JsonSyntaxError {
  const errors: ParseError[] = [];
  jsoncParse(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
  const first = errors[0] as ParseError | undefined;
  // V8's own offset is the exact fault (jsonc-parser's is the start of the faulty token, e.g. of
  // the string holding a control character); only the number is taken from its message.
  const v8 = /\bat position (\d+)\b/.exec(v8Error instanceof Error ? v8Error.message : '');
  let offset = v8 !== null ? Number(v8[1]) : (first?.offset ?? 0);
  if (!(offset >= 0 && offset <= text.length)) offset = first?.offset ?? 0;
  let kind = first === undefined ? UNKNOWN : (KINDS[printParseErrorCode(first.error)] ?? UNKNOWN);
  if (text.trim() === '') kind = END_OF_INPUT;
  else if (offset >= text.length && (first === undefined || printParseErrorCode(first.error) !== 'UnexpectedEndOfString')) kind = END_OF_INPUT;
  const { line, column } = lineColumn(text, offset);
  return new JsonSyntaxError(kind, offset, line, column);
}

/** JSON.parse(text); on a syntax error throws JsonSyntaxError (kind and position, no source text). */
export function parseJsonText(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    // JSON.parse of a string throws only SyntaxError; anything else is not about the text.
    if (!(e instanceof SyntaxError)) throw e;
    throw describeJsonError(text, e);
  }
}
