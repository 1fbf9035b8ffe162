// A second deploy, or a first one after the CLI made the mirrors: with `resources =
// "existing"` a stack adopts the repositories and the stream by name instead of creating
// them (which stops with "already exists"), and still grants on exactly them.
import { exampleManifest, stacks, template } from './support';

const example = exampleManifest();
const adopting = {
  ...example,
  source_control: { ...example.source_control, resources: 'existing' as const },
  docker_mirror: { ...example.docker_mirror, resources: 'existing' as const },
  logging: { ...example.logging!, resources: 'existing' as const },
  config: {
    ...example.config!,
    bucket: 'team-flags',
    kms_key: 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    resources: 'existing' as const,
  },
};
const all = stacks(adopting);
// The flag bundles' key (the alarm topic has its own).
const BUNDLE_KEY = { Description: 'Config Pillar flag bundles' };

function statements(built: ReturnType<typeof template>): string {
  return JSON.stringify(Object.values(built.findResources('AWS::IAM::Policy')).map((p) => p.Properties.PolicyDocument));
}

test('by default each stack creates what it names', () => {
  const created = stacks(example);
  template(created.sourceControl).resourceCountIs('AWS::CodeCommit::Repository', 2);
  template(created.dockerMirror).resourceCountIs('AWS::ECR::Repository', 2);
  template(created.logging).resourceCountIs('AWS::Kinesis::Stream', 1);
  template(created.config!).resourceCountIs('AWS::S3::Bucket', 1);
  template(created.config!).resourcePropertiesCountIs('AWS::KMS::Key', BUNDLE_KEY, 1);
});

test('existing CodeCommit repositories are adopted, and the mirror may push to exactly them', () => {
  const built = template(all.sourceControl);
  built.resourceCountIs('AWS::CodeCommit::Repository', 0);
  const granted = statements(built);
  for (const repository of example.repositories) {
    expect(granted).toContain(`:${repository.codecommit}"`);
  }
});

test('existing ECR repositories are adopted, and the mirror may push to exactly them', () => {
  const built = template(all.dockerMirror);
  built.resourceCountIs('AWS::ECR::Repository', 0);
  const granted = statements(built);
  for (const image of example.images) {
    expect(granted).toContain(`:repository/${image.ecr_repository}"`);
  }
});

test('an existing stream is adopted: the sink reads it and producers may write it', () => {
  const built = template(all.logging);
  built.resourceCountIs('AWS::Kinesis::Stream', 0);
  const stream = `:stream/${example.logging!.stream}`;
  const mappings = Object.values(built.findResources('AWS::Lambda::EventSourceMapping'));
  expect(JSON.stringify(mappings.map((m) => m.Properties.EventSourceArn))).toContain(stream);
  const producer = Object.values(built.findResources('AWS::IAM::ManagedPolicy'));
  expect(JSON.stringify(producer)).toContain(stream);
});

test('an existing flag bucket and its key are adopted: config-eval reads them, publishers write them', () => {
  const built = template(all.config!);
  built.resourceCountIs('AWS::S3::Bucket', 0);
  built.resourcePropertiesCountIs('AWS::KMS::Key', BUNDLE_KEY, 0);
  const functions = Object.values(built.findResources('AWS::Lambda::Function'));
  expect(functions.map((f) => f.Properties.Environment.Variables.CONFIG_BUCKET)).toEqual(['team-flags']);
  const granted = JSON.stringify([
    ...Object.values(built.findResources('AWS::IAM::ManagedPolicy')).map((p) => p.Properties.PolicyDocument),
    statements(built),
  ]);
  expect(granted).toContain(':s3:::team-flags/');
  expect(granted).toContain(adopting.config.kms_key);
  built.hasOutput('BucketName', { Value: 'team-flags' });
});
