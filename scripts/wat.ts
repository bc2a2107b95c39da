/**
 * A small WebAssembly text assembler for the subset shared/src/sampler/kernels.wat uses: imports
 * of functions and one memory, functions with named params/locals, and flat (unfolded)
 * instructions with named locals, functions and block labels, including the SIMD (0xFD) ones
 * listed below. Written here instead of adding wabt as a dependency: ~200 lines cover the subset,
 * and scripts/build-kernels.ts plus shared/test/kernels.test.ts use it to prove the committed
 * bytes (shared/src/sampler/kernelsWasm.ts) are exactly this file's assembly.
 */

export class WatError extends Error {
  override readonly name = 'WatError';
}

type Sexp = string | Sexp[];

function parse(text: string): Sexp[] {
  const tokens = text
    .replace(/;;[^\n]*/g, ' ')
    .replace(/\(;[\s\S]*?;\)/g, ' ')
    .match(/"[^"]*"|\(|\)|[^\s()]+/g) ?? [];
  let pos = 0;
  const list = (): Sexp[] => {
    const out: Sexp[] = [];
    while (pos < tokens.length) {
      const t = tokens[pos++];
      if (t === '(') out.push(list());
      else if (t === ')') return out;
      else out.push(t);
    }
    return out;
  };
  return list();
}

const VALTYPE: Record<string, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

const str = (s: string): number[] => {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
};
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];

// Instructions: opcode bytes and the kind of immediate. SIMD opcodes are 0xFD + uleb(op).
type Imm = 'none' | 'local' | 'func' | 'label' | 'block' | 'mem' | 'memlane' | 'lane' | 'i32' | 'f64' | 'shuffle';
const OPS: Record<string, [number[], Imm, number?]> = {};
const def = (imm: Imm, names: Record<string, number | number[]>, align?: number): void => {
  for (const [k, v] of Object.entries(names)) OPS[k] = [typeof v === 'number' ? [v] : v, imm, align];
};
const simd = (op: number): number[] => [0xfd, ...uleb(op)];
def('none', {
  unreachable: 0x00, nop: 0x01, else: 0x05, end: 0x0b, return: 0x0f, drop: 0x1a, select: 0x1b,
  'i32.eqz': 0x45, 'i32.eq': 0x46, 'i32.ne': 0x47, 'i32.lt_s': 0x48, 'i32.lt_u': 0x49, 'i32.gt_s': 0x4a,
  'i32.gt_u': 0x4b, 'i32.le_s': 0x4c, 'i32.le_u': 0x4d, 'i32.ge_s': 0x4e, 'i32.ge_u': 0x4f,
  'f64.eq': 0x61, 'f64.ne': 0x62, 'f64.lt': 0x63, 'f64.gt': 0x64, 'f64.le': 0x65, 'f64.ge': 0x66,
  'i32.add': 0x6a, 'i32.sub': 0x6b, 'i32.mul': 0x6c, 'i32.and': 0x71, 'i32.or': 0x72, 'i32.xor': 0x73,
  'i32.shl': 0x74, 'i32.shr_s': 0x75, 'i32.shr_u': 0x76, 'i32.rotl': 0x77, 'i32.rotr': 0x78,
  'f64.abs': 0x99, 'f64.neg': 0x9a, 'f64.sqrt': 0x9f, 'f64.add': 0xa0, 'f64.sub': 0xa1, 'f64.mul': 0xa2, 'f64.div': 0xa3,
  'f32.demote_f64': 0xb6, 'f64.convert_i32_s': 0xb7, 'f64.convert_i32_u': 0xb8, 'f64.promote_f32': 0xbb,
  'f64x2.splat': simd(0x14), 'f32x4.demote_f64x2_zero': simd(0x5e), 'f64x2.promote_low_f32x4': simd(0x5f),
  'f64x2.abs': simd(0xec), 'f64x2.neg': simd(0xed), 'f64x2.add': simd(0xf0), 'f64x2.sub': simd(0xf1),
  'f64x2.mul': simd(0xf2), 'f64x2.div': simd(0xf3),
});
def('local', { 'local.get': 0x20, 'local.set': 0x21, 'local.tee': 0x22 });
def('func', { call: 0x10 });
def('label', { br: 0x0c, br_if: 0x0d });
def('block', { block: 0x02, loop: 0x03, if: 0x04 });
def('mem', { 'i32.load': 0x28, 'i32.store': 0x36 }, 2);
def('mem', { 'f32.load': 0x2a, 'f32.store': 0x38 }, 2);
def('mem', { 'f64.load': 0x2b, 'f64.store': 0x39 }, 3);
def('mem', { 'v128.load': simd(0x00), 'v128.store': simd(0x0b) }, 4);
def('mem', { 'v128.load32_zero': simd(0x5c) }, 2);
def('mem', { 'v128.load64_zero': simd(0x5d) }, 3);
def('memlane', { 'v128.load32_lane': simd(0x56), 'v128.store32_lane': simd(0x5a) }, 2);
def('memlane', { 'v128.load64_lane': simd(0x57), 'v128.store64_lane': simd(0x5b) }, 3);
def('lane', { 'f64x2.extract_lane': simd(0x21), 'f64x2.replace_lane': simd(0x22) });
def('i32', { 'i32.const': 0x41 });
def('f64', { 'f64.const': 0x44 });
def('shuffle', { 'i8x16.shuffle': simd(0x0d) });

function head(x: Sexp): string | undefined {
  return Array.isArray(x) && typeof x[0] === 'string' ? x[0] : undefined;
}

function num(tok: Sexp | undefined, what: string): number {
  const v = typeof tok === 'string' ? Number(tok.replace(/_/g, '')) : NaN;
  if (!Number.isFinite(v)) throw new WatError(`${what}: expected a number, got ${JSON.stringify(tok)}`);
  return v;
}

interface Sig {
  params: number[];
  results: number[];
}

function sigKey(s: Sig): string {
  return `${s.params.join(',')}>${s.results.join(',')}`;
}

/** Reads (param $a i32) (result f64) (local $x f64) lists; returns where the instructions start. */
function signature(items: Sexp[], from: number, names: string[] | null): { sig: Sig; locals: number[]; next: number } {
  const sig: Sig = { params: [], results: [] };
  const locals: number[] = [];
  let k = from;
  for (; k < items.length && Array.isArray(items[k]); k++) {
    const [kind, ...rest] = items[k] as string[];
    if (kind === 'export') continue;
    const named = rest[0]?.startsWith('$');
    const types = (named ? rest.slice(1) : rest).map((t) => {
      if (!(t in VALTYPE)) throw new WatError(`unknown value type ${t}`);
      return VALTYPE[t];
    });
    if (kind === 'result') sig.results.push(...types);
    else if (kind === 'param' || kind === 'local') {
      (kind === 'param' ? sig.params : locals).push(...types);
      if (names) names.push(...types.map(() => (named ? rest[0] : '')));
    } else throw new WatError(`unexpected (${kind} …) in a function header`);
  }
  return { sig, locals, next: k };
}

/** Assembles `text` (the subset described above) into a WebAssembly binary. */
export function assemble(text: string): Uint8Array {
  const top = parse(text);
  const mod = top[0];
  if (top.length !== 1 || head(mod) !== 'module' || !Array.isArray(mod)) throw new WatError('expected one (module …)');
  const types: Sig[] = [];
  const typeIndex = (s: Sig): number => {
    const i = types.findIndex((t) => sigKey(t) === sigKey(s));
    return i >= 0 ? i : types.push(s) - 1;
  };
  const funcNames: string[] = [];
  const imports: number[][] = [];
  const funcs: Sexp[][] = [];
  for (const f of mod.slice(1)) {
    if (!Array.isArray(f)) throw new WatError(`unexpected ${f} in module`);
    if (head(f) === 'import') {
      const [, m, n, desc] = f as [string, string, string, Sexp[]];
      const name = [...str(m.slice(1, -1)), ...str(n.slice(1, -1))];
      if (head(desc) === 'memory') imports.push([...name, 0x02, 0x00, ...uleb(num(desc[1], 'memory'))]);
      else if (head(desc) === 'func') {
        funcNames.push(desc[1] as string);
        imports.push([...name, 0x00, ...uleb(typeIndex(signature(desc, 2, null).sig))]);
      } else throw new WatError(`unsupported import ${JSON.stringify(desc)}`);
    } else if (head(f) === 'func') {
      funcNames.push(f[1] as string);
      funcs.push(f);
    } else throw new WatError(`unsupported module field (${head(f)} …)`);
  }
  const nImported = funcNames.length - funcs.length;
  const exports: number[][] = [];
  const fnTypes: number[][] = [];
  const bodies: number[][] = [];
  funcs.forEach((f, fi) => {
    const exp = f.find((x) => head(x) === 'export') as string[] | undefined;
    if (exp) exports.push([...str(exp[1].slice(1, -1)), 0x00, ...uleb(nImported + fi)]);
    const localNames: string[] = [];
    const { sig, locals, next } = signature(f, 2, localNames);
    fnTypes.push(uleb(typeIndex(sig)));
    const code: number[] = [];
    const labels: string[] = [];
    const ins = f.slice(next) as string[];
    const ref = (tok: string, table: string[], what: string): number => {
      const i = tok.startsWith('$') ? table.indexOf(tok) : num(tok, what);
      if (i < 0) throw new WatError(`${String(f[1])}: unknown ${what} ${tok}`);
      return i;
    };
    for (let k = 0; k < ins.length; ) {
      const op = ins[k++];
      if (typeof op !== 'string' || !(op in OPS)) throw new WatError(`${String(f[1])}: unknown instruction ${JSON.stringify(op)}`);
      const [bytes, imm, align] = OPS[op];
      code.push(...bytes);
      if (op === 'end') labels.pop();
      if (imm === 'local') code.push(...uleb(ref(ins[k++], localNames, 'local')));
      else if (imm === 'func') code.push(...uleb(ref(ins[k++], funcNames, 'function')));
      else if (imm === 'label') {
        const l = ins[k++];
        const depth = l.startsWith('$') ? labels.length - 1 - labels.lastIndexOf(l) : num(l, 'label');
        if (depth >= labels.length) throw new WatError(`${String(f[1])}: unknown label ${l}`);
        code.push(...uleb(depth));
      } else if (imm === 'block') {
        labels.push(ins[k]?.startsWith('$') ? ins[k++] : '');
        code.push(0x40);
      } else if (imm === 'mem' || imm === 'memlane') {
        let offset = 0;
        let a = align ?? 0;
        for (; /^(offset|align)=/.test(ins[k] ?? ''); k++) {
          const [key, v] = ins[k].split('=');
          if (key === 'offset') offset = num(v, 'offset');
          else a = Math.log2(num(v, 'align'));
        }
        code.push(...uleb(a), ...uleb(offset));
        if (imm === 'memlane') code.push(num(ins[k++], 'lane'));
      } else if (imm === 'lane') code.push(num(ins[k++], 'lane'));
      else if (imm === 'i32') code.push(...sleb(num(ins[k++], 'i32.const') | 0));
      else if (imm === 'f64') {
        const b = new Uint8Array(8);
        new DataView(b.buffer).setFloat64(0, num(ins[k++], 'f64.const'), true);
        code.push(...b);
      } else if (imm === 'shuffle') for (let j = 0; j < 16; j++) code.push(num(ins[k++], 'shuffle lane'));
    }
    // Locals are declared one group per local (the simplest valid encoding).
    const body = [...vec(locals.map((t) => [1, t])), ...code, 0x0b];
    bodies.push([...uleb(body.length), ...body]);
  });
  const typeSec = vec(types.map((s) => [0x60, ...vec(s.params.map((p) => [p])), ...vec(s.results.map((r) => [r]))]));
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, typeSec),
    ...section(2, vec(imports)),
    ...section(3, vec(fnTypes)),
    ...section(7, vec(exports)),
    ...section(10, vec(bodies)),
  ]);
}
