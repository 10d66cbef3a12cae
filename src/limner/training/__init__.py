"""`limner train`: trainers of the built-in model's parts, one registered entry each.

A trainer is a `Trainer`: a name, a one-line help, a function that adds its options to
an argparse parser, and a function that runs it from the parsed arguments. The CLI
builds one `limner train NAME` subcommand per registered entry, so a new trainer (the
evaluator classifier, the small CLIP) plugs in with `register(...)` in its own module
and one name in `TRAINER_MODULES`; the CLI itself does not change.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Trainer:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_REGISTRY: dict[str, Trainer] = {}

# Modules that register trainers when imported (kept lazy: torch loads only on use).
TRAINER_MODULES = (
    "limner.training.vae",
    "limner.training.unet",
    "limner.training.evaluator",
    "limner.training.clip",
    "limner.training.preview_map",
    "limner.training.tiny_decoder",
)


def register(trainer: Trainer) -> Trainer:
    if trainer.name in _REGISTRY and _REGISTRY[trainer.name] is not trainer:
        raise ValueError(f"a trainer named {trainer.name!r} is already registered")
    _REGISTRY[trainer.name] = trainer
    return trainer


def trainers() -> dict[str, Trainer]:
    """All registered trainers, by name (imports the trainer modules on first call)."""
    for module in TRAINER_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)
