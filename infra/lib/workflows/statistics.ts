/**
 * The statistics workflow (docs/design.md §2.3, docs/infra.md): a Batch array job computes partial
 * statistics in `shards` pieces (`cil stats compute --shards n`, each child reading its share of
 * the videos under statistics/datasets/ and writing statistics/partials/<run>/), then one merge
 * job (`cil stats merge`) combines them into statistics/<output>.safetensors. Started by hand
 * or by the CLI with an input such as
 * {"model": "dynamicrafter-512", "videosPrefix": "statistics/datasets/webvid/", "shards": 16,
 *  "output": "dynamicrafter-320x512"} (frames, size and fps are the model's).
 */
import { Duration } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import type { GpuBatch } from '../compute.ts';
import { STATISTICS_DATASETS_PREFIX, STATISTICS_PARTIALS_PREFIX, STATISTICS_STATES as S } from '../names.ts';
import { PREFIX } from '#shared/schemas';
import { batchSubmitJobSync, notifyStep, workflowStateMachine } from './asl.ts';
import type { WorkflowBaseProps } from './asl.ts';

/** Batch array jobs have 2 to 10 000 children. */
export const MIN_SHARDS = 2;
export const MAX_SHARDS = 10_000;

export interface StatisticsWorkflowProps extends WorkflowBaseProps {
  /** The data bucket's name (the jobs get s3:// URIs). */
  readonly bucketName: string;
  readonly batch: Pick<GpuBatch, 'jobQueue' | 'statisticsShardJob' | 'statisticsMergeJob'>;
  readonly topic: sns.ITopic;
  readonly topicKey?: kms.IKey;
}

export class StatisticsWorkflow extends Construct {
  readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: StatisticsWorkflowProps) {
    super(scope, id);
    const { config: c, batch } = props;

    const invalid = new sfn.Fail(this, S.invalidInput, {
      error: 'CIL.InvalidStatisticsInput',
      cause: `expected {"model": string, "videosPrefix": "${STATISTICS_DATASETS_PREFIX}…", "shards": ${MIN_SHARDS}–${MAX_SHARDS}, "output": string, …}`,
    });
    const failed = new sfn.Fail(this, S.failed, { errorPath: '$.error.Error', causePath: '$.error.Cause' });
    const succeeded = new sfn.Succeed(this, S.succeeded);

    const publish = (stateId: string, status: string, next: sfn.IChainable): sfn.IChainable =>
      notifyStep(this, stateId, { topic: props.topic, subject: `CIL statistics: ${status}`, message: { status, 'execution.$': '$$.Execution.Id', 'outputKey.$': '$.job.outputKey', 'partials.$': '$.job.partials' }, next });
    const publishFailed = publish(S.publishFailed, 'FAILED', failed);
    const publishSucceeded = publish(S.publishSucceeded, 'SUCCEEDED', succeeded);

    // s3:// URIs of the run, built once (PrepareStatisticsJob) and passed as job parameters.
    const shards = batchSubmitJobSync(this, S.computeShards, {
      comment: 'One array child per shard; each writes its partial under statistics/partials/<run>/',
      jobName: { JobName: 'cil-statistics-shards' },
      jobQueueArn: batch.jobQueue.jobQueueArn,
      jobDefinitionArn: batch.statisticsShardJob.jobDefinitionArn,
      parameters: { videos: '$.job.videos', model: '$.job.model', partials: '$.job.partials', shards: '$.job.shardsText' },
      arraySizePath: '$.job.shards',
      resultPath: '$.shardsResult',
      timeout: Duration.hours(c.statisticsTimeoutHours),
    });
    const merge = batchSubmitJobSync(this, S.merge, {
      comment: 'Combines the partials into statistics/<output>.safetensors',
      jobName: { JobName: 'cil-statistics-merge' },
      jobQueueArn: batch.jobQueue.jobQueueArn,
      jobDefinitionArn: batch.statisticsMergeJob.jobDefinitionArn,
      parameters: { partials: '$.job.partials', out: '$.job.out' },
      resultPath: '$.mergeResult',
      timeout: Duration.hours(2),
    });
    // A failed shard or merge is published, then the execution fails with the job's error.
    shards.addCatch(publishFailed, { resultPath: '$.error' });
    merge.addCatch(publishFailed, { resultPath: '$.error' });

    const s3 = `s3://${props.bucketName}/`;
    const prepare = new sfn.Pass(this, S.prepare, {
      comment: 'The s3:// locations of this run (the partials folder is named after the execution)',
      parameters: {
        'runId.$': '$$.Execution.Name',
        'shards.$': '$.shards',
        'shardsText.$': "States.Format('{}', $.shards)",
        'videos.$': `States.Format('${s3}{}', $.videosPrefix)`,
        'model.$': `States.Format('${s3}${PREFIX.models}{}/', $.model)`,
        'partials.$': `States.Format('${s3}${STATISTICS_PARTIALS_PREFIX}{}/', $$.Execution.Name)`,
        'out.$': `States.Format('${s3}${PREFIX.statistics}{}.safetensors', $.output)`,
        'outputKey.$': `States.Format('${PREFIX.statistics}{}.safetensors', $.output)`,
      },
      resultPath: '$.job',
    });

    const present = ['$.model', '$.videosPrefix', '$.shards', '$.output'].map((p) => sfn.Condition.isPresent(p));
    const wellFormed = sfn.Condition.and(
      sfn.Condition.isString('$.model'),
      sfn.Condition.isString('$.output'),
      sfn.Condition.isString('$.videosPrefix'),
      sfn.Condition.stringMatches('$.videosPrefix', `${STATISTICS_DATASETS_PREFIX}*`),
      sfn.Condition.isNumeric('$.shards'),
      sfn.Condition.numberGreaterThanEquals('$.shards', MIN_SHARDS),
      sfn.Condition.numberLessThanEquals('$.shards', MAX_SHARDS),
    );
    // Two choices: a rule on a missing field is a runtime error, so presence is checked first.
    const checkValues = new sfn.Choice(this, `${S.checkInput}Values`).when(wellFormed, prepare).otherwise(invalid);
    const checkInput = new sfn.Choice(this, S.checkInput).when(sfn.Condition.and(...present), checkValues).otherwise(invalid);
    prepare.next(shards).next(merge).next(publishSucceeded);

    this.stateMachine = workflowStateMachine(this, props, {
      workflow: 'statistics',
      comment: 'CIL dataset statistics: sharded Batch array job, then merge',
      start: checkInput,
      timeout: Duration.hours(c.statisticsTimeoutHours + 3),
      batchJobs: { queueArns: [batch.jobQueue.jobQueueArn], jobDefinitionArns: [batch.statisticsShardJob.jobDefinitionArn, batch.statisticsMergeJob.jobDefinitionArn] },
    });
    props.topicKey?.grant(this.stateMachine, 'kms:GenerateDataKey*', 'kms:Decrypt');
  }
}
