"""`limner train clip`: options and registration (the loop is in `clip_loop`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from limner.training import Trainer, register
from limner.training.options import add_run_arguments, run_trainer


@dataclass
class ClipTrainConfig:
    data: Path  # a dataset built by `limner data emoji`
    out: Path  # run folder: tokenizer/, checkpoint.pt, log.jsonl, final/
    steps: int = 800
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where faster than fp32
    checkpoint_every: int = 100
    validate_every: int = 400
    validation_size: int = 200  # held-out single-emoji renders, zero-shot classified
    train_subset: int | None = None  # only the first N training scenes (smoke tests)
    width: int = 192  # of both towers
    layers: int = 3  # of both towers
    heads: int = 3
    vocab_size: int = 4096  # of the BPE tokenizer trained on the captions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(
        parser, ClipTrainConfig(Path("."), Path(".")), "zero-shot checks on held-out renders"
    )


def _train():
    from limner.training.clip_loop import train_clip

    return train_clip


def _export():
    from limner.training.clip_loop import export_clip

    return export_clip


def run(args: argparse.Namespace) -> int:
    return run_trainer(args, ClipTrainConfig, _train, _export)


register(
    Trainer("clip", "limner's small CLIP, contrastively on the emoji dataset", add_arguments, run)
)
