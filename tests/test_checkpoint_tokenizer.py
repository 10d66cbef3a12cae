"""The shipped CLIP tokenizer files and the script that derives them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from limner.checkpoints import make_clip_tokenizer as mct
from limner.checkpoints.component_configs import configs_dir, load_clip_tokenizer

ASTRONAUT = "a photo of an astronaut riding a horse"
# Ids of the CLIP tokenizer for this prompt (the diffusers / CLIP documentation example).
ASTRONAUT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
TOKENIZER_DIR = configs_dir() / "clip_tokenizer"


def _shipped_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    lines = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == mct.MERGES_HEADER
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    return vocab, merges  # type: ignore[return-value]


def test_plain_clip_tokenizer_known_ids() -> None:
    vocab, merges = _shipped_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    assert tokenizer(ASTRONAUT).input_ids == ASTRONAUT_IDS


def test_from_pretrained_folder_offline() -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)
    assert tokenizer(ASTRONAUT).input_ids == ASTRONAUT_IDS
    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token_id == 49407


@pytest.mark.parametrize(("pad", "pad_id"), [("endoftext", 49407), ("bang", 0)])
def test_shipped_tokenizers_pad_and_truncate(pad: str, pad_id: int) -> None:
    tokenizer = load_clip_tokenizer(pad)  # type: ignore[arg-type]
    assert tokenizer(ASTRONAUT).input_ids == ASTRONAUT_IDS
    assert tokenizer.pad_token_id == pad_id
    padded = tokenizer(ASTRONAUT, padding="max_length", truncation=True).input_ids
    assert len(padded) == 77 and padded[:10] == ASTRONAUT_IDS and set(padded[10:]) == {pad_id}
    long = tokenizer("word " * 200, padding="max_length", truncation=True).input_ids
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407


def test_vocab_layout() -> None:
    symbols = mct.byte_symbols()
    assert len(symbols) == len(set(symbols)) == 256
    assert symbols[0] == "!" and symbols[93] == "~"  # visible ASCII first, in byte order
    assert symbols[-1] == chr(256 + 67)  # 68 invisible bytes get U+0100..U+0143
    vocab, merges = _shipped_vocab_and_merges()
    assert len(vocab) == mct.VOCAB_SIZE == 49408
    assert len(merges) == mct.NUM_MERGES == 48894
    assert mct.build_vocab(merges) == vocab
    assert vocab["!</w>"] == 256 and vocab["<|startoftext|>"] == 49406


def test_script_rebuilds_the_shipped_files(tmp_path: Path) -> None:
    # Recreate an input shaped like open_clip's bpe_simple_vocab_16e6.txt.gz from the shipped
    # merges (plus filler lines past the cut-off, which the script must ignore).
    _, merges = _shipped_vocab_and_merges()
    lines = ['"bpe_simple_vocab_16e6.txt#version: 0.2']
    lines += [f"{left} {right}" for left, right in merges] + ["zz zz", "yy yy"]
    bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bpe.write_bytes(gzip.compress("\n".join(lines).encode("utf-8")))
    out = tmp_path / "tokenizer"
    assert mct.main([str(bpe), str(out)]) == 0
    for name in ("vocab.json", "merges.txt"):
        assert (out / name).read_bytes() == (TOKENIZER_DIR / name).read_bytes()
