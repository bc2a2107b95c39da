export * from './common.ts';
export * from './family.ts';
export * from './jobRequest.ts';
export * from './statistics.ts';
export * from './manifest.ts';
export * from './layout.ts';
export * from './jobSpec.ts';
export * from './bundleContract.ts';
