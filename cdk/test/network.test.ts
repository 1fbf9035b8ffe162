// A Bitbucket or a registry on a private network: the functions that reach the sources run
// in the manifest's subnets with its security groups; nothing else moves into the VPC.
import { Match } from 'aws-cdk-lib/assertions';

import { exampleManifest, nagFindings, stacks, template } from './support';

const example = exampleManifest();
const network = {
  vpc_id: 'vpc-0123456789abcdef0',
  subnet_ids: ['subnet-0123456789abcdef0', 'subnet-0fedcba9876543210'],
  security_group_ids: ['sg-0123456789abcdef0'],
};
const placed = stacks({
  ...example,
  source_control: { ...example.source_control, network },
  docker_mirror: { ...example.docker_mirror, network },
});
const vpcConfig = { SubnetIds: network.subnet_ids, SecurityGroupIds: network.security_group_ids };

function placement(built: ReturnType<typeof template>): Record<string, unknown> {
  const functions = Object.values(built.findResources('AWS::Lambda::Function'));
  return Object.fromEntries(
    functions.map((f) => [
      (f.Properties.Tags as { Key: string; Value: string }[]).find((t) => t.Key === 'pillars:binary')!.Value,
      f.Properties.VpcConfig,
    ]),
  );
}

test('by default no function is in a VPC', () => {
  const all = stacks(example);
  expect(Object.values(placement(template(all.sourceControl)))).toEqual([undefined, undefined, undefined, undefined]);
  expect(Object.values(placement(template(all.dockerMirror)))).toEqual([undefined, undefined]);
});

test('the functions reaching the sources run in the subnets; the webhook, which reaches none, does not', () => {
  expect(placement(template(placed.sourceControl))).toEqual({
    'scp-webhook': undefined,
    'scp-mirror': vpcConfig,
    'scp-reconcile': vpcConfig,
    'scp-canary': vpcConfig,
  });
  expect(placement(template(placed.dockerMirror))).toEqual({ 'docker-mirror': vpcConfig, 'docker-canary': vpcConfig });
  template(placed.dockerMirror).hasResourceProperties('AWS::IAM::Role', {
    ManagedPolicyArns: [Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith([Match.stringLikeRegexp('AWSLambdaVPCAccessExecutionRole')])]) })],
  });
});

test('cdk-nag: placed stacks have no unacknowledged finding', () => {
  expect([placed.sourceControl!, placed.dockerMirror!].flatMap((stack) => nagFindings(stack))).toEqual([]);
});
