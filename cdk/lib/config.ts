// Config Pillar: flag sets published to a versioned, KMS-encrypted bucket (bundles by digest,
// a `current` pointer moved by conditional writes), and `config-eval` answering OFREP behind
// a function URL with IAM auth, from the last good bundle it holds.
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

import { AlarmTopic, pillarMetric } from './alarms';
import { ConfigConfig } from './manifest';
import { acknowledge, acknowledgeWildcard } from './nag';
import { FunctionSource, PillarFunction } from './pillar-function';

const NAMESPACE = 'Pillars/Config';

export interface ConfigPillarProps {
  readonly source: FunctionSource;
  readonly config: ConfigConfig;
}

export class ConfigPillar extends Construct {
  readonly bucket: s3.IBucket;
  readonly key: kms.IKey;
  readonly evalUrl: lambda.FunctionUrl;
  /** Services attach it to read flags: OFREP through the URL, or the bundles themselves. */
  readonly readerPolicy: iam.ManagedPolicy;
  /** CI attaches it to `pillar flags publish`, `history` and `rollback`. */
  readonly publisherPolicy: iam.ManagedPolicy;
  readonly alarms: AlarmTopic;
  readonly evaluationErrors: cloudwatch.Alarm;
  readonly staleBundle: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: ConfigPillarProps) {
    super(scope, id);
    const config = props.config;
    // Both kept when the stack goes: the bucket's versions are the flags' history, and the
    // key decrypts them. A later stack adopts them (`resources = "existing"`).
    this.key = config.kms_key
      ? kms.Key.fromKeyArn(this, 'Key', config.kms_key)
      : new kms.Key(this, 'Key', {
          description: 'Config Pillar flag bundles',
          enableKeyRotation: true,
          removalPolicy: RemovalPolicy.RETAIN,
        });
    if (config.resources === 'existing') {
      // `pillar config check` insists on both the name and the key for an existing bucket.
      this.bucket = s3.Bucket.fromBucketAttributes(this, 'Bundles', { bucketName: config.bucket!, encryptionKey: this.key });
    } else {
      const bucket = new s3.Bucket(this, 'Bundles', {
        bucketName: config.bucket ?? undefined,
        versioned: true,
        encryption: s3.BucketEncryption.KMS,
        encryptionKey: this.key,
        bucketKeyEnabled: true,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        enforceSSL: true,
        removalPolicy: RemovalPolicy.RETAIN,
      });
      acknowledge(
        bucket,
        'AwsSolutions-S1',
        'Every write is a reviewed publish by one role, its history kept by versioning; an access-log bucket would be a second bucket the pillar depends on',
      );
      this.bucket = bucket;
    }
    const objects = this.bucket.arnForObjects(`${config.prefix}*`);

    const evaluator = new PillarFunction(this, 'Eval', {
      source: props.source,
      binary: 'config-eval',
      description: 'Answers OFREP flag evaluations from the last good flag set',
      timeout: Duration.seconds(10),
      environment: {
        CONFIG_BUCKET: this.bucket.bucketName,
        CONFIG_PREFIX: config.prefix,
        CONFIG_POLL_SECONDS: String(config.poll_seconds),
      },
    });
    evaluator.function.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [objects] }));
    acknowledgeWildcard(evaluator.role, objects, 'The bundles and the pointer under the prefix: named by digest, unknown in advance');
    this.key.grantDecrypt(evaluator.function);
    this.evalUrl = evaluator.function.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.AWS_IAM });

    this.readerPolicy = new iam.ManagedPolicy(this, 'ReaderPolicy', {
      description: 'Read the Config Pillar flags: OFREP through its function URL, or the bundles from S3',
      statements: [
        new iam.PolicyStatement({ actions: ['lambda:InvokeFunctionUrl'], resources: [evaluator.function.functionArn] }),
        new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [objects] }),
        new iam.PolicyStatement({ actions: ['kms:Decrypt'], resources: [this.key.keyArn] }),
      ],
    });
    this.publisherPolicy = new iam.ManagedPolicy(this, 'PublisherPolicy', {
      description: 'Publish, list and roll back the Config Pillar flag sets',
      statements: [
        new iam.PolicyStatement({ actions: ['s3:GetObject', 's3:PutObject', 's3:GetObjectVersion'], resources: [objects] }),
        new iam.PolicyStatement({ actions: ['s3:ListBucketVersions'], resources: [this.bucket.bucketArn] }),
        new iam.PolicyStatement({ actions: ['kms:Decrypt', 'kms:GenerateDataKey'], resources: [this.key.keyArn] }),
      ],
    });
    for (const policy of [this.readerPolicy, this.publisherPolicy]) {
      acknowledgeWildcard(policy, objects, 'The bundles and the pointer under the prefix: named by digest, unknown in advance');
    }

    this.alarms = new AlarmTopic(this, 'Alarms', 'Config Pillar');
    const period = Duration.minutes(5);
    this.evaluationErrors = new cloudwatch.Alarm(this, 'EvaluationErrors', {
      alarmDescription: 'Config Pillar: flag rules failed or no flag set could be served (callers got their defaults): read the config-eval logs',
      metric: pillarMetric(NAMESPACE, 'EvaluationErrors', period),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.staleBundle = new cloudwatch.Alarm(this, 'StaleBundle', {
      alarmDescription: `Config Pillar: the flags served were last confirmed current over ${config.max_bundle_age_minutes} minutes ago (S3 unreachable?): read the config-eval logs`,
      metric: pillarMetric(NAMESPACE, 'BundleAgeSeconds', period, 'Maximum'),
      threshold: config.max_bundle_age_minutes * 60,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      // No evaluations, no polls: nothing is served stale.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.alarms.route(this.evaluationErrors);
    this.alarms.route(this.staleBundle);

    new cloudwatch.Dashboard(this, 'Dashboard', {
      widgets: [
        [
          new cloudwatch.AlarmStatusWidget({ title: 'Are flags served fresh and without errors?', alarms: [this.staleBundle, this.evaluationErrors] }),
          new cloudwatch.GraphWidget({ title: 'Age of the flags served (s)', left: [pillarMetric(NAMESPACE, 'BundleAgeSeconds', period, 'Maximum')] }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'OFREP evaluations',
            left: ['Evaluations', 'EvaluationErrors'].map((m) => pillarMetric(NAMESPACE, m, period)),
          }),
        ],
      ],
    });
  }
}
