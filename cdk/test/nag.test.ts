import { nagFindings, stacks } from './support';

test('cdk-nag: no unsuppressed finding in any stack', () => {
  const all = stacks();
  const findings = [all.sourceControl, all.dockerMirror, all.logging, all.config].flatMap((stack) => {
    expect(stack).toBeDefined();
    return nagFindings(stack!);
  });
  expect(findings).toEqual([]);
});
