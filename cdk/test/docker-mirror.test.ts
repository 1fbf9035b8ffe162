import { Match } from 'aws-cdk-lib/assertions';

import { exampleManifest, stacks, template } from './support';

const built = template(stacks().dockerMirror);

test('a retained ECR repository per image, with scanning, mutability and lifecycle from the manifest', () => {
  built.resourceCountIs('AWS::ECR::Repository', 2);
  built.hasResource('AWS::ECR::Repository', {
    Properties: {
      RepositoryName: 'mirror/library/alpine',
      ImageScanningConfiguration: { ScanOnPush: true },
      ImageTagMutability: 'MUTABLE',
      LifecyclePolicy: { LifecyclePolicyText: Match.stringLikeRegexp('"countNumber":50') },
    },
    DeletionPolicy: 'Retain',
  });
  built.hasResourceProperties('AWS::ECR::Repository', {
    RepositoryName: 'mirror/base/debian',
    LifecyclePolicy: Match.absent(),
  });
});

test('an immutable repository keeps companion tags mutable, and its lifecycle rule never expires them', () => {
  const example = exampleManifest();
  const immutable = stacks({ ...example, images: example.images.map((i) => ({ ...i, immutable_tags: true })) });
  const repository = Object.values(template(immutable.dockerMirror).findResources('AWS::ECR::Repository')).find(
    (r) => r.Properties.RepositoryName === 'mirror/library/alpine',
  );
  expect(repository?.Properties.ImageTagMutability).toBe('IMMUTABLE_WITH_EXCLUSION');
  expect(repository?.Properties.ImageTagMutabilityExclusionFilters).toEqual([
    { ImageTagMutabilityExclusionFilterType: 'WILDCARD', ImageTagMutabilityExclusionFilterValue: 'sha256-*' },
  ]);
  type Rule = { rulePriority: number; selection: { tagPatternList: string[]; countType: string } };
  const rules = (JSON.parse(repository?.Properties.LifecyclePolicy.LifecyclePolicyText) as { rules: Rule[] }).rules;
  // The first rule takes the companions, so the counting rule after it cannot expire them.
  expect(rules.map((r) => [r.rulePriority, r.selection.tagPatternList, r.selection.countType])).toEqual([
    [1, ['sha256-*'], 'sinceImagePushed'],
    [2, ['*'], 'imageCountMoreThan'],
  ]);
});

test('a repository is encrypted with the key the manifest names for it, else AES256', () => {
  const example = exampleManifest();
  const key = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
  const keyed = stacks({ ...example, images: example.images.map((i, n) => ({ ...i, kms_key: n === 0 ? key : null })) });
  const repositories = template(keyed.dockerMirror).findResources('AWS::ECR::Repository');
  const encryption = Object.values(repositories).map((r) => [r.Properties.RepositoryName, r.Properties.EncryptionConfiguration]);
  expect(encryption).toEqual([
    ['mirror/library/alpine', { EncryptionType: 'KMS', KmsKey: key }],
    ['mirror/base/debian', undefined],
  ]);
});

test('the mirror runs on a schedule, 15 minutes at most, with ECR rights on its repositories only', () => {
  built.hasResourceProperties('AWS::Scheduler::Schedule', { ScheduleExpression: 'rate(1 hour)' });
  built.hasResourceProperties('AWS::Lambda::Function', {
    Timeout: 900,
    MemorySize: 1024,
    Environment: { Variables: { PILLARS_MANIFEST: '/opt/pillars.toml' } },
  });
  const statements = Object.values(built.findResources('AWS::IAM::Policy')).flatMap(
    (policy) => policy.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[],
  );
  // The mirror's statement and the canary's, each on the two repositories alone; beside them
  // only the canary's registry token, which names no resource.
  const ecr = statements.filter(
    (s) => [s.Action].flat().some((a) => a.startsWith('ecr:')) && s.Action !== 'ecr:GetAuthorizationToken',
  );
  expect(ecr).toHaveLength(2);
  for (const statement of ecr) {
    expect([statement.Resource].flat()).toHaveLength(2);
    expect([statement.Action].flat()).not.toContain('ecr:CreateRepository');
  }
  expect(JSON.stringify(statements)).toContain('pillars/artifactory-read-??????');
});

test('one run at a time: a concurrency of 1 reserved, and no Lambda retry on top of the next scheduled run', () => {
  const mirror = (manifest = exampleManifest()) =>
    Object.values(template(stacks(manifest).dockerMirror).findResources('AWS::Lambda::Function')).find((f) =>
      f.Properties.Description.startsWith('Copies the configured images'),
    );
  expect(mirror()?.Properties.ReservedConcurrentExecutions).toBe(1);
  built.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
    MaximumRetryAttempts: 0,
    MaximumEventAgeInSeconds: 3600,
  });
  const example = exampleManifest();
  const unreserved = mirror({ ...example, docker_mirror: { ...example.docker_mirror, one_run_at_a_time: false } });
  expect(unreserved?.Properties.ReservedConcurrentExecutions).toBeUndefined();
});

test('would it work today: images failed or left, missing data breaching', () => {
  built.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Metrics: Match.arrayWith([Match.objectLike({ Expression: 'failed + left' })]),
    TreatMissingData: 'breaching',
    AlarmActions: [Match.anyValue()],
  });
  built.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
});

test('snapshot', () => {
  expect(built.toJSON()).toMatchSnapshot();
});
