"""The denoise loop: one function, hooked at named points instead of patched.

The loop knows nothing about prompts or images: it calls a denoiser (usually
`GuidedUNet`), advances the scheduler, lets an `after_step` hook edit the latents
(inpainting blends the known region back in there) and reports each step to a callback,
which may stop the loop by raising `Cancelled` or through `should_stop`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from limner.errors import LimnerError


class Cancelled(LimnerError):
    """The caller asked the generation to stop."""


@dataclass
class StepEvent:
    """Progress after one model evaluation."""

    index: int  # 0-based evaluation index
    total: int  # evaluations in this run (2n-1 for Heun's n steps)
    timestep: float
    latents: torch.Tensor  # (B, C, h, w) after this step
    elapsed: float  # seconds since the loop started

    @property
    def fraction(self) -> float:
        return (self.index + 1) / self.total

    @property
    def eta_seconds(self) -> float:
        """Time left at the rate so far."""
        done = self.index + 1
        return self.elapsed / done * (self.total - done)

    @property
    def steps_per_second(self) -> float:
        return (self.index + 1) / self.elapsed if self.elapsed > 0 else float("inf")


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
AfterStep = Callable[[int, torch.Tensor], torch.Tensor]


def denoise(
    denoiser: Denoiser,
    scheduler: Any,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    step_kwargs: dict[str, Any] | None = None,
    after_step: AfterStep | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Run the scheduler from `latents` over `timesteps`; returns the final latents.

    `denoiser(x, t)` gets the scheduler-scaled input (B, C, h, w) and returns the model
    output the scheduler expects (eps or v, guidance applied).
    """
    step_kwargs = step_kwargs or {}
    start = time.perf_counter()
    total = len(timesteps)
    for index, t in enumerate(timesteps):
        if should_stop is not None and should_stop():
            raise Cancelled("generation cancelled")
        model_input = scheduler.scale_model_input(latents, t)
        model_output = denoiser(model_input, t)
        latents = scheduler.step(model_output, t, latents, **step_kwargs, return_dict=False)[0]
        if after_step is not None:
            latents = after_step(index, latents)
        if callback is not None:
            callback(StepEvent(index, total, float(t), latents, time.perf_counter() - start))
    return latents
