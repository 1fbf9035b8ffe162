#!/usr/bin/env node
// The CDK app: reads its context and the manifest (checked by `pillar config check --json`).
// Context (all optional):
//   -c manifest=PATH    the deployment manifest (default ../pillars.toml)
//   -c pillarBin=PATH   the pillar command (default ../.pillars/bin/pillar, from scripts/package)
//   -c lambdaDir=PATH   the functions (default ../.pillars/lambda, from scripts/package)
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { App } from 'aws-cdk-lib';

import { addPillarStacks } from '../lib/app';
import { checkManifest } from '../lib/manifest';

const app = new App();
const context = (key: string, fallback: string) => path.resolve(app.node.tryGetContext(key) ?? fallback);
const manifestPath = context('manifest', '../pillars.toml');
const manifest = checkManifest(context('pillarBin', '../.pillars/bin/pillar'), manifestPath);

// The layer carries the manifest the stacks were made from, whatever its file name.
const manifestDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pillars-manifest-'));
fs.copyFileSync(manifestPath, path.join(manifestDir, 'pillars.toml'));

addPillarStacks(app, manifest, {
  lambdaDir: context('lambdaDir', '../.pillars/lambda'),
  manifestDir,
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});
// Synthesis copies the layer into the cloud assembly: the temporary copy can go.
app.synth();
fs.rmSync(manifestDir, { recursive: true, force: true });
