/**
 * The Lambda functions the workflows call, each with only the S3 prefixes and actions it needs.
 *
 * Validate (sharp, a native module) and Post-process (ffmpeg) run as one container image built
 * from infra/docker/functions.Dockerfile (Debian with ffmpeg, the handlers bundled inside);
 * the others are plain TypeScript bundled by esbuild.
 */
import { Duration, IgnoreMode, Size } from 'aws-cdk-lib';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { PREFIX } from '#shared/schemas';
import type { CilConfig } from './config.ts';
import { TRACING, functionBase, nodeFunction } from './lambdas.ts';
import { LAMBDA_ENV } from './names.ts';
import { DEFAULT_HANDLER_ENTRIES, FUNCTIONS_DOCKERFILE, IMAGE_HANDLERS, REPO_ROOT, RUNTIME_ENTRIES, dockerignorePatterns } from './paths.ts';
import type { DataStorage } from './storage.ts';

/** Handler files (relative to the repository root) of the functions written in functions/. */
export interface HandlerEntries {
  readonly notify: string;
  readonly recordFailure: string;
}

export interface PipelineFunctionsProps {
  readonly config: CilConfig;
  readonly storage: DataStorage;
  readonly eventBus: events.IEventBus;
  readonly topic: sns.ITopic;
  readonly entries?: Partial<HandlerEntries>;
}

export class PipelineFunctions extends Construct {
  readonly validate: lambda.DockerImageFunction;
  readonly postProcess: lambda.DockerImageFunction;
  readonly notify: lambda.Function;
  readonly recordFailure: lambda.Function;
  readonly prepareItem: lambda.Function;
  readonly batchSummary: lambda.Function;

  constructor(scope: Construct, id: string, props: PipelineFunctionsProps) {
    super(scope, id);
    const { config: c, storage, eventBus, topic } = props;
    const entries: HandlerEntries = { ...DEFAULT_HANDLER_ENTRIES, ...props.entries };
    const bucketEnv = { [LAMBDA_ENV.bucket]: storage.bucket.bucketName };

    /** A function of the container image (its handler chosen by `cmd`), with its own role and log group, traced; the bucket in its environment unless `p` says otherwise. */
    const imageFunction = (
      id: string,
      cmd: string,
      description: string,
      p: Pick<lambda.DockerImageFunctionProps, 'memorySize' | 'timeout' | 'ephemeralStorageSize' | 'environment'>,
    ): { fn: lambda.DockerImageFunction; role: iam.Role } => {
      const base = functionBase(this, id, c, description);
      const fn = new lambda.DockerImageFunction(this, id, {
        code: lambda.DockerImageCode.fromImageAsset(REPO_ROOT, {
          file: FUNCTIONS_DOCKERFILE,
          exclude: dockerignorePatterns(FUNCTIONS_DOCKERFILE),
          ignoreMode: IgnoreMode.DOCKER,
          platform: ecrAssets.Platform.LINUX_AMD64,
          cmd: [cmd],
        }),
        description,
        architecture: lambda.Architecture.X86_64,
        role: base.role,
        logGroup: base.logGroup,
        loggingFormat: lambda.LoggingFormat.JSON,
        tracing: TRACING,
        environment: bucketEnv,
        ...p,
      });
      return { fn, role: base.role };
    };

    const validate = imageFunction('Validate', IMAGE_HANDLERS.validate, 'CIL Validate: checks the upload and request, writes the normalised image', {
      memorySize: 2048,
      timeout: Duration.seconds(90),
      // A refusal's reason can quote the prompt: traces record that an error happened, not its message.
      environment: { ...bucketEnv, POWERTOOLS_TRACER_CAPTURE_ERROR: 'false' },
    });
    this.validate = validate.fn;
    // The exact uploaded version is read (inputs/, or batches/ for manifest images). Every key
    // Validate reads may legitimately be missing: the sidecar beside the upload (usually absent),
    // the upload itself (deleted since the event), the model's manifest, the statistics. Without
    // s3:ListBucket covering a key, S3 answers a GET/HEAD of a missing key 403 instead of 404, so
    // listing is granted on exactly these prefixes (s3:prefix condition; S3 evaluates it with the
    // requested key as the prefix). Validate may already read every object under them, so the
    // listing reveals nothing more. A 403 that remains is S3AccessDenied (functions/src/s3.ts).
    storage.grantObjects(validate.role, 'readVersion', PREFIX.inputs, PREFIX.batches);
    storage.grantObjects(validate.role, 'read', PREFIX.models, PREFIX.statistics);
    storage.grantList(validate.role, PREFIX.inputs, PREFIX.batches, PREFIX.models, PREFIX.statistics);
    storage.grantObjects(validate.role, 'write', PREFIX.jobs);

    const post = imageFunction('PostProcess', IMAGE_HANDLERS.postProcess, 'CIL Post-process: frames to MP4/GIF/WebP, poster and result.json', {
      memorySize: 3008,
      timeout: Duration.minutes(10),
      ephemeralStorageSize: Size.gibibytes(4),
    });
    this.postProcess = post.fn;
    storage.grantObjects(post.role, 'read', PREFIX.jobs, PREFIX.outputs);
    storage.grantList(post.role, PREFIX.jobs, PREFIX.outputs);
    storage.grantObjects(post.role, 'write', PREFIX.outputs);

    const notify = nodeFunction(this, 'Notify', c, {
      entry: entries.notify,
      description: 'CIL Notify: job success or failure to SNS and EventBridge',
      timeout: Duration.seconds(30),
      environment: {
        ...bucketEnv,
        [LAMBDA_ENV.topicArn]: topic.topicArn,
        [LAMBDA_ENV.eventBus]: eventBus.eventBusName,
        [LAMBDA_ENV.presignExpirySeconds]: String(c.presignExpirySeconds),
      },
    });
    this.notify = notify.fn;
    topic.grantPublish(notify.role);
    eventBus.grantPutEventsTo(notify.role);
    // Presigned URLs are signed with this role's credentials, so it must be able to read what it links.
    storage.grantObjects(notify.role, 'read', PREFIX.outputs, PREFIX.failures);

    const record = nodeFunction(this, 'RecordFailure', c, {
      entry: entries.recordFailure,
      description: 'CIL RecordFailure: writes failures/<jobId>.json with the failed step and reason',
      timeout: Duration.seconds(30),
      environment: bucketEnv,
    });
    this.recordFailure = record.fn;
    storage.grantObjects(record.role, 'write', PREFIX.failures);

    const prepare = nodeFunction(this, 'PrepareItem', c, {
      entry: RUNTIME_ENTRIES.starter,
      handler: 'prepareItemHandler',
      description: 'CIL PrepareItem: one batch-manifest line to a generation input',
      timeout: Duration.seconds(10),
    });
    this.prepareItem = prepare.fn;

    const summary = nodeFunction(this, 'BatchSummary', c, {
      entry: RUNTIME_ENTRIES.batchSummary,
      description: 'CIL BatchSummary: writes reports/<batch>/summary.json and publishes it',
      timeout: Duration.seconds(60),
      environment: { [LAMBDA_ENV.topicArn]: topic.topicArn },
    });
    this.batchSummary = summary.fn;
    topic.grantPublish(summary.role);
    storage.grantObjects(summary.role, 'write', PREFIX.reports);
  }
}
