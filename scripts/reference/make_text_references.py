#!/usr/bin/env python3
"""Reference data for ContextDiff's WordPiece tokenizer and MiniLM text encoder,
produced by Hugging Face transformers / sentence-transformers themselves.

Setup (Debian 12; torch 1.13 and numpy 1.24 from apt, visible through system site packages;
the numpy/scipy/scikit-learn pins keep pip from pulling a numpy 2 that torch 1.13 cannot use):

    /usr/bin/python3.11 -m venv --system-site-packages /tmp/tvenv
    /tmp/tvenv/bin/pip install "transformers==4.40.2" "sentence-transformers==2.7.0" \
        "huggingface_hub<0.26" "numpy<1.25" "scipy<1.12" "scikit-learn<1.4"
    HF_HUB_OFFLINE=1 /tmp/tvenv/bin/python scripts/reference/make_text_references.py

The model folder is the one scripts/setup.sh installs ($CONTEXTDIFF_MINILM_DIR, else
$XDG_CACHE_HOME/contextdiff/all-MiniLM-L6-v2, else ~/.cache/contextdiff/all-MiniLM-L6-v2);
nothing is downloaded from the hub.

Writes (relative to the repository root):

  Tests/ContextDiffTests/Fixtures/text_tokens.json
      For each sentence: the ids that sentence-transformers' own `model.tokenize([s])` gives
      (BertTokenizerFast, truncation "longest_first" at max_seq_length = 256, [CLS]/[SEP]),
      the matching token strings, and - where the slow Python BertTokenizer disagrees with
      the fast one - the slow ids too. Plus one padded batch (input_ids, attention_mask).
  Tests/ContextDiffTests/Fixtures/text_embeddings.json
      sentence-transformers' normalised sentence embeddings (384-d, mean pooling + L2),
      rounded to 7 significant digits.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
import tokenizers  # noqa: E402
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import BertTokenizer  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO_ROOT, "Tests", "ContextDiffTests", "Fixtures")


def model_dir():
    if os.environ.get("CONTEXTDIFF_MINILM_DIR"):
        return os.environ["CONTEXTDIFF_MINILM_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "contextdiff", "all-MiniLM-L6-v2")


# Each case: (name, text). Chosen to exercise every step of BERT's basic tokenizer and WordPiece.
TOKEN_CASES = [
    ("caption", "A red circle to the left of a blue square."),
    ("punctuation", "Hello, world! How's it going?"),
    ("accents", "Café naïve résumé — déjà vu."),
    ("all_caps", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"),
    ("whitespace", "   extra    spaces\tand\ttabs\nand newlines   \r\n"),
    ("empty", ""),
    ("only_whitespace", "   \n\t  "),
    ("hyphens", "state-of-the-art well-known co-operate"),
    ("apostrophes", "It's John's dog; don't you think? 'quoted' \"double\""),
    ("digits", "Numbers: 3.14159, 1,000,000 and 42nd street 2024-01-01"),
    ("emoji", "Emoji \U0001F600\U0001F680 and \U0001F972 here"),
    ("emoji_zwj", "\U0001F469\u200D\U0001F469\u200D\U0001F467 family \U0001F3F3\uFE0F\u200D\U0001F308 flag"),
    ("cjk", "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5 and \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4"),
    ("ascii_symbols", "Symbols: $100 #hashtag @user 50% a+b=c <tag> {x} [y] ~z ^ | \\ ` _under_"),
    ("long_words", "supercalifragilisticexpialidocious antidisestablishmentarianism"),
    ("unknown_words", "xqzvbnmwrtkpl qqqqqqqqq zzyzx"),
    ("rare_unicode", "\u03a9\u2248\u00e7\u221a\u222b\u02dc\u00b5\u2264\u2265\u00f7 \u0391\u0392\u0393\u0394 \u039f\u0394\u039f\u03a3 stra\u00dfe \ufb01 \u0130stanbul"),
    ("word_over_100_chars", "a" * 150 + " " + "b" * 100 + " end"),
    ("truncated", "the cat sat on the mat " * 60),
    ("control_chars", "tab\u0000null\u200bzero-width\u00adsoft\ufeffbom\u0007bell\ufffdreplacement"),
    ("special_tokens", "[CLS] literal [MASK] token [SEP] and [mask] [UNK]"),
    ("mixed_case_accents", "Mixed CASE with \u00dcn\u00efc\u00f6d\u00e9 \u00c0\u00c9\u00ce\u00d5\u00dc"),
    ("other_scripts", "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \u0928\u092e\u0938\u094d\u0924\u0947"),
    ("abbreviations", "e.g. U.S.A. ... !!! ??? --- ''"),
    ("nonbreaking_spaces", "non\u00a0breaking\u2003em\u3000ideographic\u2028line"),
    ("fullwidth", "\uff26\uff35\uff2c\uff2c\uff37\uff29\uff24\uff34\uff28 \uff11\uff12\uff13"),
    ("combining", "e\u0301 vs \u00e9 and n\u0303"),
    ("only_punctuation", "?!...,;"),
    ("prompt", "A photo of two small green triangles above a large yellow circle"),
    # Where the fast (Rust) and slow (Python) tokenizers disagree; the fast one is the reference.
    ("unassigned_code_point", "a\u0378b c"),
    ("cjk_extension_blocks", "a\U0002B820b a\U0002B920b"),
]

BATCH_CASES = ["a cat", "", "A red circle to the left of a blue square.", "Café"]

EMBEDDING_CASES = [
    "A red circle to the left of a blue square.",
    "a photo of two small green triangles above a large yellow circle",
    "Café naïve résumé — déjà vu.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "",
    "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5 and emoji \U0001F600",
    "state-of-the-art well-known co-operate, it's 3.14!",
    "the cat sat on the mat " * 60,
]


def round7(x):
    return float("%.7g" % x)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=model_dir())
    parser.add_argument("--out", default=FIXTURES)
    args = parser.parse_args()

    torch.set_num_threads(2)
    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    fast = model.tokenizer
    slow = BertTokenizer.from_pretrained(args.model)
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
    max_len = model.max_seq_length

    cases = []
    for name, text in TOKEN_CASES:
        features = model.tokenize([text])
        ids = features["input_ids"][0].tolist()
        mask = features["attention_mask"][0].tolist()
        assert all(m == 1 for m in mask), name
        entry = {"name": name, "text": text, "ids": ids, "tokens": fast.convert_ids_to_tokens(ids)}
        slow_ids = slow(text, truncation="longest_first", max_length=max_len)["input_ids"]
        if slow_ids != ids:
            entry["slow_ids"] = slow_ids
        cases.append(entry)

    batch = model.tokenize(BATCH_CASES)
    tokens_doc = {
        "generator": "scripts/reference/make_text_references.py",
        "versions": versions,
        "tokenizer_class": type(fast).__name__,
        "max_seq_length": max_len,
        "cases": cases,
        "batch": {
            "texts": BATCH_CASES,
            "input_ids": batch["input_ids"].tolist(),
            "attention_mask": batch["attention_mask"].tolist(),
        },
    }

    with torch.no_grad():
        emb = model.encode(EMBEDDING_CASES, batch_size=len(EMBEDDING_CASES), convert_to_numpy=True,
                           normalize_embeddings=False)
    embeddings_doc = {
        "generator": "scripts/reference/make_text_references.py",
        "versions": versions,
        "max_seq_length": max_len,
        "cases": [
            {"text": text, "embedding": [round7(float(v)) for v in row]}
            for text, row in zip(EMBEDDING_CASES, emb)
        ],
    }

    os.makedirs(args.out, exist_ok=True)
    for filename, doc in (("text_tokens.json", tokens_doc), ("text_embeddings.json", embeddings_doc)):
        path = os.path.join(args.out, filename)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
            f.write("\n")
        os.replace(path + ".tmp", path)
        print(f"wrote {path}", file=sys.stderr)
    differing = [c["name"] for c in cases if "slow_ids" in c]
    print(f"slow tokenizer differs from fast on: {differing or 'none'}", file=sys.stderr)


if __name__ == "__main__":
    main()
