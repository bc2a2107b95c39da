/** Text tokens through the bundle's tokenizer.json (Hugging Face tokenizers.js). */
import { readFile } from 'node:fs/promises';
import { Tokenizer } from '@huggingface/tokenizers';

// @huggingface/tokenizers' bundled .d.ts files use extensionless imports that do not resolve under
// moduleResolution nodenext, so the class is typed here by what the worker uses.
interface HfTokenizer {
  encode(text: string): { ids: number[] };
}
const HfTokenizerClass = Tokenizer as unknown as new (tokenizer: object, config: object) => HfTokenizer;

export class TokenizerError extends Error {
  override readonly name = 'TokenizerError';
}

export interface TextTokenizer {
  /** Token ids, truncated and padded to `maxLength` (the end token is kept when truncating). */
  encode(text: string): number[];
}

export async function loadTokenizer(file: string, maxLength: number): Promise<TextTokenizer> {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new TokenizerError(`${file}: cannot read tokenizer.json (${(e as Error).message})`);
  }
  const padding = json.padding as { pad_id?: number } | null | undefined;
  let tok: HfTokenizer;
  try {
    tok = new HfTokenizerClass(json, {});
  } catch (e) {
    throw new TokenizerError(`${file}: not a tokenizers.json this library can load (${(e as Error).message})`);
  }
  const padId = typeof padding?.pad_id === 'number' ? padding.pad_id : 0;
  return {
    encode(text: string): number[] {
      const ids = tok.encode(text).ids.map(Number);
      if (ids.length > maxLength) {
        const last = ids[ids.length - 1];
        ids.length = maxLength;
        ids[maxLength - 1] = last;
      }
      while (ids.length < maxLength) ids.push(padId);
      return ids;
    },
  };
}
