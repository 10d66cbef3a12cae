"""Ranking candidates by CLIP score (`--candidates N --keep K`): with a CLIP folder laid out
as real CLIP weights are (CLIP BPE tokenizer, no preprocessor config), with bad folders,
through the API (kept images remake byte for byte) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from limner import api
from limner.cli import main
from limner.errors import InvalidRequestError, ModelLoadError
from limner.ranking import (
    OPENAI_MEAN,
    ImagePreprocess,
    best_indices,
    cached_clip,
    load_clip,
    plain_prompt,
)
from limner.requests import GenerationRequest
from tiny_models import make_image

PROMPT = "a red apple on a wooden table"


@pytest.fixture(scope="module")
def real_layout_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIPModel saved as real CLIP folders are: CLIP's own BPE tokenizer
    (49408 tokens, shipped with limner), safetensors, no preprocessor_config.json."""
    from transformers import CLIPConfig, CLIPModel

    from limner.checkpoints.component_configs import load_clip_tokenizer

    tok = load_clip_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        projection_dim=8,
    )
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def test_best_indices_best_first_ties_to_the_earlier():
    assert best_indices([0.1, 0.9, 0.5, 0.9], 3) == [1, 3, 2]
    with pytest.raises(InvalidRequestError):
        best_indices([0.1, 0.2], 3)


def test_plain_prompt_drops_a1111_syntax():
    assert (
        plain_prompt("a (red:1.3) apple BREAK on [blue] ((grass))") == "a red apple on blue grass"
    )


def test_preprocess_defaults_to_openai_and_crops_the_centre(tmp_path):
    pre = ImagePreprocess.from_folder(tmp_path, 32)
    assert pre.mean == OPENAI_MEAN and pre.crop == (32, 32)
    wide = Image.new("RGB", (96, 48), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 12, 48))  # a blue band on the far left: cropped away
    x = pre([wide])
    assert x.shape == (1, 3, 32, 32)
    red = (1 - OPENAI_MEAN[0]) / 0.26862954
    assert torch.allclose(x[0, 0], torch.full((32, 32), red), atol=1e-3)


def test_scores_with_a_real_layout_folder(real_layout_clip):
    scorer = load_clip(real_layout_clip)
    images = [make_image(64, seed=s) for s in range(3)]
    scores = scorer.scores("a (red:1.2) apple", images)
    assert len(scores) == 3 and len(set(scores)) == 3
    # the same image gets the same score wherever it stands in the list
    assert scorer.scores("a (red:1.2) apple", images[::-1]) == pytest.approx(scores[::-1], abs=1e-4)


def test_bad_clip_folders_are_refused_with_a_reason(tmp_path, real_layout_clip):
    with pytest.raises(ModelLoadError, match="not found"):
        load_clip(tmp_path / "missing")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ModelLoadError, match="limner convert"):
        load_clip(pickled)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a CLIP model"):
        load_clip(other)


def test_request_validation():
    with pytest.raises(ValueError, match="cannot keep 3 of 2"):
        GenerationRequest(prompt="x", candidates=2, keep=3)
    with pytest.raises(ValueError, match="need candidates"):
        GenerationRequest(prompt="x", keep=2)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        GenerationRequest(prompt="x", candidates=5, batch_size=2)
    with pytest.raises(ValueError, match="batch_count"):
        GenerationRequest(prompt="x", candidates=4, batch_count=2)
    assert GenerationRequest(prompt="x", candidates=6, batch_size=2).total_images == 6


def test_generate_keeps_the_best_candidates_and_they_remake(tiny_sd1, real_layout_clip, tmp_path):
    req = GenerationRequest(
        prompt=PROMPT,
        model=tiny_sd1,
        steps=2,
        seed=10,
        candidates=4,
        keep=2,
        batch_size=2,
        clip=str(real_layout_clip),
    )
    kept = api.generate(req)
    assert len(kept) == 2
    everything = api.generate(
        req.model_copy(update={"candidates": None, "keep": 1, "clip": None, "batch_count": 2})
    )
    scores = cached_clip(real_layout_clip).scores(PROMPT, [g.image for g in everything])
    want = best_indices(scores, 2)
    assert [g.index for g in kept] == want
    assert [g.seed for g in kept] == [10 + i for i in want]
    assert kept[0].clip_score == pytest.approx(scores[want[0]], abs=1e-4)
    path = api.save_images(kept[1:], tmp_path / "kept.png")[0]
    again = api.generate_from(path)
    assert again.image.tobytes() == Image.open(path).convert("RGB").tobytes()


def test_cli_candidates(tiny_sd1, real_layout_clip, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            PROMPT,
            "--model",
            tiny_sd1,
            "--steps",
            "2",
            "--seed",
            "1",
            "--candidates",
            "3",
            "--keep",
            "2",
            "--clip",
            str(real_layout_clip),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert len(list(out.glob("*.png"))) == 2
    capsys.readouterr()
    code = main(["generate", PROMPT, "--model", tiny_sd1, "--candidates", "2", "--keep", "3"])
    assert code == 2
    assert "cannot keep 3 of 2 candidates" in capsys.readouterr().err


def test_cli_bad_clip_folder_fails_before_generating(tiny_sd1, tmp_path, capsys):
    code = main(
        [
            "generate",
            PROMPT,
            "--model",
            tiny_sd1,
            "--candidates",
            "2",
            "--clip",
            str(tmp_path / "nope"),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    assert code == 4
    assert "CLIP model folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_shipped_clip_matches_captions_to_their_scenes(tmp_path):
    """limner's small CLIP, as shipped: each of 8 held-out captions should pick its own
    render among the 8 far more often than chance (1 in 8)."""
    from limner.data.emoji import EmojiDataset, build_emoji_dataset

    ds = EmojiDataset(build_emoji_dataset(tmp_path / "ds", train_size=0, heldout_size=8), "heldout")
    scorer = load_clip()  # the built-in one
    images = [ds.image(i) for i in range(8)]
    hits = sum(
        best_indices(scorer.scores(ds.record(i)["caption"], images), 1) == [i] for i in range(8)
    )
    assert hits >= 4
