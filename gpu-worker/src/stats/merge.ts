/**
 * `cil stats merge`: combines the partial files of a sharded run (the Batch array job's children)
 * into the final statistics file. Inputs are partial files, or folders / s3:// prefixes holding
 * them. Refused, naming both files: partials of another model, bundle, resolution, frame count,
 * fps, seed, shard count or video listing; two partials of one shard; a video counted twice.
 * Missing or unfinished shards are refused unless allowIncomplete.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { decodePartial, encodeFinalStatistics, mergePartials, usageSummary } from '#shared/stats';
import type { MergeInput, MergeResult } from '#shared/stats';
import { joinLocation, listLocation, LocationError, readRequired, writeLocation } from './io.ts';

export interface MergeStatisticsOptions {
  readonly allowIncomplete?: boolean;
  readonly s3?: S3Client;
  readonly now?: () => Date;
}

export interface MergeStatisticsResult extends MergeResult {
  readonly inputs: readonly string[];
  readonly summary: string;
  readonly trCovD: number;
}

/** Partial files named by `inputs`: a `.safetensors` path is itself; anything else is a folder/prefix listed for them. */
export async function expandPartialInputs(inputs: readonly string[], s3?: S3Client): Promise<string[]> {
  const out: string[] = [];
  for (const i of inputs) {
    if (i.endsWith('.safetensors')) {
      out.push(i);
      continue;
    }
    const names = await listLocation(i, (n) => !n.includes('/') && n.endsWith('.safetensors') && !n.endsWith('.tmp'), s3);
    if (names.length === 0) throw new LocationError(`${i}: no .safetensors partial files there`);
    for (const n of names) out.push(joinLocation(i, n));
  }
  return [...new Set(out)];
}

export async function mergeStatistics(inputs: readonly string[], out: string, o: MergeStatisticsOptions = {}): Promise<MergeStatisticsResult> {
  const files = await expandPartialInputs(inputs, o.s3);
  const parts: MergeInput[] = [];
  for (const f of files) parts.push({ where: f, ...decodePartial(await readRequired(f, o.s3), f) });
  const r = mergePartials(parts, { allowIncomplete: o.allowIncomplete });
  const summary = usageSummary(r.acc.n, r.skipped);
  if (r.acc.n === 0) throw new LocationError(`no usable videos in ${files.length} partial file${files.length === 1 ? '' : 's'}: ${summary}`);
  const partialCoverage =
    r.missingShards.length > 0 || r.incomplete.length > 0
      ? `shards merged: ${r.shards.join(',')} of ${r.run.shardCount}${r.incomplete.length > 0 ? `; unfinished: ${r.incomplete.length}` : ''}`
      : undefined;
  const bytes = encodeFinalStatistics(r.acc, {
    run: r.run,
    createdAt: (o.now ?? (() => new Date()))().toISOString(),
    skipped: r.skipped.length,
    partialCoverage,
  });
  await writeLocation(out, bytes, o.s3);
  return { ...r, inputs: files, summary, trCovD: r.acc.trCovD() };
}
