"""What every trainer shares: seeding, bf16 autocast, EMA, resumable checkpoints,
a progress bar with loss and throughput, a loss log, and sample grids.

Resuming is exact: batches, noise and timesteps of step k are drawn from generators
seeded by (seed, k), so a run stopped at step k and resumed gives the same weights as
one that never stopped (the checkpoint holds weights, EMA and optimizer state).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from limner.errors import InputFileError, InvalidRequestError
from limner.runtime.device import bf16_is_faster, detect_cpu

CHECKPOINT_NAME = "checkpoint.pt"


# ------------------------------------------------------------------------------------------
# Seeds and precision
# ------------------------------------------------------------------------------------------


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """A numpy generator that depends only on (seed, step, stream): exact resumption."""
    return np.random.default_rng([seed, step, stream])


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU torch generator that depends only on (seed, step, stream)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0]))
    return g


def uses_bf16(precision: str) -> bool:
    """Whether a trainer computes in bf16: "bf16", or "auto" where bf16 is faster than
    fp32 on this CPU with the threads torch uses now (`limner.runtime.device`)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise InvalidRequestError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    return _auto_bf16(torch.get_num_threads())


@functools.lru_cache(maxsize=8)
def _auto_bf16(threads: int) -> bool:  # once per process: autocast asks every step
    return bf16_is_faster(detect_cpu(), threads)[0]


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU when `uses_bf16(precision)`; else none."""
    if not uses_bf16(precision):
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def architecture(arch: str, builtin_name: str) -> dict[str, Any]:
    """An architecture config: the JSON file `arch`, or the built-in model's own."""
    from limner.models.builtin import builtin_dir

    path = Path(arch) if arch else builtin_dir() / builtin_name
    if not path.is_file():
        raise InputFileError(f"architecture config not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(f"{path}: not valid JSON ({err})") from None


# ------------------------------------------------------------------------------------------
# EMA
# ------------------------------------------------------------------------------------------


def learning_rate(
    step: int, peak: float, warmup: int, total: int, schedule: str = "constant", floor: float = 0.0
) -> float:
    """The learning rate of optimizer step `step` (1-based): linear warm-up over `warmup`
    steps, then constant, or a cosine from `peak` down to `floor * peak` at step `total`.
    Why a cosine: annealing the rate at the end of a run lowers the loss and sharpens the
    EMA weights beyond what more steps at a constant rate give (Loshchilov & Hutter 2017)."""
    if not 0.0 <= floor <= 1.0:
        raise InvalidRequestError(f"the learning-rate floor must be in [0, 1], not {floor}")
    rate = peak * min(1.0, step / max(1, warmup))
    if schedule == "constant":
        return rate
    if schedule != "cosine":
        raise InvalidRequestError(f"unknown learning-rate schedule {schedule!r}")
    done = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return rate * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done)))


class EMA:
    """An exponential moving average of a model's parameters (Polyak averaging), with
    the usual warm-up: decay = min(max_decay, (1 + n) / (10 + n)) at update n."""

    def __init__(self, model: torch.nn.Module, max_decay: float = 0.999) -> None:
        self.max_decay = max_decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def decay(self) -> float:
        return min(self.max_decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.lerp_(v.float(), 1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "max_decay": self.max_decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.max_decay = float(state["max_decay"])
        self.shadow = {k: v.float().clone() for k, v in state["shadow"].items()}

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(
            {k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()}
        )


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


@dataclass
class RunState:
    step: int = 0
    images_seen: int = 0
    seconds: float = 0.0  # training wall time summed over sessions


def save_checkpoint(
    run_dir: Path,
    *,
    config: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: RunState,
    ema: EMA | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the run's resumable checkpoint atomically (tmp file, then rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": json.dumps(asdict(config)),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": json.dumps(asdict(state)),
        "ema": ema.state_dict() if ema is not None else None,
        "extra": json.dumps(extra or {}),
    }
    path = run_dir / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, read without unpickling code."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise InputFileError(f"no checkpoint to resume from: {path} not found")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["config"] = json.loads(payload["config"])
    payload["state"] = RunState(**json.loads(payload["state"]))
    payload["extra"] = json.loads(payload["extra"])
    return payload


def check_resume_config(
    saved: dict[str, Any], current: dict[str, Any], keys: Sequence[str]
) -> None:
    """Refuse to resume when an option that shapes the run differs from the checkpoint's."""
    # A key missing from an older checkpoint had the current default.
    diffs = [k for k in keys if saved.get(k, current.get(k)) != current.get(k)]
    if diffs:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diffs)
        raise InvalidRequestError(f"cannot resume with changed options ({shown})")


def start_run(
    run_dir: Path,
    config: Any,
    resume_keys: Sequence[str],
    *,
    resume: bool,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA,
) -> RunState:
    """Restore a run from its checkpoint (`resume`) or start a fresh one in an empty
    `run_dir`; writes the run's config.json. The state to continue from."""
    state = RunState()
    if resume:
        ckpt = load_checkpoint(run_dir)
        check_resume_config(ckpt["config"], asdict(config), resume_keys)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        ema.load_state_dict(ckpt["ema"])
        state = ckpt["state"]
    elif (run_dir / CHECKPOINT_NAME).exists():
        raise InvalidRequestError(
            f"{run_dir} already holds a run: pass --resume or a new --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
    return state


# ------------------------------------------------------------------------------------------
# Progress, logs, sample grids
# ------------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar showing the loss (running mean) and images per second, plus a JSON
    lines log (`log.jsonl` in the run folder) of the loss every `log_every` steps."""

    def __init__(self, run_dir: Path, start: int, total: int, log_every: int, quiet: bool):
        from tqdm import tqdm

        self.log_path = run_dir / "log.jsonl"
        self.log_every = log_every
        self.bar = tqdm(
            total=total, initial=start, unit="step", file=sys.stderr, disable=quiet, smoothing=0.05
        )
        self._losses: dict[str, list[float]] = {}
        self._t0 = time.perf_counter()
        self._images = 0

    def update(self, step: int, batch_size: int, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self._losses.setdefault(k, []).append(v)
        self._images += batch_size
        self.bar.update(1)
        if step % self.log_every == 0:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            means = {k: float(np.mean(v)) for k, v in self._losses.items()}
            rate = self._images / elapsed
            self.bar.set_postfix(
                {**{k: f"{v:.4f}" for k, v in means.items()}, "img/s": f"{rate:.1f}"}
            )
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **means, "img_per_s": round(rate, 2)}) + "\n")
            self._losses.clear()
            self._t0, self._images = time.perf_counter(), 0

    def close(self) -> None:
        self.bar.close()


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(
    images: Sequence[np.ndarray], columns: int, captions: Sequence[str] | None = None
) -> Image.Image:
    """Images (H, W, 3 uint8) in a grid, each with an optional caption underneath."""
    import textwrap

    h, w = images[0].shape[:2]
    text_h = 52 if captions else 0
    rows = math.ceil(len(images) / columns)
    pad = 4
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11) if captions else None
    for k, img in enumerate(images):
        x = pad + (k % columns) * (w + pad)
        y = pad + (k // columns) * (h + text_h + pad)
        sheet.paste(Image.fromarray(img), (x, y))
        if captions:
            for j, line in enumerate(textwrap.wrap(captions[k], max(8, w // 6))[:4]):
                draw.text((x, y + h + 1 + 12 * j), line, fill="black", font=font)
    return sheet


def iterate_steps(start: int, total: int) -> Iterator[int]:
    """Step numbers start+1 .. total (step k is the k-th optimizer update)."""
    return iter(range(start + 1, total + 1))


def images_tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> (B, 3, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0
