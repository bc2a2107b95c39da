/** Everything the functions' logger writes (stdout and stderr) while a callback runs. */
import { vi } from 'vitest';
import { logger } from '../../src/logger.ts';

/** Runs `fn` with the logger at `level`, returning everything written meanwhile; the logger is SILENT after. */
export async function captureLogs(level: 'DEBUG' | 'INFO', fn: () => Promise<unknown>): Promise<string> {
  const lines: string[] = [];
  const capture = (s: string | Uint8Array): boolean => {
    lines.push(typeof s === 'string' ? s : Buffer.from(s).toString('utf8'));
    return true;
  };
  const spies = [vi.spyOn(process.stdout, 'write').mockImplementation(capture), vi.spyOn(process.stderr, 'write').mockImplementation(capture)];
  logger.setLogLevel(level);
  try {
    await fn();
  } finally {
    logger.setLogLevel('SILENT');
    for (const spy of spies) spy.mockRestore();
  }
  return lines.join('');
}
