/**
 * A minimal, defensive reader for ZIP archives whose entries are *stored* (method 0, no
 * compression) — the layout `torch.save` writes (PyTorch's miniz-based writer: stored entries,
 * 64-byte alignment padding in the local headers' extra fields, sizes in data descriptors, and
 * a zip64 end-of-central-directory record even for tiny files).
 *
 * Why hand-written: the archives come from untrusted downloads. fflate's `unzipSync` (the
 * maintained pure-JS candidate) does not bounds-check central-directory offsets, does not check
 * CRCs and silently returns a short stored entry when the file is truncated; yauzl is async and
 * stream/fd based while callers here hold the whole file in memory. Reading stored entries is
 * small, so we do it ourselves and check every offset, size and CRC.
 */
import { crc32 } from 'node:zlib';

/** Thrown for anything about the archive's structure that is malformed or unsupported. */
export class ZipFormatError extends Error {
  override readonly name = 'ZipFormatError';
}

export interface ZipEntry {
  readonly name: string;
  /** 0 = stored; anything else is refused on read. */
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly crc32: number;
  readonly localHeaderOffset: number;
}

/** The small surface the torch reader needs, so the implementation can be swapped. */
export interface ZipArchive {
  readonly entries: readonly ZipEntry[];
  has(name: string): boolean;
  /** The entry's bytes: a view into the archive buffer (not a copy); treat as read-only. */
  read(name: string): Uint8Array;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const EOCD_SIZE = 22;
const CENTRAL_SIZE = 46;
const LOCAL_SIZE = 30;
const MAX_COMMENT = 0xffff;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses the central directory of `bytes`; `label` names the file in error messages. */
export function openZip(bytes: Uint8Array, label: string): ZipArchive {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.byteLength;
  const fail = (what: string): never => {
    throw new ZipFormatError(`${label}: ${what}`);
  };
  const u16 = (at: number): number => dv.getUint16(at, true);
  const u32 = (at: number): number => dv.getUint32(at, true);
  const u64 = (at: number, field: string): number => {
    const v = dv.getBigUint64(at, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${field} ${v} is out of range`);
    return Number(v);
  };

  // End of central directory: the last record whose comment runs exactly to the end of file.
  let eocd = -1;
  for (let p = len - EOCD_SIZE; p >= 0 && p >= len - EOCD_SIZE - MAX_COMMENT; p--) {
    if (u32(p) === EOCD_SIG && p + EOCD_SIZE + u16(p + 20) === len) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) fail('not a ZIP archive (no end-of-central-directory record; truncated or another format)');
  if (u16(eocd + 4) !== 0 || u16(eocd + 6) !== 0) fail('multi-disk ZIP archives are not supported');
  let count = u16(eocd + 10);
  let cdSize = u32(eocd + 12);
  let cdOffset = u32(eocd + 16);
  let cdLimit = eocd; // the central directory must end before the record that describes it
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64: the classic fields are saturated, the real ones sit in the zip64 EOCD record.
    const loc = eocd - 20;
    if (loc < 0 || u32(loc) !== ZIP64_LOCATOR_SIG) fail('zip64 end-of-central-directory locator missing');
    const z = u64(loc + 8, 'zip64 end-of-central-directory offset');
    if (z + 56 > loc || u32(z) !== ZIP64_EOCD_SIG) fail('zip64 end-of-central-directory record missing or out of bounds');
    count = u64(z + 32, 'zip64 entry count');
    cdSize = u64(z + 40, 'zip64 central directory size');
    cdOffset = u64(z + 48, 'zip64 central directory offset');
    cdLimit = z;
  }
  if (cdOffset + cdSize > cdLimit) {
    fail(`central directory (offset ${cdOffset}, ${cdSize} bytes) runs past the end of the archive (${len} bytes)`);
  }
  if (count * CENTRAL_SIZE > cdSize) fail(`${count} entries cannot fit in a ${cdSize}-byte central directory`);

  const entries: ZipEntry[] = [];
  const byName = new Map<string, ZipEntry>();
  let p = cdOffset;
  const cdEnd = cdOffset + cdSize;
  for (let i = 0; i < count; i++) {
    if (p + CENTRAL_SIZE > cdEnd || u32(p) !== CENTRAL_SIG) fail(`central directory entry ${i} is malformed`);
    const flags = u16(p + 8);
    const method = u16(p + 10);
    const crc = u32(p + 16);
    let compressedSize = u32(p + 20);
    let size = u32(p + 24);
    const nameLen = u16(p + 28);
    const extraLen = u16(p + 30);
    const commentLen = u16(p + 32);
    let localHeaderOffset = u32(p + 42);
    const next = p + CENTRAL_SIZE + nameLen + extraLen + commentLen;
    if (next > cdEnd) fail(`central directory entry ${i} runs past the central directory`);
    let name: string;
    try {
      name = utf8.decode(bytes.subarray(p + CENTRAL_SIZE, p + CENTRAL_SIZE + nameLen));
    } catch {
      return fail(`central directory entry ${i} has a name that is not valid UTF-8`);
    }
    if ((flags & 1) !== 0) fail(`entry ${name} is encrypted`);
    if (size === 0xffffffff || compressedSize === 0xffffffff || localHeaderOffset === 0xffffffff) {
      // zip64 extended information (extra field 0x0001) holds, in order, only the saturated ones.
      let e = p + CENTRAL_SIZE + nameLen;
      const eEnd = e + extraLen;
      let found = false;
      while (e + 4 <= eEnd) {
        const id = u16(e);
        const n = u16(e + 2);
        if (e + 4 + n > eEnd) break;
        if (id === 1) {
          let q = e + 4;
          const take = (field: string): number => {
            if (q + 8 > e + 4 + n) fail(`entry ${name}: zip64 extra field is too short for ${field}`);
            const v = u64(q, `entry ${name} ${field}`);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = take('size');
          if (compressedSize === 0xffffffff) compressedSize = take('compressed size');
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('local header offset');
          found = true;
          break;
        }
        e += 4 + n;
      }
      if (!found) fail(`entry ${name}: sizes are saturated but there is no zip64 extra field`);
    }
    if (byName.has(name)) fail(`duplicate entry name ${name}`);
    const entry: ZipEntry = { name, method, compressedSize, size, crc32: crc, localHeaderOffset };
    entries.push(entry);
    byName.set(name, entry);
    p = next;
  }

  return {
    entries,
    has: (name) => byName.has(name),
    read(name) {
      const entry = byName.get(name);
      if (entry === undefined) return fail(`no entry named ${name}`);
      if (entry.method !== 0) {
        fail(`entry ${name} is compressed (method ${entry.method}); only stored entries (method 0), as torch.save writes, are supported`);
      }
      if (entry.compressedSize !== entry.size) fail(`stored entry ${name} has compressed size ${entry.compressedSize} != size ${entry.size}`);
      const h = entry.localHeaderOffset;
      if (h + LOCAL_SIZE > cdOffset || u32(h) !== LOCAL_SIG) fail(`entry ${name}: local header at ${h} is missing or out of bounds`);
      const localNameLen = u16(h + 26);
      const start = h + LOCAL_SIZE + localNameLen + u16(h + 28); // skips torch's alignment padding
      const end = start + entry.size;
      if (end > cdOffset) fail(`entry ${name}: ${entry.size} data bytes at ${start} run past the entry area (truncated?)`);
      const localName = bytes.subarray(h + LOCAL_SIZE, h + LOCAL_SIZE + localNameLen);
      const centralName = new TextEncoder().encode(name);
      if (localName.length !== centralName.length || localName.some((b, i) => b !== centralName[i])) {
        fail(`entry ${name}: local header names a different file`);
      }
      const data = bytes.subarray(start, end);
      const actual = crc32(data);
      if (actual !== entry.crc32) {
        fail(`entry ${name}: CRC-32 mismatch (stored ${entry.crc32.toString(16)}, computed ${actual.toString(16)}); the file is corrupt`);
      }
      return data;
    },
  };
}
