/**
 * Where a generation job ran, as the workflow decided it (docs/infra.md "Queues"): the tier and
 * queue, Spot or on-demand capacity, and how many times a Spot queue cancelled it for want of
 * capacity before. The workflow hands it to the Batch job as the `placement` parameter (the job
 * definition's command takes `--placement Ref::placement`); the worker records it in
 * metadata.json with the queue wait it measured, and Post-process copies it into result.json.
 */
import { z } from 'zod';
import { formatIssues, parseOrThrow } from './common.ts';

export const PLACEMENT_CAPACITIES = ['spot', 'on-demand'] as const;

/** The job definition's default of the `placement` parameter: a job submitted by hand, no placement. */
export const NO_PLACEMENT = 'none';

/** What the workflow passes (`$.placement`, as JSON). */
export const Placement = z.strictObject({
  tier: z.enum(['interactive', 'production']),
  /** The queue the job was submitted to (its ARN). */
  queue: z.string().min(1).max(2048),
  capacity: z.enum(PLACEMENT_CAPACITIES),
  /** Cancellations by a Spot queue's capacity time limit before this submission (0 or 1: the workflow resubmits once). */
  spotCancellations: z.int().min(0).max(10),
  /** When the execution started (ISO 8601): Validate and sizing take seconds, then the first submission. */
  executionStartedAt: z.iso.datetime(),
  /** The cancelled Spot job's id, when resubmitted. */
  resubmittedFrom: z.string().min(1).max(128).optional(),
  /** Batch's status reason of that cancellation. */
  resubmitReason: z.string().max(1024).optional(),
});
export type Placement = z.infer<typeof Placement>;

/** As recorded in metadata.json and result.json: the placement and the wait the worker measured. */
export const RecordedPlacement = Placement.extend({
  /**
   * Seconds from the execution's start to the start of the attempt that wrote the frames: Validate
   * (seconds), the Spot wait and resubmission if any, the on-demand wait, instance and container start.
   */
  queueWaitSeconds: z.number().min(0),
});
export type RecordedPlacement = z.infer<typeof RecordedPlacement>;

export class PlacementError extends Error {
  override readonly name = 'PlacementError';
}

/**
 * The worker's `--placement` argument: JSON of a Placement, or `none` (the job definition's
 * default, for a job submitted by hand). A bad value is the workflow's bug, refused by name.
 */
export function parsePlacementArg(text: string, where = '--placement'): Placement | null {
  if (text === NO_PLACEMENT) return null;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new PlacementError(`${where}: neither '${NO_PLACEMENT}' nor JSON (${(e as Error).message})`);
  }
  return parseOrThrow(Placement, json, (issues) => new PlacementError(formatIssues(where, 'invalid placement', issues)));
}
