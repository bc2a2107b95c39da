/**
 * The GPU bill, watched by AWS Budgets (docs/infra.md "Cost"): the project's cost-allocation tag on
 * every resource of the stack and on the EC2 instances and volumes Batch launches, and a daily
 * COST budget over the EC2 compute carrying that tag, which notifies the alarm topic when the
 * actual spend of the day passes 80 % and 100 % of `dailyGpuBudgetUsd`. It complements the
 * `DailyGpuSpend` alarm: that one is an estimate from Batch events within minutes; Budgets reads the
 * bill (Spot prices, every instance-hour, idle tails), several hours behind.
 */
import { Aws, Stack, Tags } from 'aws-cdk-lib';
import * as batch from 'aws-cdk-lib/aws-batch';
import * as budgets from 'aws-cdk-lib/aws-budgets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import type { CilConfig } from './config.ts';

/** The Cost Explorer service name of EC2 instance-hours (what the GPU fleets are billed as). */
export const EC2_COMPUTE_SERVICE = 'Amazon Elastic Compute Cloud - Compute';

/** Percentages of the daily limit at which the alarm topic hears of the actual spend. */
export const BUDGET_THRESHOLDS = Object.freeze([80, 100]);

export interface GpuBudgetProps {
  readonly config: CilConfig;
  readonly alarmTopic: sns.Topic;
  readonly topicKey: kms.Key;
}

export class GpuBudget extends Construct {
  readonly budget: budgets.CfnBudget;

  constructor(scope: Construct, id: string, props: GpuBudgetProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const { key, value } = props.config.costAllocationTag;

    // Every taggable resource of the stack (Cost Explorer can then break the whole project down),
    // and what Batch launches: CloudFormation tags reach the compute environment itself, not its
    // instances, so each environment's ComputeResources.Tags names them too.
    Tags.of(stack).add(key, value);
    for (const c of stack.node.findAll()) {
      if (c instanceof batch.CfnComputeEnvironment && c.computeResources !== undefined) c.addPropertyOverride('ComputeResources.Tags', { [key]: value });
    }

    this.budget = new budgets.CfnBudget(this, 'DailyGpuBudget', {
      budget: {
        budgetName: `${stack.stackName}-daily-gpu`,
        budgetType: 'COST',
        timeUnit: 'DAILY',
        budgetLimit: { amount: props.config.dailyGpuBudgetUsd, unit: 'USD' },
        // Both filters apply: EC2 instance-hours that carry the project's tag (user-defined tags are `user:<key>$<value>`).
        costFilters: { TagKeyValue: [`user:${key}$${value}`], Service: [EC2_COMPUTE_SERVICE] },
      },
      notificationsWithSubscribers: BUDGET_THRESHOLDS.map((threshold) => ({
        notification: { notificationType: 'ACTUAL', comparisonOperator: 'GREATER_THAN', threshold, thresholdType: 'PERCENTAGE' },
        subscribers: [{ subscriptionType: 'SNS', address: props.alarmTopic.topicArn }],
      })),
    });

    // Budgets publishes to the alarm topic (and so encrypts with its key) for this account's budgets only.
    const budgetsPrincipal = new iam.ServicePrincipal('budgets.amazonaws.com');
    const fromThisAccount = {
      StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
      ArnLike: { 'aws:SourceArn': `arn:${Aws.PARTITION}:budgets::${Aws.ACCOUNT_ID}:*` },
    };
    props.alarmTopic.addToResourcePolicy(
      new iam.PolicyStatement({ sid: 'BudgetsPublish', principals: [budgetsPrincipal], actions: ['sns:Publish'], resources: [props.alarmTopic.topicArn], conditions: fromThisAccount }),
    );
    props.topicKey.addToResourcePolicy(
      new iam.PolicyStatement({ sid: 'BudgetsEncrypt', principals: [budgetsPrincipal], actions: ['kms:Decrypt', 'kms:GenerateDataKey*'], resources: ['*'], conditions: fromThisAccount }),
    );
  }
}
