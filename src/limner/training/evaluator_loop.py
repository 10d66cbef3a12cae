"""`limner train evaluator`: train the emoji evaluator on real renders of the training split.

The evaluator never sees a generated image: its inputs are scenes rendered from the
dataset's specs (`limner data emoji`), lightly blurred and noised so that it judges the
softer pictures a diffusion model makes by their content, not by their sharpness. The
target of each cell of its 8x8 output grid is the emoji whose drawn box covers the cell's
centre, else background (see `limner.evaluation.evaluator`).

Runs are resumable (a checkpoint every `checkpoint_every` steps, read back with
`torch.load(weights_only=True)`), the data order and augmentations are functions of
(seed, step), and bf16 autocast is used where it is faster than fp32 on this CPU.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from limner.data.emoji import EmojiDataset, Scene, Sprites, render_scene
from limner.errors import InputFileError, InvalidRequestError
from limner.evaluation.evaluator import (
    EmojiEvaluator,
    Evaluator,
    EvaluatorConfig,
    images_to_tensor,
    save_evaluator,
)
from limner.evaluation.metrics import score_image, summarise
from limner.training.common import autocast, step_rng, uses_bf16
from limner.training.evaluator import EvaluatorTrainConfig

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
FINAL = "final"


# ------------------------------------------------------------------------------------------
# Checkpoints and schedule (plain dicts of tensors: these runs have no EMA)
# ------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, **state) -> None:
    """Write atomically: a crash while saving never leaves a broken checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return float(peak * (step + 1) / warmup)
    t = (step - warmup) / max(1, total - warmup)
    return float(peak * 0.5 * (1 + np.cos(np.pi * min(1.0, t))))


def append_log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def resume_if_present(out: Path, model, optimizer, steps: int, say) -> int:
    """Restore model and optimizer from the run folder's checkpoint, if there is one (and
    log the resume); the step to continue from (0 for a fresh run)."""
    path = out / CHECKPOINT
    if not path.is_file():
        return 0
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = int(state["step"])
    say(f"resumed from {path} at step {start}")
    append_log(out / LOG, {"step": start, "resumed": True, "steps": steps})
    return start


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------


def drawn_boxes(
    scene: Scene, sprite_sizes: Sequence[tuple[int, int]]
) -> list[tuple[int, float, float, float, float]]:
    """(concept, x0, y0, x1, y1) of each emoji's drawn pixels, as `render_scene` places them."""
    out = []
    for p in scene.items:
        w0, h0 = sprite_sizes[p.concept]
        scale = p.size / max(w0, h0)
        w, h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        x0, y0 = p.x + (p.size - w) // 2, p.y + (p.size - h) // 2
        out.append((p.concept, x0, y0, x0 + w, y0 + h))
    return out


def cell_targets(
    scene: Scene, sprite_sizes: Sequence[tuple[int, int]], config: EvaluatorConfig
) -> np.ndarray:
    """(g, g) int64: the concept covering each cell centre, else the background class.

    An emoji too thin to cover any centre still claims the cell holding its own centre,
    so every emoji in a scene has at least one cell.
    """
    g, canvas = config.grid, config.canvas
    cell = canvas / g
    centres = (np.arange(g) + 0.5) * cell
    target = np.full((g, g), config.background, dtype=np.int64)
    for concept, x0, y0, x1, y1 in drawn_boxes(scene, sprite_sizes):
        cols = (centres >= x0) & (centres < x1)
        rows = (centres >= y0) & (centres < y1)
        if cols.any() and rows.any():
            target[np.ix_(rows, cols)] = concept
        else:
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            target[min(g - 1, int(cy // cell)), min(g - 1, int(cx // cell))] = concept
    return target


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Soften some images (down to half size and back) and add noise to some."""
    b, _, h, w = x.shape
    soften = torch.from_numpy(rng.random(b) < 0.35)
    if soften.any():
        small = F.interpolate(x[soften], size=(h // 2, w // 2), mode="area")
        x = x.clone()
        x[soften] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    sigma = torch.from_numpy(rng.uniform(0.0, 0.08, b) * (rng.random(b) < 0.5)).float()
    noise = torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32))
    return (x + noise * sigma.view(b, 1, 1, 1)).clamp(-1, 1)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def _batch(ds: EmojiDataset, idx: Sequence[int], sizes, config: EvaluatorConfig):
    images, targets = [], []
    for i in idx:
        scene = Scene.from_json(ds.record(int(i))["scene"])
        images.append(render_scene(scene, ds.sprites))
        targets.append(cell_targets(scene, sizes, config))
    return images_to_tensor(images, config.input_size), torch.from_numpy(np.stack(targets))


def _sprite_sizes(sprites: Sprites) -> list[tuple[int, int]]:
    return [im.size for im in sprites.images]


def cell_loss(
    logits: torch.Tensor, target: torch.Tensor, background: int, bg_weight: float
) -> torch.Tensor:
    """Cross-entropy per cell, background cells down-weighted, mean over the weights."""
    per_cell = F.cross_entropy(logits.float(), target, reduction="none")  # (B, g, g)
    weight = torch.where(target == background, bg_weight, 1.0)
    return (per_cell * weight).sum() / weight.sum()


def validate(model: EmojiEvaluator, ds: EmojiDataset, n: int, concepts: list[str]) -> dict:
    """Rates of the evaluator on the first n held-out real renders (its ceiling)."""
    ev = Evaluator(model, concepts)
    was_training = model.training
    n = min(n, len(ds))
    scenes = [ds.scene(i) for i in range(n)]
    det = ev.detect([render_scene(s, ds.sprites) for s in scenes])
    model.train(was_training)
    scores = [score_image(det, b, s, ds.record(b)["kind"]) for b, s in enumerate(scenes)]
    return asdict(summarise(scores))


def train_evaluator(
    cfg: EvaluatorTrainConfig,
    *,
    say: Callable[[str], None] = lambda _m: None,
    progress: bool = True,
) -> dict:
    """Train (or resume) and write the fp16 folder `cfg.out/final`; returns the last log record."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InvalidRequestError("steps and batch size must be at least 1")
    train = EmojiDataset(cfg.data, "train")
    heldout = EmojiDataset(cfg.data, "heldout")
    n_train = len(train) if cfg.train_subset is None else min(cfg.train_subset, len(train))
    if n_train < 1:
        raise InputFileError(f"{cfg.data} has no training scenes")
    concepts = [c.name for c in train.concepts]
    config = EvaluatorConfig(num_concepts=len(concepts), widths=tuple(cfg.widths))
    sizes = _sprite_sizes(train.sprites)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "train_config.json").write_text(
        json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}, indent=1
        )
    )

    torch.manual_seed(cfg.seed)
    model = EmojiEvaluator(config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = resume_if_present(cfg.out, model, opt, cfg.steps, say)
    bf16 = uses_bf16(cfg.precision)
    say(
        f"evaluator: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"{len(concepts)} concepts, {n_train} training scenes, bf16 autocast {'on' if bf16 else 'off'}"
    )

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc="evaluator",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    model.train()
    record: dict = {}
    ema_loss = None
    t_last, images_since = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        rng = step_rng(cfg.seed, step)
        idx = rng.integers(0, n_train, cfg.batch_size)
        x, target = _batch(train, idx, sizes, config)
        x = augment(x, rng)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        with autocast(cfg.precision):
            logits, _ = model(x)
        loss = cell_loss(logits, target, config.background, cfg.background_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        ema_loss = value if ema_loss is None else 0.95 * ema_loss + 0.05 * value
        images_since += cfg.batch_size
        bar.update(1)
        now = time.perf_counter()
        bar.set_postfix(
            loss=f"{ema_loss:.3f}", img_s=f"{images_since / max(now - t_last, 1e-9):.0f}"
        )
        done = step + 1
        if done % 50 == 0 or done == cfg.steps:
            record = {
                "step": done,
                "loss": value,
                "loss_ema": ema_loss,
                "images_per_s": images_since / max(now - t_last, 1e-9),
                "time": time.time(),
            }
            t_last, images_since = now, 0
            append_log(cfg.out / LOG, record)
        if done % cfg.validate_every == 0 or done == cfg.steps:
            val = validate(model, heldout, cfg.validation_size, concepts)
            model.train()
            append_log(cfg.out / LOG, {"step": done, "validation": val})
            say(f"step {done}: held-out real renders {json.dumps(val)}")
            record = {**record, "validation": val}
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_checkpoint(
                cfg.out / CHECKPOINT,
                model=model.state_dict(),
                optimizer=opt.state_dict(),
                step=done,
            )
    bar.close()
    save_evaluator(model, concepts, cfg.out / FINAL)
    _copy_licence(cfg.data, cfg.out / FINAL)
    say(f"evaluator weights: {cfg.out / FINAL}")
    return record


def _copy_licence(data: Path, folder: Path) -> None:
    """The dataset's licences go with the weights trained on it."""
    src = Path(data) / "LICENSE-DATA.md"
    if src.is_file():
        (folder / "LICENSE-DATA.md").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")


def export_evaluator(run_dir: Path, data: Path, dest: Path) -> Path:
    """Write the run's latest checkpoint as an fp16 evaluator folder (what ships)."""
    ckpt = Path(run_dir) / CHECKPOINT
    if not ckpt.is_file():
        raise InputFileError(f"no checkpoint to export: {ckpt} not found")
    saved = json.loads((Path(run_dir) / "train_config.json").read_text())
    concepts = [c.name for c in EmojiDataset(data, "heldout").concepts]
    model = EmojiEvaluator(
        EvaluatorConfig(num_concepts=len(concepts), widths=tuple(saved["widths"]))
    )
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    save_evaluator(model, concepts, dest)
    _copy_licence(data, Path(dest))
    return Path(dest)
