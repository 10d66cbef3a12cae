"""limner's small CLIP: its tokenizer, the contrastive trainer (tiny, a few steps), and
the saved folder loading as any transformers CLIP does. Needs the Noto Color Emoji font."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from limner.clip.model import BOS, EOS, SmallClipConfig, build_clip, train_tokenizer
from limner.data.emoji import EmojiDataset, build_emoji_dataset
from limner.ranking import load_clip
from limner.training import trainers
from limner.training.clip import ClipTrainConfig
from limner.training.clip_loop import train_clip

CAPTIONS = [
    "a red apple to the left of a dog on a blue background",
    "an emoji of a cat on a green to navy gradient",
    "a dog above a taxi",
] * 20


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emoji") / "ds"
    return build_emoji_dataset(out, train_size=48, heldout_size=8, seed=5)


def _config(dataset: Path, out: Path, steps: int) -> ClipTrainConfig:
    return ClipTrainConfig(
        data=dataset,
        out=out,
        steps=steps,
        batch_size=4,
        warmup=1,
        checkpoint_every=2,
        validate_every=1000,
        validation_size=4,
        precision="fp32",
        width=16,
        layers=1,
        heads=2,
        vocab_size=400,
    )


def test_tokenizer_wraps_captions_and_splits_unseen_words():
    tok = train_tokenizer(CAPTIONS, vocab_size=300)
    ids = tok("a dog above a taxi")["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids(BOS) and ids[-1] == tok.convert_tokens_to_ids(EOS)
    unseen = tok("a xylophone")["input_ids"]  # no such word in the captions
    assert len(unseen) > 3 and tok.unk_token_id not in unseen
    assert tok.decode(unseen, skip_special_tokens=True).strip() == "a xylophone"


def test_text_model_pools_at_the_end_of_text_token():
    tok = train_tokenizer(CAPTIONS, vocab_size=300)
    model = build_clip(SmallClipConfig(vision_width=16, text_width=16, heads=2), tok).eval()
    short = tok(["a dog"], return_tensors="pt")
    padded = tok(["a dog"], padding="max_length", max_length=12, return_tensors="pt")
    with torch.no_grad():
        a = model.get_text_features(**short)
        b = model.get_text_features(**padded)
    a = a if isinstance(a, torch.Tensor) else a.pooler_output
    b = b if isinstance(b, torch.Tensor) else b.pooler_output
    assert torch.allclose(a, b, atol=1e-5)  # padding after the end token changes nothing


def test_trainer_is_registered():
    assert "clip" in trainers() and "evaluator" in trainers()


def test_training_resumes_exactly_and_saves_a_transformers_folder(dataset, tmp_path):
    train_clip(_config(dataset, tmp_path / "straight", 4), progress=False)
    train_clip(_config(dataset, tmp_path / "split", 2), progress=False)
    train_clip(_config(dataset, tmp_path / "split", 4), progress=False)
    a = load_clip(tmp_path / "straight" / "final").model.state_dict()
    b = load_clip(tmp_path / "split" / "final").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = tmp_path / "split" / "final"
    names = {p.name for p in final.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    } <= names
    assert "LICENSE-DATA.md" in names
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "clip"
    log = [json.loads(x) for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert any(r.get("resumed") for r in log) and np.isfinite(losses[-1])


def test_a_few_steps_lower_the_contrastive_loss(dataset, tmp_path):
    cfg = _config(dataset, tmp_path / "fit", 60)
    cfg.train_subset, cfg.batch_size, cfg.lr, cfg.width = 8, 8, 3e-3, 32
    train_clip(cfg, progress=False)
    log = [json.loads(x) for x in (tmp_path / "fit" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    # batches of 8 pairs: chance is ln 8 = 2.08; memorising 8 pairs must go well below
    assert losses[-1] < 1.2 < np.log(8)


def test_saved_model_scores_images(dataset, tmp_path):
    train_clip(_config(dataset, tmp_path / "run", 1), progress=False)
    scorer = load_clip(tmp_path / "run" / "final")
    ds = EmojiDataset(dataset, "train")
    scores = scorer.scores("a dog", [ds.image(0), ds.image(1), ds.image(2)])
    assert len(scores) == 3 and all(-100 <= s <= 100 for s in scores)
    assert scorer.preprocess.crop == (64, 64)
