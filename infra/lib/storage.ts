/**
 * The data bucket (one bucket, one prefix per kind of object: shared/src/schemas/layout.ts) and
 * its server-access-log bucket, with prefix-scoped grant helpers so that no role gets more than
 * the prefixes and actions it needs.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { PREFIX } from '#shared/schemas';
import type { CilConfig } from './config.ts';
import { CHECKPOINT_TAG, STATISTICS_PARTIALS_PREFIX } from './names.ts';

export interface DataStorageProps {
  readonly config: CilConfig;
  /** What happens to the buckets when the stack is deleted. Default RETAIN: they hold the product's work. */
  readonly removalPolicy?: RemovalPolicy;
}

/** Read access to objects under a prefix: GetObject, plus GetObjectVersion where a specific upload version is read. */
export type ObjectAccess = 'read' | 'readVersion' | 'write' | 'delete' | 'tag';

const ACTIONS: Readonly<Record<ObjectAccess, readonly string[]>> = {
  read: ['s3:GetObject'],
  readVersion: ['s3:GetObject', 's3:GetObjectVersion'],
  // Multipart uploads (frames, videos, model files) are covered by PutObject; aborting one needs its own action.
  write: ['s3:PutObject', 's3:AbortMultipartUpload'],
  delete: ['s3:DeleteObject'],
  tag: ['s3:PutObjectTagging'],
};

export class DataStorage extends Construct {
  readonly bucket: s3.Bucket;
  readonly accessLogsBucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: DataStorageProps) {
    super(scope, id);
    const c = props.config;
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;

    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogs', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      // Server access log delivery only supports SSE-S3 on the target bucket.
      encryption: s3.BucketEncryption.S3_MANAGED,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(365), abortIncompleteMultipartUploadAfter: Duration.days(1) }],
      removalPolicy,
    });

    this.bucket = new s3.Bucket(this, 'Data', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      encryption: s3.BucketEncryption.S3_MANAGED,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      // Versioned: an overwritten upload, model or output can be recovered, and each upload
      // version is its own job (the job id hashes the version id).
      versioned: true,
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: 'data/',
      lifecycleRules: [
        {
          id: 'scratch-jobs',
          prefix: PREFIX.jobs,
          expiration: Duration.days(c.scratchRetentionDays),
          noncurrentVersionExpiration: Duration.days(1),
        },
        {
          id: 'checkpoints',
          tagFilters: { [CHECKPOINT_TAG.key]: CHECKPOINT_TAG.value },
          expiration: Duration.days(c.checkpointRetentionDays),
          noncurrentVersionExpiration: Duration.days(1),
        },
        {
          id: 'statistics-partials',
          prefix: STATISTICS_PARTIALS_PREFIX,
          expiration: Duration.days(c.partialsRetentionDays),
          noncurrentVersionExpiration: Duration.days(1),
        },
        {
          id: 'noncurrent-versions',
          noncurrentVersionExpiration: Duration.days(c.noncurrentVersionDays),
          abortIncompleteMultipartUploadAfter: Duration.days(2),
          expiredObjectDeleteMarker: true,
        },
      ],
      removalPolicy,
    });
    // EventBridge delivery set on the bucket itself, instead of `eventBridgeEnabled`, which adds
    // a custom-resource Lambda to configure notifications: nothing to run, nothing to permit.
    const cfn = this.bucket.node.defaultChild as s3.CfnBucket;
    cfn.notificationConfiguration = { eventBridgeConfiguration: { eventBridgeEnabled: true } };
  }

  /** ARN of every object under `prefix` (`<bucket ARN>/<prefix>*`). */
  objectsArn(prefix: string): string {
    return this.bucket.arnForObjects(`${prefix}*`);
  }

  /** Grants object actions on the given prefixes only. */
  grantObjects(grantee: iam.IGrantable, access: ObjectAccess, ...prefixes: string[]): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: [...ACTIONS[access]], resources: prefixes.map((p) => this.objectsArn(p)) }),
    );
  }

  /**
   * Grants ListBucket restricted to the given prefixes (so a missing key reads as 404, not 403,
   * and a folder can be enumerated) without revealing the rest of the bucket.
   */
  grantList(grantee: iam.IGrantable, ...prefixes: string[]): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [this.bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': prefixes.flatMap((p) => [p, `${p}*`]) } },
      }),
    );
  }
}
