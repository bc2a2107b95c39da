/**
 * Runs `cil stats …` in a child process for the tests (kill, SIGTERM, exit codes) until cli/main.ts
 * registers the command; mirrors main.ts's `run`: usage errors one line and exit 2, others exit 1.
 */
import { Command, CommanderError } from 'commander';
import { registerStats } from '../../cli/stats.ts';
import { UsageError } from '../../cli/errors.ts';

const program = new Command('cil').exitOverride().configureOutput({ writeErr: (s) => process.stderr.write(s) });
registerStats(program);
try {
  await program.parseAsync(process.argv.slice(2), { from: 'user' });
} catch (e) {
  if (e instanceof CommanderError) process.exitCode = e.exitCode === 0 ? 0 : 2;
  else if (e instanceof UsageError) {
    process.stderr.write(`cil: ${e.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`cil: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}\n`);
    process.exitCode = 1;
  }
}
