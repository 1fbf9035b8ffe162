import { stacks, template } from './support';

type Statement = {
  Effect: string;
  Principal?: { Service?: string } | string;
  Action: string | string[];
  Condition?: Record<string, unknown>;
};

test('every alarm topic lets CloudWatch alarms of its own account publish (its policy is not the TLS deny alone)', () => {
  const all = stacks();
  for (const stack of [all.sourceControl, all.dockerMirror, all.logging]) {
    expect(stack).toBeDefined();
    const built = template(stack!);
    const topics = Object.keys(built.findResources('AWS::SNS::Topic'));
    expect(topics.length).toBeGreaterThan(0);
    const policies = Object.values(built.findResources('AWS::SNS::TopicPolicy'));
    for (const topic of topics) {
      const statements = policies
        .filter((p) => JSON.stringify(p.Properties.Topics) === JSON.stringify([{ Ref: topic }]))
        .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
      const publish = statements.filter(
        (s) =>
          s.Effect === 'Allow' &&
          typeof s.Principal === 'object' &&
          s.Principal.Service === 'cloudwatch.amazonaws.com' &&
          [s.Action].flat().includes('sns:Publish'),
      );
      expect(publish).toHaveLength(1);
      expect(JSON.stringify(publish[0].Condition)).toContain('aws:SourceArn');
    }
  }
});
