"""Options shared by the trainers: those of the generator's parts (VAE, UNet: explicit
`--resume`, sample grids, `--init`) and those of the scoring models (evaluator, CLIP: a
run folder with a checkpoint is resumed). `--export` writes weights instead of training.
The loops are imported only when a run starts, so `limner --help` stays light.
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


def add_generator_arguments(parser: argparse.ArgumentParser, defaults: Any, part: str) -> None:
    """The flags every generator-part trainer has (`defaults`: its config with defaults)."""
    d, p = defaults, parser
    p.add_argument("--data", required=True, help="dataset folder from `limner data emoji`")
    p.add_argument("--run-dir", required=True, help="folder for checkpoint, log and samples")
    p.add_argument(
        "--steps", type=int, default=d.steps, help=f"total optimizer steps (default {d.steps})"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup, help="steps of linear lr warm-up")
    p.add_argument(
        "--lr-schedule",
        default=d.lr_schedule,
        choices=["constant", "cosine"],
        help="after warm-up: constant, or a cosine down to --lr-floor x --lr at --steps "
        "(a resumed run may change it, and --steps, to anneal the rest of the run)",
    )
    p.add_argument(
        "--lr-floor", type=float, default=d.lr_floor, help="cosine end, as a fraction of --lr"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="step k's batch, noise and timesteps depend only on (seed, k): a run continued "
        "from --init with the seed of the run that made those weights sees the same batches "
        "again, so give each continued stage its own seed (default 0)",
    )
    p.add_argument("--limit", type=int, default=0, help="use only the first N scenes (0: all)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument(
        "--threads", type=int, default=d.threads, help=f"torch CPU threads (default {d.threads})"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="steps between checkpoints",
    )
    p.add_argument(
        "--sample-every", type=int, default=d.sample_every, help="steps between sample grids"
    )
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument(
        "--init", default="", help=f"start from weights: 'builtin' or a diffusers {part} folder"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"write the run's EMA weights as fp16 safetensors to DIR/{part} and exit",
    )
    p.add_argument(
        "--arch",
        default="",
        help="architecture config JSON for a fresh model (default: the built-in one)"
        + (
            "; with --init, one the weights grow into (a pooled-text embedding, started at zero)"
            if part == "unet"
            else ""
        ),
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(config_class: type, args: argparse.Namespace) -> Any:
    """The trainer config whose fields the parsed flags name."""
    fields = config_class.__dataclass_fields__
    return config_class(**{k: v for k, v in vars(args).items() if k in fields})
