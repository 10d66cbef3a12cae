"""Derive the CLIP BPE tokenizer files (vocab.json, merges.txt) from OpenAI's merge list.

The only pretrained tokenizer data available offline is the gzip'd merge list
``bpe_simple_vocab_16e6.txt.gz`` that OpenAI CLIP and open_clip (MIT licence) ship. Stable
Diffusion's text encoders (CLIP ViT-L/14 for SD 1.x / SDXL, OpenCLIP ViT-H/14 and ViT-bigG/14
for SD 2.x / SDXL) all use this exact vocabulary, so we rebuild the Hugging Face style files
from it once and ship the result under ``configs/clip_tokenizer/``.

Layout of the CLIP vocabulary (described in the CLIP paper's tokenizer and in open_clip's
``simple_tokenizer``; rebuilt here from that description):

1. the 256 byte-level base symbols of the GPT-2 byte/unicode table, in table order;
2. the same 256 symbols with the end-of-word marker ``</w>`` appended;
3. one token per merge rule, for the first ``49152 - 256 - 2`` lines after the header of the
   merge file (48 894 merges), the token being the two halves concatenated;
4. ``<|startoftext|>`` and ``<|endoftext|>``.

That gives 256 + 256 + 48 894 + 2 = 49 408 ids, the ``vocab_size`` of every SD text encoder.

Usage (run from the repository root)::

    pip download --no-deps open_clip_torch -d /tmp/oc
    unzip -o /tmp/oc/open_clip_torch-*.whl 'open_clip/bpe_simple_vocab_16e6.txt.gz' -d /tmp/oc
    python -m limner.checkpoints.make_clip_tokenizer \
        /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz src/limner/checkpoints/configs/clip_tokenizer
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP keeps the first 49152 - 256 - 2 merge lines: the vocabulary was capped at 49152 entries
# before the 256 "</w>" variants and the 2 special tokens were added.
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 256 + 256 + NUM_MERGES + 2
MERGES_HEADER = "#version: 0.2"


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for raw bytes, in GPT-2 table order.

    Bytes that are already visible Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves and come first, in byte order; every other byte (controls, space, soft hyphen, ...)
    is given the next unused code point from U+0100 upwards, again in byte order.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    visible += list(range(ord("®"), ord("ÿ") + 1))
    visible_set = set(visible)
    hidden = [b for b in range(256) if b not in visible_set]
    return [chr(b) for b in visible] + [chr(256 + n) for n in range(len(hidden))]


def read_merges(bpe_gz: Path) -> list[tuple[str, str]]:
    """Read the merge rules used by CLIP: lines 1..NUM_MERGES of the gzip'd file."""
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges: list[tuple[str, str]] = []
    for line in lines[1 : NUM_MERGES + 1]:
        left, right = line.split()
        merges.append((left, right))
    if len(merges) != NUM_MERGES:
        raise ValueError(f"{bpe_gz}: expected {NUM_MERGES} merge lines, found {len(merges)}")
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in CLIP order (see the module docstring)."""
    base = byte_symbols()
    tokens = base + [symbol + END_OF_WORD for symbol in base]
    tokens += [left + right for left, right in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"vocabulary has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab


def write_tokenizer_files(out_dir: Path, bpe_gz: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (Hugging Face BPE format) into ``out_dir``."""
    merges = read_merges(bpe_gz)
    vocab = build_vocab(merges)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path = out_dir / "vocab.json"
    merges_path = out_dir / "merges.txt"
    # Compact JSON with real UTF-8 characters keeps the shipped file at ~1 MB.
    vocab_path.write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    body = "\n".join(f"{left} {right}" for left, right in merges)
    merges_path.write_text(f"{MERGES_HEADER}\n{body}\n", encoding="utf-8")
    return vocab_path, merges_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bpe_gz", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("out_dir", type=Path, help="folder for vocab.json and merges.txt")
    args = parser.parse_args(argv)
    vocab_path, merges_path = write_tokenizer_files(args.out_dir, args.bpe_gz)
    print(f"wrote {vocab_path} ({VOCAB_SIZE} tokens) and {merges_path} ({NUM_MERGES} merges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
