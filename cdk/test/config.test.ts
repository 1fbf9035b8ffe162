import { Match } from 'aws-cdk-lib/assertions';

import { exampleManifest, stacks, template } from './support';

const built = template(stacks().config);

test('a versioned, KMS-encrypted bucket kept when the stack goes', () => {
  built.hasResource('AWS::S3::Bucket', {
    Properties: {
      VersioningConfiguration: { Status: 'Enabled' },
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [
          Match.objectLike({ ServerSideEncryptionByDefault: Match.objectLike({ SSEAlgorithm: 'aws:kms' }) }),
        ],
      },
      PublicAccessBlockConfiguration: Match.objectLike({ BlockPublicAcls: true, RestrictPublicBuckets: true }),
    },
    DeletionPolicy: 'Retain',
  });
  built.hasResourceProperties('AWS::KMS::Key', { Description: 'Config Pillar flag bundles', EnableKeyRotation: true });
});

test('config-eval answers behind a function URL with IAM auth, polling the bucket the manifest set', () => {
  built.hasResourceProperties('AWS::Lambda::Url', { AuthType: 'AWS_IAM' });
  built.hasResourceProperties('AWS::Lambda::Function', {
    Description: 'Answers OFREP flag evaluations from the last good flag set',
    Environment: {
      Variables: Match.objectLike({ CONFIG_BUCKET: Match.anyValue(), CONFIG_PREFIX: '', CONFIG_POLL_SECONDS: '30' }),
    },
  });
});

test('readers may invoke the URL and read bundles; publishers may also write and list versions', () => {
  const policies = Object.values(built.findResources('AWS::IAM::ManagedPolicy'));
  const actions = (description: string) =>
    policies
      .filter((p) => p.Properties.Description.startsWith(description))
      .flatMap((p) => p.Properties.PolicyDocument.Statement.flatMap((s: { Action: string | string[] }) => s.Action))
      .sort();
  expect(actions('Read the Config Pillar')).toEqual(['kms:Decrypt', 'lambda:InvokeFunctionUrl', 's3:GetObject']);
  expect(actions('Publish, list and roll back')).toEqual([
    'kms:Decrypt',
    'kms:GenerateDataKey',
    's3:GetObject',
    's3:GetObjectVersion',
    's3:ListBucketVersions',
    's3:PutObject',
  ]);
});

test('alarms: evaluation errors, and flags served older than the manifest allows', () => {
  built.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'EvaluationErrors',
    Namespace: 'Pillars/Config',
    Threshold: 1,
  });
  built.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'BundleAgeSeconds',
    Namespace: 'Pillars/Config',
    Statistic: 'Maximum',
    Threshold: 3600,
  });
  built.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
});

test('no [config] section, no Config stack', () => {
  expect(stacks({ ...exampleManifest(), config: null }).config).toBeUndefined();
});

test('snapshot', () => {
  expect(built.toJSON()).toMatchSnapshot();
});
