/** Runs the `cil` command in this process, for the CLI tests. */
import { vi } from 'vitest';
import { run } from '../../main.ts';

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `cil …` in this process with stdout/stderr captured and their isTTY as given. */
export async function runCli(args: string[], tty = { stdout: false, stderr: false }): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const saved = { out: process.stdout.isTTY, err: process.stderr.isTTY, columns: process.stderr.columns };
  Object.defineProperty(process.stdout, 'isTTY', { value: tty.stdout, configurable: true, writable: true });
  Object.defineProperty(process.stderr, 'isTTY', { value: tty.stderr, configurable: true, writable: true });
  // cli-progress sizes the bar to the terminal's width.
  Object.defineProperty(process.stderr, 'columns', { value: 100, configurable: true, writable: true });
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    stdout += String(s);
    return true;
  });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    stderr += String(s);
    return true;
  });
  process.exitCode = undefined;
  try {
    const code = await run(args);
    return { code: code !== 0 ? code : Number(process.exitCode ?? 0), stdout, stderr };
  } finally {
    process.exitCode = undefined;
    o.mockRestore();
    e.mockRestore();
    Object.defineProperty(process.stdout, 'isTTY', { value: saved.out, configurable: true, writable: true });
    Object.defineProperty(process.stderr, 'isTTY', { value: saved.err, configurable: true, writable: true });
    Object.defineProperty(process.stderr, 'columns', { value: saved.columns, configurable: true, writable: true });
  }
}
