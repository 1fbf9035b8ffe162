// Each function may make the calls its code makes, and no others: the actions of its role,
// by binary, against a table written from the Rust code's calls (and what its event source
// needs), so a grant helper that adds more, or a grant forgotten, fails here.
import { Template } from 'aws-cdk-lib/assertions';

import { stacks, template } from './support';

const OWN_LOGS = ['logs:CreateLogStream', 'logs:PutLogEvents'];
// What Lambda's SQS event source needs of its queue (CDK's consume grant).
const SQS_CONSUMER = ['sqs:ChangeMessageVisibility', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage'];

const EXPECTED: Record<string, string[]> = {
  'scp-webhook': [...OWN_LOGS, 'secretsmanager:GetSecretValue', 'sqs:SendMessage'],
  'scp-mirror': [
    ...OWN_LOGS,
    ...SQS_CONSUMER,
    'codecommit:GetRepository',
    'codecommit:GitPull',
    'codecommit:GitPush',
    'codecommit:UpdateDefaultBranch',
    'secretsmanager:GetSecretValue',
  ],
  'scp-reconcile': [...OWN_LOGS, 'codecommit:GitPull', 'secretsmanager:GetSecretValue', 'sqs:SendMessage'],
  // Read access only, as a build's; the sources' listings need their secrets.
  'scp-canary': [...OWN_LOGS, 'codecommit:GitPull', 'secretsmanager:GetSecretValue'],
  'docker-mirror': [
    ...OWN_LOGS,
    'ecr:BatchCheckLayerAvailability',
    'ecr:BatchGetImage',
    'ecr:CompleteLayerUpload',
    'ecr:DescribeRepositories',
    'ecr:InitiateLayerUpload',
    'ecr:ListTagsForResource',
    'ecr:PutImage',
    'ecr:TagResource',
    'ecr:UntagResource',
    'ecr:UploadLayerPart',
    'secretsmanager:GetSecretValue',
  ],
  // Read access only, as a runtime's pull (the registry endpoint's token, or the ECR API).
  'docker-canary': [
    ...OWN_LOGS,
    'ecr:BatchGetImage',
    'ecr:GetAuthorizationToken',
    'ecr:GetDownloadUrlForLayer',
    'ecr:ListImages',
    'secretsmanager:GetSecretValue',
  ],
  'log-heartbeat': [
    ...OWN_LOGS,
    'kinesis:GetRecords',
    'kinesis:GetShardIterator',
    'kinesis:ListShards',
    'kinesis:PutRecords',
    'logs:FilterLogEvents',
  ],
};

/** The actions of the role of the function running `binary` in `built`. */
function actionsOf(built: Template, binary: string): string[] {
  const functions = Object.values(built.findResources('AWS::Lambda::Function'));
  const fn = functions.find((f) =>
    (f.Properties.Tags as { Key: string; Value: string }[]).some((t) => t.Key === 'pillars:binary' && t.Value === binary),
  );
  const role = fn!.Properties.Role['Fn::GetAtt'][0] as string;
  const policies = Object.values(built.findResources('AWS::IAM::Policy')).filter((p) =>
    JSON.stringify(p.Properties.Roles).includes(`"${role}"`),
  );
  const actions = policies.flatMap((p) =>
    (p.Properties.PolicyDocument.Statement as { Action: string | string[] }[]).flatMap((s) => [s.Action].flat()),
  );
  return [...new Set(actions)].sort();
}

const all = stacks();

test.each(Object.keys(EXPECTED))('%s may make exactly its calls', (binary) => {
  const stack = binary.startsWith('scp-') ? all.sourceControl : binary.startsWith('docker-') ? all.dockerMirror : all.logging;
  const built = template(stack);
  expect(actionsOf(built, binary)).toEqual([...EXPECTED[binary]].sort());
});
