// What every test needs: the example manifest as `pillar config check --json` prints it, and
// the pillars' stacks made from it with placeholder functions (no bundling in unit tests).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';

import { PillarStacks, addPillarStacks } from '../lib/app';
import { Manifest, checkManifest } from '../lib/manifest';

export const FUNCTIONS = [
  'scp-webhook',
  'scp-mirror',
  'scp-reconcile',
  'scp-canary',
  'docker-mirror',
  'docker-canary',
  'log-sink',
  'log-heartbeat',
  'config-eval',
];

/** The `pillar` command: scripts/test passes the one it built. */
export function pillarBin(): string {
  return process.env.PILLAR_BIN ?? path.resolve(__dirname, '../../.pillars/bin/pillar');
}

export const EXAMPLE = path.resolve(__dirname, '../../pillars.example.toml');

export function exampleManifest(): Manifest {
  return checkManifest(pillarBin(), EXAMPLE);
}

/** A directory of placeholder `<function>/bootstrap` files, the same bytes every run. */
function placeholderFunctions(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pillars-lambda-'));
  for (const name of FUNCTIONS) {
    fs.mkdirSync(path.join(dir, name));
    fs.writeFileSync(path.join(dir, name, 'bootstrap'), `placeholder for ${name}\n`, { mode: 0o755 });
  }
  return dir;
}

function manifestDir(manifestPath: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pillars-manifest-'));
  fs.copyFileSync(manifestPath, path.join(dir, 'pillars.toml'));
  return dir;
}

/** The stacks of `manifest` in a fresh app, in a fixed environment. */
export function stacks(manifest: Manifest = exampleManifest()): PillarStacks {
  const app = new App();
  return addPillarStacks(app, manifest, {
    lambdaDir: placeholderFunctions(),
    manifestDir: manifestDir(EXAMPLE),
    env: { account: '111122223333', region: 'eu-west-1' },
  });
}

export function template(stack: Stack | undefined): Template {
  if (!stack) {
    throw new Error('the example manifest configures every pillar');
  }
  return Template.fromStack(stack);
}

/** cdk-nag's AWS Solutions findings in `stack` not acknowledged, as `rule at path` lines. */
export function nagFindings(stack: Stack): string[] {
  const report = new AwsSolutionsChecks(stack).validateScope(stack);
  return report.violations.flatMap((violation) =>
    violation.violatingResources.map(
      (resource) => `${violation.ruleName} at ${resource.constructPath ?? resource.resourceLogicalId}`,
    ),
  );
}
