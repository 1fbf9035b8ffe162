// The pillars' stacks for one manifest: a stack per pillar the manifest configures, each
// with its outputs, and cdk-nag's AWS Solutions checks over all of them.
import { App, CfnOutput, Environment, Validations } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { AwsSolutionsChecks } from 'cdk-nag';

import { Manifest } from './manifest';
import { ConfigStack, DockerMirrorStack, LoggingStack, SourceControlStack } from './stacks';

export interface PillarSources {
  /** The directory holding `<function>/bootstrap`. */
  readonly lambdaDir: string;
  /** A directory holding just `pillars.toml`. */
  readonly manifestDir: string;
  readonly env?: Environment;
}

export interface PillarStacks {
  readonly sourceControl?: SourceControlStack;
  readonly dockerMirror?: DockerMirrorStack;
  readonly logging?: LoggingStack;
  readonly config?: ConfigStack;
}

export function addPillarStacks(app: App, manifest: Manifest, sources: PillarSources): PillarStacks {
  const stacks: { -readonly [K in keyof PillarStacks]: PillarStacks[K] } = {};
  const shared = {
    ...sources,
    alarmEmails: manifest.alarms.email,
    // CloudWatch Logs' retention periods are the enum's values, in days (checked in Rust).
    functionLogRetention: manifest.functions.log_retention_days as RetentionDays,
  };
  if (manifest.repositories.length > 0) {
    const stack = new SourceControlStack(app, 'PillarsSourceControl', {
      ...shared,
      description: 'Source Control Pillar: Bitbucket repositories mirrored into CodeCommit',
      repositories: manifest.repositories,
      settings: manifest.source_control,
    });
    new CfnOutput(stack, 'WebhookUrl', { value: stack.pillar.webhookUrl.url, description: "Bitbucket's webhook URL" });
    new CfnOutput(stack, 'WebhookSecretArn', { value: stack.pillar.webhookSecret.secretArn });
    new CfnOutput(stack, 'AlarmTopicArn', { value: stack.pillar.alarms.topic.topicArn });
    stacks.sourceControl = stack;
  }
  if (manifest.images.length > 0) {
    const stack = new DockerMirrorStack(app, 'PillarsDockerMirror', {
      ...shared,
      description: 'Docker mirror: configured images copied into ECR',
      images: manifest.images,
      settings: manifest.docker_mirror,
    });
    new CfnOutput(stack, 'AlarmTopicArn', { value: stack.pillar.alarms.topic.topicArn });
    stacks.dockerMirror = stack;
  }
  if (manifest.logging) {
    const stack = new LoggingStack(app, 'PillarsLogging', {
      ...shared,
      description: 'Logging Pillar: a Kinesis stream drained into CloudWatch Logs, with a heartbeat',
      logging: manifest.logging,
    });
    new CfnOutput(stack, 'StreamName', { value: stack.pillar.stream.streamName });
    new CfnOutput(stack, 'FailedBatchesQueueUrl', {
      value: stack.pillar.failedBatches.queueUrl,
      description: 'Batches the sink gave up on: pillar logs replay --queue <this>',
    });
    new CfnOutput(stack, 'ProducerPolicyArn', {
      value: stack.pillar.producerPolicy.managedPolicyArn,
      description: 'Attach to a producer role (Fluent Bit, Vector, the Kinesis Agent, pillar logs ship)',
    });
    new CfnOutput(stack, 'SubscriptionRoleArn', {
      value: stack.pillar.subscriptionRole.roleArn,
      description: 'The roleArn of a CloudWatch Logs subscription filter into the stream',
    });
    new CfnOutput(stack, 'AlarmTopicArn', { value: stack.pillar.alarms.topic.topicArn });
    stacks.logging = stack;
  }
  if (manifest.config) {
    const stack = new ConfigStack(app, 'PillarsConfig', {
      ...shared,
      description: 'Config Pillar: feature flags as files and Rego rules, served from S3 and with S3 gone',
      config: manifest.config,
    });
    new CfnOutput(stack, 'BucketName', { value: stack.pillar.bucket.bucketName, description: 'pillar flags publish --bucket <this>' });
    new CfnOutput(stack, 'KeyArn', { value: stack.pillar.key.keyArn, description: '[config] kms_key of a later stack adopting the bucket' });
    new CfnOutput(stack, 'EvalUrl', { value: stack.pillar.evalUrl.url, description: 'OFREP base URL (SigV4, service lambda)' });
    new CfnOutput(stack, 'ReaderPolicyArn', { value: stack.pillar.readerPolicy.managedPolicyArn });
    new CfnOutput(stack, 'PublisherPolicyArn', { value: stack.pillar.publisherPolicy.managedPolicyArn });
    new CfnOutput(stack, 'AlarmTopicArn', { value: stack.pillar.alarms.topic.topicArn });
    stacks.config = stack;
  }
  // Synthesis stops on any finding not acknowledged, with its reason, next to its resource.
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return stacks;
}
