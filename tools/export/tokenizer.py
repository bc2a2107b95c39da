"""A Hugging Face tokenizer.json equal to open_clip's SimpleTokenizer, built offline from the BPE
vocabulary that open_clip ships inside its own package (bpe_simple_vocab_16e6.txt.gz).

DynamiCrafter and VideoCrafter1 tokenize prompts with `open_clip.tokenize` (context 77, pad id 0);
the worker reads a tokenizer.json through @huggingface/tokenizers (gpu-worker/src/tokenizer.ts).
Generating the file here, from the very vocabulary open_clip uses, removes the hub download and
any doubt about which vocabulary a downloaded file carries. The test suite
(tools/reference/tests/test_tokenizer.py, test/reference-tokenizer.test.ts) proves the ids equal.

What open_clip does (tokenizer.py, clean='lower'), and how each step is mapped:
  ftfy.fix_text: per-character fixes (C1 controls, ligatures,  -> Replace normalizers from ftfy's
      width forms, curly quotes, control characters), NFC           own tables (ftfy_char_map), NFC
  ftfy.fix_text: mojibake repair, HTML entities                -> not reproduced (context-dependent;
                                                                  docs/models.md §3 lists them)
  html.unescape twice                                         -> not reproduced (same list)
  " ".join(text.split()), strip, lower()                      -> Replace(\\s+, " "), Lowercase
  regex <specials>|'s|'t|...|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+ -> Split(same regex, invert)
  bytes -> unicode table, BPE with '</w>' ending each word     -> ByteLevel(no regex) + BPE
  [<start_of_text>] + ids + [<end_of_text>]                    -> TemplateProcessing
Padding (0, 77) and truncation are added by tools/export/bundle.py's prepare_tokenizer; the worker
truncates keeping the end token, as open_clip does.

CLI: python -m tools.export.tokenizer --out tokenizer.json
"""
import argparse
import gzip
import json
import os

# open_clip keeps the first 49152 - 256 - 2 merges of the file (line 0 is a version header).
_MERGES = 49152 - 256 - 2
_SOT, _EOT = "<start_of_text>", "<end_of_text>"
# open_clip's word regex, special tokens excluded (they become added tokens, matched first).
_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# ftfy's ANSI terminal escapes (ftfy.fixes.ANSI_RE), removed before its per-character fixes.
_FINAL_SIGMA = r"(?<=[\p{Lu}\p{Ll}\p{Lt}])Σ(?![\p{Lu}\p{Ll}\p{Lt}])"
_ANSI_ESCAPE = r"\x1b\[[0-9;]*[a-zA-Z]"


def _bytes_to_unicode():
    """GPT-2/CLIP's reversible byte -> printable character table (same as ByteLevel's)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def ftfy_char_map():
    """{char: replacement} for ftfy's context-free per-character fixes, taken from ftfy itself.

    fix_text runs, on every prompt: C1 controls read as Windows-1252, Latin ligatures split,
    full/half-width forms to standard width, curly quotes straightened, control characters
    removed (in that order, to a fixed point). Each depends on the character alone, so a table
    of single-character replacements reproduces it exactly. (ftfy's mojibake repair and HTML
    unescaping depend on context and are not reproduced; docs/models.md §3.)
    """
    from ftfy import fixes
    from ftfy.chardata import CONTROL_CHARS, LIGATURES, WIDTH_MAP

    steps = (fixes.fix_c1_controls, fixes.fix_latin_ligatures, fixes.fix_character_width, fixes.uncurl_quotes, fixes.remove_control_chars)

    def fix(text):
        while True:
            before = text
            for step in steps:
                text = step(text)
            if text == before:
                return text

    quotes = [0x02BC, *range(0x2018, 0x2020)]
    candidates = sorted(set(range(0x80, 0xA0)) | set(LIGATURES) | set(WIDTH_MAP) | set(CONTROL_CHARS) | set(quotes))
    return {chr(c): fix(chr(c)) for c in candidates if fix(chr(c)) != chr(c)}


def _ftfy_normalizers():
    """Replace normalizers for ftfy_char_map(): one per target, sources as a \\uHHHH class (a
    syntax both Oniguruma (Rust tokenizers) and JavaScript's u-regexes read the same)."""
    from tokenizers import Regex, normalizers

    by_target = {}
    for src, dst in ftfy_char_map().items():
        by_target.setdefault(dst, []).append(src)
    out = [normalizers.Replace(Regex(_ANSI_ESCAPE), "")]
    for dst, srcs in sorted(by_target.items(), key=lambda kv: [ord(c) for c in kv[1]]):
        if max(map(ord, srcs)) > 0xFFFF:
            raise ValueError("ftfy table reaches beyond the BMP; \\uHHHH classes cannot express it")
        out.append(normalizers.Replace(Regex("[" + "".join(f"\\u{ord(c):04X}" for c in srcs) + "]"), dst))
    return out


def open_clip_bpe_path():
    """The vocabulary file inside the installed open_clip package (no download)."""
    import open_clip.tokenizer
    return open_clip.tokenizer.default_bpe()


def read_vocab_and_merges(bpe_path=None):
    """(vocab dict token -> id, merges list of 'a b') exactly as SimpleTokenizer builds them."""
    with gzip.open(bpe_path or open_clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:_MERGES + 1]]
    base = list(_bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [_SOT, _EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{bpe_path}: duplicate tokens in the vocabulary")
    return vocab, [" ".join(m) for m in merges]


def build_clip_tokenizer(bpe_path=None):
    """A `tokenizers.Tokenizer` equal to open_clip.tokenize before padding (see module doc)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = read_vocab_and_merges(bpe_path)
    merges = [tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>", unk_token=None, fuse_unk=False))
    tok.normalizer = normalizers.Sequence([
        *_ftfy_normalizers(),
        normalizers.NFC(),
        normalizers.Replace(Regex(r"\s+"), " "),
        # Python's str.lower() turns a word-final capital sigma into ς; tokenizers' Lowercase maps
        # characters one by one (σ). Cased letter before, none after: the common case of the rule.
        normalizers.Replace(Regex(_FINAL_SIGMA), "ς"),
        normalizers.Lowercase(),
    ])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # open_clip matches its special tokens in the lower-cased text, so they are normalized here too.
    tok.add_special_tokens([AddedToken(_SOT, normalized=True, special=True), AddedToken(_EOT, normalized=True, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{_SOT} $A {_EOT}", pair=f"{_SOT} $A {_EOT} $B {_EOT}",
        special_tokens=[(_SOT, vocab[_SOT]), (_EOT, vocab[_EOT])])
    return tok


def write_clip_tokenizer_json(path, bpe_path=None):
    """Writes the tokenizer.json (no padding or truncation: the exporter fixes those to 0 / 77)."""
    tok = build_clip_tokenizer(bpe_path)
    data = json.loads(tok.to_str())
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.export.tokenizer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="where to write tokenizer.json")
    ap.add_argument("--bpe", default=None, help="BPE vocabulary (default: the one inside the installed open_clip)")
    a = ap.parse_args(argv)
    write_clip_tokenizer_json(a.out, a.bpe)
    print(f"wrote {a.out} (open_clip vocabulary {a.bpe or open_clip_bpe_path()})")


if __name__ == "__main__":
    main()
