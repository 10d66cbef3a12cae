"""Options and the run step shared by the trainers whose loops live in `*_loop` modules
(evaluator, CLIP): the same flags, the same config fields, and `--export` instead of
training. The loops are imported only when a run starts, so `limner --help` stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_run_arguments(parser: argparse.ArgumentParser, defaults: Any, validate_help: str) -> None:
    """The flags of a trainer whose config has the fields of `defaults` (a config instance)."""
    d = defaults
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset folder from `limner data emoji`"
    )
    parser.add_argument(
        "--run-dir",
        dest="out",
        required=True,
        type=Path,
        help="run folder; a run with a checkpoint there is resumed",
    )
    parser.add_argument(
        "--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})"
    )
    parser.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})"
    )
    parser.add_argument(
        "--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    parser.add_argument(
        "--train-subset", type=int, default=None, help="use only the first N training scenes"
    )
    parser.add_argument(
        "--validate-every",
        type=int,
        default=d.validate_every,
        help=f"steps between {validate_help} (default {d.validate_every})",
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the run's latest checkpoint as fp16 safetensors to DIR and exit",
    )


def run_trainer(
    args: argparse.Namespace,
    config_class: type,
    train: Callable[[], Callable[..., dict]],
    export: Callable[[], Callable[[Path, Path, Path], Any]],
) -> int:
    """Train (or, with --export, export) from parsed flags; `train` and `export` return
    the loop's functions, imported on demand."""
    if args.export is not None:
        print(export()(args.out, args.data, args.export))
        return 0
    cfg = config_class(
        data=args.data,
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        train_subset=args.train_subset,
        validate_every=args.validate_every,
        precision=args.precision,
    )
    record = train()(
        cfg, say=lambda m: print(m, file=sys.stderr, flush=True), progress=not args.quiet
    )
    print(json.dumps(record))
    return 0
