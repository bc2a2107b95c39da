/**
 * A stand-in for `node bin/cil.js worker` in the local-Batch tests: prints the environment it got
 * and a few progress lines as JSON, then exits with the code FAKE_EXITS lists for its attempt
 * (AWS_BATCH_JOB_ATTEMPT, 1-based; the last code repeats). With FAKE_SLEEP_MS it first waits,
 * exiting 143 on SIGTERM as the real worker does after its checkpoint. `startedAt` is when the
 * process started, before its hand-off when it was started ahead.
 */
// Started ahead (`--await-job worker`, local/src/warmStart.ts): waits for its job's hand-off on
// stdin as cli/prestart.ts does, then takes the job's environment and argv.
const startedAt = Date.now();
let argv = process.argv.slice(2);
if (argv[0] === '--await-job') {
  const { createInterface } = await import('node:readline');
  const line = await new Promise<string | null>((resolve) => {
    const rl = createInterface({ input: process.stdin });
    rl.once('line', (l) => resolve(l));
    rl.once('close', () => resolve(null));
  });
  if (line === null) process.exit(0);
  const handoff = JSON.parse(line) as { argv: string[]; env: Record<string, string> };
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, handoff.env);
  argv = handoff.argv;
}
const attempt = Number(process.env.AWS_BATCH_JOB_ATTEMPT ?? '1');
const exits = (process.env.FAKE_EXITS ?? '0').split(',').map(Number);
const code = exits[Math.min(attempt, exits.length) - 1];
const pick = (k: string): string | null => process.env[k] ?? null;
process.stdout.write(
  `${JSON.stringify({ event: 'env', argv, startedAt, attempt, spec: pick('CIL_JOB_SPEC'), endpoint: pick('AWS_ENDPOINT_URL_S3'), cache: pick('CIL_MODEL_CACHE'), bus: pick('CIL_PROGRESS_BUS'), tmp: pick('TMPDIR'), jobId: pick('AWS_BATCH_JOB_ID'), start: Date.now() })}\n`,
);
for (let s = 1; s <= 3; s++) process.stdout.write(`${JSON.stringify({ event: 'progress', phase: 'denoise', step: s, total: 3, elapsedS: s / 10 })}\n`);
process.stdout.write('not json: kept in the log only\n');
const sleep = Number(process.env.FAKE_SLEEP_MS ?? '0');
if (sleep > 0) {
  process.on('SIGTERM', () => {
    process.stdout.write(`${JSON.stringify({ event: 'interrupted' })}\n`);
    process.exit(143);
  });
  await new Promise((r) => setTimeout(r, sleep));
}
process.stdout.write(`${JSON.stringify({ event: 'end', end: Date.now() })}\n`);
process.exit(code);
