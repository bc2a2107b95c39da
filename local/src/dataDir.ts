/**
 * The data folder of a local pipeline: one pipeline per folder (two would run the same executions
 * twice), held with a lock file that names the holder's pid. A lock (or `up.json`) whose process
 * is gone is stale.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalPipelineError } from './errors.ts';

export const LOCK_FILE = 'pipeline.lock';

/** The folders a pipeline keeps under its data folder. */
export const DATA_SUBDIRS: readonly string[] = ['s3', 'executions', 'logs', 'cache', 'tmp'];

export class DataDirInUse extends Error {
  override readonly name = 'DataDirInUse';
  readonly pid: number;
  constructor(message: string, pid: number) {
    super(message);
    this.pid = pid;
  }
}

/** Whether a process with this pid runs (EPERM: it does, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid of the live process that holds the data folder, or null. */
export function dataDirHolder(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(join(dataDir, LOCK_FILE), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : null;
  } catch {
    return null;
  }
}

/**
 * Creates the data folder's subfolders and takes its lock: a lock file holding the pid, written
 * with O_EXCL; a lock whose process is gone is taken over. Returns the release function.
 */
export function lockDataDir(dataDir: string): () => void {
  for (const d of DATA_SUBDIRS) mkdirSync(join(dataDir, d), { recursive: true });
  const file = join(dataDir, LOCK_FILE);
  for (let i = 0; i < 2; i++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return () => {
        if (dataDirHolder(dataDir) === process.pid) rmSync(file, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = dataDirHolder(dataDir);
      if (holder !== null) throw new DataDirInUse(`the data folder ${dataDir} is in use by another local pipeline (pid ${holder})`, holder);
      rmSync(file, { force: true });
    }
  }
  throw new LocalPipelineError(`could not lock ${file}`);
}
