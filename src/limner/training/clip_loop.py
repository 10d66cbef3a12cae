"""`limner train clip`: contrastive training of limner's small CLIP on the emoji dataset.

Pairs are real renders of training scenes and their captions; the loss is CLIP's symmetric
cross-entropy over the batch's image-text similarities (transformers' `CLIPModel` with
`return_loss=True`). Images get the evaluator's light softening and noise, so that the
model ranks the softer pictures of a diffusion model by content. The tokenizer is trained
first, on the training captions only, and kept in the run folder so a resumed run uses
the same one. Resumable, seeded by (seed, step), bf16 autocast where the CPU has it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from limner.clip.model import SmallClipConfig, build_clip, save_clip, train_tokenizer
from limner.data.emoji import EmojiDataset, Scene, render_scene
from limner.errors import InputFileError, InvalidRequestError
from limner.evaluation.evaluator import images_to_tensor
from limner.training.clip import ClipTrainConfig
from limner.training.common import autocast, step_rng, uses_bf16
from limner.training.evaluator_loop import (
    append_log,
    augment,
    cosine_lr,
    load_checkpoint,
    resume_if_present,
    save_checkpoint,
)

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
TOKENIZER = "tokenizer"
FINAL = "final"
TOKENIZER_CAPTIONS = 50_000  # training captions the BPE is learnt from


def zero_shot_prompts(names: list[str]) -> list[str]:
    """One caption per concept, in a training template ("an emoji of ...")."""
    from limner.data.emoji import with_article

    return [f"an emoji of {with_article(n)}" for n in names]


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, ds: EmojiDataset, n: int) -> dict:
    """Top-1/top-5 concept accuracy of the CLIP as a zero-shot classifier on held-out
    single-emoji real renders (a ceiling for its ranking of generated images)."""
    was_training = model.training
    model.eval()
    names = [c.name for c in ds.concepts]
    tokens = tokenizer(zero_shot_prompts(names), padding=True, truncation=True, return_tensors="pt")
    text = _features(model.get_text_features(**tokens))
    text = text / text.norm(dim=-1, keepdim=True)
    recs = [ds.record(i) for i in range(len(ds))]
    singles = [r for r in recs if len(r["scene"]["items"]) == 1][:n]
    images = [render_scene(Scene.from_json(r["scene"]), ds.sprites) for r in singles]
    size = model.config.vision_config.image_size
    img = _features(model.get_image_features(pixel_values=images_to_tensor(images, size)))
    img = img / img.norm(dim=-1, keepdim=True)
    order = (img @ text.T).argsort(dim=1, descending=True)
    truth = torch.tensor([r["scene"]["items"][0]["id"] for r in singles])
    model.train(was_training)
    return {
        "count": len(singles),
        "top1": float((order[:, 0] == truth).float().mean()),
        "top5": float((order[:, :5] == truth[:, None]).any(dim=1).float().mean()),
    }


def _features(out) -> torch.Tensor:
    """transformers 4 returns the projected tensor, 5 an output whose pooler_output it is."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def train_clip(
    cfg: ClipTrainConfig, *, say: Callable[[str], None] = lambda _m: None, progress: bool = True
) -> dict:
    """Train (or resume); writes the fp16 transformers folder `cfg.out/final`."""
    from transformers import AutoTokenizer

    if cfg.steps < 1 or cfg.batch_size < 2:
        raise InvalidRequestError("CLIP training needs at least 1 step and batches of 2 or more")
    train = EmojiDataset(cfg.data, "train")
    heldout = EmojiDataset(cfg.data, "heldout")
    n_train = len(train) if cfg.train_subset is None else min(cfg.train_subset, len(train))
    if n_train < 2:
        raise InputFileError(f"{cfg.data} has too few training scenes")
    cfg.out.mkdir(parents=True, exist_ok=True)
    arch = SmallClipConfig(
        vision_width=cfg.width,
        text_width=cfg.width,
        vision_layers=cfg.layers,
        text_layers=cfg.layers,
        heads=cfg.heads,
        vocab_size=cfg.vocab_size,
    )
    tok_dir = cfg.out / TOKENIZER
    if (tok_dir / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    else:
        captions = (train.record(i)["caption"] for i in range(min(TOKENIZER_CAPTIONS, n_train)))
        tokenizer = train_tokenizer(captions, arch.vocab_size)
        tokenizer.save_pretrained(tok_dir)
    (cfg.out / "train_config.json").write_text(
        json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}, indent=1
        )
    )

    torch.manual_seed(cfg.seed)
    model = build_clip(arch, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = resume_if_present(cfg.out, model, opt, cfg.steps, say)
    bf16 = uses_bf16(cfg.precision)
    say(
        f"clip: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"vocabulary {len(tokenizer)}, {n_train} training pairs, bf16 autocast {'on' if bf16 else 'off'}"
    )

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc="clip",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    model.train()
    record: dict = {}
    ema = None
    t_last, pairs_since = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        rng = step_rng(cfg.seed, step)
        idx = rng.integers(0, n_train, cfg.batch_size)
        recs = [train.record(int(i)) for i in idx]
        images = [render_scene(Scene.from_json(r["scene"]), train.sprites) for r in recs]
        pixels = augment(images_to_tensor(images, arch.image_size), rng)
        tokens = tokenizer(
            [r["caption"] for r in recs], padding=True, truncation=True, return_tensors="pt"
        )
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        with autocast(cfg.precision):
            out = model(**tokens, pixel_values=pixels, return_loss=True)
        loss = out.loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP clips its temperature at 100
            model.logit_scale.clamp_(0, 4.6052)
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        pairs_since += cfg.batch_size
        bar.update(1)
        now = time.perf_counter()
        bar.set_postfix(loss=f"{ema:.3f}", pairs_s=f"{pairs_since / max(now - t_last, 1e-9):.0f}")
        done = step + 1
        if done % 25 == 0 or done == cfg.steps:
            record = {
                "step": done,
                "loss": value,
                "loss_ema": ema,
                "pairs_per_s": pairs_since / max(now - t_last, 1e-9),
                "time": time.time(),
            }
            t_last, pairs_since = now, 0
            append_log(cfg.out / LOG, record)
        if done % cfg.validate_every == 0 or done == cfg.steps:
            val = zero_shot_accuracy(model, tokenizer, heldout, cfg.validation_size)
            append_log(cfg.out / LOG, {"step": done, "validation": val})
            say(f"step {done}: zero-shot on held-out real renders {json.dumps(val)}")
            record = {**record, "validation": val}
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_checkpoint(
                cfg.out / CHECKPOINT,
                model=model.state_dict(),
                optimizer=opt.state_dict(),
                step=done,
            )
    bar.close()
    final = save_clip(model, tokenizer, cfg.out / FINAL)
    licence = Path(cfg.data) / "LICENSE-DATA.md"
    if licence.is_file():
        (final / "LICENSE-DATA.md").write_text(
            licence.read_text(encoding="utf-8"), encoding="utf-8"
        )
    say(f"clip weights: {final}")
    return record


def export_clip(run_dir: Path, data: Path, dest: Path) -> Path:
    """Write the run's latest checkpoint as an fp16 transformers CLIP folder (what ships)."""
    from transformers import AutoTokenizer

    ckpt = Path(run_dir) / CHECKPOINT
    if not ckpt.is_file():
        raise InputFileError(f"no checkpoint to export: {ckpt} not found")
    saved = json.loads((Path(run_dir) / "train_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(Path(run_dir) / TOKENIZER, local_files_only=True)
    arch = SmallClipConfig(
        vision_width=saved.get("width", 192),
        text_width=saved.get("width", 192),
        vision_layers=saved.get("layers", 3),
        text_layers=saved.get("layers", 3),
        heads=saved.get("heads", 3),
        vocab_size=saved.get("vocab_size", 4096),
    )
    model = build_clip(arch, tokenizer)
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    final = save_clip(model, tokenizer, Path(dest))
    licence = Path(data) / "LICENSE-DATA.md"
    if licence.is_file():
        (final / "LICENSE-DATA.md").write_text(
            licence.read_text(encoding="utf-8"), encoding="utf-8"
        )
    return final
