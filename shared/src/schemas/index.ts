export * from './common.ts';
export * from './family.ts';
export * from './jobRequest.ts';
export * from './statistics.ts';
export * from './manifest.ts';
