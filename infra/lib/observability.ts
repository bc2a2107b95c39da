/**
 * Alarms, a dashboard, and the metrics Batch and Step Functions do not publish themselves
 * (functions/src/batchMetrics/core.ts, written with Powertools Metrics): system failures of the
 * workflows (user-caused ones — InvalidImage, InvalidRequest, … — are counted, not alarmed on);
 * Batch jobs waiting RUNNABLE too long (a scheduled check of every queue); the worker falling back
 * to the CPU; the estimated GPU spend of a day; undelivered upload events; GPU-minutes per job.
 * docs/operations.md has the runbook of each alarm.
 */
import { Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';
import type { GpuBatch } from './compute.ts';
import type { CilConfig } from './config.ts';
import { nodeFunction } from './lambdas.ts';
import { LAMBDA_ENV, METRIC_NAMES, METRICS_NAMESPACE, METRICS_SERVICE, WORKER_METRICS } from './names.ts';
import { RUNTIME_ENTRIES } from './paths.ts';

export interface ObservabilityProps {
  /** Deployment parameters (thresholds, prices). */
  readonly config: CilConfig;
  /** Where every alarm publishes. */
  readonly alarmTopic: sns.ITopic;
  /** The workflows whose failures are counted (user or system) and alarmed on (system). */
  readonly workflows: { readonly generation: sfn.IStateMachine; readonly batch: sfn.IStateMachine; readonly statistics: sfn.IStateMachine };
  /** The GPU fleets: every queue is watched (RUNNABLE age, finished jobs, spend). */
  readonly gpu: Pick<GpuBatch, 'fleets'>;
  /** The starter's dead-letter queue. */
  readonly startFailures: sqs.IQueue;
  /** Lambdas whose errors the dashboard shows. */
  readonly functions: Readonly<Record<string, lambda.IFunction>>;
}

/** How often the RUNNABLE check runs. */
export const RUNNABLE_CHECK_PERIOD = Duration.minutes(5);

export class Observability extends Construct {
  readonly metricsFunction: lambda.Function;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;
  /** A job has waited RUNNABLE longer than `runnableAlarmMinutes` (queue wait). */
  readonly runnableAlarm: cloudwatch.Alarm;
  /** Executions failed for system reasons (not the user's input). */
  readonly systemFailuresAlarm: cloudwatch.Alarm;
  /** The worker ran (or would have run) a GPU job on the CPU. */
  readonly cpuFallbackAlarm: cloudwatch.Alarm;
  /** The estimated GPU spend of the last day is over `dailyGpuSpendAlarmUsd`. */
  readonly gpuSpendAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const c = props.config;
    const action = new cwActions.SnsAction(props.alarmTopic);
    // Powertools Metrics adds the `service` dimension to what the metrics function writes.
    const metric = (name: string, statistic: string, period = Duration.minutes(5)): cloudwatch.Metric =>
      new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: name, statistic, period, dimensionsMap: { service: METRICS_SERVICE } });

    const queues: { arn: string; fleet: string; tier: string; hourlyUsd: number }[] = [];
    for (const [fleet, f] of Object.entries(props.gpu.fleets)) {
      // The fleet's dearest type: the spend estimate errs high.
      const hourlyUsd = Math.max(...f.instanceTypes.map((t) => c.instanceHourlyUsd[t] ?? 0));
      for (const [tier, q] of Object.entries(f.queues)) queues.push({ arn: q.jobQueueArn, fleet, tier, hourlyUsd });
    }
    const m = nodeFunction(this, 'BatchMetrics', c, {
      entry: RUNTIME_ENTRIES.batchMetrics,
      description: 'CIL metrics: GPU-minutes and spend per Batch job, user and system failures, RUNNABLE queue age',
      timeout: Duration.seconds(60),
      // Embedded Metric Format lines must reach CloudWatch Logs unwrapped.
      jsonLogs: false,
      environment: { [LAMBDA_ENV.jobQueues]: Stack.of(this).toJsonString(queues), [LAMBDA_ENV.metricsNamespace]: METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME: METRICS_SERVICE },
    });
    this.metricsFunction = m.fn;
    // ListJobs has no resource-level permissions.
    m.role.addToPolicy(new iam.PolicyStatement({ actions: ['batch:ListJobs'], resources: ['*'] }));
    new events.Rule(this, 'ExecutionFailed', {
      description: 'Counts failed executions of the CIL workflows as user-caused or system failures',
      eventPattern: {
        source: ['aws.states'],
        detailType: ['Step Functions Execution Status Change'],
        detail: { stateMachineArn: Object.values(props.workflows).map((w) => w.stateMachineArn), status: ['FAILED', 'TIMED_OUT', 'ABORTED'] },
      },
      targets: [new targets.LambdaFunction(m.fn, { retryAttempts: 4 })],
    });
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
        detail: { jobQueue: queues.map((q) => q.arn), status: ['SUCCEEDED', 'FAILED'] },
      },
      targets: [new targets.LambdaFunction(m.fn, { retryAttempts: 4 })],
    });

    /**
     * An alarm to the alarm topic. Unless `p` says otherwise it fires on one period at or over its
     * threshold, and a period without data does not fire it.
     */
    const alarm = (id: string, p: Omit<cloudwatch.AlarmProps, 'evaluationPeriods'> & { readonly evaluationPeriods?: number }): cloudwatch.Alarm => {
      const a = new cloudwatch.Alarm(this, id, {
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        ...p,
      });
      a.addAlarmAction(action);
      this.alarms.push(a);
      return a;
    };
    // Executions that failed for system reasons; a user's bad image or request is counted as a
    // UserFailures metric and shown on the dashboard, never alarmed on.
    this.systemFailuresAlarm = alarm('SystemFailures', {
      alarmDescription: 'CIL: workflow executions failed, timed out or were aborted for system reasons (not InvalidImage, InvalidRequest or other user input); see docs/operations.md',
      metric: metric(METRIC_NAMES.systemFailures, 'Sum'),
      threshold: c.failedExecutionsThreshold,
    });
    // Time-outs and aborts straight from Step Functions: they need no classification, and this one
    // still fires if the metrics function itself is broken.
    for (const [name, sm] of Object.entries(props.workflows)) {
      alarm(`${name}ExecutionsTimedOut`, {
        alarmDescription: `CIL ${name} workflow: executions timed out or were aborted (ExecutionsTimedOut + ExecutionsAborted)`,
        metric: new cloudwatch.MathExpression({
          expression: 'timedOut + aborted',
          usingMetrics: { timedOut: sm.metricTimedOut({ statistic: 'Sum' }), aborted: sm.metricAborted({ statistic: 'Sum' }) },
          period: Duration.minutes(5),
          label: 'timed out or aborted',
        }),
        threshold: 1,
      });
    }
    this.cpuFallbackAlarm = alarm('ExecutionProviderFallback', {
      alarmDescription: 'CIL worker: a GPU job could not use CUDA (driver, CUDA or cuDNN mismatch, no GPU); see docs/operations.md',
      // The worker writes it without dimensions (WORKER_METRICS).
      metric: new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: WORKER_METRICS.executionProviderFallback, statistic: 'Sum', period: Duration.minutes(5) }),
      threshold: 1,
    });
    this.gpuSpendAlarm = alarm('DailyGpuSpend', {
      alarmDescription: `CIL Batch: estimated GPU spend of the last 24 hours is over ${c.dailyGpuSpendAlarmUsd} USD (on-demand prices; an estimate, not the bill)`,
      metric: metric(METRIC_NAMES.gpuSpendUsd, 'Sum', Duration.days(1)),
      threshold: c.dailyGpuSpendAlarmUsd,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    });
    this.runnableAlarm = alarm('JobsStuckRunnable', {
      alarmDescription: `CIL Batch: a job has waited RUNNABLE for more than ${c.runnableAlarmMinutes} minutes in any queue (no GPU capacity, a vCPU quota or limit, or a job that fits no instance)`,
      metric: metric(METRIC_NAMES.oldestRunnableSeconds, 'Maximum', RUNNABLE_CHECK_PERIOD),
      threshold: c.runnableAlarmMinutes * 60,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 2,
      datapointsToAlarm: 2,
      // A silent metrics function is itself a problem worth looking at.
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    alarm('StartFailuresQueued', {
      alarmDescription: 'CIL: upload events could not start a workflow (see the StartFailures dead-letter queue)',
      metric: props.startFailures.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }),
      threshold: 1,
    });

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
            left: [metric(METRIC_NAMES.systemFailures, 'Sum'), metric(METRIC_NAMES.userFailures, 'Sum')],
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
            title: 'GPU-minutes and estimated spend, USD (per hour)',
            left: [metric(METRIC_NAMES.gpuMinutes, 'Sum', Duration.hours(1))],
            right: [metric(METRIC_NAMES.gpuSpendUsd, 'Sum', Duration.hours(1))],
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
