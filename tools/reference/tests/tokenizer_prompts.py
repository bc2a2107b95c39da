"""Prompts on which tools/export/tokenizer.py must equal open_clip.tokenize, shared by
tools/reference/tests/test_tokenizer.py and test/reference-tokenizer.test.ts."""

_LONG = " ".join(f"word{i}" for i in range(60))

# Every class must give the same 77 ids as open_clip.tokenize.
PROMPTS = [
    "",
    " ",
    "a",
    "A cat sitting on a mat",
    "a corgi running on the beach, golden hour, 4k",
    "A CORGI RUNNING ON THE BEACH",
    "MiXeD CaSe WoRdS",
    "time-lapse of clouds over the mountains",
    "rocket launch!!! 🚀🚀",
    "fireworks... bang? wow!?",
    "don't stop, we're here, it's fine, they've gone, I'm ok, you'll see, he'd go",
    "DON'T STOP WE'RE HERE",
    "rock 'n' roll",
    "“curly quotes” and ‘single’ ones, it’s here",
    "the year 2024, 3.14159, 1,000,000 and 42nd street",
    "1080p 60fps 16:9 f/1.8",
    "    leading and trailing spaces    ",
    "multiple     spaces\tand\ttabs\nand\nnewlines\r\nand crlf",
    "non\u00a0breaking\u2003em\u3000ideographic spaces",
    "café naïve résumé jalapeño",
    "cafe\u0301 with a combining accent (NFD)",
    "Straße ÅNGSTRÖM Ελληνικά ΟΔΟΣ",
    "Σ alone, ΣΟΦΙΑ, ΟΔΟΣ. ΟΔΟΣ' ΟΔΟΣΣ",  # Python's final-sigma rule
    "日本語のテキスト 中文提示 한국어",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３！",
    "ﬁne ﬂowers ﬀ ligatures",
    "emoji 😀👍🏽👨‍👩‍👧 flags 🇫🇷",
    "math ∑ ∫ √ ≈ ≠ ± × ÷ ° ² ½",
    "symbols @#$%^&*()_+-=[]{}|;:,.<>/?~`",
    "back\\slash and \"double quotes\" and 'single quotes'",
    "salt & pepper, R&D, AT&T",
    "email me@example.com and https://example.com/path?q=1",
    "hashtag #sunset @user",
    "under_score snake_case CamelCase",
    "a dog" * 5,
    "Ünïcödé ÜBER alles",
    "İstanbul DİYARBAKIR",
    "ǅungla Ǳ ǆ",
    "x" * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "tab\tseparated\tvalues",
    "zero\u200bwidth space",
    "bell\x07 and escape\x1b[31mred\x1b[0m text",
    "c1 controls \x91quoted\x92 \x93double\x94 \x85",
    "\ufeffbyte order mark",
    "soft\u00adhyphen",
    "arabic مرحبا hebrew שלום hindi नमस्ते thai สวัสดี",
    "cyrillic ПРИВЕТ мир",
    "<start_of_text> and <end_of_text> in the prompt",
    "<START_OF_TEXT> upper",
    "<|startoftext|> hf style <|endoftext|>",
    _LONG,
    _LONG + " " + _LONG,
    "a " * 75,
    "a " * 76,
    "a " * 200,
]

# Classes where the two are known to differ (docs/models.md §3): ftfy's context-dependent repairs.
KNOWN_DIFFERENT = [
    "cafÃ© mojibake",               # ftfy repairs UTF-8 read as Latin-1
    "it\u00e2\u0080\u0099s broken",  # UTF-8 of ’ read as Latin-1, then curly -> straight
    "itâ€™s broken too",             # ... read as Windows-1252
    "fish &amp; chips &lt;3",       # html.unescape (open_clip, twice) and ftfy's own unescape
    "caf&eacute; &#233;",
]
