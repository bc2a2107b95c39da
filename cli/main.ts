/** The `cil` command. Each verb registers itself; usage errors print one line and exit 2. */
import { Command, CommanderError } from 'commander';
import { registerPlan } from './plan.ts';
import { registerGenerate } from './generate.ts';
import { registerWorker } from './worker.ts';
import { registerDemoModel } from './demoModel.ts';
import { registerValidate } from './validate.ts';
import { registerStats } from './stats.ts';
import { registerVerifyBundle } from './verifyBundle.ts';
import { registerLocal } from './local.ts';
import { registerDemo } from './demo.ts';
import { registerRemote } from './remote/commands.ts';
import { errorName, UsageError } from './errors.ts';
import { printable } from './printable.ts';

export function buildProgram(): Command {
  const program = new Command('cil')
    .description('CIL image-to-video pipeline: sampler, worker, local pipeline and remote CLI')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerPlan(program);
  registerGenerate(program);
  registerWorker(program);
  registerDemoModel(program);
  registerValidate(program);
  registerStats(program);
  registerVerifyBundle(program);
  registerLocal(program);
  registerDemo(program);
  registerRemote(program);
  for (const c of program.commands) c.exitOverride();
  return program;
}

export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; commander has already printed its one-line message.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`cil: ${printable(e.message, { multiline: true })}\n`);
      return 2;
    }
    // Error messages quote keys, paths and reasons from user data: escaped (printable.ts). Every
    // error is shown with a stable name: a bare Error (Node's ENOENT, say) is named by errorName.
    process.stderr.write(`cil: ${printable(`${errorName(e)}: ${e instanceof Error ? e.message : String(e)}`, { multiline: true })}\n`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await run(process.argv.slice(2));
  if (code !== 0) process.exitCode = code;
}
