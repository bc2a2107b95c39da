/**
 * Alarms, a dashboard, and the metrics Batch does not publish itself: failed executions of each
 * workflow; Batch jobs waiting RUNNABLE too long (a scheduled check of the queue, see
 * functions/src/batchMetrics/core.ts); undelivered upload events; and GPU-minutes per job.
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as batch from 'aws-cdk-lib/aws-batch';
import { Construct } from 'constructs';
import type { CilConfig } from './config.ts';
import { nodeFunction } from './lambdas.ts';
import { LAMBDA_ENV, METRIC_NAMES, METRICS_NAMESPACE } from './names.ts';
import { RUNTIME_ENTRIES } from './paths.ts';

export interface ObservabilityProps {
  readonly config: CilConfig;
  readonly alarmTopic: sns.ITopic;
  readonly workflows: { readonly generation: sfn.IStateMachine; readonly batch: sfn.IStateMachine; readonly statistics: sfn.IStateMachine };
  readonly jobQueue: batch.IJobQueue;
  readonly startFailures: sqs.IQueue;
  readonly functions: Readonly<Record<string, lambda.IFunction>>;
}

/** How often the RUNNABLE check runs. */
export const RUNNABLE_CHECK_PERIOD = Duration.minutes(5);

export class Observability extends Construct {
  readonly metricsFunction: lambda.Function;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;
  readonly runnableAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const c = props.config;
    const action = new cwActions.SnsAction(props.alarmTopic);
    const metric = (name: string, statistic: string, period = Duration.minutes(5)): cloudwatch.Metric =>
      new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: name, statistic, period });

    const m = nodeFunction(this, 'BatchMetrics', c, {
      entry: RUNTIME_ENTRIES.batchMetrics,
      description: 'CIL metrics: GPU-minutes per Batch job, and RUNNABLE queue age',
      timeout: Duration.seconds(60),
      // Embedded Metric Format lines must reach CloudWatch Logs unwrapped.
      jsonLogs: false,
      environment: { [LAMBDA_ENV.jobQueueArn]: props.jobQueue.jobQueueArn, [LAMBDA_ENV.metricsNamespace]: METRICS_NAMESPACE },
    });
    this.metricsFunction = m.fn;
    // ListJobs has no resource-level permissions.
    m.role.addToPolicy(new iam.PolicyStatement({ actions: ['batch:ListJobs'], resources: ['*'] }));
    new events.Rule(this, 'RunnableCheck', {
      description: 'Measures how long Batch jobs have waited RUNNABLE',
      schedule: events.Schedule.rate(RUNNABLE_CHECK_PERIOD),
      targets: [new targets.LambdaFunction(m.fn, { retryAttempts: 2 })],
    });
    new events.Rule(this, 'JobFinished', {
      description: 'GPU-minutes and outcome of each finished Batch job of the queue',
      eventPattern: {
        source: ['aws.batch'],
        detailType: ['Batch Job State Change'],
        detail: { jobQueue: [props.jobQueue.jobQueueArn], status: ['SUCCEEDED', 'FAILED'] },
      },
      targets: [new targets.LambdaFunction(m.fn, { retryAttempts: 4 })],
    });

    const failedMath = (sm: sfn.IStateMachine): cloudwatch.MathExpression =>
      new cloudwatch.MathExpression({
        expression: 'failed + timedOut + aborted',
        usingMetrics: { failed: sm.metricFailed({ statistic: 'Sum' }), timedOut: sm.metricTimedOut({ statistic: 'Sum' }), aborted: sm.metricAborted({ statistic: 'Sum' }) },
        period: Duration.minutes(5),
        label: 'failed, timed out or aborted',
      });
    const add = (a: cloudwatch.Alarm): cloudwatch.Alarm => {
      a.addAlarmAction(action);
      this.alarms.push(a);
      return a;
    };
    for (const [name, sm] of Object.entries(props.workflows)) {
      add(
        new cloudwatch.Alarm(this, `${name}ExecutionsFailed`, {
          alarmDescription: `CIL ${name} workflow: executions failed, timed out or were aborted (ExecutionsFailed + ExecutionsTimedOut + ExecutionsAborted)`,
          metric: failedMath(sm),
          threshold: c.failedExecutionsThreshold,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
    }
    this.runnableAlarm = add(
      new cloudwatch.Alarm(this, 'JobsStuckRunnable', {
        alarmDescription: `CIL Batch: a job has waited RUNNABLE for more than ${c.runnableAlarmMinutes} minutes (no GPU capacity, a vCPU quota or limit, or a job that fits no instance)`,
        metric: metric(METRIC_NAMES.oldestRunnableSeconds, 'Maximum', RUNNABLE_CHECK_PERIOD),
        threshold: c.runnableAlarmMinutes * 60,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 2,
        datapointsToAlarm: 2,
        // A silent metrics function is itself a problem worth looking at.
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      }),
    );
    add(
      new cloudwatch.Alarm(this, 'StartFailuresQueued', {
        alarmDescription: 'CIL: upload events could not start a workflow (see the StartFailures dead-letter queue)',
        metric: props.startFailures.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );

    const gen = props.workflows.generation;
    const lambdaErrors = Object.entries(props.functions).map(([label, fn]) => fn.metricErrors({ label, period: Duration.minutes(5), statistic: 'Sum' }));
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.days(1),
      widgets: [
        [
          new cloudwatch.GraphWidget({
            title: 'Generation throughput (per 5 min)',
            left: [gen.metricStarted({ label: 'started', statistic: 'Sum' }), gen.metricSucceeded({ label: 'succeeded', statistic: 'Sum' })],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'Failures (per 5 min)',
            left: Object.entries(props.workflows).map(([name, sm]) => sm.metricFailed({ label: `${name} failed`, statistic: 'Sum' })),
            right: [metric(METRIC_NAMES.batchJobsFailed, 'Sum')],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'Generation duration (p50, p90)',
            left: [gen.metricTime({ statistic: 'p50', label: 'p50' }), gen.metricTime({ statistic: 'p90', label: 'p90' })],
            width: 8,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'GPU-minutes (per hour)',
            left: [metric(METRIC_NAMES.gpuMinutes, 'Sum', Duration.hours(1))],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'Batch queue: RUNNABLE jobs and oldest wait (s)',
            left: [metric(METRIC_NAMES.runnableJobs, 'Maximum', RUNNABLE_CHECK_PERIOD)],
            right: [metric(METRIC_NAMES.oldestRunnableSeconds, 'Maximum', RUNNABLE_CHECK_PERIOD)],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'Batch jobs finished (per 5 min)',
            left: [metric(METRIC_NAMES.batchJobsSucceeded, 'Sum'), metric(METRIC_NAMES.batchJobsFailed, 'Sum')],
            width: 8,
          }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Lambda errors (per 5 min)', left: lambdaErrors, width: 12 }),
          new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 12 }),
        ],
      ],
    });
  }
}
