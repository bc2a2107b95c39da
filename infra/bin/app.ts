/**
 * The CDK app (cdk.json: `node infra/bin/app.ts`). Env-agnostic: synthesizes with no AWS account,
 * no network and no Docker; `cdk deploy` fills in the account and Region. Parameters come from
 * context: `-c cil:<key>=<value>` (see docs/infra.md); `-c cil:nag=false` skips the cdk-nag checks.
 */
import { buildApp } from '../lib/app.ts';

const { app } = buildApp();
app.synth();
