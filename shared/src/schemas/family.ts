import { z } from 'zod';

/** The model families the sampler knows. dynamicrafter and videocrafter are VP (DDIM); svd is EDM. */
export const Family = z.enum(['dynamicrafter', 'videocrafter', 'svd']);
export type Family = z.infer<typeof Family>;

/** True for the variance-preserving (DDIM) families, whose start time M is an integer step. */
export function isVpFamily(family: Family): boolean {
  return family !== 'svd';
}
