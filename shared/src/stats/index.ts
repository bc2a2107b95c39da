/**
 * `#shared/stats`: dataset statistics for Analytic-Init (docs/statistics.md): the streaming moment
 * accumulator, sharding and clip choice, the partial (per-shard) file, merging, and the final
 * statistics file that `#shared/schemas` describes.
 */
export * from './moments.ts';
export * from './dataset.ts';
export * from './partial.ts';
export * from './final.ts';
