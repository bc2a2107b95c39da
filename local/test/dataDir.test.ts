/** The data folder's lock (local/src/dataDir.ts): one pipeline per folder, a stale lock taken over. */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DATA_SUBDIRS, DataDirInUse, dataDirHolder, LOCK_FILE, lockDataDir, processAlive } from '../src/dataDir.ts';

const root = mkdtempSync(join(tmpdir(), 'cil-local-datadir-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('the data folder lock', () => {
  it('creates the folders, holds the lock with this pid, refuses a second holder, releases', () => {
    const dir = join(root, 'a');
    const release = lockDataDir(dir);
    for (const d of DATA_SUBDIRS) expect(existsSync(join(dir, d))).toBe(true);
    expect(dataDirHolder(dir)).toBe(process.pid);
    expect(() => lockDataDir(dir)).toThrow(DataDirInUse);
    release();
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    expect(dataDirHolder(dir)).toBeNull();
  });

  it('takes over a lock whose process is gone, and one that holds no pid', () => {
    const dir = join(root, 'b');
    lockDataDir(dir)();
    // pid 2^22 + 1 is above Linux's pid_max: no such process.
    writeFileSync(join(dir, LOCK_FILE), `${2 ** 22 + 1}\n`);
    expect(processAlive(2 ** 22 + 1)).toBe(false);
    expect(dataDirHolder(dir)).toBeNull();
    const release = lockDataDir(dir);
    expect(dataDirHolder(dir)).toBe(process.pid);
    release();
    writeFileSync(join(dir, LOCK_FILE), 'not a pid\n');
    lockDataDir(dir)();
  });
});
