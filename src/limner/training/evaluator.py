"""`limner train evaluator`: options and registration (the loop is in `evaluator_loop`).

The evaluator is trained on real renders of the training split only, never on generated
images; `limner eval` uses it to score generations.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from limner.training import Trainer, register
from limner.training.options import add_run_arguments, run_trainer


@dataclass
class EvaluatorTrainConfig:
    data: Path  # a dataset built by `limner data emoji`
    out: Path  # run folder: checkpoint.pt, log.jsonl, final/
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    background_weight: float = 0.25  # cells without an emoji count this much in the loss
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where faster than fp32
    checkpoint_every: int = 250
    validate_every: int = 1000
    validation_size: int = 400  # held-out real renders scored at each validation
    train_subset: int | None = None  # only the first N training scenes (smoke tests)
    widths: tuple[int, ...] = (32, 64, 128)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(
        parser, EvaluatorTrainConfig(Path("."), Path(".")), "scoring held-out real renders"
    )


def _train():
    from limner.training.evaluator_loop import train_evaluator

    return train_evaluator


def _export():
    from limner.training.evaluator_loop import export_evaluator

    return export_evaluator


def run(args: argparse.Namespace) -> int:
    return run_trainer(args, EvaluatorTrainConfig, _train, _export)


register(
    Trainer(
        "evaluator",
        "the evaluator: an emoji detector trained on real renders only",
        add_arguments,
        run,
    )
)
