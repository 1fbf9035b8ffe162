// Acknowledging a cdk-nag finding where it is right, next to the resource, with the reason.
import { Stack, Validations } from 'aws-cdk-lib';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';
import { IConstruct } from 'constructs';

/** Acknowledges cdk-nag's finding `rule` on `scope` (and what it contains). */
export function acknowledge(scope: IConstruct, rule: string, reason: string): void {
  Validations.of(scope).acknowledge({ id: rule, reason });
}

/**
 * Acknowledges the wildcard in `resource`, an ARN pattern granted to `scope` (a role), as
 * cdk-nag names that finding.
 */
export function acknowledgeWildcard(scope: IConstruct, resource: string, reason: string): void {
  const flattened = flattenCfnReference(Stack.of(scope).resolve(resource));
  acknowledge(scope, `AwsSolutions-IAM5[Resource::${flattened}]`, reason);
}
