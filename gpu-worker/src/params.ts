/**
 * A generation's parameters: the job request resolved against its model (`resolveRequest` in
 * #shared/schemas: every field the family uses has a value, fields it does not use are null),
 * plus whether to keep the final latent. metadata.json records them as `params`.
 */
import type { ResolvedRequest } from '#shared/schemas';

export type GenerateParams = ResolvedRequest & {
  /** Write the final latent as latent.npy. */
  readonly saveLatent: boolean;
};

/** Inputs that do not fit the model (or parameters not resolved against it): refused before anything is written. */
export class GenerateInputError extends Error {
  override readonly name = 'GenerateInputError';
}

type NullableField = { [K in keyof GenerateParams]: null extends GenerateParams[K] ? K : never }[keyof GenerateParams];

/**
 * A field the family needs. After `resolveRequest` it always has a value (the manifest contract
 * requires the family's defaults); null here means the parameters skipped resolution.
 */
export function required<K extends NullableField>(p: GenerateParams, field: K): NonNullable<GenerateParams[K]> {
  const v = p[field];
  if (v === null || v === undefined) {
    throw new GenerateInputError(`parameter ${field} is null, but ${p.family} models need it (resolve the request against the model's manifest first)`);
  }
  return v;
}
