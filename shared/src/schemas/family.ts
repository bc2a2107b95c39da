import { z } from 'zod';
import { FAMILY_NAMES } from '#shared/sampler';

/**
 * A model family's name, as a schema (the `family` of manifests, statistics files and job specs).
 * The families and everything about them are rows of the defaults table, `FAMILY_TABLE` in
 * `#shared/sampler`.
 */
export const Family = z.enum(FAMILY_NAMES);
export type Family = z.infer<typeof Family>;
